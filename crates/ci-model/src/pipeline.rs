//! The validated pipeline: root entries, jobs with `default:` applied, stages, and the
//! cross-job checks of `Gitlab::Ci::YamlProcessor`.

use std::collections::{HashMap, HashSet};

use crate::compose::{ComposeOptions, IncludeRuleEval, compose};
use crate::diag::{Diagnostic, Severity};
use crate::source::FileSource;
use crate::validate::{self, Checker, entries};
use crate::yaml::{Mapping, Node, SourceMap, Span, Value};

/// Keys at the root of `.gitlab-ci.yml` that are not jobs (`Entry::Root`).
pub const ROOT_KEYWORDS: &[&str] = &[
    "default",
    "include",
    "before_script",
    "image",
    "services",
    "after_script",
    "variables",
    "stages",
    "types",
    "cache",
    "workflow",
];

/// Keys a job inherits from `default:` (`Entry::Default::ALLOWED_KEYS` that jobs inherit).
pub const INHERITABLE_KEYS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// GitLab's stages when `stages:` is not given.
pub const DEFAULT_STAGES: &[&str] = &[".pre", "build", "test", "deploy", ".post"];

/// A validated pipeline configuration.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Stages in order, including `.pre` and `.post`.
    pub stages: Vec<String>,
    /// Visible jobs in configuration order, with `default:` applied.
    pub jobs: Vec<Job>,
    /// The merged configuration (includes inlined, extends merged, `!reference` replaced).
    pub config: Node,
    /// File names that spans point into (0 is the main file).
    pub sources: SourceMap,
    /// Errors and warnings, in GitLab's wording.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read through `include:`.
    pub included: Vec<String>,
}

/// One job as written (before `parallel` expansion).
#[derive(Clone, Debug)]
pub struct Job {
    /// The job's name (its key).
    pub name: String,
    /// Its stage (default `test`).
    pub stage: String,
    /// `when:` (default `on_success`).
    pub when: String,
    /// `allow_failure:` as GitLab defaults it (true for `when: manual` without rules).
    pub allow_failure: bool,
    /// `needs:`; `None` means stage ordering.
    pub needs: Option<Vec<Need>>,
    /// The job's configuration with `default:` (and root globals) applied.
    pub config: Mapping,
    /// Where the job is defined.
    pub span: Span,
    /// A trigger job (`trigger:`) rather than a script job.
    pub trigger: bool,
    /// Names of the jobs GitLab creates for it (`job 1/3`, `job: [a, b]`, or just `job`).
    pub instances: Vec<String>,
}

/// One entry of `needs:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The needed job (a job name of this pipeline, or of another project/pipeline).
    pub job: String,
    /// Download its artifacts.
    pub artifacts: bool,
    /// Ignore when the job is not in the pipeline.
    pub optional: bool,
    /// The need refers to another project or pipeline, not a job of this one.
    pub external: bool,
}

impl Pipeline {
    /// Whether GitLab would accept the configuration.
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// Errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// A job by name.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Options for [`load`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Options for includes.
    pub compose: ComposeOptions,
}

/// Reads, composes and validates a `.gitlab-ci.yml`.
pub fn load(name: &str, src: &str, source: &dyn FileSource, options: &LoadOptions) -> Pipeline {
    let rule_eval: IncludeRuleEval<'_> = &crate::rules::include_rules_match;
    let composed = compose(name, src, source, &options.compose, Some(rule_eval));
    let mut pipeline = Pipeline {
        stages: DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
        jobs: Vec::new(),
        config: composed.config,
        sources: composed.sources,
        diagnostics: composed.diagnostics,
        included: composed.included,
    };
    if !pipeline.diagnostics.is_empty() {
        return pipeline;
    }
    if src.trim().is_empty() {
        pipeline.diagnostics.push(Diagnostic::error(
            "Please provide content of .gitlab-ci.yml",
            Some(pipeline.config.span),
        ));
        return pipeline;
    }
    let mut ck = Checker::default();
    // Borrow the configuration while jobs are added, without copying it.
    let config = std::mem::replace(&mut pipeline.config, Node::synthetic(Value::Null));
    build(&mut pipeline, &config, &mut ck);
    pipeline.config = config;
    pipeline.diagnostics.extend(ck.diags);
    pipeline
}

fn build(p: &mut Pipeline, config: &Node, ck: &mut Checker) {
    let Some(root) = config.as_map() else {
        ck.verbatim(Some(config.span), "Invalid configuration format");
        return;
    };

    // Root entries.
    if let Some(v) = validate::present(root, "variables") {
        entries::variables(ck, "variables", v, true);
    }
    let stages_node = validate::present(root, "stages").or_else(|| validate::present(root, "types"));
    if let Some(s) = stages_node {
        let key = if validate::present(root, "stages").is_some() {
            "stages"
        } else {
            "types"
        };
        entries::stages(ck, key, s);
    }
    if let Some(d) = validate::present(root, "default") {
        entries::default(ck, d);
    }
    if let Some(w) = validate::present(root, "workflow") {
        entries::workflow(ck, w);
    }
    // Deprecated globals are validated like `default:` keywords, but at the root.
    let mut globals = Mapping::new();
    for k in ["image", "services", "before_script", "after_script", "cache"] {
        if let Some(v) = validate::present(root, k) {
            globals.insert(k.to_string(), root.key_span(k).unwrap_or_default(), v.clone());
        }
    }
    if !globals.is_empty() {
        let mut sub = Checker::default();
        entries::default(&mut sub, &Node::synthetic(Value::Map(globals.clone())));
        for d in sub.diags {
            let msg = d
                .message
                .strip_prefix("default:")
                .unwrap_or(&d.message)
                .to_string();
            ck.verbatim(d.span, msg);
        }
    }

    p.stages = stages_from(stages_node);

    // `default:` merged over the root globals (GitLab moves globals into default).
    let mut defaults = globals;
    if let Some(d) = validate::present(root, "default").and_then(Node::as_map) {
        for (k, s, v) in d.clone().into_entries() {
            defaults.insert(k, s, v);
        }
    }
    let root_variables: Vec<String> = validate::present(root, "variables")
        .and_then(Node::as_map)
        .map(|m| m.keys().map(str::to_string).collect())
        .unwrap_or_default();

    // `Entry::Workflow#has_rules?`: the job warning below is only given without them.
    let has_workflow_rules = validate::present(root, "workflow")
        .and_then(Node::as_map)
        .is_some_and(|w| validate::present(w, "rules").is_some());

    // Jobs.
    let mut visible = 0usize;
    for (name, key_span, node) in root.iter_spanned() {
        if ROOT_KEYWORDS.contains(&name) {
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        let loc = format!("jobs:{name}");
        let is_job = node
            .as_map()
            .is_some_and(|m| m.contains_key("script") || m.contains_key("run"));
        let is_bridge = node.as_map().is_some_and(|m| m.contains_key("trigger"));
        if !is_job && !is_bridge {
            ck.entry(
                "jobs",
                key_span,
                format!("{name} config should implement the script:, run:, or trigger: keyword"),
            );
            continue;
        }
        visible += 1;
        entries::job(ck, &loc, name, node);
        let Some(map) = node.as_map() else { continue };
        if is_job && !has_workflow_rules {
            multiple_pipelines_warning(ck, &loc, map);
        }
        let job = make_job(
            name,
            key_span,
            map,
            &defaults,
            &root_variables,
            is_bridge && !is_job,
        );
        p.jobs.push(job);
    }
    if visible == 0 {
        ck.entry(
            "jobs",
            p.config.span,
            "config should contain at least one visible job",
        );
    }
    if ck.has_errors() {
        return;
    }
    cross_job_checks(p, ck);
}

/// Stages as `EdgeStagesInjector` leaves them: `.pre` first and `.post` last.
fn stages_from(node: Option<&Node>) -> Vec<String> {
    let Some(list) = node.and_then(Node::as_seq) else {
        return DEFAULT_STAGES.iter().map(|s| s.to_string()).collect();
    };
    let mut stages: Vec<String> = list.iter().filter_map(Node::scalar_to_string).collect();
    if stages.first().map(String::as_str) != Some(".pre") {
        stages.retain(|s| s != ".pre");
        stages.insert(0, ".pre".into());
    }
    if stages.last().map(String::as_str) != Some(".post") {
        stages.retain(|s| s != ".post");
        stages.push(".post".into());
    }
    stages
}

fn inherit_setting(map: &Mapping, what: &str) -> Option<Node> {
    map.get("inherit")
        .and_then(Node::as_map)
        .and_then(|m| m.get(what))
        .cloned()
}

fn inherits(setting: &Option<Node>, key: &str) -> bool {
    match setting.as_ref().map(|n| &n.value) {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::Seq(items)) => items.iter().any(|i| i.as_str() == Some(key)),
        _ => true,
    }
}

fn make_job(
    name: &str,
    span: Span,
    map: &Mapping,
    defaults: &Mapping,
    root_variables: &[String],
    trigger: bool,
) -> Job {
    let mut config = map.clone();
    let inherit_default = inherit_setting(map, "default");
    if !trigger {
        for key in INHERITABLE_KEYS {
            if validate::present(&config, key).is_none()
                && inherits(&inherit_default, key)
                && let Some(v) = validate::present(defaults, key)
            {
                config.insert(key.to_string(), defaults.key_span(key).unwrap_or(span), v.clone());
            }
        }
    }
    let _ = root_variables;
    let text = |k: &str| validate::present(&config, k).and_then(Node::scalar_to_string);
    let stage = text("stage").unwrap_or_else(|| "test".into());
    let has_rules = validate::present(&config, "rules").is_some();
    let when = text("when").unwrap_or_else(|| "on_success".into());
    let allow_failure = match validate::present(&config, "allow_failure").map(|n| &n.value) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Map(_)) => false,
        _ => when == "manual" && !has_rules,
    };
    let needs = validate::present(&config, "needs").map(parse_needs);
    let instances = instance_names(name, validate::present(&config, "parallel"));
    Job {
        name: name.to_string(),
        stage,
        when,
        allow_failure,
        needs,
        config,
        span,
        trigger,
        instances,
    }
}

/// Parses `needs:` (strings and hashes; `parallel:matrix` needs become instance names).
pub fn parse_needs(node: &Node) -> Vec<Need> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(s) => s.iter().collect(),
        _ => vec![node],
    };
    let mut out = Vec::new();
    for item in items {
        match &item.value {
            Value::Str(s) => out.push(Need {
                job: s.clone(),
                artifacts: true,
                optional: false,
                external: false,
            }),
            Value::Map(m) => {
                let Some(job) = m.get("job").and_then(Node::scalar_to_string) else {
                    continue;
                };
                let artifacts = m.get("artifacts").and_then(Node::as_bool).unwrap_or(true);
                let optional = m.get("optional").and_then(Node::as_bool).unwrap_or(false);
                let external = m.contains_key("project") || m.contains_key("pipeline");
                let matrix = m
                    .get("parallel")
                    .and_then(Node::as_map)
                    .and_then(|p| p.get("matrix"));
                match matrix {
                    Some(mx) if !external => {
                        for n in matrix_names(&job, mx) {
                            out.push(Need {
                                job: n,
                                artifacts,
                                optional,
                                external,
                            });
                        }
                    }
                    _ => out.push(Need {
                        job,
                        artifacts,
                        optional,
                        external,
                    }),
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `s` holds a matrix expression (`$[[ matrix.NAME ]]`).
pub fn has_matrix_expression(s: &str) -> bool {
    s.contains("$[[")
}

/// Replaces each `$[[ matrix.NAME ]]` in `s` with the value of `NAME` in `vars` (one
/// instance's `parallel:matrix` values). GitLab allows these only in
/// `needs:parallel:matrix` values and resolves them when it creates the pipeline, by
/// plain string replacement; an identifier the job's matrix lacks is left as written (the
/// need then names no job, which is reported as such).
pub fn interpolate_matrix(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("$[[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let resolved = after.find("]]").and_then(|end| {
            let ident = after[..end].trim().strip_prefix("matrix.")?;
            let value = vars.iter().rev().find(|(k, _)| k == ident).map(|(_, v)| v)?;
            Some((value, end))
        });
        match resolved {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("$[[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Each instance's `parallel:matrix` values, in instance order (empty without a matrix).
pub(crate) fn instance_matrix_values(job: &Job) -> Vec<Vec<(String, String)>> {
    crate::eval::matrix_variables(job.config.get("parallel"))
}

/// The names GitLab gives the jobs of `parallel:` (`Config::Normalizer`).
pub fn instance_names(name: &str, parallel: Option<&Node>) -> Vec<String> {
    match parallel.map(|n| &n.value) {
        Some(Value::Int(n)) if *n > 1 && *n <= 200 => (1..=*n).map(|i| format!("{name} {i}/{n}")).collect(),
        Some(Value::Map(m)) => match m.get("matrix") {
            Some(mx) => {
                let names = matrix_names(name, mx);
                if names.is_empty() {
                    vec![name.to_string()]
                } else {
                    names
                }
            }
            None => vec![name.to_string()],
        },
        _ => vec![name.to_string()],
    }
}

/// `job: [a, b]` names for every combination of a `matrix:` list, first key slowest.
pub fn matrix_names(name: &str, matrix: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let Some(entries) = matrix.as_seq() else {
        return out;
    };
    for entry in entries {
        let Some(m) = entry.as_map() else { continue };
        let mut combos: Vec<Vec<String>> = vec![Vec::new()];
        for (_, v) in m.iter() {
            let values: Vec<String> = match &v.value {
                Value::Seq(s) => s.iter().filter_map(Node::scalar_to_string).collect(),
                _ => v.scalar_to_string().into_iter().collect(),
            };
            let mut next = Vec::with_capacity(combos.len() * values.len().max(1));
            for c in &combos {
                for val in &values {
                    let mut c2 = c.clone();
                    c2.push(val.clone());
                    next.push(c2);
                }
            }
            combos = next;
            if combos.len() > 10_000 {
                break;
            }
        }
        for c in combos {
            out.push(format!("{name}: [{}]", c.join(", ")));
        }
    }
    out
}

/// `YamlProcessor#run_logical_validations!` over the normalized (parallel-expanded) jobs.
fn cross_job_checks(p: &Pipeline, ck: &mut Checker) {
    // Normalized jobs: instance name -> (job index).
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, j) in p.jobs.iter().enumerate() {
        for inst in &j.instances {
            index.insert(inst.as_str(), i);
        }
    }
    // Names a reference to `name` expands to (a parallel job's name means all instances).
    let parallel: HashMap<&str, &Job> = p
        .jobs
        .iter()
        .filter(|j| j.instances.len() > 1)
        .map(|j| (j.name.as_str(), j))
        .collect();
    let expand = |name: &str| -> Vec<String> {
        match parallel.get(name) {
            Some(j) => j.instances.clone(),
            None => vec![name.to_string()],
        }
    };
    let stage_index = |job: usize| p.stages.iter().position(|s| *s == p.jobs[job].stage);

    for (ji, job) in p.jobs.iter().enumerate() {
        let span = job.config.key_span("stage").unwrap_or(job.span);
        for inst in &job.instances {
            if !p.stages.contains(&job.stage) {
                ck.verbatim(
                    Some(span),
                    format!(
                        "{inst} job: chosen stage {} does not exist; available stages are {}",
                        job.stage,
                        p.stages.join(", ")
                    ),
                );
            }
            // dependencies
            if let Some(deps) = validate::present(&job.config, "dependencies").and_then(Node::as_seq) {
                for d in deps {
                    let Some(dn) = d.scalar_to_string() else { continue };
                    for dep in expand(&dn) {
                        check_dependency(
                            ck,
                            p,
                            &index,
                            inst,
                            ji,
                            &dep,
                            "dependency",
                            false,
                            d.span,
                            &stage_index,
                        );
                    }
                }
            }
            // needs (job-level and in rules)
            let mut need_lists: Vec<(Vec<Need>, Span)> = Vec::new();
            if let Some(n) = validate::present(&job.config, "needs") {
                need_lists.push((parse_needs(n), n.span));
            }
            if let Some(rules) = validate::present(&job.config, "rules").and_then(Node::as_seq) {
                for r in rules {
                    if let Some(n) = r.as_map().and_then(|m| validate::present(m, "needs")) {
                        need_lists.push((parse_needs(n), n.span));
                    }
                }
            }
            for (needs, nspan) in &need_lists {
                let mut seen: Vec<String> = Vec::new();
                let mut dups: Vec<String> = Vec::new();
                for need in needs.iter().filter(|n| !n.external) {
                    // With matrix expressions each instance needs its own job.
                    let resolved: Vec<String> = if has_matrix_expression(&need.job) {
                        let mut r: Vec<String> = instance_matrix_values(job)
                            .iter()
                            .map(|vars| interpolate_matrix(&need.job, vars))
                            .collect();
                        if r.is_empty() {
                            r.push(need.job.clone());
                        }
                        r.dedup();
                        r
                    } else {
                        vec![need.job.clone()]
                    };
                    for r in &resolved {
                        for name in expand(r) {
                            check_dependency(
                                ck,
                                p,
                                &index,
                                inst,
                                ji,
                                &name,
                                "need",
                                need.optional,
                                *nspan,
                                &stage_index,
                            );
                        }
                    }
                    for name in expand(&need.job) {
                        if seen.contains(&name) {
                            if !dups.contains(&name) {
                                dups.push(name.clone());
                            }
                        } else {
                            seen.push(name);
                        }
                    }
                }
                if !dups.is_empty() {
                    ck.verbatim(
                        Some(*nspan),
                        format!("{inst} has the following needs duplicated: {}.", dups.join(", ")),
                    );
                }
            }
            // dependencies must be part of needs (Entry::Job, composed).
            if let (Some(deps), Some(needs)) = (
                validate::present(&job.config, "dependencies").and_then(Node::as_seq),
                job.needs.as_ref(),
            ) && !needs.is_empty()
            {
                let need_names: HashSet<&str> = needs.iter().map(|n| n.job.as_str()).collect();
                let missing: Vec<String> = deps
                    .iter()
                    .filter_map(Node::scalar_to_string)
                    .filter(|d| !need_names.contains(d.as_str()))
                    .collect();
                if !missing.is_empty() {
                    let dspan = job.config.key_span("dependencies").unwrap_or(job.span);
                    ck.entry(
                        &format!("jobs:{}", job.name),
                        dspan,
                        format!("dependencies the {} should be part of needs", missing.join(", ")),
                    );
                }
            }
            // environment:on_stop
            if let Some(env) = validate::present(&job.config, "environment").and_then(Node::as_map)
                && let Some(on_stop) = validate::present(env, "on_stop").and_then(Node::scalar_to_string)
            {
                let espan = env.key_span("on_stop").unwrap_or(job.span);
                check_on_stop(ck, p, inst, env, &on_stop, espan);
            }
        }
    }
    check_cycles(p, ck, &expand);
}

#[allow(clippy::too_many_arguments)]
fn check_dependency(
    ck: &mut Checker,
    p: &Pipeline,
    index: &HashMap<&str, usize>,
    inst: &str,
    job: usize,
    dep: &str,
    kind: &str,
    optional: bool,
    span: Span,
    stage_index: &dyn Fn(usize) -> Option<usize>,
) {
    let Some(&di) = index.get(dep) else {
        if !optional {
            ck.verbatim(Some(span), format!("{inst} job: undefined {kind}: {dep}"));
        }
        return;
    };
    if kind == "need" && dep.chars().count() > 255 {
        ck.verbatim(
            Some(span),
            format!("{inst} job: need `{dep}` name is too long (maximum is 255 characters)"),
        );
    }
    match (stage_index(di), stage_index(job)) {
        (Some(d), Some(j)) if d <= j => {}
        _ => ck.verbatim(
            Some(span),
            format!("{inst} job: {kind} {dep} is not defined in current or prior stages"),
        ),
    }
    let _ = p;
}

fn check_on_stop(ck: &mut Checker, p: &Pipeline, inst: &str, env: &Mapping, on_stop: &str, span: Span) {
    let Some(stop_job) = p.jobs.iter().find(|j| j.instances.iter().any(|i| i == on_stop)) else {
        ck.verbatim(
            Some(span),
            format!("{inst} job: on_stop job {on_stop} is not defined"),
        );
        return;
    };
    let Some(stop_env) = validate::present(&stop_job.config, "environment") else {
        ck.verbatim(
            Some(span),
            format!("{inst} job: on_stop job {on_stop} does not have environment defined"),
        );
        return;
    };
    let env_name = |m: Option<&Mapping>, n: &Node| -> Option<String> {
        match m {
            Some(m) => m.get("name").and_then(Node::scalar_to_string),
            None => n.scalar_to_string(),
        }
    };
    let own_name = env.get("name").and_then(Node::scalar_to_string);
    let stop_map = stop_env.as_map();
    if env_name(stop_map, stop_env) != own_name {
        ck.verbatim(
            Some(span),
            format!("{inst} job: on_stop job {on_stop} have different environment name"),
        );
        return;
    }
    let action = stop_map
        .and_then(|m| m.get("action"))
        .and_then(Node::scalar_to_string);
    if action.as_deref() != Some("stop") {
        ck.verbatim(
            Some(span),
            format!("{inst} job: on_stop job {on_stop} needs to have action stop defined"),
        );
    }
}

/// `Dag.check_circular_dependencies!`: Ruby's TSort over job -> needs, reporting the
/// first strongly connected component with more than one job, or a self-dependency.
fn check_cycles(p: &Pipeline, ck: &mut Checker, expand: &dyn Fn(&str) -> Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for j in &p.jobs {
        let needs: Vec<String> = j
            .needs
            .iter()
            .flatten()
            .filter(|n| !n.external)
            .flat_map(|n| expand(&n.job))
            .collect();
        let per_instance = needs
            .iter()
            .any(|n| has_matrix_expression(n))
            .then(|| instance_matrix_values(j));
        for (i, inst) in j.instances.iter().enumerate() {
            names.push(inst.clone());
            let mine = match per_instance.as_ref().and_then(|v| v.get(i)) {
                Some(vars) => needs
                    .iter()
                    .flat_map(|n| expand(&interpolate_matrix(n, vars)))
                    .collect(),
                None => needs.clone(),
            };
            edges.insert(inst.clone(), mine);
        }
    }
    // Iterative Tarjan in insertion order, like Ruby's TSort.
    let idx: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let n = names.len();
    let mut order = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut counter = 0usize;
    for start in 0..n {
        if order[start] != usize::MAX {
            continue;
        }
        // (node, next child position)
        let mut work: Vec<(usize, usize)> = vec![(start, 0)];
        order[start] = counter;
        low[start] = counter;
        counter += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (v, ref mut ci)) = work.last_mut() {
            let children: &[String] = edges.get(&names[v]).map(Vec::as_slice).unwrap_or(&[]);
            if *ci == 0 && children.iter().any(|c| *c == names[v]) {
                ck.verbatim(
                    None,
                    format!(
                        "The pipeline has circular dependencies: self-dependency: {}",
                        names[v]
                    ),
                );
                return;
            }
            if *ci < children.len() {
                let child = &children[*ci];
                *ci += 1;
                let Some(&w) = idx.get(child.as_str()) else {
                    continue;
                };
                if order[w] == usize::MAX {
                    order[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
            } else {
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == order[v] {
                    let pos = stack.iter().rposition(|&x| x == v).unwrap_or(0);
                    let component: Vec<usize> = stack.split_off(pos);
                    for &c in &component {
                        on_stack[c] = false;
                    }
                    if component.len() > 1 {
                        let list: Vec<String> =
                            component.iter().map(|&c| format!("{:?}", names[c])).collect();
                        ck.verbatim(
                            None,
                            format!(
                                "The pipeline has circular dependencies: topological sort failed: [{}]",
                                list.join(", ")
                            ),
                        );
                        return;
                    }
                }
            }
        }
    }
}

/// GitLab's one job warning (`Entry::Job#validate_against_warnings`): without
/// `workflow:rules`, a job whose last rule is only a `when` other than `never` runs in
/// both a branch pipeline and a merge request pipeline for the same push.
fn multiple_pipelines_warning(ck: &mut Checker, loc: &str, map: &Mapping) {
    let Some(rules) = validate::present(map, "rules") else {
        return;
    };
    // `rules` may nest arrays (from `!reference`); GitLab flattens them first.
    fn last_rule(n: &Node) -> Option<&Node> {
        match n.as_seq() {
            Some(items) => items.iter().rev().find_map(|i| {
                if i.as_seq().is_some() {
                    last_rule(i)
                } else {
                    Some(i)
                }
            }),
            None => None,
        }
    }
    let Some(last) = last_rule(rules) else { return };
    let Some(rule) = last.as_map() else { return };
    let keys: Vec<&str> = rule.keys().collect();
    if keys != ["when"] {
        return;
    }
    if rule.get("when").and_then(Node::as_str) == Some("never") {
        return;
    }
    ck.warn(
        Some(last.span),
        format!(
            "{loc} may allow multiple pipelines to run for a single action due to `rules:when` \
             clause with no `workflow:rules` - read more: \
             https://docs.gitlab.com/ee/ci/jobs/job_troubleshooting.html\
             #job-may-allow-multiple-pipelines-to-run-for-a-single-action-warning"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    fn lint(y: &str) -> Pipeline {
        load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default())
    }

    fn errors(y: &str) -> Vec<String> {
        lint(y).errors().map(|d| d.message.clone()).collect()
    }

    /// The first error with its line and column.
    fn first(y: &str) -> (String, u32, u32) {
        let p = lint(y);
        let d = p.errors().next().unwrap_or_else(|| panic!("no error for {y}"));
        let s = d.span.unwrap_or_default();
        (d.message.clone(), s.line, s.col)
    }

    #[test]
    fn positions_of_cross_job_errors() {
        // undefined need: at the needs list
        assert_eq!(
            first("a:\n  script: x\n  needs: [b]\n"),
            ("a job: undefined need: b".into(), 3, 10)
        );
        // dependency: at the entry
        assert_eq!(
            first("a:\n  script: x\n  dependencies:\n    - z\n"),
            ("a job: undefined dependency: z".into(), 4, 7)
        );
        // duplicated needs: at the needs list
        assert_eq!(
            first("b: {script: x}\na:\n  script: x\n  needs:\n    - b\n    - b\n"),
            ("a has the following needs duplicated: b.".into(), 5, 5)
        );
        // on_stop: at the on_stop key
        assert_eq!(
            first("d:\n  script: x\n  environment:\n    name: p\n    on_stop: s\n"),
            ("d job: on_stop job s is not defined".into(), 5, 5)
        );
        // dependencies not in needs: at the dependencies key
        assert_eq!(
            first("b: {script: x}\nc: {script: x}\na:\n  script: x\n  needs: [b]\n  dependencies: [b, c]\n")
                .0,
            "jobs:a dependencies the c should be part of needs"
        );
        // jobs without script: at the job key
        assert_eq!(
            first("x: 1\nrubocop:\n  scriptt: [a]\n"),
            (
                "jobs x config should implement the script:, run:, or trigger: keyword".into(),
                1,
                1
            )
        );
    }

    fn warnings(y: &str) -> Vec<(String, u32, u32)> {
        lint(y)
            .warnings()
            .map(|d| {
                let s = d.span.unwrap_or_default();
                (d.message.clone(), s.line, s.col)
            })
            .collect()
    }

    #[test]
    fn multiple_pipelines_warning_as_gitlab() {
        let w = warnings("build:\n  script: x\n  rules:\n    - if: $A\n    - when: on_success\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].0.starts_with(
                "jobs:build may allow multiple pipelines to run for a single action due to `rules:when` clause with no `workflow:rules` - read more: https://docs.gitlab.com/"
            ),
            "{w:?}"
        );
        assert_eq!((w[0].1, w[0].2), (5, 7));
        // `when: always` and a bare `when` in a nested (referenced) list warn too.
        assert_eq!(
            warnings("a:\n  script: x\n  rules: [[{when: always}]]\n").len(),
            1
        );
        // No warning: workflow rules, `when: never` last, a last rule with `if`, no rules,
        // a hidden job.
        for y in [
            "workflow:\n  rules: [{if: $A}]\nb:\n  script: x\n  rules: [{when: always}]\n",
            "b:\n  script: x\n  rules: [{if: $A}, {when: never}]\n",
            "b:\n  script: x\n  rules: [{when: manual}, {if: $A, when: always}]\n",
            "b:\n  script: x\n",
            ".h:\n  script: x\n  rules: [{when: always}]\nb: {script: y}\n",
        ] {
            assert_eq!(warnings(y), vec![], "{y}");
        }
    }

    #[test]
    fn seed_pipeline_stage_error() {
        let y = "stages:\n  - package\n  - docker_build\n  - deploy_k8s\n\nmaven-build:\n  stage: package\n  script: mvn package\n\ndocker-build:\n  stage: build\n  script: docker build .\n\nk8s-deploy:\n  stage: deploy\n  script: kubectl apply -f deployment.yaml\n";
        let p = lint(y);
        let e: Vec<_> = p.errors().collect();
        assert_eq!(
            e[0].message,
            "docker-build job: chosen stage build does not exist; available stages are .pre, package, docker_build, deploy_k8s, .post"
        );
        assert_eq!(e[0].span.map(|s| (s.line, s.col)), Some((11, 3)));
        assert_eq!(
            e[1].message,
            "k8s-deploy job: chosen stage deploy does not exist; available stages are .pre, package, docker_build, deploy_k8s, .post"
        );
    }

    #[test]
    fn job_without_script_and_no_visible_jobs() {
        assert_eq!(
            errors("rubocop:\n  scriptt:\n    - bundle exec rubocop\n"),
            vec![
                "jobs rubocop config should implement the script:, run:, or trigger: keyword",
                "jobs config should contain at least one visible job"
            ]
        );
        assert_eq!(
            errors(".hidden: {script: x}\n"),
            vec!["jobs config should contain at least one visible job"]
        );
        assert_eq!(errors(""), vec!["Please provide content of .gitlab-ci.yml"]);
    }

    #[test]
    fn needs_checks() {
        assert_eq!(
            errors("a: {script: x, needs: [b]}\n"),
            vec!["a job: undefined need: b"]
        );
        assert!(errors("a: {script: x, needs: [{job: b, optional: true}]}\n").is_empty());
        assert_eq!(
            errors("a: {stage: build, script: x, needs: [b]}\nb: {stage: test, script: x}\n"),
            vec!["a job: need b is not defined in current or prior stages"]
        );
        assert_eq!(
            errors("a: {script: x, needs: [b, b]}\nb: {script: x}\n"),
            vec!["a has the following needs duplicated: b."]
        );
        assert_eq!(
            errors("a: {script: x, needs: [b]}\nb: {script: x, needs: [a]}\n"),
            vec![r#"The pipeline has circular dependencies: topological sort failed: ["a", "b"]"#]
        );
        assert_eq!(
            errors("a: {script: x, needs: [a]}\n"),
            vec!["The pipeline has circular dependencies: self-dependency: a"]
        );
    }

    #[test]
    fn dependencies_checks() {
        assert_eq!(
            errors("a: {script: x, dependencies: [z]}\n"),
            vec!["a job: undefined dependency: z"]
        );
        assert_eq!(
            errors("a: {stage: build, script: x, dependencies: [b]}\nb: {stage: test, script: x}\n"),
            vec!["a job: dependency b is not defined in current or prior stages"]
        );
        assert_eq!(
            errors("a: {script: x, needs: [b], dependencies: [b, c]}\nb: {script: x}\nc: {script: x}\n"),
            vec!["jobs:a dependencies the c should be part of needs"]
        );
    }

    #[test]
    fn parallel_names_and_needs() {
        let p = lint(
            "a:\n  script: x\n  parallel: 3\nb:\n  script: x\n  parallel:\n    matrix:\n      - P: [x, y]\n        Q: z\nc:\n  script: x\n  needs:\n    - a\n    - job: b\n      parallel:\n        matrix:\n          - P: y\n            Q: z\n",
        );
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        assert_eq!(p.jobs[0].instances, vec!["a 1/3", "a 2/3", "a 3/3"]);
        assert_eq!(p.jobs[1].instances, vec!["b: [x, z]", "b: [y, z]"]);
        let needs: Vec<&str> = p.jobs[2]
            .needs
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.job.as_str())
            .collect();
        assert_eq!(needs, vec!["a", "b: [y, z]"]);
        assert_eq!(
            errors(
                "a:\n  script: x\n  parallel: {matrix: [{P: [x]}]}\nc:\n  script: x\n  needs:\n    - job: a\n      parallel: {matrix: [{P: q}]}\n"
            ),
            vec!["c job: undefined need: a: [q]"]
        );
    }

    #[test]
    fn on_stop_checks() {
        assert_eq!(
            errors("d: {script: x, environment: {name: p, on_stop: s}}\n"),
            vec!["d job: on_stop job s is not defined"]
        );
        assert_eq!(
            errors("d: {script: x, environment: {name: p, on_stop: s}}\ns: {script: x}\n"),
            vec!["d job: on_stop job s does not have environment defined"]
        );
        assert_eq!(
            errors(
                "d: {script: x, environment: {name: p, on_stop: s}}\ns: {script: x, environment: {name: q, action: stop}}\n"
            ),
            vec!["d job: on_stop job s have different environment name"]
        );
        assert_eq!(
            errors(
                "d: {script: x, environment: {name: p, on_stop: s}}\ns: {script: x, environment: {name: p}}\n"
            ),
            vec!["d job: on_stop job s needs to have action stop defined"]
        );
        assert!(errors("d: {script: x, environment: {name: p, on_stop: s}}\ns: {script: x, environment: {name: p, action: stop}}\n").is_empty());
    }

    #[test]
    fn stages_and_defaults() {
        let p = lint(
            "stages: [b, t]\ndefault:\n  image: ruby\n  tags: [x]\nj:\n  stage: b\n  script: x\n  inherit:\n    default: [image]\nk:\n  stage: t\n  script: x\n  when: manual\n",
        );
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        assert_eq!(p.stages, vec![".pre", "b", "t", ".post"]);
        let j = p.job("j").unwrap();
        assert_eq!(j.config.get("image").and_then(Node::as_str), Some("ruby"));
        assert!(j.config.get("tags").is_none());
        let k = p.job("k").unwrap();
        assert!(k.config.get("tags").is_some());
        assert!(k.allow_failure);
        assert_eq!(k.stage, "t");
        let p = lint("types: [x]\nj: {stage: x, script: y}\n");
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        assert_eq!(p.stages, vec![".pre", "x", ".post"]);
    }
}
