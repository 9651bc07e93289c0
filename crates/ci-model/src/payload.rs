//! The job payload: the JSON GitLab answers to `POST /api/v4/jobs/request`.
//!
//! These types are the one contract between where jobs come from (a GitLab server, or a
//! local pipeline) and the executors. Field names and shapes follow GitLab's
//! `lib/api/entities/ci/job_request/*` and GitLab Runner's `common/spec/spec.go`; every
//! type also deserializes what a real GitLab sends (unknown fields are ignored, missing
//! ones take their defaults).
//!
//! Building a payload does what GitLab's server does last: variables with references
//! between them expanded (`BuildRunnerPresenter#runner_variables`), cache keys computed
//! (`-protected` suffix, `key:files` digests), `dependencies` listed (one list shared by
//! all payloads of a stage, see [`Dependencies`]).

use serde::{Deserialize, Serialize};

/// A job as a runner receives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobPayload {
    /// Job id.
    pub id: u64,
    /// The job token (`CI_JOB_TOKEN`); a secret.
    pub token: String,
    /// Whether the runner may fetch into an existing checkout.
    pub allow_git_fetch: bool,
    /// Names and ids.
    pub job_info: JobInfo,
    /// What to check out.
    pub git_info: GitInfo,
    /// Runner-side settings.
    pub runner_info: RunnerInfo,
    /// All variables of the job, in GitLab's order.
    pub variables: Vec<JobVariable>,
    /// `script`, `after_script` (and `release`) steps.
    pub steps: Vec<Step>,
    /// The job image, `null` when none.
    pub image: Option<Image>,
    /// Services.
    pub services: Vec<Service>,
    /// Artifacts to upload.
    pub artifacts: Vec<Artifact>,
    /// Caches.
    pub cache: Vec<Cache>,
    /// Registry credentials.
    pub credentials: Vec<Credential>,
    /// Jobs whose artifacts to download. Reads and writes like a `Vec<Dependency>`;
    /// payloads of one stage share one list until one of them is changed.
    pub dependencies: Dependencies,
    /// Server features.
    pub features: Features,
    /// `run:` steps as a JSON string (GitLab's format), when the job uses them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// `job_info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobInfo {
    /// Job id.
    pub id: u64,
    /// Job name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// Project id.
    pub project_id: u64,
    /// Project name.
    pub project_name: String,
    /// Pipeline id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<u64>,
    /// Time the job waited in the queue, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_in_queue_seconds: Option<f64>,
}

/// `git_info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GitInfo {
    /// Clone URL (carries the job token for HTTPS clones).
    pub repo_url: String,
    /// Branch or tag name.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Commit SHA.
    pub sha: String,
    /// Previous SHA of the branch.
    pub before_sha: String,
    /// `branch` or `tag`.
    pub ref_type: String,
    /// Refspecs to fetch.
    pub refspecs: Vec<String>,
    /// Clone depth (0 = full).
    pub depth: u32,
}

/// `runner_info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerInfo {
    /// Job timeout in seconds.
    pub timeout: u64,
    /// Interactive web terminal session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_session_url: Option<String>,
}

/// One variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobVariable {
    /// Name.
    pub key: String,
    /// Value (for file variables: the file's content).
    pub value: String,
    /// `false` marks a secret that must never be put where others can read it.
    pub public: bool,
    /// A file variable: the value is written to a file and the variable holds its path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub file: bool,
    /// Masked in job logs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
    /// Not expanded (`$` kept literally).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

/// One step (`script`, `after_script`, `release`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Step {
    /// `script`, `after_script` or `release`.
    pub name: String,
    /// Commands (`before_script` + `script` for the `script` step).
    pub script: Vec<String>,
    /// Timeout in seconds.
    pub timeout: u64,
    /// `on_success`, `on_failure` or `always`.
    pub when: String,
    /// Whether a failure of this step fails the job.
    pub allow_failure: bool,
}

/// A port of an image or service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Port {
    /// Port number.
    pub number: u16,
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The job image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Image {
    /// Image reference.
    pub name: String,
    /// `entrypoint` override, `null` when not set.
    pub entrypoint: Option<Vec<String>>,
    /// `docker:`/`kubernetes:` options (`{}` when none).
    pub executor_opts: serde_json::Value,
    /// Ports.
    pub ports: Vec<Port>,
    /// Pull policies, `null` when not set.
    pub pull_policy: Option<Vec<String>>,
}

/// A service container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    /// Image reference.
    pub name: String,
    /// Host name alias(es).
    pub alias: Option<String>,
    /// `command` override.
    pub command: Option<Vec<String>>,
    /// `entrypoint` override.
    pub entrypoint: Option<Vec<String>>,
    /// `docker:`/`kubernetes:` options (`{}` when none).
    pub executor_opts: serde_json::Value,
    /// Ports.
    pub ports: Vec<Port>,
    /// Pull policies.
    pub pull_policy: Option<Vec<String>>,
    /// Service variables.
    pub variables: Vec<ServiceVariable>,
}

/// A service's own variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceVariable {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

/// One artifacts upload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Artifact {
    /// Archive name.
    pub name: Option<String>,
    /// Include untracked files.
    pub untracked: bool,
    /// Paths (globs).
    pub paths: Vec<String>,
    /// Excluded paths (globs).
    pub exclude: Vec<String>,
    /// `on_success`, `on_failure` or `always`.
    pub when: String,
    /// `archive` or a report type.
    pub artifact_type: String,
    /// `zip`, `gzip` or `raw`.
    pub artifact_format: String,
    /// Expiry, as written.
    pub expire_in: Option<String>,
}

/// One cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cache {
    /// The final key (GitLab has appended `-protected`/`-non_protected`).
    pub key: String,
    /// Include untracked files.
    pub untracked: bool,
    /// `pull`, `push` or `pull-push`.
    pub policy: String,
    /// Paths (globs).
    pub paths: Vec<String>,
    /// `on_success`, `on_failure` or `always`.
    pub when: String,
    /// Keys to try when `key` misses.
    pub fallback_keys: Vec<String>,
}

/// Registry credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credential {
    /// `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Registry host.
    pub url: String,
    /// User name.
    pub username: String,
    /// Password or token; a secret.
    pub password: String,
}

/// A job whose artifacts this job downloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dependency {
    /// Job id.
    pub id: u64,
    /// Job name (shared: a large pipeline lists the same job in thousands of payloads).
    pub name: std::sync::Arc<str>,
    /// That job's token, for the download.
    pub token: String,
    /// The artifacts archive, when there is one.
    pub artifacts_file: Option<ArtifactsFile>,
}

/// A payload's `dependencies`: a list shared between payloads (copy on write).
///
/// Why: GitLab lists every job of earlier stages as a dependency of a job without
/// `needs`, so a 2,000-job pipeline has about 1.8 million entries across its payloads,
/// nearly all equal per stage. Sharing them makes building all payloads cheap; it
/// dereferences to `Vec<Dependency>` (mutably too, cloning a shared list first), and
/// serializes as a plain JSON array.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dependencies(std::sync::Arc<Vec<Dependency>>);

impl Dependencies {
    /// A list that shares `list` (cheap to clone).
    pub fn shared(list: std::sync::Arc<Vec<Dependency>>) -> Self {
        Dependencies(list)
    }

    /// The list, copied out only when another payload shares it.
    pub fn into_vec(self) -> Vec<Dependency> {
        std::sync::Arc::unwrap_or_clone(self.0)
    }

    /// Whether `other` is the very same shared list (not just an equal one).
    pub fn ptr_eq(&self, other: &Dependencies) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Dependencies {
    type Target = Vec<Dependency>;
    fn deref(&self) -> &Vec<Dependency> {
        &self.0
    }
}

impl std::ops::DerefMut for Dependencies {
    fn deref_mut(&mut self) -> &mut Vec<Dependency> {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl From<Vec<Dependency>> for Dependencies {
    fn from(v: Vec<Dependency>) -> Self {
        Dependencies(std::sync::Arc::new(v))
    }
}

impl From<Dependencies> for Vec<Dependency> {
    fn from(d: Dependencies) -> Self {
        d.into_vec()
    }
}

impl FromIterator<Dependency> for Dependencies {
    fn from_iter<I: IntoIterator<Item = Dependency>>(iter: I) -> Self {
        Dependencies(std::sync::Arc::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Dependencies {
    type Item = &'a Dependency;
    type IntoIter = std::slice::Iter<'a, Dependency>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Dependencies {
    type Item = &'a mut Dependency;
    type IntoIter = std::slice::IterMut<'a, Dependency>;
    fn into_iter(self) -> Self::IntoIter {
        std::sync::Arc::make_mut(&mut self.0).iter_mut()
    }
}

impl IntoIterator for Dependencies {
    type Item = Dependency;
    type IntoIter = std::vec::IntoIter<Dependency>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl Extend<Dependency> for Dependencies {
    fn extend<I: IntoIterator<Item = Dependency>>(&mut self, iter: I) {
        std::sync::Arc::make_mut(&mut self.0).extend(iter);
    }
}

impl PartialEq<Vec<Dependency>> for Dependencies {
    fn eq(&self, other: &Vec<Dependency>) -> bool {
        *self.0 == *other
    }
}

impl Serialize for Dependencies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dependencies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Dependency>::deserialize(d).map(Dependencies::from)
    }
}

/// An uploaded artifacts archive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArtifactsFile {
    /// File name.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
}

/// `features`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
    /// The server understands collapsible sections in traces.
    pub trace_sections: bool,
    /// Token prefixes the runner masks (`glpat-`, ...).
    pub token_mask_prefixes: Vec<String>,
    /// Failure reasons the server accepts.
    pub failure_reasons: Vec<String>,
}

/// Token prefixes GitLab asks runners to mask (`features.token_mask_prefixes`).
pub const TOKEN_MASK_PREFIXES: &[&str] = &[
    "glpat-",
    "gloas-",
    "gldt-",
    "glrt-",
    "glcbt-",
    "glptt-",
    "glft-",
    "glimt-",
    "glagent-",
    "glsoat-",
    "glffct-",
    "GR1348941",
];

/// Failure reasons a runner may send (`features.failure_reasons`).
pub const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "runner_system_failure",
    "job_execution_timeout",
    "image_pull_failure",
    "runner_configuration_error",
    "runner_external_dependency_failure",
    "runner_interrupted",
];

/// GitLab's default job timeout (project setting), in seconds.
pub const DEFAULT_TIMEOUT: u64 = 3600;

mod build {
    use super::*;
    use crate::eval::{EvaluatedJob, Evaluation, PipelineContext, VariableLevel};
    use crate::pipeline::Pipeline;
    use crate::yaml::{Mapping, Node, Value};
    use std::collections::HashMap;

    fn flatten(n: Option<&Node>, out: &mut Vec<String>) {
        match n.map(|n| &n.value) {
            Some(Value::Seq(items)) => {
                for i in items {
                    flatten(Some(i), out);
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => {
                if let Some(s) = n.and_then(Node::scalar_to_string) {
                    out.push(s);
                }
            }
        }
    }

    fn strings(n: Option<&Node>) -> Vec<String> {
        let mut v = Vec::new();
        flatten(n, &mut v);
        v
    }

    fn opt_strings(n: Option<&Node>) -> Option<Vec<String>> {
        n.filter(|n| !n.is_null()).map(|n| strings(Some(n)))
    }

    fn ports(n: Option<&Node>) -> Vec<Port> {
        let Some(items) = n.and_then(Node::as_seq) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|p| match &p.value {
                Value::Int(i) => u16::try_from(*i).ok().map(|number| Port {
                    number,
                    ..Port::default()
                }),
                Value::Map(m) => Some(Port {
                    number: m
                        .get("number")
                        .and_then(Node::as_int)
                        .and_then(|i| u16::try_from(i).ok())?,
                    protocol: m.get("protocol").and_then(Node::scalar_to_string),
                    name: m.get("name").and_then(Node::scalar_to_string),
                }),
                _ => None,
            })
            .collect()
    }

    fn executor_opts(m: Option<&Mapping>) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        if let Some(m) = m {
            for k in ["docker", "kubernetes"] {
                if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
                    o.insert(k.to_string(), v.to_json());
                }
            }
        }
        serde_json::Value::Object(o)
    }

    fn image(n: &Node) -> Option<Image> {
        match &n.value {
            Value::Str(s) => Some(Image {
                name: s.clone(),
                executor_opts: executor_opts(None),
                ..Image::default()
            }),
            Value::Map(m) => Some(Image {
                name: m.get("name").and_then(Node::scalar_to_string)?,
                entrypoint: opt_strings(m.get("entrypoint")),
                executor_opts: executor_opts(Some(m)),
                ports: ports(m.get("ports")),
                pull_policy: opt_strings(m.get("pull_policy")),
            }),
            _ => None,
        }
    }

    fn service(n: &Node) -> Option<Service> {
        match &n.value {
            Value::Str(s) => Some(Service {
                name: s.clone(),
                executor_opts: executor_opts(None),
                ..Service::default()
            }),
            Value::Map(m) => Some(Service {
                name: m.get("name").and_then(Node::scalar_to_string)?,
                alias: m.get("alias").and_then(Node::scalar_to_string),
                command: opt_strings(m.get("command")),
                entrypoint: opt_strings(m.get("entrypoint")),
                executor_opts: executor_opts(Some(m)),
                ports: ports(m.get("ports")),
                pull_policy: opt_strings(m.get("pull_policy")),
                variables: m
                    .get("variables")
                    .and_then(Node::as_map)
                    .map(|vm| {
                        vm.iter()
                            .map(|(k, v)| ServiceVariable {
                                key: k.to_string(),
                                value: match &v.value {
                                    Value::Map(x) => x
                                        .get("value")
                                        .and_then(Node::scalar_to_string)
                                        .unwrap_or_default(),
                                    _ => v.scalar_to_string().unwrap_or_default(),
                                },
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            _ => None,
        }
    }

    /// `Seed::Build::Cache#key_from_files`: `[prefix, digest]` joined by `-`, where the
    /// digest is the SHA-1 of the sorted, distinct ids of the files' blobs (`files:`,
    /// GitLab 18.4 and later) or of the last commits touching them (`files_commits:`, and
    /// `files:` before 18.4), joined by `-`; `default` when none is known.
    fn files_key(km: &Mapping, ctx: &PipelineContext) -> String {
        let prefix = km.get("prefix").and_then(Node::scalar_to_string);
        let paths = |key: &str| {
            let mut v = strings(km.get(key));
            v.retain(|p| !p.is_empty());
            let mut seen = std::collections::HashSet::new();
            v.retain(|p| seen.insert(p.clone()));
            v
        };
        let by_commits = |files: Vec<String>| -> Vec<String> {
            files
                .iter()
                .filter_map(|f| ctx.last_commits.get(f.trim_start_matches('/')).cloned())
                .collect()
        };
        let digest = if km.contains_key("files") {
            let files = paths("files");
            if ctx.server_at_least(18, 4) {
                // `search_files_by_wildcard_path` for patterns, the path itself otherwise.
                let mut expanded: Vec<String> = Vec::new();
                for f in &files {
                    if f.contains('*') {
                        if let Some(m) = crate::eval::fnmatch(f) {
                            expanded.extend(ctx.file_blob_ids.keys().filter(|k| m.is_match(k)).cloned());
                        }
                    } else {
                        expanded.push(f.trim_start_matches('/').to_string());
                    }
                }
                digest_of(
                    expanded
                        .iter()
                        .filter_map(|p| ctx.file_blob_ids.get(p).cloned())
                        .collect(),
                )
            } else {
                digest_of(by_commits(files))
            }
        } else if km.contains_key("files_commits") {
            digest_of(by_commits(paths("files_commits")))
        } else {
            None
        };
        let digest = digest.unwrap_or_else(|| "default".to_string());
        match prefix.filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}-{digest}"),
            None => digest,
        }
    }

    /// `digest_from_hashes`: SHA-1 hex of the sorted distinct ids joined by `-`.
    fn digest_of(mut ids: Vec<String>) -> Option<String> {
        use sha1::Digest;
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return None;
        }
        let sum = sha1::Sha1::digest(ids.join("-").as_bytes());
        Some(sum.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn caches(n: Option<&Node>, ctx: &PipelineContext) -> Vec<Cache> {
        let protected = ctx.protected_ref;
        let items: Vec<&Node> = match n.map(|n| &n.value) {
            Some(Value::Seq(s)) => s.iter().collect(),
            Some(Value::Map(_)) => n.into_iter().collect(),
            _ => Vec::new(),
        };
        items
            .into_iter()
            .filter_map(Node::as_map)
            .map(|m| {
                let unprotect = m.get("unprotect").and_then(Node::as_bool).unwrap_or(false);
                let suffix = if protected && !unprotect {
                    "protected"
                } else {
                    "non_protected"
                };
                let key = match m.get("key").map(|k| &k.value) {
                    Some(Value::Map(km)) => files_key(km, ctx),
                    Some(Value::Null) | None => "default".to_string(),
                    Some(_) => m
                        .get("key")
                        .and_then(Node::scalar_to_string)
                        .unwrap_or_else(|| "default".into()),
                };
                Cache {
                    key: format!("{key}-{suffix}"),
                    untracked: m.get("untracked").and_then(Node::as_bool).unwrap_or(false),
                    policy: m
                        .get("policy")
                        .and_then(Node::scalar_to_string)
                        .unwrap_or_else(|| "pull-push".into()),
                    paths: strings(m.get("paths")),
                    when: m
                        .get("when")
                        .and_then(Node::scalar_to_string)
                        .unwrap_or_else(|| "on_success".into()),
                    fallback_keys: strings(m.get("fallback_keys"))
                        .into_iter()
                        .map(|k| format!("{k}-{suffix}"))
                        .collect(),
                }
            })
            .collect()
    }

    fn artifacts(n: Option<&Node>) -> Vec<Artifact> {
        let Some(m) = n.and_then(Node::as_map) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let paths = strings(m.get("paths"));
        let untracked = m.get("untracked").and_then(Node::as_bool).unwrap_or(false);
        let expire_in = m.get("expire_in").and_then(Node::scalar_to_string);
        if !paths.is_empty() || untracked {
            out.push(Artifact {
                name: m.get("name").and_then(Node::scalar_to_string),
                untracked,
                paths,
                exclude: strings(m.get("exclude")),
                when: m
                    .get("when")
                    .and_then(Node::scalar_to_string)
                    .unwrap_or_else(|| "on_success".into()),
                artifact_type: "archive".into(),
                artifact_format: "zip".into(),
                expire_in: expire_in.clone(),
            });
        }
        if let Some(reports) = m.get("reports").and_then(Node::as_map) {
            for (kind, v) in reports.iter() {
                let paths = match kind {
                    "coverage_report" => strings(v.as_map().and_then(|c| c.get("path"))),
                    _ => strings(Some(v)),
                };
                if paths.is_empty() {
                    continue;
                }
                let (artifact_type, name) = match kind {
                    "coverage_report" => (
                        v.as_map()
                            .and_then(|c| c.get("coverage_format"))
                            .and_then(Node::scalar_to_string)
                            .unwrap_or_else(|| "cobertura".into()),
                        "cobertura-coverage.xml".to_string(),
                    ),
                    k => (k.to_string(), format!("{k}.xml")),
                };
                let format = match artifact_type.as_str() {
                    "dotenv" | "junit" | "cobertura" | "metrics" | "requirements" => "gzip",
                    _ => "raw",
                };
                out.push(Artifact {
                    name: Some(name),
                    untracked: false,
                    paths,
                    exclude: Vec::new(),
                    when: "always".into(),
                    artifact_type,
                    artifact_format: format.into(),
                    expire_in: expire_in.clone(),
                });
            }
        }
        out
    }

    impl Pipeline {
        /// The `/api/v4/jobs/request` payload GitLab would send for `name` (an instance of
        /// the evaluation). `token` is the job token the caller issues.
        pub fn payload(
            &self,
            eval: &Evaluation,
            name: &str,
            ctx: &PipelineContext,
            token: &str,
        ) -> Option<JobPayload> {
            let ej = eval.job(name)?;
            let job = self.job(&ej.job)?;
            let cfg = &job.config;
            let timeout = cfg
                .get("timeout")
                .and_then(Node::scalar_to_string)
                .and_then(|t| crate::parse_duration(&t))
                .unwrap_or(DEFAULT_TIMEOUT);
            let mut script = strings(cfg.get("before_script"));
            script.extend(strings(cfg.get("script")));
            let mut steps = Vec::new();
            if cfg.contains_key("script") {
                steps.push(Step {
                    name: "script".into(),
                    script,
                    timeout,
                    when: "on_success".into(),
                    allow_failure: false,
                });
            }
            let after = strings(cfg.get("after_script"));
            if !after.is_empty() {
                steps.push(Step {
                    name: "after_script".into(),
                    script: after,
                    timeout,
                    when: "always".into(),
                    allow_failure: true,
                });
            }
            let run = cfg.get("run").filter(|n| !n.is_null()).map(run_json);
            let job_url = format!(
                "{}/{}/-/jobs/{}",
                ctx.server_url.trim_end_matches('/'),
                ctx.project_path,
                ej.id
            );
            // Variables GitLab adds when a runner picks the job: they carry the job token or
            // describe the runner and the start of the job.
            let host_path = ctx
                .server_url
                .split_once("://")
                .map_or(ctx.server_url.as_str(), |(_, rest)| rest)
                .trim_end_matches('/');
            let protocol = ctx.server_url.split_once("://").map_or("https", |(p, _)| p);
            let repository_url = format!(
                "{protocol}://gitlab-ci-token:{token}@{host_path}/{}.git",
                ctx.project_path
            );
            let started_at = ctx
                .job_started_at
                .clone()
                .or_else(|| ctx.pipeline_created_at.clone())
                .unwrap_or_else(|| ctx.commit_timestamp.clone());
            let mut specials: Vec<(&str, String, bool, bool)> = vec![
                ("CI_JOB_TOKEN", token.to_string(), false, true),
                ("CI_JOB_URL", job_url, true, false),
                ("CI_JOB_STARTED_AT", started_at, true, false),
                ("CI_REGISTRY_USER", "gitlab-ci-token".into(), true, false),
                ("CI_REGISTRY_PASSWORD", token.to_string(), false, true),
                ("CI_REPOSITORY_URL", repository_url.clone(), false, false),
                ("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token".into(), true, false),
                ("CI_DEPENDENCY_PROXY_PASSWORD", token.to_string(), false, true),
            ];
            if let Some(r) = &ctx.runner {
                specials.push(("CI_RUNNER_ID", r.id.to_string(), true, false));
                specials.push(("CI_RUNNER_DESCRIPTION", r.description.clone(), true, false));
                // A JSON array, e.g. `["tag_1", "tag_2"]`.
                let tags = serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".into());
                specials.push(("CI_RUNNER_TAGS", tags, true, false));
            }
            let job_vars = ej.variables();
            let mut variables: Vec<JobVariable> = Vec::with_capacity(job_vars.len() + specials.len());
            for (key, value, public, masked) in specials {
                if !ej.defines(key) {
                    variables.push(JobVariable {
                        key: key.into(),
                        value,
                        public,
                        masked,
                        ..JobVariable::default()
                    });
                }
            }
            // `Ci::BuildRunnerPresenter#git_depth`: the job's GIT_DEPTH (Ruby's `to_i`), else
            // the project's default depth.
            let git_depth = job_vars
                .iter()
                .find(|v| v.key == "GIT_DEPTH")
                .map_or(DEFAULT_GIT_DEPTH, |v| {
                    ruby_to_i(&v.value).clamp(0, i64::from(u32::MAX)) as u32
                });
            for v in job_vars {
                variables.push(JobVariable {
                    key: v.key.clone(),
                    value: v.value.clone(),
                    public: v.public && v.level <= VariableLevel::Job,
                    file: v.file,
                    masked: v.masked,
                    raw: v.raw,
                });
            }
            let variables = runner_variables(variables);
            let dependencies = dependencies(eval, ej, cfg);
            Some(JobPayload {
                id: ej.id,
                token: token.to_string(),
                allow_git_fetch: true,
                job_info: JobInfo {
                    id: ej.id,
                    name: ej.name.clone(),
                    stage: ej.stage.clone(),
                    project_id: ctx.project_id,
                    project_name: ctx
                        .project_path
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    pipeline_id: Some(ctx.pipeline_id),
                    time_in_queue_seconds: None,
                },
                git_info: GitInfo {
                    // As GitLab's `Ci::Build#repo_url`: the project's HTTP URL with the job
                    // token as credentials (masked in traces like every token).
                    repo_url: repository_url,
                    reference: ctx.ref_name.clone(),
                    sha: ctx.sha.clone(),
                    before_sha: ctx.before_sha.clone(),
                    ref_type: if ctx.tag { "tag".into() } else { "branch".into() },
                    refspecs: refspecs(ctx, git_depth),
                    depth: git_depth,
                },
                runner_info: RunnerInfo {
                    timeout,
                    runner_session_url: None,
                },
                variables,
                steps,
                image: cfg.get("image").and_then(image),
                services: cfg
                    .get("services")
                    .and_then(Node::as_seq)
                    .map(|s| s.iter().filter_map(service).collect())
                    .unwrap_or_default(),
                artifacts: artifacts(cfg.get("artifacts")),
                cache: caches(cfg.get("cache"), ctx),
                credentials: Vec::new(),
                dependencies,
                features: Features {
                    trace_sections: true,
                    token_mask_prefixes: TOKEN_MASK_PREFIXES.iter().map(|s| s.to_string()).collect(),
                    failure_reasons: FAILURE_REASONS.iter().map(|s| s.to_string()).collect(),
                },
                run,
            })
        }
    }

    /// `Ci::BuildRunnerPresenter#runner_variables`: GitLab expands references between a
    /// job's variables before sending them (`sort_and_expand_all(keep_undefined: true,
    /// expand_file_refs: false, expand_raw_refs: false)`): variables in dependency order
    /// (`TSort`), each non-raw value with its references to earlier ones replaced; unknown
    /// references, references to file or raw variables, `$$` and `%%` stay as written. A
    /// reference cycle leaves every value as it was.
    fn runner_variables(vars: Vec<JobVariable>) -> Vec<JobVariable> {
        if !vars
            .iter()
            .any(|v| !v.raw && (v.value.contains('$') || v.value.contains('%')))
        {
            return vars;
        }
        let index: HashMap<&str, usize> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (v.key.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = vars
            .iter()
            .map(|v| {
                if v.raw {
                    return Vec::new();
                }
                crate::expand::references(&v.value)
                    .iter()
                    .filter_map(|k| index.get(k.as_str()).copied())
                    .collect()
            })
            .collect();
        let Some(order) = tsort(&deps) else {
            return vars;
        };
        let mut done: HashMap<String, (String, bool)> = HashMap::with_capacity(vars.len());
        let mut slots: Vec<Option<JobVariable>> = vars.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(slots.len());
        for i in order {
            let Some(mut v) = slots[i].take() else { continue };
            if !deps[i].is_empty() {
                v.value = crate::expand::server_walk(&v.value, |name| match done.get(name) {
                    Some((value, true)) => Some(value.clone()),
                    _ => None,
                });
            }
            done.insert(v.key.clone(), (v.value.clone(), !v.file && !v.raw));
            out.push(v);
        }
        out
    }

    /// Ruby's `TSort#tsort` over `deps` (children first, nodes in index order); `None`
    /// when a cycle of two or more nodes exists (`Sort#valid?`). A node referring to
    /// itself is no cycle there.
    fn tsort(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
        // 0 = new, 1 = on the path, 2 = done
        let mut state = vec![0u8; deps.len()];
        let mut order = Vec::with_capacity(deps.len());
        for start in 0..deps.len() {
            if state[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            state[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = deps[node].get(*next) {
                    *next += 1;
                    if child == node {
                        continue;
                    }
                    match state[child] {
                        0 => {
                            state[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => return None,
                        _ => {}
                    }
                } else {
                    state[node] = 2;
                    order.push(node);
                    stack.pop();
                }
            }
        }
        Some(order)
    }

    /// `run:` as GitLab sends it: a JSON string whose step keys come in GitLab's order
    /// (`env`, `name`, `script`/`step`, `inputs`, then any others), as the
    /// `run_steps.yml` payload fixture shows.
    fn run_json(n: &Node) -> String {
        const ORDER: &[&str] = &["env", "name", "script", "step", "inputs"];
        let steps: Vec<serde_json::Value> = n
            .as_seq()
            .unwrap_or_default()
            .iter()
            .map(|step| match step.as_map() {
                Some(m) => {
                    let mut o = serde_json::Map::new();
                    for k in ORDER {
                        if let Some(v) = m.get(k) {
                            o.insert(k.to_string(), v.to_json());
                        }
                    }
                    for (k, v) in m.iter() {
                        if !ORDER.contains(&k) {
                            o.insert(k.to_string(), v.to_json());
                        }
                    }
                    serde_json::Value::Object(o)
                }
                None => step.to_json(),
            })
            .collect();
        serde_json::to_string(&steps).unwrap_or_default()
    }

    /// Jobs whose artifacts `ej` downloads: its `dependencies:` list, else its needs with
    /// artifacts, else every job of earlier stages (one list shared per stage).
    fn dependencies(eval: &Evaluation, ej: &EvaluatedJob, cfg: &Mapping) -> Dependencies {
        if let Some(list) = cfg.get("dependencies").and_then(Node::as_seq) {
            let names: Vec<String> = list.iter().filter_map(Node::scalar_to_string).collect();
            return eval
                .jobs
                .iter()
                .filter(|j| names.iter().any(|n| *n == j.name || *n == j.job))
                .map(EvaluatedJob::dependency)
                .collect();
        }
        match &ej.needs {
            Some(needs) => needs
                .iter()
                .filter(|(_, artifacts, _)| *artifacts)
                .filter_map(|(n, _, _)| eval.job(n))
                .map(EvaluatedJob::dependency)
                .collect(),
            None => Dependencies::shared(eval.stage_dependencies(ej.stage_index)),
        }
    }

    /// GitLab's default `ci_default_git_depth` for a project.
    const DEFAULT_GIT_DEPTH: u32 = 20;

    /// Ruby's `String#to_i`: optional leading whitespace and sign, then digits; anything else 0.
    fn ruby_to_i(s: &str) -> i64 {
        let t = s.trim_start();
        let (neg, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        let n = digits[..end]
            .parse::<i64>()
            .unwrap_or(if end == 0 { 0 } else { i64::MAX });
        if neg { -n } else { n }
    }

    /// `Ci::BuildRunnerPresenter#refspecs`: the pipeline's persistent ref (GitLab creates
    /// `refs/pipelines/<id>` for every pipeline), then the job's branch or tag when the clone is
    /// shallow, or all branches and tags for a full clone.
    fn refspecs(ctx: &PipelineContext, depth: u32) -> Vec<String> {
        let mut specs = vec![format!("+{}:refs/pipelines/{}", ctx.sha, ctx.pipeline_id)];
        let branch = |r: &str| format!("+refs/heads/{r}:refs/remotes/origin/{r}");
        let tag = |r: &str| format!("+refs/tags/{r}:refs/tags/{r}");
        if depth > 0 {
            specs.push(if ctx.tag {
                tag(&ctx.ref_name)
            } else {
                branch(&ctx.ref_name)
            });
        } else {
            specs.push(branch("*"));
            specs.push(tag("*"));
        }
        specs
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::{PipelineContext, Variable, VariableLevel};
    use crate::{LoadOptions, MemorySource, load};

    #[test]
    fn payload_fields() {
        let y = "stages: [build, test]\ndefault:\n  before_script: [echo before]\nvariables: {G: g}\nbuild:\n  stage: build\n  script: [make, [nested]]\n  artifacts: {paths: [out/], expire_in: 1 week, reports: {dotenv: build.env}}\n  cache: {key: deps, paths: [.m2/], fallback_keys: [main]}\ntest:\n  stage: test\n  script: make test\n  after_script: [echo done]\n  timeout: 10m\nlint:\n  stage: test\n  needs: []\n  script: x\n";
        let p = load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default());
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        let mut ctx = PipelineContext {
            protected_ref: true,
            ..PipelineContext::default()
        };
        let mut secret = Variable::plain("DEPLOY_KEY", "very-secret-value", VariableLevel::Project);
        secret.masked = true;
        secret.public = false;
        ctx.variables.push(secret);
        let e = p.evaluate(&ctx);
        let b = p.payload(&e, "build", &ctx, "tok").unwrap();
        assert_eq!(b.steps[0].script, vec!["echo before", "make", "nested"]);
        assert_eq!(b.cache[0].key, "deps-protected");
        assert_eq!(b.cache[0].fallback_keys, vec!["main-protected"]);
        assert_eq!(b.artifacts[0].paths, vec!["out/"]);
        assert_eq!(b.artifacts[1].artifact_type, "dotenv");
        let var = |name: &str| b.variables.iter().find(|v| v.key == name).cloned().unwrap();
        assert!(!var("CI_JOB_TOKEN").public && var("CI_JOB_TOKEN").masked);
        assert!(!var("DEPLOY_KEY").public && var("DEPLOY_KEY").masked);
        assert!(var("G").public);
        assert_eq!(var("CI_JOB_NAME").value, "build");
        let t = p.payload(&e, "test", &ctx, "tok").unwrap();
        assert_eq!(t.steps[1].name, "after_script");
        assert_eq!(t.steps[1].when, "always");
        assert_eq!(t.runner_info.timeout, 600);
        assert_eq!(
            t.dependencies.iter().map(|d| &*d.name).collect::<Vec<_>>(),
            vec!["build"]
        );
        let l = p.payload(&e, "lint", &ctx, "tok").unwrap();
        assert!(l.dependencies.is_empty());
        // The same types read a payload back.
        let json = serde_json::to_string(&b).unwrap();
        let back: super::JobPayload = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn git_info_as_gitlabs_build_runner_presenter() {
        let y = "a: {script: x}\nfull: {script: x, variables: {GIT_DEPTH: \"0\"}}\nten: {script: x, variables: {GIT_DEPTH: \" 10abc\"}}\n";
        let p = load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default());
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        let mut ctx = PipelineContext {
            server_url: "https://gitlab.example.com".into(),
            project_path: "group/app".into(),
            ref_name: "feature/x".into(),
            sha: "a".repeat(40),
            pipeline_id: 77,
            ..PipelineContext::default()
        };
        let e = p.evaluate(&ctx);
        let a = p.payload(&e, "a", &ctx, "glcbt-123").unwrap();
        assert_eq!(
            a.git_info.repo_url,
            "https://gitlab-ci-token:glcbt-123@gitlab.example.com/group/app.git"
        );
        let sha = "a".repeat(40);
        assert_eq!(
            a.git_info.refspecs,
            vec![
                format!("+{sha}:refs/pipelines/77"),
                "+refs/heads/feature/x:refs/remotes/origin/feature/x".to_string()
            ]
        );
        assert_eq!(a.git_info.depth, 20);
        let full = p.payload(&e, "full", &ctx, "t").unwrap();
        assert_eq!(full.git_info.depth, 0);
        assert_eq!(
            full.git_info.refspecs[1..],
            ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
        );
        // Ruby's to_i: leading blanks, digits up to the first non-digit.
        assert_eq!(p.payload(&e, "ten", &ctx, "t").unwrap().git_info.depth, 10);
        ctx.tag = true;
        ctx.ref_name = "v1.2".into();
        let e = p.evaluate(&ctx);
        let t = p.payload(&e, "a", &ctx, "t").unwrap();
        assert_eq!(t.git_info.refspecs[1], "+refs/tags/v1.2:refs/tags/v1.2");
        assert_eq!(t.git_info.ref_type, "tag");
    }

    #[test]
    fn payloads_of_a_stage_share_dependencies_until_changed() {
        let y = "stages: [a, b]\na1: {stage: a, script: x}\na2: {stage: a, script: x}\nb1: {stage: b, script: x}\nb2: {stage: b, script: x}\nb3: {stage: b, script: x, needs: [a2]}\n";
        let p = load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default());
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        let ctx = PipelineContext::default();
        let e = p.evaluate(&ctx);
        let b1 = p.payload(&e, "b1", &ctx, "t").unwrap();
        let mut b2 = p.payload(&e, "b2", &ctx, "t").unwrap();
        let b3 = p.payload(&e, "b3", &ctx, "t").unwrap();
        let names = |d: &super::Dependencies| d.iter().map(|d| d.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&b1.dependencies), vec!["a1", "a2"]);
        assert!(b1.dependencies.ptr_eq(&b2.dependencies), "one list per stage");
        assert_eq!(names(&b3.dependencies), vec!["a2"]);
        // Writing through the shared list copies it first: the other payload keeps its own.
        b2.dependencies[0].token = "dep-token".into();
        b2.dependencies.push(super::Dependency::default());
        // Code written for a Vec keeps working: mutable and owned iteration, extend.
        let mut b1_copy = b1.clone();
        for d in &mut b1_copy.dependencies {
            d.token = "t2".into();
        }
        b1_copy.dependencies.extend([super::Dependency::default()]);
        assert_eq!(b1_copy.dependencies.len(), 3);
        assert_eq!(b1.dependencies[1].token, "");
        let owned: Vec<String> = b1_copy.dependencies.into_iter().map(|d| d.token).collect();
        assert_eq!(owned, vec!["t2", "t2", ""]);
        assert!(!b1.dependencies.ptr_eq(&b2.dependencies));
        assert_eq!(b1.dependencies[0].token, "");
        assert_eq!(b2.dependencies.len(), 3);
        // Serialized as a plain array, and read back.
        let json = serde_json::to_value(&b1.dependencies).unwrap();
        assert_eq!(json[1]["name"], "a2");
        assert_eq!(json[1]["id"], b1.dependencies[1].id);
        let back: super::Dependencies = serde_json::from_value(json).unwrap();
        assert_eq!(back, b1.dependencies);
        let v: Vec<super::Dependency> = back.into();
        assert_eq!(v.len(), 2);
    }
}
