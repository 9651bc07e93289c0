//! Conversion glue between podci-model's types and the plain JSON shapes the page reads.
//!
//! Everything here is a pure function over podci-model values, so it is tested natively;
//! the `#[wasm_bindgen]` layer in `lib.rs` only turns these JSON values into JS values.

use std::collections::BTreeMap;

use podci_model::eval::{Decision, Evaluation, PipelineContext, Variable, VariableLevel};
use podci_model::yaml::{Node, Value};
use podci_model::{Diagnostic, MemorySource, Pipeline, Severity};
use serde::Deserialize;
use serde_json::{Value as J, json};

/// The token shown in previewed payloads: the page never has a real job token, and a
/// placeholder makes clear where GitLab would put one.
pub const PREVIEW_TOKEN: &str = "[job token]";

/// What the context bar sends: the commit and pipeline that rules are evaluated for.
/// Every field is optional so that the page can send only what the user changed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextInput {
    /// Branch or tag name (default `main`).
    #[serde(rename = "ref")]
    pub ref_name: Option<String>,
    /// The ref is a tag.
    pub tag: bool,
    /// Pipeline source (default `push`).
    pub source: Option<String>,
    /// The project's default branch (default `main`).
    pub default_branch: Option<String>,
    /// The ref is protected (protected variables only reach protected refs).
    pub protected: bool,
    /// Pipeline variables, as `{key, value}` pairs in the order given.
    pub variables: Vec<VariableInput>,
    /// Files changed by the push, for `rules:changes`; absent means unknown.
    pub changed_files: Option<Vec<String>>,
    /// Files that exist in the repository, for `rules:exists`.
    pub existing_files: Vec<String>,
    /// Merge request source branch (with `mr_target`, makes an MR pipeline context).
    pub mr_source: Option<String>,
    /// Merge request target branch.
    pub mr_target: Option<String>,
    /// Commit message (`$CI_COMMIT_MESSAGE`).
    pub commit_message: Option<String>,
}

/// One variable typed into the context bar.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VariableInput {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Errors a caller can fix: they name the field that was wrong.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Parses the context bar's JSON into the model's context.
pub fn context_from_json(text: &str) -> Result<PipelineContext, InputError> {
    let input: ContextInput = if text.trim().is_empty() || text.trim() == "null" || text.trim() == "undefined"
    {
        ContextInput::default()
    } else {
        serde_json::from_str(text).map_err(|e| InputError(format!("invalid pipeline context: {e}")))?
    };
    Ok(context_from_input(input))
}

/// Builds the model's context from the page's input, keeping the model's defaults for what
/// the page does not set.
pub fn context_from_input(input: ContextInput) -> PipelineContext {
    let mut ctx = PipelineContext::default();
    if let Some(b) = input.default_branch.filter(|b| !b.is_empty()) {
        ctx.default_branch = b;
    }
    ctx.ref_name = input
        .ref_name
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| ctx.default_branch.clone());
    ctx.tag = input.tag;
    if let Some(s) = input.source.filter(|s| !s.is_empty()) {
        ctx.source = s;
    }
    ctx.protected_ref = input.protected;
    ctx.variables = input
        .variables
        .into_iter()
        .filter(|v| !v.key.is_empty())
        .map(|v| Variable::plain(&v.key, &v.value, VariableLevel::Pipeline))
        .collect();
    ctx.changed_files = input.changed_files;
    ctx.existing_files = input.existing_files;
    if let (Some(s), Some(t)) = (input.mr_source, input.mr_target) {
        ctx.merge_request = Some((s, t));
    }
    if let Some(m) = input.commit_message {
        ctx.commit_message = m;
    }
    ctx
}

/// Parses `{"path": "content", ...}` (files dropped on the page) into a source for
/// `include:local`.
pub fn files_from_json(text: &str) -> Result<MemorySource, InputError> {
    let mut source = MemorySource::new();
    if text.trim().is_empty() || text.trim() == "null" || text.trim() == "undefined" {
        return Ok(source);
    }
    let files: BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|e| InputError(format!("files must map each path to its text: {e}")))?;
    for (path, content) in files {
        source = source.with_file(&path, &content);
    }
    Ok(source)
}

/// One diagnostic as `{severity, message, file, line, column}` (line and column 0 when
/// GitLab gives no position).
pub fn diagnostic_json(d: &Diagnostic, p: &Pipeline) -> J {
    let (file, line, col) = match d.span {
        Some(s) => (p.sources.name(s.file).to_string(), s.line, s.col),
        None => (p.sources.name(0).to_string(), 0, 0),
    };
    json!({
        "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
        "message": d.message,
        "file": file,
        "line": line,
        "column": col,
    })
}

/// All diagnostics of the pipeline.
pub fn diagnostics_json(p: &Pipeline) -> J {
    J::Array(p.diagnostics.iter().map(|d| diagnostic_json(d, p)).collect())
}

/// The jobs as configured: name, stage, when, needs, instances and where each is defined.
pub fn jobs_json(p: &Pipeline) -> J {
    J::Array(
        p.jobs
            .iter()
            .map(|j| {
                let needs = j.needs.as_ref().map(|n| {
                    n.iter()
                        .map(|n| json!({"job": n.job, "optional": n.optional, "artifacts": n.artifacts, "external": n.external}))
                        .collect::<Vec<_>>()
                });
                json!({
                    "name": j.name,
                    "stage": j.stage,
                    "when": j.when,
                    "allow_failure": j.allow_failure,
                    "trigger": j.trigger,
                    "needs": needs,
                    "instances": j.instances,
                    "file": p.sources.name(j.span.file),
                    "line": j.span.line,
                })
            })
            .collect(),
    )
}

/// The `rules:` entry at `index` of `job`, as compact JSON text (what the page shows as
/// "the rule that decided").
pub fn rule_text(p: &Pipeline, job: &str, index: usize) -> Option<String> {
    let rules = p.job(job)?.config.get("rules")?.as_seq()?;
    let rule = rules.get(index)?;
    serde_json::to_string(&rule.to_json()).ok()
}

/// The evaluation: whether the pipeline is created, the jobs that run, and for every
/// configured job whether it runs and why.
pub fn evaluation_json(p: &Pipeline, e: &Evaluation) -> J {
    let decisions: Vec<J> = e
        .decisions
        .iter()
        .map(|(job, d)| {
            let (runs, reason, rule) = match d {
                Decision::Created { rule: Some(i) } => (true, "rule matched".to_string(), Some(*i)),
                Decision::Created { rule: None } => (true, "no rules: runs".to_string(), None),
                Decision::NoRuleMatched => (false, "no rule matched".to_string(), None),
                Decision::Never { rule } => (false, "rule says when: never".to_string(), Some(*rule)),
                Decision::OnlyExcept => (false, "excluded by only/except".to_string(), None),
            };
            json!({
                "job": job,
                "runs": runs,
                "reason": reason,
                "rule": rule,
                "rule_text": rule.and_then(|i| rule_text(p, job, i)),
            })
        })
        .collect();
    let jobs: Vec<J> = e
        .jobs
        .iter()
        .map(|j| {
            json!({
                "name": j.name,
                "job": j.job,
                "stage": j.stage,
                "when": j.when,
                "allow_failure": j.allow_failure,
                "needs": j.needs.as_ref().map(|n| n.iter().map(|(name, _, _)| name.clone()).collect::<Vec<_>>()),
            })
        })
        .collect();
    json!({
        "created": e.created,
        "name": e.name,
        "jobs": jobs,
        "decisions": decisions,
        "errors": e.errors.iter().map(|d| diagnostic_json(d, p)).collect::<Vec<_>>(),
    })
}

/// The merged configuration of one job (`default:` applied, `extends` merged,
/// `!reference` replaced) as YAML.
pub fn job_yaml(p: &Pipeline, job: &str) -> Option<String> {
    let j = p.job(job)?;
    let mut root = podci_model::yaml::Mapping::new();
    root.insert(
        j.name.clone(),
        j.span,
        Node::synthetic(Value::Map(j.config.clone())),
    );
    Some(podci_model::emit::to_yaml(&Node::synthetic(Value::Map(root))))
}

/// The payload GitLab would send a runner for one job instance, as JSON, with a
/// placeholder token.
pub fn payload_json(p: &Pipeline, e: &Evaluation, ctx: &PipelineContext, instance: &str) -> Option<J> {
    let payload = p.payload(e, instance, ctx, PREVIEW_TOKEN)?;
    serde_json::to_value(&payload).ok()
}

/// The whole merged configuration as YAML (includes inlined, extends merged).
pub fn merged_yaml(p: &Pipeline) -> String {
    podci_model::emit::to_yaml(&p.config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podci_model::{LoadOptions, load};

    fn lint(y: &str) -> Pipeline {
        load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default())
    }

    #[test]
    fn context_defaults_and_fields() {
        let c = context_from_json("").unwrap();
        assert_eq!(
            (c.ref_name.as_str(), c.source.as_str(), c.tag),
            ("main", "push", false)
        );
        let c = context_from_json(
            r#"{"ref":"v1.0","tag":true,"source":"web","variables":[{"key":"A","value":"1"},{"key":"","value":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(c.ref_name, "v1.0");
        assert!(c.tag);
        assert_eq!(c.source, "web");
        assert_eq!(c.variables.len(), 1);
        assert_eq!(c.variables[0].level, VariableLevel::Pipeline);
        let err = context_from_json(r#"{"branch":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `branch`"), "{err}");
    }

    #[test]
    fn files_reach_include_local() {
        let files = files_from_json(r#"{"ci/build.yml":"build:\n  script: make\n"}"#).unwrap();
        let p = load(
            ".gitlab-ci.yml",
            "include: ci/build.yml\n",
            &files,
            &LoadOptions::default(),
        );
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        assert_eq!(jobs_json(&p)[0]["name"], "build");
        assert!(files_from_json("[1]").is_err());
    }

    #[test]
    fn decisions_carry_the_rule_text() {
        let p = lint(
            "a:\n  script: x\n  rules:\n    - if: $CI_COMMIT_TAG\n      when: never\n    - when: always\nb:\n  script: x\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n",
        );
        let ctx = context_from_json(r#"{"ref":"dev"}"#).unwrap();
        let e = evaluation_json(&p, &p.evaluate(&ctx));
        let d = e["decisions"].as_array().unwrap();
        assert_eq!(d[0]["runs"], true);
        assert_eq!(d[0]["rule"], 1);
        assert_eq!(d[0]["rule_text"], r#"{"when":"always"}"#);
        assert_eq!(d[1]["runs"], false);
        assert_eq!(d[1]["reason"], "no rule matched");
        let ctx = context_from_json(r#"{"ref":"v1","tag":true}"#).unwrap();
        let e = evaluation_json(&p, &p.evaluate(&ctx));
        assert_eq!(e["decisions"][0]["reason"], "rule says when: never");
        assert_eq!(
            e["decisions"][0]["rule_text"],
            r#"{"if":"$CI_COMMIT_TAG","when":"never"}"#
        );
    }

    #[test]
    fn job_yaml_and_payload() {
        let p = lint(
            ".base:\n  image: alpine\n  variables: {A: '1'}\njob:\n  extends: .base\n  script: [echo hi]\n",
        );
        let y = job_yaml(&p, "job").unwrap();
        assert!(y.starts_with("job:\n"), "{y}");
        assert!(y.contains("image: alpine"), "{y}");
        let ctx = PipelineContext::default();
        let e = p.evaluate(&ctx);
        let pl = payload_json(&p, &e, &ctx, "job").unwrap();
        assert_eq!(pl["image"]["name"], "alpine");
        assert_eq!(pl["token"], PREVIEW_TOKEN);
        assert_eq!(pl["steps"][0]["script"][0], "echo hi");
        assert!(payload_json(&p, &e, &ctx, "nope").is_none());
        assert!(merged_yaml(&p).contains("job:"));
    }

    #[test]
    fn diagnostics_have_positions() {
        let p = lint("a:\n  stage: nope\n  script: x\n");
        let d = diagnostics_json(&p);
        assert_eq!(d[0]["severity"], "error");
        assert_eq!(d[0]["line"], 2);
        assert_eq!(d[0]["file"], ".gitlab-ci.yml");
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        /// The page's inputs are parsed without panicking, whatever they hold.
        #[test]
        fn inputs_never_panic(text in ".{0,200}") {
            let _ = context_from_json(&text);
            let _ = files_from_json(&text);
        }

        #[test]
        fn variables_keep_order_and_values(pairs in proptest::collection::vec(("[A-Z_]{1,8}", ".{0,20}"), 0..8)) {
            let vars: Vec<serde_json::Value> = pairs.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            let c = context_from_json(&json!({"variables": vars}).to_string()).unwrap();
            let got: Vec<(String, String)> = c.variables.iter().map(|v| (v.key.clone(), v.value.clone())).collect();
            proptest::prop_assert_eq!(got, pairs);
        }
    }
}
