//! `podci lint` end to end: the binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn podci(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podci: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn seed_pipeline_reports_gitlabs_stage_error_with_position() {
    let dir = fixtures().join("seed");
    let out = podci(&["lint"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        ".gitlab-ci.yml:26:3: docker-build job: chosen stage build does not exist; available stages are .pre, package, docker_build, deploy_k8s, .post"
    );
}

#[test]
fn json_output_is_gitlab_lint_shaped() {
    let dir = fixtures().join("seed");
    let out = podci(&["lint", "--json", ".gitlab-ci.yml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 26);
    assert_eq!(v["errors"][0]["column"], 3);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("docker-build job: chosen stage build")
    );
}

#[test]
fn includes_resolve_with_project_mapping() {
    let dir = fixtures().join("includes");
    let without = podci(&["lint", "--offline"], &dir);
    assert_eq!(without.status.code(), Some(1));
    let err = text(&without.stderr);
    assert!(err.contains("--project platform/ci-templates=DIR"), "{err}");
    assert!(err.starts_with(".gitlab-ci.yml:3:5: "), "{err}");

    let map = format!(
        "platform/ci-templates={}",
        fixtures().join("templates-project").display()
    );
    let out = podci(&["lint", "--offline", "--project", &map, "--preview"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let merged = text(&out.stdout);
    // extends merged from the project include, !reference replaced from the local glob include
    assert!(merged.contains("image: maven:3.9"), "{merged}");
    assert!(merged.contains("- echo setup"), "{merged}");
    assert!(!merged.contains("!reference"), "{merged}");
    assert!(!merged.contains("include"), "{merged}");
}

#[test]
fn list_rows_in_stage_order() {
    let dir = fixtures().join("includes");
    let map = format!(
        "platform/ci-templates={}",
        fixtures().join("templates-project").display()
    );
    let out = podci(&["lint", "--offline", "--project", &map, "--list"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<Vec<String>> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows[0], vec!["NAME", "STAGE", "WHEN", "ALLOW_FAILURE", "NEEDS"]);
    assert_eq!(rows[1], vec!["unit", "test", "on_success", "false"]);
    assert_eq!(rows.len(), 2);
}

#[test]
fn embedded_hello_when_no_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = podci(&["lint", "--list"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("embedded hello pipeline"));
    let listed = text(&out.stdout);
    for job in ["build", "test", "lint", "deploy"] {
        assert!(
            listed.lines().any(|l| l.starts_with(job)),
            "{job} missing:\n{listed}"
        );
    }
}

#[test]
fn yaml_syntax_error_has_position() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join(".gitlab-ci.yml"),
        "job:\n  script: [a, b\n  stage: test\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = podci(&["lint"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with(".gitlab-ci.yml:"), "{err}");
    let mut parts = err.splitn(4, ':');
    let (_, line, col) = (
        parts.next(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    assert!(line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(), "{err}");
    assert!(err.contains("(<unknown>): "), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = podci(&["lint", "nope.yml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read nope.yml"),
        "{}",
        text(&out.stderr)
    );
}
