//! GitLab's JSON-schema fixtures (`spec/frontend/editor/schema/ci/yaml_tests/`), run through
//! podci's entry checks.
//!
//! Per `MANIFEST.txt`: for a `per-key` file every top-level key is checked on its own (a job
//! key through the job entry, `default`, `workflow`, `variables`, `stages`, `include` through
//! theirs); for a `whole-file` file each top-level key names a case whose value is a whole
//! configuration. A positive case must produce no error; a negative case at least one.
//!
//! Many fixture jobs leave out `script:`, which the schema allows and GitLab's backend does
//! not. Those are listed by name in [`SCRIPTLESS`] (the test checks the list is exact): for
//! each, the backend's refusal ("config should implement the script:, run:, or trigger:
//! keyword") is asserted, and then the keyword under test is judged on the same job with a
//! `script` added, so a negative case cannot pass merely for lacking a script.
//!
//! Elsewhere the schema and the backend disagree in both directions. Those cases are listed
//! in [`EXCEPTIONS`] by name with the reason, and the backend's behaviour is asserted
//! instead. `spec:` (the component header) and input type checks are not entries
//! ([`NOT_ENTRIES`]).
//!
//! The fixtures are read from `<repo>/../shared/conformance/gitlab/schema-tests`; the test
//! fails with a message naming that path when they are absent.

use std::collections::BTreeSet;
use std::path::PathBuf;

use podci_model::testing::validate_entry_fixture;
use podci_model::yaml::{Limits, Node, Value, load_config};

/// What GitLab's backend does where it differs from the schema.
enum Backend {
    /// The backend rejects the case with (at least) this exact message.
    Rejects(&'static str),
    /// The backend accepts the case.
    Accepts,
}

struct Exception {
    polarity: &'static str,
    file: &'static str,
    case: &'static str,
    reason: &'static str,
    backend: Backend,
}

/// Cases where the backend is stricter (positives it rejects) or looser (negatives it accepts).
const EXCEPTIONS: &[Exception] = &[
    Exception {
        polarity: "positive",
        file: "include.yml",
        case: "trigger:include accepts project and file properties",
        reason: "the job has both `script` and `trigger`: the backend makes it a plain job and refuses the pair",
        backend: Backend::Rejects(
            "jobs:trigger:include accepts project and file properties config these keys cannot be used together: script, trigger",
        ),
    },
    Exception {
        polarity: "negative",
        file: "script.yml",
        case: "script",
        reason: "a top-level `script:` is a job named `script` whose value is no hash; rejected for exactly that",
        backend: Backend::Rejects(
            "jobs script config should implement the script:, run:, or trigger: keyword",
        ),
    },
    Exception {
        polarity: "negative",
        file: "include.yml",
        case: "trigger missing project property",
        reason: "`trigger:include: [{file}]` passes the entry checks; the child pipeline fails when the file is fetched",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "rules_needs.yml",
        case: "lint_job",
        reason: "`rules:needs: null` is `nil`, which every entry treats as not given",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "retry.yml",
        case: "invalid_job_with_retry_exit_codes_duplicate",
        reason: "`array_of_integers_or_integer` does not check for duplicates",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "artifacts.yml",
        case: "browser_performance no paths",
        reason: "`reports:browser_performance: null` is nil, which `allow_nil` skips",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "artifacts.yml",
        case: "browser_performance list of string paths",
        reason: "the backend validates every report type with `array_of_strings_or_string`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "artifacts.yml",
        case: "browser_performance mixed list of string paths and globs",
        reason: "the backend validates every report type with `array_of_strings_or_string`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "artifacts.yml",
        case: "browser_performance string array",
        reason: "the backend validates every report type with `array_of_strings_or_string`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "artifacts.yml",
        case: "cyclonedx no paths",
        reason: "`reports:cyclonedx: null` is nil, which `allow_nil` skips",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "image.yml",
        case: "empty_image",
        reason: "`image: null` is an unspecified entry",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "rules.yml",
        case: "rules-if-empty",
        reason: "`if: null` is nil, which `allow_nil` skips",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "rules.yml",
        case: "rules:exists as string",
        reason: "`Rules::Rule::Exists` still accepts a string (SimpleExists)",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "services.yml",
        case: "empty_services",
        reason: "`services: null` is an unspecified entry",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "services.yml",
        case: "empty_entrypoint",
        reason: "an empty array passes `array_of_strings`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "services.yml",
        case: "empty_command",
        reason: "an empty array passes `array_of_strings`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "positive",
        file: "include.yml",
        case: "trigger:include accepts optional ref property",
        reason: "the job has both `script` and `trigger`: the backend makes it a plain job and refuses the pair",
        backend: Backend::Rejects(
            "jobs:trigger:include accepts optional ref property config these keys cannot be used together: script, trigger",
        ),
    },
    Exception {
        polarity: "negative",
        file: "image.yml",
        case: "image_with_empty_executor_opts",
        reason: "`Imageable#executor_opts` compacts nil options away, so an empty `docker:`/`kubernetes:` is no option at all",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "image.yml",
        case: "image_with_empty_executor_opts_kubernetes",
        reason: "`Imageable#executor_opts` compacts nil options away, so an empty `docker:`/`kubernetes:` is no option at all",
        backend: Backend::Accepts,
    },
    // Negatives the backend accepts (the schema checks project paths; the backend resolves
    // them only when it creates the downstream pipeline or fetches the include).
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-minimal-invalid-variable",
        reason: "backend does not check the project path format of `trigger:`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-minimal-leading-slash",
        reason: "backend does not check the project path format of `trigger:`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-minimal-no-slash",
        reason: "backend does not check the project path format of `trigger:`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-minimal-trailing-slash",
        reason: "backend does not check the project path format of `trigger:`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-project-invalid-variable",
        reason: "backend does not check the format of `trigger:project`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-project-leading-slash",
        reason: "backend does not check the format of `trigger:project`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-include-empty",
        reason: "`project: ''` is truthy in Ruby and `file` is given, so the include entry accepts it",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-include-invalid",
        reason: "backend does not check the format of `trigger:include:project`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-include-leading-slash",
        reason: "backend does not check the format of `trigger:include:project`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-include-no-slash",
        reason: "backend does not check the format of `trigger:include:project`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "trigger.yml",
        case: "trigger-include-trailing-slash",
        reason: "backend does not check the format of `trigger:include:project`",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "project_path/include/invalid_variable.yml",
        case: "include",
        reason: "backend checks `include:project` only when fetching (project not found)",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "project_path/include/leading_slash.yml",
        case: "include",
        reason: "backend checks `include:project` only when fetching (project not found)",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "project_path/include/no_slash.yml",
        case: "include",
        reason: "backend checks `include:project` only when fetching (project not found)",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "project_path/include/tailing_slash.yml",
        case: "include",
        reason: "backend checks `include:project` only when fetching (project not found)",
        backend: Backend::Accepts,
    },
    Exception {
        polarity: "negative",
        file: "project_path/include/empty.yml",
        case: "include",
        reason: "an empty `project` is not `present?`, so the entry accepts it; fetching fails later",
        backend: Backend::Accepts,
    },
];

fn fixtures_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    repo.join("../shared/conformance/gitlab/schema-tests")
}

fn load(path: &PathBuf) -> Node {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    match load_config(&src, 0, Limits::default()) {
        Ok((_, doc)) => doc,
        Err(e) => panic!("{}: YAML error: {e}", path.display()),
    }
}

/// Runs every top-level key of `doc`; returns the error messages.
fn check_document(doc: &Node) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = doc.as_map() {
        for (k, v) in m.iter() {
            out.extend(validate_entry_fixture(k, v).into_iter().map(|d| d.message));
        }
    }
    out
}

const NO_KEYWORD: &str = "config should implement the script:, run:, or trigger: keyword";

/// Top-level keys that are not jobs.
const GLOBAL_KEYS: &[&str] = &[
    "default",
    "workflow",
    "variables",
    "stages",
    "types",
    "include",
    "before_script",
    "after_script",
    "image",
    "services",
    "cache",
    "spec",
];

/// A fixture job that has none of `script`, `run`, `trigger`, `needs`. The schema accepts
/// such a job; GitLab's backend refuses it (`Entry::Jobs`: "config should implement the
/// script:, run:, or trigger: keyword"), so for these the test asserts that refusal and then
/// judges the keyword under test on the same job with `script` added.
fn scriptless(case: &str, value: &Node) -> bool {
    !GLOBAL_KEYS.contains(&case)
        && !case.starts_with('.')
        && value.as_map().is_some_and(|m| {
            !["script", "run", "trigger", "needs"]
                .iter()
                .any(|k| m.contains_key(k))
        })
}

fn with_script(value: &Node) -> Node {
    let mut m = value.as_map().cloned().unwrap_or_default();
    m.insert(
        "script".into(),
        value.span,
        Node::synthetic(Value::Str("true".into())),
    );
    Node {
        value: Value::Map(m),
        span: value.span,
    }
}

/// Every fixture case that is a job without `script`/`run`/`trigger`/`needs` (see
/// [`scriptless`]): the backend rejects each one as it stands.
const SCRIPTLESS: &[(&str, &str, &str)] = &[
    ("positive", "artifacts.yml", "browser_performance string path"),
    ("positive", "artifacts.yml", "cyclonedx string path"),
    ("positive", "artifacts.yml", "cyclonedx glob path"),
    ("positive", "artifacts.yml", "cylonedx list of string paths"),
    (
        "positive",
        "artifacts.yml",
        "cylonedx mixed list of string paths and globs",
    ),
    ("positive", "artifacts.yml", "coverage-report-cobertura"),
    ("positive", "artifacts.yml", "coverage-report-null"),
    ("positive", "artifacts.yml", "artifacts-when-on-failure"),
    ("positive", "artifacts.yml", "artifacts-no-when"),
    ("positive", "artifacts.yml", "artifacts-access-developer"),
    ("positive", "artifacts.yml", "artifacts-access-all"),
    ("positive", "artifacts.yml", "artifacts-access-none"),
    (
        "positive",
        "artifacts.yml",
        "annotations-report-annotations-normal",
    ),
    ("positive", "image.yml", "valid_image"),
    ("positive", "image.yml", "valid_image_basic"),
    ("positive", "image.yml", "valid_image_with_entrypoint"),
    ("positive", "image.yml", "valid_image_with_pull_policy"),
    ("positive", "image.yml", "valid_image_with_pull_policies"),
    ("positive", "image.yml", "valid_image_with_docker"),
    ("positive", "image.yml", "valid_image_with_docker_user"),
    (
        "positive",
        "image.yml",
        "valid_image_with_docker_multiple_options",
    ),
    ("positive", "image.yml", "valid_image_full"),
    ("positive", "image.yml", "valid_image_with_kubernetes_uid"),
    ("positive", "image.yml", "valid_image_with_kubernetes_uid_and_gid"),
    ("positive", "image.yml", "valid_image_full_with_kubernetes"),
    ("positive", "filter.yml", "only as null value"),
    ("positive", "filter.yml", "except as null value"),
    ("positive", "rules.yml", "rules-null"),
    ("positive", "rules.yml", "rules:exists as an array"),
    ("positive", "rules.yml", "rules:exists:paths"),
    ("positive", "rules.yml", "rules:exists:project"),
    ("positive", "rules.yml", "rules:exists:project with ref"),
    ("positive", "services.yml", "valid_services_list"),
    ("positive", "services.yml", "valid_services_object"),
    ("positive", "services.yml", "services_with_variables"),
    ("negative", "artifacts.yml", "browser_performance no paths"),
    (
        "negative",
        "artifacts.yml",
        "browser_performance list of string paths",
    ),
    (
        "negative",
        "artifacts.yml",
        "browser_performance mixed list of string paths and globs",
    ),
    ("negative", "artifacts.yml", "browser_performance string array"),
    ("negative", "artifacts.yml", "cyclonedx no paths"),
    ("negative", "artifacts.yml", "cyclonedx not a report"),
    ("negative", "artifacts.yml", "cyclonedx not an array or string"),
    ("negative", "artifacts.yml", "coverage-report-is-string"),
    ("negative", "artifacts.yml", "performance string path"),
    ("negative", "artifacts.yml", "artifacts-when-unknown"),
    ("negative", "artifacts.yml", "artifacts-when-array"),
    ("negative", "artifacts.yml", "artifacts-when-boolean"),
    ("negative", "artifacts.yml", "artifacts-access-all"),
    ("negative", "artifacts.yml", "artifacts-access-invalid-value"),
    (
        "negative",
        "artifacts.yml",
        "annotations-report-annotations-not-string",
    ),
    ("negative", "image.yml", "empty_image"),
    ("negative", "image.yml", "multi_image_array"),
    ("negative", "image.yml", "image_without_name"),
    ("negative", "image.yml", "image_with_invalid_entrypoint"),
    ("negative", "image.yml", "image_with_empty_pull_policy"),
    ("negative", "image.yml", "invalid_image_platform"),
    ("negative", "image.yml", "invalid_image_user"),
    ("negative", "image.yml", "empty_image_user"),
    ("negative", "image.yml", "invalid_image_executor_opts"),
    ("negative", "image.yml", "image_with_empty_executor_opts"),
    ("negative", "image.yml", "invalid_image_user_kubernetes"),
    ("negative", "image.yml", "empty_image_user_kubernetes"),
    ("negative", "image.yml", "invalid_image_executor_opts_kubernetes"),
    (
        "negative",
        "image.yml",
        "image_with_empty_executor_opts_kubernetes",
    ),
    ("negative", "rules.yml", "rules-if-empty"),
    ("negative", "rules.yml", "rules:exists as string"),
    ("negative", "rules.yml", "rules:exists as integer"),
    ("negative", "rules.yml", "rules:exists:paths as string"),
    ("negative", "rules.yml", "rules:exists:project without paths"),
    ("negative", "rules.yml", "rules:exists:ref without project"),
    ("negative", "id_tokens.yml", "id_token_with_wrong_aud_type"),
    ("negative", "id_tokens.yml", "id_token_with_extra_properties"),
    ("negative", "services.yml", "empty_services"),
    ("negative", "services.yml", "without_name"),
    ("negative", "services.yml", "invalid_entrypoint"),
    ("negative", "services.yml", "empty_entrypoint"),
    ("negative", "services.yml", "empty_command"),
];

/// Cases with no backend counterpart: `spec:` is the component header (checked with
/// `include:inputs` by the header pass, not by entries) and the spec/inputs type mismatches
/// are checked when inputs are interpolated.
const NOT_ENTRIES: &[(&str, &str, &str)] = &[
    ("positive", "spec_inputs.yml", "spec"),
    ("negative", "spec_inputs.yml", "type_mismatch_string"),
    ("negative", "spec_inputs.yml", "type_mismatch_number"),
    ("negative", "spec_inputs.yml", "type_mismatch_boolean"),
    ("negative", "spec_inputs.yml", "type_mismatch_array"),
    ("negative", "spec_inputs.yml", "invalid_input_type"),
    ("negative", "spec_inputs.yml", "invalid_property"),
    ("negative", "spec_inputs.yml", "include_invalid_input_name"),
    ("negative", "spec_inputs.yml", "trigger_invalid_input"),
];

#[test]
fn gitlab_schema_fixtures() {
    let dir = fixtures_dir();
    let manifest = dir.join("MANIFEST.txt");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "conformance fixtures not found at {} ({e}); the repository expects a copy of shared/ beside it",
            manifest.display()
        )
    });
    let mut failures = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    let mut checked = 0;
    let mut seen_scriptless: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [polarity, file, rule] = parts[..] else {
            panic!("bad MANIFEST line: {line}");
        };
        let doc = load(&dir.join(polarity).join(file));
        let Some(map) = doc.as_map() else {
            panic!("{polarity}/{file}: not a mapping")
        };
        for (case, value) in map.iter() {
            if NOT_ENTRIES
                .iter()
                .any(|(p, f, c)| *p == polarity && *f == file && *c == case)
            {
                continue;
            }
            checked += 1;
            let scriptless_case = rule == "per-key" && scriptless(case, value);
            let mut errors: Vec<String> = match rule {
                "per-key" => validate_entry_fixture(case, value)
                    .into_iter()
                    .map(|d| d.message)
                    .collect(),
                "whole-file" => check_document(value),
                other => panic!("unknown MANIFEST rule {other}"),
            };
            if scriptless_case {
                seen_scriptless.push(format!("    (\"{polarity}\", \"{file}\", \"{case}\"),"));
                let expected = format!("jobs {} {NO_KEYWORD}", case.replace('_', " ")).to_lowercase();
                if !errors.contains(&expected) {
                    failures.push(format!(
                        "{polarity}/{file} [{case}]: expected {expected:?} as it stands, got {errors:?}"
                    ));
                }
                errors = validate_entry_fixture(case, &with_script(value))
                    .into_iter()
                    .map(|d| d.message)
                    .collect();
            }
            if std::env::var_os("PODCI_FIXTURE_DUMP").is_some() {
                eprintln!("{polarity}/{file} [{case}]: {errors:?}");
            }
            if let Some((i, ex)) = EXCEPTIONS
                .iter()
                .enumerate()
                .find(|(_, e)| e.polarity == polarity && e.file == file && e.case == case)
            {
                used_exceptions.insert(i);
                match ex.backend {
                    Backend::Accepts if !errors.is_empty() => failures.push(format!(
                        "{polarity}/{file} [{case}]: backend accepts ({}), podci said {errors:?}",
                        ex.reason
                    )),
                    Backend::Rejects(msg) if !errors.iter().any(|e| e == msg) => failures.push(format!(
                        "{polarity}/{file} [{case}]: backend rejects with {msg:?} ({}), podci said {errors:?}",
                        ex.reason
                    )),
                    _ => {}
                }
                continue;
            }
            match polarity {
                "positive" if !errors.is_empty() => {
                    failures.push(format!("{polarity}/{file} [{case}]: rejected: {errors:?}"))
                }
                "negative" if errors.is_empty() => {
                    failures.push(format!("{polarity}/{file} [{case}]: accepted"))
                }
                _ => {}
            }
        }
    }
    for (i, ex) in EXCEPTIONS.iter().enumerate() {
        if !used_exceptions.contains(&i) {
            failures.push(format!(
                "exception for {}/{} [{}] matches no fixture",
                ex.polarity, ex.file, ex.case
            ));
        }
    }
    let listed: Vec<String> = SCRIPTLESS
        .iter()
        .map(|(p, f, c)| format!("    (\"{p}\", \"{f}\", \"{c}\"),"))
        .collect();
    if listed != seen_scriptless {
        failures.push(format!(
            "SCRIPTLESS is out of date; the fixtures have:\n{}",
            seen_scriptless.join("\n")
        ));
    }
    assert!(checked > 300, "only {checked} fixture cases found");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
