//! `$[[ matrix.X ]]` in `needs:parallel:matrix`, `rules:changes:paths` and
//! `rules:changes:compare_to`, through load + evaluate + payload.

use podci_model::eval::{Evaluation, PipelineContext};
use podci_model::pipeline::interpolate_matrix;
use podci_model::{LoadOptions, MemorySource, Pipeline, load};
use proptest::prelude::*;

fn pipeline(yaml: &str) -> Pipeline {
    let p = load(
        ".gitlab-ci.yml",
        yaml,
        &MemorySource::new(),
        &LoadOptions::default(),
    );
    assert!(
        p.is_valid(),
        "{:?}",
        p.errors().map(|d| d.message.clone()).collect::<Vec<_>>()
    );
    p
}

fn needs_of(e: &Evaluation, job: &str) -> Vec<String> {
    e.job(job)
        .and_then(|j| j.needs.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

const MATRIX: &str = "stages: [build, test]
.m: &m
  parallel:
    matrix:
      - OS: [ubuntu, alpine]
        ARCH: [amd64, arm64]
build:
  stage: build
  script: make
  <<: *m
test:
  stage: test
  script: make test
  <<: *m
  needs:
    - job: build
      parallel:
        matrix:
          - OS: ['$[[ matrix.OS ]]']
            ARCH: ['$[[matrix.ARCH]]']
package:
  stage: test
  script: pack
  parallel:
    matrix:
      - OS: [ubuntu, alpine]
  needs:
    - job: build
      parallel:
        matrix:
          - OS: ['$[[ matrix.OS ]]']
            ARCH: [amd64, arm64]
";

#[test]
fn matrix_expressions_map_instances_one_to_one() {
    let p = pipeline(MATRIX);
    let ctx = PipelineContext::default();
    let e = p.evaluate(&ctx);
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(
        needs_of(&e, "test: [ubuntu, amd64]"),
        vec!["build: [ubuntu, amd64]"]
    );
    assert_eq!(
        needs_of(&e, "test: [alpine, arm64]"),
        vec!["build: [alpine, arm64]"]
    );
    // Mixed with fixed values: each package instance needs both ARCH builds of its OS.
    assert_eq!(
        needs_of(&e, "package: [alpine]"),
        vec!["build: [alpine, amd64]", "build: [alpine, arm64]"]
    );
    // The payload downloads artifacts from exactly that job.
    let pl = p.payload(&e, "test: [alpine, arm64]", &ctx, "t").unwrap();
    let deps: Vec<&str> = pl.dependencies.iter().map(|d| &*d.name).collect();
    assert_eq!(deps, vec!["build: [alpine, arm64]"]);
}

#[test]
fn matrix_expression_with_unknown_identifier_names_no_job() {
    let yaml = MATRIX.replace(
        "matrix.OS ]]']\n            ARCH: ['$[[matrix.ARCH]]']",
        "matrix.OSS ]]']\n            ARCH: ['$[[matrix.ARCH]]']",
    );
    let p = load(
        ".gitlab-ci.yml",
        &yaml,
        &MemorySource::new(),
        &LoadOptions::default(),
    );
    let errors: Vec<String> = p.errors().map(|d| d.message.clone()).collect();
    assert!(
        errors
            .iter()
            .any(|m| m.contains("build: [$[[ matrix.OSS ]], amd64]")),
        "{errors:?}"
    );
}

#[test]
fn interpolation_is_plain_string_replacement() {
    let vars = vec![
        ("OS".to_string(), "ubuntu".to_string()),
        ("V".to_string(), "18".to_string()),
    ];
    assert_eq!(interpolate_matrix("$[[ matrix.OS ]]", &vars), "ubuntu");
    assert_eq!(
        interpolate_matrix("node-$[[matrix.V]]-$[[ matrix.OS  ]]", &vars),
        "node-18-ubuntu"
    );
    // Not a matrix identifier, or not closed: kept as written.
    assert_eq!(interpolate_matrix("$[[ inputs.OS ]]", &vars), "$[[ inputs.OS ]]");
    assert_eq!(
        interpolate_matrix("$[[ matrix.NOPE ]]", &vars),
        "$[[ matrix.NOPE ]]"
    );
    assert_eq!(interpolate_matrix("a $[[ matrix.OS", &vars), "a $[[ matrix.OS");
}

proptest! {
    /// Text without an expression comes back unchanged; each resolvable expression is
    /// replaced by its value whatever surrounds it.
    #[test]
    fn interpolation_properties(prefix in "[^$]{0,12}", suffix in "[^$]{0,12}", value in "[a-z0-9.-]{0,10}", sp1 in " {0,2}", sp2 in " {0,2}") {
        let vars = vec![("X".to_string(), value.clone())];
        prop_assert_eq!(interpolate_matrix(&format!("{prefix}{suffix}"), &vars), format!("{prefix}{suffix}"));
        let s = format!("{prefix}$[[{sp1}matrix.X{sp2}]]{suffix}");
        prop_assert_eq!(interpolate_matrix(&s, &vars), format!("{prefix}{value}{suffix}"));
    }
}

const CHANGES: &str = "docs:
  script: x
  rules:
    - changes:
        paths: ['docs/**/*.md']
api:
  script: x
  rules:
    - changes:
        paths: ['$API_DIR/**/*']
        compare_to: 'refs/heads/$CI_DEFAULT_BRANCH'
always:
  script: x
";

fn ctx_with_changes(changed: Option<Vec<&str>>) -> PipelineContext {
    let mut ctx = PipelineContext {
        ref_name: "feature".into(),
        changed_files: changed.map(|v| v.into_iter().map(String::from).collect()),
        ..PipelineContext::default()
    };
    ctx.variables.push(podci_model::eval::Variable::plain(
        "API_DIR",
        "api",
        podci_model::eval::VariableLevel::Project,
    ));
    ctx
}

fn names(e: &Evaluation) -> Vec<&str> {
    e.jobs.iter().map(|j| j.name.as_str()).collect()
}

#[test]
fn changes_paths_use_the_push_diff() {
    let p = pipeline(CHANGES);
    let mut ctx = ctx_with_changes(Some(vec!["docs/guide/intro.md"]));
    ctx.compare_to_changes
        .insert("main".into(), vec!["README.md".into()]);
    let e = p.evaluate(&ctx);
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(names(&e), vec!["docs", "always"]);
    ctx.changed_files = Some(vec!["src/lib.rs".into()]);
    assert_eq!(names(&p.evaluate(&ctx)), vec!["always"]);
}

#[test]
fn compare_to_uses_the_diff_against_that_ref() {
    let p = pipeline(CHANGES);
    // The push diff touches api/, but the diff against main does not: `api` is out.
    let mut ctx = ctx_with_changes(Some(vec!["api/server.rs"]));
    ctx.compare_to_changes
        .insert("main".into(), vec!["README.md".into()]);
    assert_eq!(names(&p.evaluate(&ctx)), vec!["always"]);
    // And the other way round; also for a pipeline without a push diff (web, schedule),
    // where plain `changes` holds but `compare_to` still compares.
    ctx.changed_files = None;
    ctx.compare_to_changes
        .insert("refs/heads/main".into(), vec!["api/v2/routes.rs".into()]);
    assert_eq!(names(&p.evaluate(&ctx)), vec!["docs", "api", "always"]);
}

#[test]
fn compare_to_an_unknown_ref_is_gitlabs_error() {
    let p = pipeline(CHANGES);
    let ctx = ctx_with_changes(Some(vec!["api/x"]));
    let e = p.evaluate(&ctx);
    let messages: Vec<&str> = e.errors.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        vec!["Failed to parse rule for api: rules:changes:compare_to is not a valid ref"]
    );
    assert_eq!(names(&e), vec!["always"]);
}

#[test]
fn compare_to_in_workflow_rules() {
    let yaml = "workflow:\n  rules:\n    - changes:\n        paths: [src/**/*]\n        compare_to: refs/heads/develop\nbuild:\n  script: x\n";
    let p = pipeline(yaml);
    let mut ctx = ctx_with_changes(None);
    let e = p.evaluate(&ctx);
    assert!(!e.created);
    assert_eq!(
        e.errors.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(),
        vec!["rules:changes:compare_to is not a valid ref"]
    );
    ctx.compare_to_changes
        .insert("develop".into(), vec!["src/main.rs".into()]);
    let e = p.evaluate(&ctx);
    assert!(e.created && e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(names(&e), vec!["build"]);
}
