//! Cases ported from GitLab's entry specs (`spec/lib/gitlab/ci/config/entry/**/*_spec.rb`,
//! `spec/lib/gitlab/ci/yaml_processor_spec.rb`) as tables: a configuration, the top-level
//! key to check, GitLab's message, and where it must point. The position is given as a
//! `needle`: the text of the offending node (or unknown key) in the YAML, the first match
//! at or after the `after` marker; the test turns it into line:column, so each row checks
//! that the span lands on the node at fault.

use super::super::{Checker, validate_entry_fixture};
use crate::yaml::Limits;
use crate::yaml::load_config;

struct Case {
    yaml: &'static str,
    key: &'static str,
    message: &'static str,
    /// Text the span must point at.
    needle: &'static str,
    /// Search for `needle` only after this text (disambiguates repeated words).
    after: &'static str,
}

const fn c(yaml: &'static str, key: &'static str, message: &'static str, needle: &'static str) -> Case {
    Case {
        yaml,
        key,
        message,
        needle,
        after: "",
    }
}

const fn ca(
    yaml: &'static str,
    key: &'static str,
    message: &'static str,
    needle: &'static str,
    after: &'static str,
) -> Case {
    Case {
        yaml,
        key,
        message,
        needle,
        after,
    }
}

fn position(src: &str, needle: &str, after: &str) -> (u32, u32) {
    let start = if after.is_empty() {
        0
    } else {
        src.find(after)
            .unwrap_or_else(|| panic!("marker {after:?} not in {src}"))
            + after.len()
    };
    let off = start
        + src[start..]
            .find(needle)
            .unwrap_or_else(|| panic!("needle {needle:?} not in {src}"));
    let line = src[..off].matches('\n').count() as u32 + 1;
    let col = src[..off].rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
    (line, col)
}

fn run(src: &str, key: &str) -> Vec<crate::diag::Diagnostic> {
    let (_, doc) = load_config(src, 0, Limits::default()).unwrap_or_else(|e| panic!("{e}: {src}"));
    let node = doc
        .as_map()
        .and_then(|m| m.get(key))
        .unwrap_or_else(|| panic!("no key {key} in {src}"));
    validate_entry_fixture(key, node)
}

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let diags = run(case.yaml, case.key);
        let want = position(case.yaml, case.needle, case.after);
        match diags.iter().find(|d| d.message == case.message) {
            None => failures.push(format!(
                "{:?}\n  want {:?}\n  got  {:?}",
                case.yaml,
                case.message,
                diags.iter().map(|d| &d.message).collect::<Vec<_>>()
            )),
            Some(d) => {
                let got = d.span.map(|s| (s.line, s.col));
                if got != Some(want) {
                    failures.push(format!(
                        "{:?}\n  {:?} at {got:?}, want {want:?} ({:?})",
                        case.yaml, case.message, case.needle
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Configurations GitLab accepts: no error at all.
fn accept(cases: &[(&str, &str)]) {
    for (yaml, key) in cases {
        let diags = run(yaml, key);
        assert!(diags.is_empty(), "{yaml:?} should be accepted, got {diags:?}");
    }
}

#[test]
fn job_keys_and_shape() {
    check(&[
        c(
            "rspec:\n  script: test\n  foo: bar\n",
            "rspec",
            "jobs:rspec config contains unknown keys: foo",
            "foo",
        ),
        c(
            "rspec:\n  script: test\n  type: test\n",
            "rspec",
            "jobs:rspec config contains unknown keys: type",
            "type",
        ),
        c(
            "rspec:\n  before_script: [x]\n",
            "rspec",
            "jobs rspec config should implement the script:, run:, or trigger: keyword",
            "before_script",
        ),
        c(
            "my_job: 1\n",
            "my_job",
            "jobs my job config should implement the script:, run:, or trigger: keyword",
            "1",
        ),
        c(
            "rspec:\n  script: []\n",
            "rspec",
            "jobs:rspec script can't be blank",
            "[]",
        ),
        c(
            "rspec:\n  script: 1\n",
            "rspec",
            "jobs:rspec:script config should be a string or a nested array of strings up to 10 levels deep",
            "1",
        ),
        c(
            "rspec:\n  script: [[[[[[[[[[[x]]]]]]]]]]]\n",
            "rspec",
            "jobs:rspec:script config should be a string or a nested array of strings up to 10 levels deep",
            "[",
        ),
        c(
            "rspec:\n  script: x\n  before_script: [10, test]\n",
            "rspec",
            "jobs:rspec:before_script config should be a string or a nested array of strings up to 10 levels deep",
            "[10",
        ),
        c(
            "rspec:\n  script: x\n  run: [{name: a, script: b}]\n",
            "rspec",
            "jobs:rspec config these keys cannot be used together: script, run",
            "run",
        ),
        c(
            "rspec:\n  run:\n    - name: 1st\n      script: echo\n",
            "rspec",
            "jobs:rspec run string at `/0/name` does not match pattern: ^[a-za-z_][a-za-z0-9_]*$",
            "1st",
        ),
        c(
            "rspec:\n  run:\n    - name: a\n      script: echo\n      inputs: {x: 1}\n",
            "rspec",
            "jobs:rspec run object property at `/0/inputs` is a disallowed additional property",
            "{x",
        ),
        c(
            "rspec:\n  run:\n    - name: a\n      step:\n        git: {url: u}\n",
            "rspec",
            "jobs:rspec run value at `/0/step` does not match exactly one `oneof` schema",
            "git",
        ),
        c(
            "rspec:\n  run: echo\n",
            "rspec",
            "jobs:rspec run value at root is not an array",
            "echo",
        ),
        c(
            "rspec:\n  script: x\n  trigger: other/project\n",
            "rspec",
            "jobs:rspec config these keys cannot be used together: script, trigger",
            "trigger",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A}]\n  only: [main]\n",
            "rspec",
            "jobs:rspec config key may not be used with `rules`: only",
            "only",
        ),
        c(
            "rspec:\n  script: x\n  when: sometimes\n",
            "rspec",
            "jobs:rspec when should be one of: on_success, on_failure, always, manual, delayed",
            "sometimes",
        ),
        c(
            "rspec:\n  script: x\n  when: 1\n",
            "rspec",
            "jobs:rspec when should be a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  start_in: 1 day\n",
            "rspec",
            "jobs:rspec start in must be blank",
            "1 day",
        ),
        c(
            "rspec:\n  script: x\n  when: delayed\n",
            "rspec",
            "jobs:rspec start in should be a duration",
            "script",
        ),
        c(
            "rspec:\n  script: x\n  when: delayed\n  start_in: 2 weeks\n",
            "rspec",
            "jobs:rspec start in should not exceed the limit",
            "2 weeks",
        ),
        c(
            "rspec:\n  script: x\n  when: delayed\n  start_in: 7 days\n",
            "rspec",
            "jobs:rspec start in should not exceed the limit",
            "7 days",
        ),
        c(
            "rspec:\n  script: x\n  when: delayed\n  start_in: 1 elephant\n",
            "rspec",
            "jobs:rspec start in should be a duration",
            "1 elephant",
        ),
        c(
            "rspec:\n  script: x\n  tags: mysql\n",
            "rspec",
            "jobs:rspec:tags config should be an array of strings",
            "mysql",
        ),
        ca(
            "rspec:\n  script: x\n  tags: [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, t16, t17, t18, t19, t20, t21, t22, t23, t24, t25, t26, t27, t28, t29, t30, t31, t32, t33, t34, t35, t36, t37, t38, t39, t40, t41, t42, t43, t44, t45, t46, t47, t48, t49]\n",
            "rspec",
            "jobs:rspec:tags config must be less than the limit of 50 tags",
            "[",
            "tags: ",
        ),
        c(
            "rspec:\n  script: x\n  allow_failure: string\n",
            "rspec",
            "jobs:rspec allow failure should be a hash or a boolean value",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  allow_failure:\n    exit_codes: string\n",
            "rspec",
            "jobs:rspec:allow_failure exit codes should be an array of integers or an integer",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  dependencies: string\n",
            "rspec",
            "jobs:rspec dependencies should be an array of strings",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  extends: 1\n",
            "rspec",
            "jobs:rspec extends should be an array of strings or a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  resource_group: 1\n",
            "rspec",
            "jobs:rspec resource group should be a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  interruptible: sure\n",
            "rspec",
            "jobs:rspec:interruptible config should be a boolean value",
            "sure",
        ),
        c(
            "rspec:\n  script: x\n  manual_confirmation: 1\n",
            "rspec",
            "jobs:rspec manual confirmation should be a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  stage: 1\n",
            "rspec",
            "jobs:rspec:stage config should be a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  publish: public\n",
            "rspec",
            "jobs:rspec publish can only be used within a `pages` job",
            "public",
        ),
        c(
            "rspec:\n  script: x\n  pages: yes please\n",
            "rspec",
            "jobs:rspec:pages config should be a hash or a boolean value",
            "yes please",
        ),
        c(
            "rspec:\n  script: x\n  coverage: xyz\n",
            "rspec",
            "jobs:rspec:coverage config must be a regular expression with re2 syntax",
            "xyz",
        ),
        c(
            "rspec:\n  script: x\n  coverage: /(/\n",
            "rspec",
            "jobs:rspec:coverage config must be a regular expression with re2 syntax",
            "/(/",
        ),
        c(
            "rspec:\n  script: x\n  timeout: 1 elephant\n",
            "rspec",
            "jobs:rspec:timeout config should be a duration",
            "1 elephant",
        ),
        c(
            "rspec:\n  script: x\n  timeout: 2 months\n",
            "rspec",
            "jobs:rspec:timeout config should not exceed the limit",
            "2 months",
        ),
    ]);
    accept(&[
        (
            "rspec:\n  script: x\n  when: delayed\n  start_in: 1 day\n",
            "rspec",
        ),
        ("pages:\n  script: x\n  publish: public\n", "pages"),
        (
            "rspec:\n  script: x\n  pages: {path_prefix: x}\n  publish: public\n",
            "rspec",
        ),
        ("rspec:\n  run: [{name: a, script: b}]\n", "rspec"),
        (
            "rspec:\n  script: [[a, [b]], c]\n  coverage: /\\d+%/\n  timeout: 3h 30m\n",
            "rspec",
        ),
        (".hidden:\n  foo: bar\n", ".hidden"),
    ]);
}

#[test]
fn bridge_jobs() {
    check(&[
        c(
            "deploy:\n  trigger: 1\n",
            "deploy",
            "jobs:deploy:trigger has to be either a string or a hash",
            "1",
        ),
        c(
            "deploy:\n  trigger: ''\n",
            "deploy",
            "jobs:deploy:trigger config can't be blank",
            "''",
        ),
        c(
            "deploy:\n  trigger:\n    project: a/b\n    foo: 1\n",
            "deploy",
            "jobs:deploy:trigger config contains unknown keys: foo",
            "foo",
        ),
        c(
            "deploy:\n  trigger:\n    project: a/b\n    strategy: wait\n",
            "deploy",
            "jobs:deploy:trigger strategy should be depend or mirror",
            "wait",
        ),
        c(
            "deploy:\n  trigger:\n    include: [a.yml, b.yml, c.yml, d.yml]\n",
            "deploy",
            "jobs:deploy:trigger:include config is too long (maximum is 3)",
            "[a.yml",
        ),
        c(
            "deploy:\n  trigger:\n    include: {local: a.yml}\n",
            "deploy",
            "jobs:deploy:trigger:include config should be an array or a string",
            "{local",
        ),
        c(
            "deploy:\n  trigger: a/b\n  when: delayed\n",
            "deploy",
            "jobs:deploy when should be one of: on_success, on_failure, always, manual",
            "delayed",
        ),
        c(
            "deploy:\n  trigger: a/b\n  allow_failure: {exit_codes: 1}\n",
            "deploy",
            "jobs:deploy allow failure should be a boolean value",
            "{exit_codes",
        ),
        c(
            "deploy:\n  trigger: a/b\n  tags: [x]\n",
            "deploy",
            "jobs:deploy config contains unknown keys: tags",
            "tags",
        ),
        c(
            "deploy:\n  needs: [build]\n",
            "deploy",
            "jobs:deploy config should contain one of the keywords; trigger, status or needs:pipeline",
            "needs",
        ),
        c(
            "deploy:\n  trigger: a/b\n  parallel: 3\n",
            "deploy",
            "jobs:deploy:parallel config cannot use \"parallel: <number>\".",
            "3",
        ),
        c(
            "deploy:\n  trigger:\n    forward:\n      yaml_variables: yes please\n",
            "deploy",
            "jobs:deploy:trigger:forward yaml variables should be a boolean value",
            "yes please",
        ),
    ]);
    accept(&[
        ("deploy:\n  trigger: a/b\n", "deploy"),
        ("deploy:\n  needs: [{pipeline: $UPSTREAM}]\n", "deploy"),
        (
            "deploy:\n  trigger: {include: child.yml, strategy: depend}\n  parallel: {matrix: [{A: [1, 2]}]}\n",
            "deploy",
        ),
        (
            "deploy:\n  trigger: {project: a/b, branch: main, strategy: mirror, forward: {pipeline_variables: true}}\n",
            "deploy",
        ),
    ]);
}

#[test]
fn rules() {
    check(&[
        c(
            "rspec:\n  script: x\n  rules: string\n",
            "rspec",
            "jobs:rspec rules should be an array containing hashes and arrays of hashes",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: 1}]\n",
            "rspec",
            "jobs:rspec:rules:rule if invalid expression syntax",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{when: explode}]\n",
            "rspec",
            "jobs:rspec:rules:rule when unknown value: explode",
            "explode",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, when: false}]\n",
            "rspec",
            "jobs:rspec:rules:rule when unknown value: false",
            "false",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, start_in: 15 minutes}]\n",
            "rspec",
            "jobs:rspec:rules:rule config contains disallowed keys: start_in",
            "start_in",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, when: delayed}]\n",
            "rspec",
            "jobs:rspec:rules:rule start in can't be blank",
            "{if",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, when: delayed, start_in: 2 weeks}]\n",
            "rspec",
            "jobs:rspec:rules:rule start in should not exceed the limit",
            "2 weeks",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{invalid: something}]\n",
            "rspec",
            "jobs:rspec:rules:rule config contains unknown keys: invalid",
            "invalid",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{}]\n",
            "rspec",
            "jobs:rspec:rules:rule config can't be blank",
            "{}",
        ),
        c(
            "rspec:\n  script: x\n  rules: [[{if: $A}], string strategy]\n",
            "rspec",
            "jobs:rspec rules should be an array containing hashes and arrays of hashes",
            "[[",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{changes: a regular string}]\n",
            "rspec",
            "jobs:rspec:rules:rule:changes should be an array or a hash",
            "a regular string",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{changes: [1, 2]}]\n",
            "rspec",
            "jobs:rspec:rules:rule:changes config should be an array of strings",
            "[1",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{changes: {compare_to: main}}]\n",
            "rspec",
            "jobs:rspec:rules:rule:changes config missing required keys: paths",
            "{compare_to",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{exists: 1}]\n",
            "rspec",
            "jobs:rspec:rules:rule:exists should be a string, an array of strings, or a hash",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{exists: [1, 2, 3]}]\n",
            "rspec",
            "jobs:rspec:rules:rule:exists config should be an array of strings",
            "[1",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{exists: {paths: [a], ref: main}}]\n",
            "rspec",
            "jobs:rspec:rules:rule:exists config missing required keys: project",
            "{paths",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, allow_failure: always}]\n",
            "rspec",
            "jobs:rspec:rules:rule allow failure should be a boolean value",
            "always",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, interruptible: string}]\n",
            "rspec",
            "jobs:rspec:rules:rule interruptible should be a boolean value",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, variables: hello}]\n",
            "rspec",
            "jobs:rspec:rules:rule:variables config should be a hash",
            "hello",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, auto_cancel: {on_new_commit: none}}]\n",
            "rspec",
            "jobs:rspec:rules:rule config contains unknown keys: auto_cancel",
            "auto_cancel",
        ),
        c(
            "rspec:\n  script: x\n  rules: [{if: $A, needs: [{pipeline: $X}]}]\n",
            "rspec",
            "jobs:rspec:rules:rule:needs config uses invalid types: bridge",
            "[{pipeline",
        ),
    ]);
    let long: String = format!(
        "rspec:\n  script: x\n  rules: [{{changes: [{}]}}]\n",
        vec!["app/"; 51].join(", ")
    );
    let diags = run(&long, "rspec");
    assert!(
        diags
            .iter()
            .any(|d| d.message == "jobs:rspec:rules:rule:changes config has too many entries (maximum 50)"),
        "{diags:?}"
    );
    accept(&[
        (
            "rspec:\n  script: x\n  rules: [{when: manual}, {allow_failure: true}, {interruptible: true}]\n",
            "rspec",
        ),
        (
            "rspec:\n  script: x\n  rules: [{changes: {paths: [a/**], compare_to: main}}, {exists: a.md}]\n",
            "rspec",
        ),
        (
            "rspec:\n  script: x\n  rules: [{exists: {}}, {exists: null}, [{if: $A}]]\n",
            "rspec",
        ),
        (
            "rspec:\n  script: x\n  rules: [{if: $A, when: delayed, start_in: 2 days}]\n",
            "rspec",
        ),
        ("rspec:\n  script: x\n  rules: null\n  only: [main]\n", "rspec"),
    ]);
}

#[test]
fn only_except() {
    check(&[
        c(
            "rspec:\n  script: x\n  only: main\n",
            "rspec",
            "jobs:rspec:only has to be either an array of conditions or a hash",
            "main",
        ),
        c(
            "rspec:\n  script: x\n  only: [main, 1]\n",
            "rspec",
            "jobs:rspec:only config should be an array of strings or regular expressions using re2 syntax",
            "[main",
        ),
        c(
            "rspec:\n  script: x\n  except: ['/^(?!master).+/']\n",
            "rspec",
            "jobs:rspec:except config should be an array of strings or regular expressions using re2 syntax",
            "[",
        ),
        c(
            "rspec:\n  script: x\n  only: {refs: main}\n",
            "rspec",
            "jobs:rspec:only refs should be an array of strings or regular expressions using re2 syntax",
            "main",
        ),
        c(
            "rspec:\n  script: x\n  only: {kubernetes: inactive}\n",
            "rspec",
            "jobs:rspec:only kubernetes unknown value: inactive",
            "inactive",
        ),
        c(
            "rspec:\n  script: x\n  only: {foo: bar}\n",
            "rspec",
            "jobs:rspec:only config contains unknown keys: foo",
            "foo",
        ),
        c(
            "rspec:\n  script: x\n  only: {variables: $A}\n",
            "rspec",
            "jobs:rspec:only variables should be an array of strings",
            "$A",
        ),
    ]);
    accept(&[(
        "rspec:\n  script: x\n  only: {refs: [main, /^release-.*$/], variables: [$A], changes: [a], kubernetes: active}\n  except: [tags]\n",
        "rspec",
    )]);
}

#[test]
fn needs() {
    check(&[
        // `needs: []` is valid (start at once); only an empty hash is refused.
        c(
            "rspec:\n  script: x\n  needs: {}\n",
            "rspec",
            "jobs:rspec:needs config can not be an empty hash",
            "{}",
        ),
        c(
            "rspec:\n  script: x\n  needs: 1\n",
            "rspec",
            "jobs:rspec:needs config can only be a hash or an array",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  needs: [1]\n",
            "rspec",
            "jobs:rspec:needs:need has an unsupported type",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{job: a, foo: 1}]\n",
            "rspec",
            "jobs:rspec:needs:need config contains unknown keys: foo",
            "foo",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{job: }]\n",
            "rspec",
            "jobs:rspec:needs:need job can't be blank",
            "job",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{job: a, artifacts: nope}]\n",
            "rspec",
            "jobs:rspec:needs:need artifacts should be a boolean value",
            "nope",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{job: a, optional: nope}]\n",
            "rspec",
            "jobs:rspec:needs:need optional should be a boolean value",
            "nope",
        ),
        c(
            "rspec:\n  script: x\n  needs: [a]\n  dependencies: [a, b, c]\n",
            "rspec",
            "jobs:rspec dependencies the b, c should be part of needs",
            "[a, b",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{job: a, project: g/p, ref: main}]\n  dependencies: [a]\n",
            "rspec",
            "jobs:rspec needs corresponding to dependencies must be from the same pipeline",
            "[{job",
        ),
        c(
            "rspec:\n  script: x\n  allow_failure: maybe\n",
            "rspec",
            "jobs:rspec:allow_failure config should be a hash or a boolean value",
            "maybe",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{pipeline: $X}]\n",
            "rspec",
            "jobs:rspec:needs config uses invalid types: bridge",
            "[{pipeline",
        ),
        c(
            "rspec:\n  script: x\n  needs: [{job: a, parallel: {matrix: 10}}]\n",
            "rspec",
            "jobs:rspec:needs:need:parallel:matrix config should be an array of hashes",
            "10",
        ),
    ]);
    let many: String = format!(
        "rspec:\n  script: x\n  needs: [{}]\n",
        (0..51).map(|i| format!("j{i}")).collect::<Vec<_>>().join(", ")
    );
    let diags = run(&many, "rspec");
    assert!(
        diags.iter().any(|d| d.message
            == "rspec: one job can only need 50 others, but you have listed 51. See needs keyword documentation for more details"),
        "{diags:?}"
    );
    accept(&[("rspec:\n  script: x\n  needs: []\n", "rspec")]);
    accept(&[(
        "rspec:\n  script: x\n  needs: [a, {job: b, artifacts: false, optional: true}, {job: c, project: g/p, ref: main}, {job: d, pipeline: $P}, {job: e, parallel: {matrix: [{A: [x, y]}]}}]\n",
        "rspec",
    )]);
}

#[test]
fn retry_parallel() {
    check(&[
        c(
            "rspec:\n  script: x\n  retry: 3\n",
            "rspec",
            "retry config must be less than or equal to 2",
            "3",
        ),
        c(
            "rspec:\n  script: x\n  retry: -1\n",
            "rspec",
            "retry config must be greater than or equal to 0",
            "-1",
        ),
        c(
            "rspec:\n  script: x\n  retry: '2'\n",
            "rspec",
            "retry config has to be either an integer or a hash",
            "'2'",
        ),
        c(
            "rspec:\n  script: x\n  retry: {max: 2, foo: 1}\n",
            "rspec",
            "retry config contains unknown keys: foo",
            "foo",
        ),
        c(
            "rspec:\n  script: x\n  retry: {max: 2.5}\n",
            "rspec",
            "retry max must be an integer",
            "2.5",
        ),
        c(
            "rspec:\n  script: x\n  retry: {when: oops}\n",
            "rspec",
            "retry when is not included in the list",
            "oops",
        ),
        c(
            "rspec:\n  script: x\n  retry: {when: [api_failure, oops]}\n",
            "rspec",
            "retry when contains unknown values: oops",
            "[api_failure",
        ),
        c(
            "rspec:\n  script: x\n  retry: {exit_codes: '137'}\n",
            "rspec",
            "retry exit codes should be an array of integers or an integer",
            "'137'",
        ),
        c(
            "rspec:\n  script: x\n  parallel: 0\n",
            "rspec",
            "jobs:rspec:parallel config must be greater than or equal to 1",
            "0",
        ),
        c(
            "rspec:\n  script: x\n  parallel: 201\n",
            "rspec",
            "jobs:rspec:parallel config must be less than or equal to 200",
            "201",
        ),
        c(
            "rspec:\n  script: x\n  parallel: '5'\n",
            "rspec",
            "jobs:rspec:parallel should be an integer or a hash",
            "'5'",
        ),
        c(
            "rspec:\n  script: x\n  parallel: 1.5\n",
            "rspec",
            "jobs:rspec:parallel config must be an integer",
            "1.5",
        ),
        c(
            "rspec:\n  script: x\n  parallel: {foo: 1}\n",
            "rspec",
            "jobs:rspec:parallel config missing required keys: matrix",
            "{foo",
        ),
        c(
            "rspec:\n  script: x\n  parallel: {matrix: [{A: {b: c}}]}\n",
            "rspec",
            "jobs:rspec:parallel:matrix:variables config should be a hash of key value pairs, value can be an array",
            "{A",
        ),
    ]);
    let values: String = (0..15).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let big = format!(
        "rspec:\n  script: x\n  parallel:\n    matrix:\n      - A: [{values}]\n        B: [{values}]\n"
    );
    check(&[Case {
        yaml: Box::leak(big.into_boxed_str()),
        key: "rspec",
        message: "jobs:rspec:parallel:matrix config generates too many jobs (maximum is 200)",
        needle: "- A",
        after: "",
    }]);
    accept(&[
        (
            "rspec:\n  script: x\n  retry: {max: 2, when: [always, script_failure], exit_codes: [1, 137]}\n",
            "rspec",
        ),
        ("rspec:\n  script: x\n  retry: 0\n  parallel: 200\n", "rspec"),
        (
            "rspec:\n  script: x\n  parallel: {matrix: [{A: x}, {B: [1, 2], C: [x, y]}]}\n",
            "rspec",
        ),
    ]);
}

#[test]
fn cache_and_artifacts() {
    check(&[
        c(
            "rspec:\n  script: x\n  cache: {key: 1}\n",
            "rspec",
            "jobs:rspec:cache:key should be a hash, a string or a symbol",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: a/b}\n",
            "rspec",
            "jobs:rspec:cache:key config cannot contain the \"/\" character",
            "a/b",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: a%2Fb}\n",
            "rspec",
            "jobs:rspec:cache:key config cannot contain the \"/\" character",
            "a%2Fb",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: '..'}\n",
            "rspec",
            "jobs:rspec:cache:key config cannot be \".\" or \"..\"",
            "'..'",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: {files: [1]}}\n",
            "rspec",
            "jobs:rspec:cache:key:files config should be an array of strings",
            "[1",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: {files: []}}\n",
            "rspec",
            "jobs:rspec:cache:key:files config requires at least 1 item",
            "[]",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: {files: [a, b, c]}}\n",
            "rspec",
            "jobs:rspec:cache:key:files config has too many items (maximum is 2)",
            "[a",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: {prefix: p}}\n",
            "rspec",
            "jobs:rspec:cache:key config must use exactly one of these keys: files, files_commits",
            "{prefix",
        ),
        c(
            "rspec:\n  script: x\n  cache: {key: {prefix: 1, files: [f]}}\n",
            "rspec",
            "jobs:rspec:cache:key:prefix config should be a string or symbol",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  cache: {untracked: string}\n",
            "rspec",
            "jobs:rspec:cache:untracked config should be a boolean value",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  cache: {paths: string}\n",
            "rspec",
            "jobs:rspec:cache:paths config should be an array of strings",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  cache: {policy: fetch}\n",
            "rspec",
            "jobs:rspec:cache policy should be a variable or one of: pull-push, push, pull",
            "fetch",
        ),
        c(
            "rspec:\n  script: x\n  cache: {when: never}\n",
            "rspec",
            "jobs:rspec:cache when should be one of: on_success, on_failure, always",
            "never",
        ),
        c(
            "rspec:\n  script: x\n  cache: {fallback_keys: [a, b, c, d, e, f]}\n",
            "rspec",
            "jobs:rspec:cache fallback keys has to many entries (maximum 5)",
            "[a",
        ),
        ca(
            "rspec:\n  script: x\n  cache: [a]\n",
            "rspec",
            "jobs:rspec:cache config should be a hash",
            "a",
            "cache: [",
        ),
        ca(
            "rspec:\n  script: x\n  cache: a\n",
            "rspec",
            "jobs:rspec:caches config can only be a hash or an array",
            "a",
            "cache: ",
        ),
        c(
            "rspec:\n  script: x\n  cache: [{key: a}, {key: b}, {key: c}, {key: d}, {key: e}]\n",
            "rspec",
            "jobs:rspec:caches config no more than 4 caches can be created",
            "[",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {name: 1}\n",
            "rspec",
            "jobs:rspec:artifacts name should be a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {when: 1}\n",
            "rspec",
            "jobs:rspec:artifacts when should be one of: on_success, on_failure, always",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {expire_in: 7 elephants}\n",
            "rspec",
            "jobs:rspec:artifacts expire in should be a duration",
            "7 elephants",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {expire_in: 1}\n",
            "rspec",
            "jobs:rspec:artifacts expire in should be a duration",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {untracked: string}\n",
            "rspec",
            "jobs:rspec:artifacts untracked should be a boolean value",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {paths: string}\n",
            "rspec",
            "jobs:rspec:artifacts paths should be an array of strings",
            "string",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {expose_as: Report, paths: [a/*.html]}\n",
            "rspec",
            "jobs:rspec:artifacts paths can't contain '*' when used with 'expose_as'",
            "[a",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {expose_as: 'x/y', paths: [a.html]}\n",
            "rspec",
            "jobs:rspec:artifacts expose as can contain only letters, digits, '-', '_' and spaces",
            "'x/y'",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {expose_as: Report}\n",
            "rspec",
            "jobs:rspec:artifacts paths can't be blank",
            "{expose_as",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {public: true, access: all}\n",
            "rspec",
            "jobs:rspec:artifacts config these keys cannot be used together: public, access",
            "access",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {access: everyone}\n",
            "rspec",
            "jobs:rspec:artifacts access should be one of: none, developer, all",
            "everyone",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {reports: {junit: 1}}\n",
            "rspec",
            "jobs:rspec:artifacts:reports junit should be an array of strings or a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {reports: {foo: x}}\n",
            "rspec",
            "jobs:rspec:artifacts:reports config contains unknown keys: foo",
            "foo",
        ),
        c(
            "rspec:\n  script: x\n  artifacts: {reports: {coverage_report: {coverage_format: lcov, path: x}}}\n",
            "rspec",
            "jobs:rspec:artifacts:reports:coverage_report coverage format must be one of supported formats: cobertura, jacoco",
            "lcov",
        ),
    ]);
    accept(&[
        (
            "rspec:\n  script: x\n  cache: {key: {files_commits: [a], prefix: $CI_JOB_NAME}, policy: $POLICY, when: always, unprotect: true, fallback_keys: [a]}\n",
            "rspec",
        ),
        (
            "rspec:\n  script: x\n  cache: [{key: a, paths: [x]}, {key: b.c, untracked: true}]\n",
            "rspec",
        ),
        (
            "rspec:\n  script: x\n  artifacts: {expose_as: My Report, paths: [a.html], exclude: [b], expire_in: never, access: developer, reports: {junit: a.xml, dotenv: [b.env], coverage_report: {coverage_format: cobertura, path: c.xml}}}\n",
            "rspec",
        ),
    ]);
}

#[test]
fn image_services() {
    check(&[
        c(
            "rspec:\n  script: x\n  image: [test]\n",
            "rspec",
            "jobs:rspec:image config should be a hash or a string",
            "[test]",
        ),
        c(
            "rspec:\n  script: x\n  image: {entrypoint: [a]}\n",
            "rspec",
            "jobs:rspec:image name can't be blank",
            "{entrypoint",
        ),
        c(
            "rspec:\n  script: x\n  image: {name: a, entrypoint: /bin/sh}\n",
            "rspec",
            "jobs:rspec:image entrypoint should be an array of strings",
            "/bin/sh",
        ),
        c(
            "rspec:\n  script: x\n  image: {name: a, ports: [80]}\n",
            "rspec",
            "jobs:rspec:image config contains disallowed keys: ports",
            "ports",
        ),
        c(
            "rspec:\n  script: x\n  image: {name: a, foo: 1}\n",
            "rspec",
            "jobs:rspec:image config contains unknown keys: foo",
            "foo",
        ),
        c(
            "rspec:\n  script: x\n  image: {name: a, pull_policy: [always, sometimes]}\n",
            "rspec",
            "jobs:rspec:image:pull_policy config contains unknown values: sometimes",
            "[always",
        ),
        c(
            "rspec:\n  script: x\n  image: {name: a, docker: {platform: [arm64]}}\n",
            "rspec",
            "jobs:rspec:image executor opts value at `/docker/platform` is not a string",
            "[arm64]",
        ),
        c(
            "rspec:\n  script: x\n  services: test\n",
            "rspec",
            "jobs:rspec:services config should be a array",
            "test",
        ),
        c(
            "rspec:\n  script: x\n  services: [10, test]\n",
            "rspec",
            "jobs:rspec:services:service config should be a hash or a string",
            "10",
        ),
        c(
            "rspec:\n  script: x\n  services: [{name: a, alias: 1}]\n",
            "rspec",
            "jobs:rspec:services:service alias should be a string",
            "1",
        ),
        c(
            "rspec:\n  script: x\n  services: [{name: a, command: {x: y}}]\n",
            "rspec",
            "jobs:rspec:services:service:command config should be a string or a nested array of strings up to 10 levels deep",
            "{x",
        ),
        c(
            "rspec:\n  script: x\n  image: {name: a, pull_policy: sometimes}\n",
            "rspec",
            "jobs:rspec:image:pull_policy config is not included in the list",
            "sometimes",
        ),
        c(
            "rspec:\n  script: x\n  services: [{name: a, variables: [x]}]\n",
            "rspec",
            "jobs:rspec:services:service:variables config should be a hash",
            "[x]",
        ),
    ]);
    accept(&[(
        "rspec:\n  script: x\n  image: {name: a, entrypoint: [''], pull_policy: if-not-present, docker: {platform: arm64, user: dave}, kubernetes: {user: 1001}}\n  services: [b, {name: c, alias: db, command: [x], variables: {A: b}, pull_policy: [always, never]}]\n",
        "rspec",
    )]);
}

#[test]
fn environment_release_and_misc() {
    check(&[
        c(
            "deploy:\n  script: x\n  environment: 1\n",
            "deploy",
            "jobs:deploy:environment config should be a hash or a string",
            "1",
        ),
        c(
            "deploy:\n  script: x\n  environment: {url: x}\n",
            "deploy",
            "jobs:deploy:environment name can't be blank",
            "{url",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: 'a/'}\n",
            "deploy",
            "jobs:deploy:environment name can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'",
            "'a/'",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: a, url: 1}\n",
            "deploy",
            "jobs:deploy:environment url should be a string",
            "1",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: a, action: destroy}\n",
            "deploy",
            "jobs:deploy:environment action should be start, stop, prepare, verify, or access",
            "destroy",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: a, deployment_tier: prod}\n",
            "deploy",
            "jobs:deploy:environment deployment tier must be one of production, staging, testing, development, other",
            "prod",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: a, auto_stop_in: forever}\n",
            "deploy",
            "jobs:deploy:environment auto stop in should be a duration",
            "forever",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: a, kubernetes: {foo: 1}}\n",
            "deploy",
            "jobs:deploy:environment:kubernetes config contains unknown keys: foo",
            "foo",
        ),
        c(
            "deploy:\n  script: x\n  environment: {name: a, kubernetes: {flux_resource_path: p}}\n",
            "deploy",
            "jobs:deploy:environment:kubernetes agent can't be blank",
            "{flux",
        ),
        c(
            "deploy:\n  script: x\n  inherit: {variables: [1]}\n",
            "deploy",
            "jobs:deploy:inherit:variables config should be an array of strings",
            "[1]",
        ),
        c(
            "deploy:\n  script: x\n  release: {description: d}\n",
            "deploy",
            "jobs:deploy:release tag name can't be blank",
            "{description",
        ),
        c(
            "deploy:\n  script: x\n  release: {tag_name: v1}\n",
            "deploy",
            "jobs:deploy:release description can't be blank",
            "{tag_name",
        ),
        c(
            "deploy:\n  script: x\n  release: {tag_name: v1, description: d, ref: 'a..b'}\n",
            "deploy",
            "jobs:deploy:release ref must be a valid ref",
            "'a..b'",
        ),
        c(
            "deploy:\n  script: x\n  release: {tag_name: 1, description: d}\n",
            "deploy",
            "jobs:deploy:release tag name should be a string",
            "1",
        ),
        c(
            "deploy:\n  script: x\n  secrets: {K: {gcp_secret_manager: {name: n}}}\n",
            "deploy",
            "jobs:deploy:secrets:k token is required with gcp secrets manager",
            "{gcp",
        ),
        c(
            "deploy:\n  script: x\n  release: {tag_name: v1, description: d, released_at: yesterday}\n",
            "deploy",
            "jobs:deploy:release released at must be a valid datetime",
            "yesterday",
        ),
        c(
            "deploy:\n  script: x\n  hooks: {invalid_script: [a]}\n",
            "deploy",
            "jobs:deploy:hooks config contains unknown keys: invalid_script",
            "invalid_script",
        ),
        c(
            "deploy:\n  script: x\n  hooks: {pre_get_sources_script: true}\n",
            "deploy",
            "jobs:deploy:hooks:pre_get_sources_script config should be a string or a nested array of strings up to 10 levels deep",
            "true",
        ),
        c(
            "deploy:\n  script: x\n  id_tokens: {TOKEN: {sub: x}}\n",
            "deploy",
            "jobs:deploy:id_tokens:token config missing required keys: aud",
            "{sub",
        ),
        c(
            "deploy:\n  script: x\n  id_tokens: {TOKEN: {aud: {a: b}}}\n",
            "deploy",
            "jobs:deploy:id_tokens:token aud should be an array of strings or a string",
            "{a:",
        ),
        c(
            "deploy:\n  script: x\n  secrets: {DB: {token: $T}}\n",
            "deploy",
            "jobs:deploy:secrets:db config must use exactly one of these keys: vault, azure_key_vault, gcp_secret_manager, akeyless, gitlab_secrets_manager, aws_secrets_manager",
            "{token",
        ),
        c(
            "deploy:\n  script: x\n  secrets: {DB: {vault: {path: p}}}\n",
            "deploy",
            "jobs:deploy:secrets:db:vault config missing required keys: engine, field",
            "{path",
        ),
        c(
            "deploy:\n  script: x\n  inherit: {default: [script]}\n",
            "deploy",
            "jobs:deploy:inherit:default config contains unknown values: script",
            "[script]",
        ),
        c(
            "deploy:\n  script: x\n  inherit: {default: 1}\n",
            "deploy",
            "jobs:deploy:inherit:default should be a bool or array of strings",
            "1",
        ),
        c(
            "deploy:\n  script: x\n  inherit: {foo: true}\n",
            "deploy",
            "jobs:deploy:inherit config contains unknown keys: foo",
            "foo",
        ),
        c(
            "deploy:\n  script: x\n  variables: {A: {value: x, description: d}}\n",
            "deploy",
            "jobs:deploy:variables:a config uses invalid data keys: description",
            "description",
        ),
        c(
            "deploy:\n  script: x\n  variables: {A: {value: x, expand: okay}}\n",
            "deploy",
            "jobs:deploy:variables:a config expand should be a boolean value",
            "okay",
        ),
        c(
            "deploy:\n  script: x\n  variables: {A: [x]}\n",
            "deploy",
            "variable definition must be either a string or a hash",
            "[x]",
        ),
        c(
            "deploy:\n  script: x\n  variables: [x]\n",
            "deploy",
            "jobs:deploy:variables config should be a hash",
            "[x]",
        ),
    ]);
    accept(&[(
        "deploy:\n  script: x\n  environment: {name: review/$CI_COMMIT_REF_SLUG, url: https://x, action: stop, on_stop: stop_review, auto_stop_in: 1 day, deployment_tier: staging, kubernetes: {namespace: ns}}\n  release: {tag_name: v1, description: d, released_at: '2026-01-01T00:00:00Z', milestones: [m1], assets: {links: [{name: n, url: https://x}]}}\n  hooks: {pre_get_sources_script: [a]}\n  id_tokens: {T: {aud: [a, b]}}\n  secrets: {DB: {vault: db/password@ops, file: false}, K: {gcp_secret_manager: {name: n, version: 2}, token: $T}}\n  inherit: {default: [image, tags], variables: false}\n  variables: {A: {value: x, expand: false}, B: 1}\n",
        "deploy",
    )]);
}

#[test]
fn default_workflow_variables_stages_include() {
    check(&[
        c(
            "default:\n  script: x\n",
            "default",
            "default config contains unknown keys: script",
            "script",
        ),
        c("default: 1\n", "default", "default config should be a hash", "1"),
        c(
            "default:\n  before_script: 0.1\n",
            "default",
            "default:before_script config should be a string or a nested array of strings up to 10 levels deep",
            "0.1",
        ),
        c(
            "default:\n  retry: 5\n",
            "default",
            "retry config must be less than or equal to 2",
            "5",
        ),
        c(
            "workflow:\n  foo: 1\n",
            "workflow",
            "workflow config contains unknown keys: foo",
            "foo",
        ),
        c(
            "workflow:\n  rules: [{if: $A, when: on_success}]\n",
            "workflow",
            "workflow:rules:rule when unknown value: on_success",
            "on_success",
        ),
        c(
            "workflow:\n  name: ''\n",
            "workflow",
            "workflow name is too short (minimum is 1 character)",
            "''",
        ),
        c(
            "workflow:\n  auto_cancel: {on_new_commit: xyz}\n",
            "workflow",
            "workflow:auto_cancel on new commit must be one of: conservative, interruptible, none",
            "xyz",
        ),
        c(
            "workflow:\n  auto_cancel: {on_job_failure: 1}\n",
            "workflow",
            "workflow:auto_cancel on job failure should be a string",
            "1",
        ),
        c(
            "workflow:\n  rules: [{if: $A, auto_cancel: {on_job_failure: some}}]\n",
            "workflow",
            "workflow:rules:rule:auto_cancel on job failure must be one of: none, all",
            "some",
        ),
        c(
            "variables: test\n",
            "variables",
            "variables config should be a hash",
            "test",
        ),
        c(
            "variables:\n  VAR1: {invalid: hello}\n",
            "variables",
            "variables:var1 config uses invalid data keys: invalid",
            "invalid",
        ),
        c(
            "variables:\n  A: {value: x, options: staging}\n",
            "variables",
            "variables:a config options should be an array of strings",
            "staging",
        ),
        c(
            "variables:\n  A: {value: x, options: [y, z]}\n",
            "variables",
            "variables:a config value must be present in options",
            "{value",
        ),
        c(
            "variables:\n  A: false\n",
            "variables",
            "variable definition must be either a string or a hash",
            "false",
        ),
        c(
            "stages: test\n",
            "stages",
            "stages config should be an array of strings or a nested array of strings up to 10 levels deep",
            "test",
        ),
        c(
            "stages: [1, 2]\n",
            "stages",
            "stages config should be an array of strings or a nested array of strings up to 10 levels deep",
            "[1",
        ),
        c(
            "include:\n  - project: group/p\n",
            "include",
            "include:include config must specify the file where to fetch the config from",
            "project",
        ),
        c(
            "include:\n  - artifact: a.yml\n",
            "include",
            "include:include config must specify the job where to fetch the artifact from",
            "artifact",
        ),
        c(
            "include:\n  - foo: a.yml\n",
            "include",
            "include:include config contains unknown keys: foo",
            "foo",
        ),
        c(
            "include: 1\n",
            "include",
            "include config should be an array or a string",
            "1",
        ),
        c(
            "include: [1]\n",
            "include",
            "include:include config should be a hash or a string",
            "1",
        ),
        c(
            "include:\n  - local: a.yml\n    rules: [{if: $A, when: on_success}]\n",
            "include",
            "include:include:rules:rule when unknown value: on_success",
            "on_success",
        ),
        c(
            "include:\n  - remote: https://x/a.yml\n    integrity: md5-abc\n",
            "include",
            "include:include config integrity hash must start with 'sha256-'",
            "md5-abc",
        ),
        c(
            "include:\n  - local: a.yml\n    integrity: sha256-abc=\n",
            "include",
            "include:include config integrity can only be specified for remote includes",
            "sha256",
        ),
    ]);
    accept(&[
        (
            "default:\n  image: ruby\n  before_script: [a]\n  tags: [x]\n  retry: 2\n  interruptible: true\n",
            "default",
        ),
        (
            "workflow:\n  name: Pipeline $X\n  auto_cancel: {on_new_commit: interruptible, on_job_failure: all}\n  rules: [{if: $A, when: always, variables: {X: y}, auto_cancel: {on_new_commit: none}}, {when: never}]\n",
            "workflow",
        ),
        (
            "variables:\n  A: x\n  B: 1\n  C: {value: y, description: d, options: [y, z], expand: false}\n  D: {description: only}\n",
            "variables",
        ),
        ("stages: [build, [test, [deploy]]]\n", "stages"),
        ("include: a.yml\n", "include"),
        (
            "include:\n  - local: a.yml\n    rules: [{exists: [a]}, {changes: [b], when: never}]\n  - {project: g/p, file: [a.yml], ref: main}\n  - {template: Auto-DevOps.gitlab-ci.yml}\n  - {component: gitlab.com/g/c@1.0, inputs: {a: b}}\n  - {remote: https://x/a.yml, integrity: sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=}\n",
            "include",
        ),
    ]);
}

/// The checker records each distinct message once, as GitLab's `errors.full_messages | uniq`.
#[test]
fn duplicate_messages_are_reported_once() {
    let mut ck = Checker::default();
    let (_, doc) = load_config("a: 1\n", 0, Limits::default()).unwrap_or_else(|e| panic!("{e}"));
    let node = doc
        .as_map()
        .and_then(|m| m.get("a"))
        .unwrap_or_else(|| panic!("no a"));
    super::job(&mut ck, "jobs:a", "a", node);
    super::job(&mut ck, "jobs:a", "a", node);
    assert_eq!(ck.diags.len(), 1);
}

mod properties {
    //! The checks see any YAML a user writes: they must never panic, and every message must
    //! be lowercase and start with the key path it belongs to.
    use proptest::prelude::*;

    use super::super::super::validate_entry_fixture;
    use super::super::{percent_decode, valid_git_ref};
    use crate::yaml::{Mapping, Node, Span, Value};

    /// Keys that reach deep into the checks, plus noise.
    const KEYS: &[&str] = &[
        "script",
        "run",
        "trigger",
        "needs",
        "rules",
        "if",
        "when",
        "changes",
        "exists",
        "paths",
        "project",
        "ref",
        "cache",
        "key",
        "files",
        "prefix",
        "artifacts",
        "reports",
        "coverage_report",
        "image",
        "services",
        "name",
        "docker",
        "kubernetes",
        "user",
        "parallel",
        "matrix",
        "retry",
        "max",
        "exit_codes",
        "environment",
        "action",
        "variables",
        "value",
        "options",
        "expand",
        "include",
        "local",
        "file",
        "job",
        "pipeline",
        "secrets",
        "vault",
        "engine",
        "id_tokens",
        "aud",
        "release",
        "assets",
        "links",
        "inherit",
        "default",
        "only",
        "except",
        "refs",
        "start_in",
        "allow_failure",
        "auto_cancel",
        "on_new_commit",
        "hooks",
        "pages",
        "publish",
        "integrity",
        "remote",
        "x",
        "A",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "[a-z/%.$*+ _-]{0,12}".prop_map(Value::Str),
            prop::sample::select(KEYS).prop_map(|k| Value::Str(k.to_string())),
        ]
    }

    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| Value::Seq(v.into_iter().map(Node::synthetic).collect())),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                    let mut m = Mapping::new();
                    for (k, v) in kv {
                        m.insert(k.to_string(), Span::default(), Node::synthetic(v));
                    }
                    Value::Map(m)
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn checks_never_panic_and_messages_carry_their_path(
            top in prop::sample::select(&["rspec", "deploy", "default", "workflow", "variables", "stages", "include", "pages"][..]),
            value in tree(),
        ) {
            let node = Node::synthetic(value);
            for d in validate_entry_fixture(top, &node) {
                // Entry messages are lowercased; the verbatim needs-limit message is not.
                if !d.message.contains(": one job can only need") {
                    prop_assert_eq!(d.message.to_lowercase(), d.message.clone());
                }
                let known_prefix = d.message.starts_with(&format!("jobs:{top}"))
                    || d.message.starts_with("jobs ")
                    || d.message.starts_with(top)
                    || d.message.starts_with("retry ")
                    || d.message.starts_with("retry config")
                    || d.message.starts_with(&format!("{top}: one job"))
                    || d.message == "variable definition must be either a string or a hash";
                prop_assert!(known_prefix, "{}", d.message);
            }
        }

        #[test]
        fn percent_decode_never_panics(s in ".{0,24}") {
            let _ = percent_decode(&s);
        }

        #[test]
        fn git_refs_with_forbidden_parts_are_refused(a in "[a-z]{1,6}", b in "[a-z]{1,6}") {
            let ok = format!("{a}/{b}");
            let dots = format!("{a}..{b}");
            let space = format!("{a} {b}");
            let lock = format!("{a}/{b}.lock");
            prop_assert!(valid_git_ref(&ok));
            prop_assert!(!valid_git_ref(&dots));
            prop_assert!(!valid_git_ref(&space));
            prop_assert!(!valid_git_ref(&lock));
        }
    }
}
