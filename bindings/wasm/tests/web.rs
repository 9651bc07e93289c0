//! wasm-bindgen tests of the exported API, run in headless Chromium:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p podci-wasm --target wasm32-unknown-unknown --release --test web`
//! (tests/browser.rs runs exactly that from `cargo test --workspace`).
#![cfg(target_arch = "wasm32")]

use podci_wasm::{Preview, version};
use serde_json::Value;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The pipeline our users start from: stage names that do not match `stages:`.
const SEED: &str = "stages:\n  - package\n  - docker_build\n  - deploy_k8s\n\nmaven-build:\n  stage: package\n  script: mvn package\n\ndocker-build:\n  stage: build\n  script: docker build .\n\nk8s-deploy:\n  stage: deploy\n  script: kubectl apply -f deployment.yaml\n";

const RULES: &str = "build:\n  script: make\ntest:\n  needs: [build]\n  script: make test\n  parallel: 2\nrelease:\n  stage: deploy\n  needs: [test]\n  script: make release\n  rules:\n    - if: $CI_COMMIT_TAG\n";

fn json(v: JsValue) -> Value {
    let s: String = js_sys::JSON::stringify(&v).map(String::from).unwrap_or_default();
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

fn obj(text: &str) -> JsValue {
    js_sys::JSON::parse(text).unwrap_or(JsValue::UNDEFINED)
}

#[wasm_bindgen_test]
fn seed_pipeline_reports_the_stage_error_on_line_11() {
    let p = Preview::new(SEED, JsValue::UNDEFINED).unwrap();
    assert!(!p.valid());
    let d = json(p.diagnostics().unwrap());
    assert_eq!(d[0]["severity"], "error");
    assert_eq!(
        d[0]["message"],
        "docker-build job: chosen stage build does not exist; available stages are .pre, package, docker_build, deploy_k8s, .post"
    );
    assert_eq!(
        (d[0]["line"].as_u64(), d[0]["column"].as_u64()),
        (Some(11), Some(3))
    );
    assert_eq!(d[0]["file"], ".gitlab-ci.yml");
}

#[wasm_bindgen_test]
fn context_changes_what_runs_and_why() {
    let mut p = Preview::new(RULES, JsValue::UNDEFINED).unwrap();
    assert!(p.valid());
    let e = json(p.evaluation().unwrap());
    let release = e["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job"] == "release")
        .unwrap()
        .clone();
    assert_eq!(release["runs"], false);
    assert_eq!(release["reason"], "no rule matched");
    assert!(p.payload("release").unwrap().is_null());

    p.set_context(obj(r#"{"ref":"v1.2.0","tag":true}"#)).unwrap();
    let e = json(p.evaluation().unwrap());
    let release = e["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job"] == "release")
        .unwrap()
        .clone();
    assert_eq!(release["runs"], true);
    assert_eq!(release["rule_text"], r#"{"if":"$CI_COMMIT_TAG"}"#);
    let payload = json(p.payload("release").unwrap());
    assert_eq!(payload["job_info"]["name"], "release");
    let tag = payload["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "CI_COMMIT_TAG")
        .unwrap()
        .clone();
    assert_eq!(tag["value"], "v1.2.0");
    assert_eq!(payload["token"], "[job token]");
}

#[wasm_bindgen_test]
fn bad_context_is_an_error_naming_the_field() {
    let mut p = Preview::new(RULES, JsValue::UNDEFINED).unwrap();
    let err = p
        .set_context(obj(r#"{"branch":"main"}"#))
        .err()
        .map(JsValue::from)
        .unwrap();
    let msg = js_sys::Error::from(err).message();
    assert!(String::from(msg).contains("unknown field `branch`"));
}

#[wasm_bindgen_test]
fn layout_in_both_modes() {
    let p = Preview::new(RULES, JsValue::UNDEFINED).unwrap();
    let l = json(p.layout("needs").unwrap());
    assert_eq!(l["mode"], "needs");
    let cols: Vec<Vec<String>> = l["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["cards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["name"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(cols, vec![vec!["build"], vec!["test"], vec!["release"]]);
    assert_eq!(
        l["columns"][1]["cards"][0]["instances"].as_array().unwrap().len(),
        2
    );
    assert_eq!(l["links"].as_array().unwrap().len(), 2);
    let s = json(p.layout("stages").unwrap());
    assert_eq!(s["columns"][0]["title"], "test");
    assert!(p.layout("circles").is_err());
}

#[wasm_bindgen_test]
fn include_local_from_given_files_and_merged_views() {
    let files = obj(r#"{"ci/base.yml": ".base:\n  image: alpine:3.20\n  variables:\n    A: one\n"}"#);
    let p = Preview::new(
        "include: ci/base.yml\njob:\n  extends: .base\n  script: echo $A\n",
        files,
    )
    .unwrap();
    assert!(p.valid(), "{:?}", json(p.diagnostics().unwrap()));
    assert_eq!(p.included(), vec!["ci/base.yml".to_string()]);
    let y = p.job_yaml("job").unwrap();
    assert!(y.contains("image: alpine:3.20"), "{y}");
    assert!(p.merged_yaml().contains(".base:"));
    let payload = json(p.payload("job").unwrap());
    assert_eq!(payload["image"]["name"], "alpine:3.20");
    assert!(p.job_yaml("nope").is_none());
    assert!(!version().is_empty());
}

#[wasm_bindgen_test]
fn missing_include_is_reported() {
    let p = Preview::new("include: ci/missing.yml\njob:\n  script: x\n", obj("{}")).unwrap();
    assert!(!p.valid());
    let d = json(p.diagnostics().unwrap());
    assert!(
        d[0]["message"].as_str().unwrap().contains("ci/missing.yml"),
        "{d}"
    );
    assert!(Preview::new("a: 1", obj("[1, 2]")).is_err());
}
