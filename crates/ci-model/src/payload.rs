//! The job payload: the JSON GitLab answers to `POST /api/v4/jobs/request`.
//!
//! These types are the one contract between where jobs come from (a GitLab server, or a
//! local pipeline) and the executors. Field names and shapes follow GitLab's
//! `lib/api/entities/ci/job_request/*` and GitLab Runner's `common/spec/spec.go`; every
//! type also deserializes what a real GitLab sends (unknown fields are ignored, missing
//! ones take their defaults).

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
    /// Jobs whose artifacts to download.
    pub dependencies: Vec<Dependency>,
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
    /// `docker:`/`kubernetes:` options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_opts: Option<serde_json::Value>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
    /// Job name.
    pub name: String,
    /// That job's token, for the download.
    pub token: String,
    /// The artifacts archive, when there is one.
    pub artifacts_file: Option<ArtifactsFile>,
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
