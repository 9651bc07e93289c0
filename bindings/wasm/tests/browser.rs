//! Browser tests: the wasm-bindgen tests of the exported API in headless Chromium, and the
//! previewer page driven through chromedriver (paste, look, switch branch), saving a
//! screenshot of each state under `<target>/podci-wasm-screenshots/`.
//!
//! Needs Debian's chromium and chromium-driver and wasm-bindgen-cli (installed by
//! `.ci/setup.d/60-wasm.sh`); fails under `CI` when one is missing, skips loudly otherwise.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::{Driver, StaticServer, built_page, path_with, tools, workspace_root};

#[test]
fn wasm_bindgen_tests_in_headless_chromium() {
    let Some(t) = tools("wasm_bindgen_tests_in_headless_chromium") else {
        return;
    };
    let _g = support::CARGO.lock().unwrap_or_else(|e| e.into_inner());
    // Release, so the host build of proc macros does not wait on the outer `cargo test`'s
    // lock of the debug directory.
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "test",
            "--locked",
            "--release",
            "-p",
            "podci-wasm",
            "--target",
            "wasm32-unknown-unknown",
            "--test",
            "web",
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", &t.chromedriver)
        .env("PATH", path_with(&t.wasm_bindgen_dir))
        .output()
        .expect("run cargo test for wasm32");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wasm-bindgen tests failed:\n{stdout}\n{stderr}"
    );
    // The runner prints its own summary; make sure tests really ran in the browser.
    let summary = stdout
        .lines()
        .find(|l| l.contains("test result: ok."))
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains("6 passed"),
        "expected the 6 wasm-bindgen tests to pass:\n{stdout}\n{stderr}"
    );
    eprintln!("wasm-bindgen tests in headless Chromium: {summary}");
}

/// The pipeline our users started from (GitLab rejects it: the stages do not exist).
const SEED: &str = "stages:\n  - package\n  - docker_build\n  - deploy_k8s\n\nmaven-build:\n  stage: package\n  script: mvn package\n\ndocker-build:\n  stage: build\n  script: docker build .\n\nk8s-deploy:\n  stage: deploy\n  script: kubectl apply -f deployment.yaml\n";

const DAG: &str = "stages: [build, test, deploy]\n\
compile:\n  stage: build\n  script: make\n\
assets:\n  stage: build\n  script: make assets\n\
lint:\n  stage: test\n  needs: []\n  script: make lint\n\
unit:\n  stage: test\n  needs: [compile]\n  parallel: 2\n  script: make test\n\
e2e:\n  stage: test\n  needs: [compile, assets]\n  script: make e2e\n\
deploy-prod:\n  stage: deploy\n  needs: [unit, e2e]\n  script: make deploy\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n";

fn paste(s: &support::Session, yaml: &str, renders: u64) -> u64 {
    s.exec(
        "const t = document.getElementById('yaml'); t.focus(); t.value = arguments[0]; t.dispatchEvent(new Event('input', {bubbles: true}));",
        json!([yaml]),
    );
    s.wait_render(renders)
}

fn card_state(s: &support::Session, job: &str) -> Value {
    s.exec(
        "const c = document.querySelector(`.card[data-job=\"${arguments[0]}\"]`); return c ? {runs: c.dataset.runs, cls: c.className, meta: c.querySelector('.meta').textContent} : null;",
        json!([job]),
    )
}

#[test]
fn page_shows_errors_graph_and_rules() {
    let Some(t) = tools("page_shows_errors_graph_and_rules") else {
        return;
    };
    let page = built_page(&t);
    let server = StaticServer::start(page);
    let driver = Driver::start(&t.chromedriver);
    let s = driver.session(1400, 900);
    s.goto(&server.url("/index.html"));
    let mut n = s.wait_render(0);

    // 1. The seed pipeline: the stage error is marked on line 11 with GitLab's message.
    n = paste(&s, SEED, n);
    let marks = s.exec(
        "return [...document.querySelectorAll('#gutter span.error')].map(e => [Number(e.dataset.line), e.title]);",
        json!([]),
    );
    assert_eq!(marks[0][0], 11, "error marks: {marks}");
    assert_eq!(
        marks[0][1],
        "docker-build job: chosen stage build does not exist; available stages are .pre, package, docker_build, deploy_k8s, .post"
    );
    let first = s.exec(
        "return document.querySelector('#diagnostics li.error').textContent;",
        json!([]),
    );
    assert!(
        first
            .as_str()
            .unwrap_or_default()
            .starts_with(".gitlab-ci.yml:11:3docker-build job: chosen stage build"),
        "{first}"
    );
    assert_eq!(
        s.exec(
            "return document.getElementById('graph').classList.contains('invalid');",
            json!([])
        ),
        true
    );
    s.screenshot("1-seed-stage-error");

    // 2. A DAG pipeline in the job dependencies view: cards in layers, links drawn from the
    //    needed card's right edge to the needing card's left edge.
    n = paste(&s, DAG, n);
    s.click("#tab-needs");
    n = s.wait_render(n);
    let columns = s.exec(
        "return [...document.querySelectorAll('#graph .column')].map(c => [...c.querySelectorAll('.card')].map(k => k.dataset.job));",
        json!([]),
    );
    assert_eq!(
        columns,
        json!([["compile", "assets", "lint"], ["unit", "e2e"], ["deploy-prod"]])
    );
    let unit_count = s.exec(
        "return document.querySelector('.card[data-job=unit] .count').textContent;",
        json!([]),
    );
    assert_eq!(unit_count, "2");
    let links = s.exec(
        r#"const g = document.getElementById('graph');
           const box = n => { const e = g.querySelector(`.card[data-job="${n}"]`); return {l: e.offsetLeft, r: e.offsetLeft + e.offsetWidth, m: e.offsetTop + e.offsetHeight / 2}; };
           return [...document.querySelectorAll('#links path')].map(p => {
             const nums = p.getAttribute('d').match(/-?[\d.]+/g).map(Number);
             const a = box(p.dataset.from), b = box(p.dataset.to);
             return {from: p.dataset.from, to: p.dataset.to,
                     starts_at_from: Math.abs(nums[0] - a.r) < 1 && Math.abs(nums[1] - a.m) < 1,
                     ends_at_to: Math.abs(nums[nums.length - 2] - b.l) < 1 && Math.abs(nums[nums.length - 1] - b.m) < 1};
           });"#,
        json!([]),
    );
    let mut pairs: Vec<(String, String)> = links
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    assert_eq!(l["starts_at_from"], true, "{l}");
                    assert_eq!(l["ends_at_to"], true, "{l}");
                    (
                        l["from"].as_str().unwrap_or("").to_string(),
                        l["to"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    let expect: Vec<(String, String)> = [
        ("assets", "e2e"),
        ("compile", "e2e"),
        ("compile", "unit"),
        ("e2e", "deploy-prod"),
        ("unit", "deploy-prod"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, expect);
    let deploy = card_state(&s, "deploy-prod");
    assert_eq!(deploy["runs"], "true", "{deploy}");
    // Hovering a job highlights what it needs and what needs it, and their links.
    let hl = s.exec(
        "document.querySelector('.card[data-job=e2e]').dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); \
         return [[...document.querySelectorAll('.card.hl')].map(c => c.dataset.job).sort(), \
                 document.querySelectorAll('#links path.hl').length];",
        json!([]),
    );
    assert_eq!(hl, json!([["assets", "compile", "deploy-prod"], 3]));
    s.screenshot("2-dag-needs-links");
    s.exec(
        "document.querySelector('.card[data-job=e2e]').dispatchEvent(new MouseEvent('mouseout', {bubbles: true}));",
        json!([]),
    );

    // 3. Switch the branch as a user types it: the rules-excluded job changes.
    s.type_into("#ctx-ref", "feature/login");
    s.wait_render(n);
    // Typing renders after each pause; wait for the state of the last keystroke.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut deploy = card_state(&s, "deploy-prod");
    while deploy["runs"] != "false" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        deploy = card_state(&s, "deploy-prod");
    }
    assert_eq!(deploy["runs"], "false", "{deploy}");
    assert!(
        deploy["cls"].as_str().unwrap_or("").contains("excluded"),
        "{deploy}"
    );
    assert!(
        deploy["meta"].as_str().unwrap_or("").contains("no rule matched"),
        "{deploy}"
    );
    assert_eq!(card_state(&s, "compile")["runs"], "true");
    s.screenshot("3-branch-excludes-deploy");

    // The job panel shows the merged job and, for a job that runs, its payload.
    s.exec(
        "window.__errors = []; addEventListener('error', e => window.__errors.push(e.message));",
        json!([]),
    );
    s.click(".card[data-job=compile]");
    let errors = s.exec("return window.__errors;", json!([]));
    assert_eq!(errors, json!([]), "JavaScript errors on opening the job panel");
    let payload = s.exec(
        "return document.getElementById('panel-payload').textContent;",
        json!([]),
    );
    let payload: Value = serde_json::from_str(payload.as_str().unwrap_or(""))
        .unwrap_or_else(|e| panic!("payload panel is not JSON ({e}): {payload}"));
    assert_eq!(payload["job_info"]["name"], "compile");
    let branch = payload["variables"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["key"] == "CI_COMMIT_BRANCH"))
        .map(|v| v["value"].clone());
    assert_eq!(branch, Some(json!("feature/login")));
    s.screenshot("4-job-panel");

    // 4. The share link carries YAML and context in the fragment and restores both.
    s.click("#share");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let url = loop {
        let h = s.exec("return location.href;", json!([]));
        let h = h.as_str().unwrap_or("").to_string();
        if h.contains("#z=") {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "share link never appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        !url.contains("make%20deploy") && !url.contains("deploy-prod"),
        "YAML must be compressed: {url}"
    );
    s.goto("about:blank");
    s.goto(&url);
    s.wait_render(0);
    let restored = s.exec(
        "return [document.getElementById('yaml').value, document.getElementById('ctx-ref').value];",
        json!([]),
    );
    assert_eq!(restored, json!([DAG, "feature/login"]));

    // Dark scheme, for the record.
    s.click("#theme");
    s.screenshot("5-dark");

    // 5. include:local resolves against a file dropped on the page.
    let n = s.wait_render(0);
    let n = paste(&s, "include: extra-jobs.yml\nbuild:\n  script: make\n", n);
    let missing = s.exec(
        "return document.querySelector('#diagnostics li.error')?.textContent ?? '';",
        json!([]),
    );
    assert!(
        missing.as_str().unwrap_or("").contains("extra-jobs.yml"),
        "{missing}"
    );
    s.exec(
        "const dt = new DataTransfer(); dt.items.add(new File([arguments[0]], 'extra-jobs.yml')); \
         window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
        json!(["docs:\n  needs: [build]\n  script: make docs\n"]),
    );
    s.wait_render(n);
    let cards = s.exec(
        "return [...document.querySelectorAll('#graph .card')].map(c => c.dataset.job);",
        json!([]),
    );
    // Included files are merged under the main file, so their jobs come first (as on GitLab).
    assert_eq!(cards, json!(["docs", "build"]));
    let chips = s.exec("return document.getElementById('files').textContent;", json!([]));
    assert!(chips.as_str().unwrap_or("").contains("extra-jobs.yml"), "{chips}");
    s.screenshot("6-dropped-include");
}
