//! GitLab's own end-to-end payload fixtures (`spec/requests/api/ci/runner/yamls/`): for each
//! `.gitlab-ci.yml`, the keys listed in `request_response` must equal podci's payload for
//! job `rspec`, exactly, as JSON.

use std::path::PathBuf;

use podci_model::eval::PipelineContext;
use podci_model::yaml::{Limits, load_config};
use podci_model::{LoadOptions, MemorySource};

fn fixtures() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/gitlab/runner-payloads");
    assert!(
        dir.is_dir(),
        "GitLab's payload fixtures are missing: expected {} (shared/ beside the repository)",
        dir.display()
    );
    dir
}

#[test]
fn runner_payload_fixtures() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 12, "expected GitLab's 12 payload fixtures");
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{e}"));
        let (_, doc) =
            load_config(&text, 0, Limits::default()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let doc = doc.as_map().unwrap_or_else(|| panic!("{}", f.display()));
        let ci =
            podci_model::emit::to_yaml(doc.get("gitlab_ci").unwrap_or_else(|| panic!("{}", f.display())));
        let expected = doc
            .get("request_response")
            .unwrap_or_else(|| panic!("{}", f.display()))
            .to_json();
        let p = podci_model::load(
            ".gitlab-ci.yml",
            &ci,
            &MemorySource::new(),
            &LoadOptions::default(),
        );
        if !p.is_valid() {
            failures.push(format!("{}: podci rejects it: {:?}", f.display(), p.diagnostics));
            continue;
        }
        let ctx = PipelineContext::default();
        let eval = p.evaluate(&ctx);
        let Some(payload) = p.payload(&eval, "rspec", &ctx, "job-token") else {
            failures.push(format!("{}: no rspec job", f.display()));
            continue;
        };
        let got = serde_json::to_value(&payload).unwrap_or_default();
        let serde_json::Value::Object(want) = expected else {
            panic!("{}", f.display())
        };
        for (k, v) in want {
            let g = got.get(&k).cloned().unwrap_or(serde_json::Value::Null);
            if g != v {
                failures.push(format!(
                    "{} `{k}`:\n  want {v}\n  got  {g}",
                    f.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
