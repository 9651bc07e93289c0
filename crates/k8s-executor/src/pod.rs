//! Pure construction of a job's Pod and Secret from the configuration and the payload.
//!
//! Owns: container layout (build, helper, one per service), shared volumes for builds,
//! scripts and logs, user volumes, labels and annotations (podci's own and GitLab Runner's
//! `job.runner.gitlab.com/*` so existing dashboards and cleanup jobs keep working),
//! secure defaults (no privilege, `NET_RAW` dropped, no service account token), per-job
//! `KUBERNETES_*` overwrites within the configured limits, and the allow-lists. No I/O, no
//! clock: everything that varies per run comes in through [`PodParams`].

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HostAlias, KeyToPath, LocalObjectReference,
    Pod, PodSecurityContext, PodSpec, ResourceRequirements, SELinuxOptions, Secret, SecretKeySelector,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use podci_model::payload::JobPayload;

use crate::config::{self, KubernetesConfig};

/// The helper image when `helper_image` is not configured: podci itself does checkout,
/// cache and artifacts, and reads the log file.
pub const DEFAULT_HELPER_IMAGE: &str = "registry.gitlab.com/podci/podci-helper:0.1.0";
/// Label every podci object carries; the orphan sweeper selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "podci";
/// Label naming the runner (short token) that created the object.
pub const RUNNER_LABEL: &str = "podci.dev/runner";
/// Annotation with the RFC 3339 time after which the object is an orphan for sure.
pub const DEADLINE_ANNOTATION: &str = "podci.dev/deadline";
/// Where the job's repository lives (GitLab Runner's `builds_dir`).
pub const BUILDS_DIR: &str = "/builds";
/// The name of the build container.
pub const BUILD_CONTAINER: &str = "build";
/// The name of the helper container.
pub const HELPER_CONTAINER: &str = "helper";
/// Where file variables are mounted from the job Secret.
pub const FILE_VARIABLES_DIR: &str = "/run/podci/variables";

/// Why a Pod cannot be built for this job.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PodError {
    /// The job's image is not in `allowed_images`.
    #[error(
        "the image {image:?} is not allowed: it matches none of allowed_images {allowed:?} in [runners.kubernetes]"
    )]
    ImageNotAllowed { image: String, allowed: Vec<String> },
    /// A service's image is not in `allowed_services`.
    #[error(
        "the service image {image:?} is not allowed: it matches none of allowed_services {allowed:?} in [runners.kubernetes]"
    )]
    ServiceNotAllowed { image: String, allowed: Vec<String> },
    /// No image in the job and none configured.
    #[error("the job names no image and [runners.kubernetes] has no default `image`")]
    NoImage,
    /// A pull policy the administrator does not allow.
    #[error("pull policy {policy:?} is not allowed: allowed_pull_policies is {allowed:?}")]
    PullPolicyNotAllowed { policy: String, allowed: Vec<String> },
    /// A pull policy name GitLab does not have.
    #[error("unknown pull policy {0:?}: use always, never or if-not-present")]
    UnknownPullPolicy(String),
    /// A `KUBERNETES_*` resource overwrite above its `*_overwrite_max_allowed`.
    #[error("{variable}={value} is higher than the maximum allowed {max:?} ({key})")]
    OverwriteTooHigh {
        variable: String,
        value: String,
        max: String,
        key: String,
    },
    /// A `KUBERNETES_*` overwrite that the configuration's regex does not allow.
    #[error("{variable}={value:?} is not allowed: it does not match {key} = {regex:?}")]
    OverwriteNotAllowed {
        variable: String,
        value: String,
        key: String,
        regex: String,
    },
    /// A value that is not a Kubernetes quantity.
    #[error("{what}: {value:?} is not a Kubernetes quantity such as 500m, 2, 1Gi")]
    BadQuantity { what: String, value: String },
    /// An overwrite regex in the configuration that does not compile.
    #[error("{key} is not a valid regular expression: {message}")]
    BadRegex { key: String, message: String },
}

/// What varies per run and is not in the payload or configuration.
#[derive(Debug, Clone)]
pub struct PodParams {
    /// The runner's short token (first 8 characters), as in GitLab Runner's Pod names.
    pub runner_short_token: String,
    /// `CI_CONCURRENT_ID`: which of the runner's job slots runs this job.
    pub concurrent_id: u32,
    /// Lowercase alphanumerics making the Pod name unique.
    pub suffix: String,
    /// Unix time now (for the orphan deadline annotation).
    pub now_unix: i64,
    /// The GitLab job URL for GitLab Runner's `job.runner.gitlab.com/url` annotation.
    pub job_url: String,
}

/// A Pod and the per-job Secret, ready to create.
#[derive(Debug, Clone)]
pub struct JobPod {
    pub name: String,
    pub namespace: String,
    pub pod: Pod,
    /// Registry credentials (`.dockerconfigjson`) and non-public variables; `None` when
    /// the job has neither.
    pub secret: Option<Secret>,
    /// Directory of the step scripts inside the build container.
    pub scripts_dir: String,
    /// Directory of the log file inside the build and helper containers.
    pub logs_dir: String,
    /// `CI_PROJECT_DIR`.
    pub build_dir: String,
    /// Overwrites that were asked for but are not enabled, for the trace.
    pub warnings: Vec<String>,
    /// `KUBERNETES_BEARER_TOKEN` when `bearer_token_overwrite_allowed`; a secret.
    pub bearer_token_overwrite: Option<String>,
}

impl JobPod {
    /// The log file the build shell tees its output into.
    pub fn log_file(&self) -> String {
        format!("{}/output.log", self.logs_dir)
    }
}

/// GitLab's pull policy names to Kubernetes'.
pub fn pull_policy_name(p: &str) -> Option<&'static str> {
    match p {
        "always" => Some("Always"),
        "never" => Some("Never"),
        "if-not-present" => Some("IfNotPresent"),
        _ => None,
    }
}

/// An overwrite regex as GitLab Runner uses it (Go's `regexp.MatchString`: unanchored).
pub fn compile_overwrite_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(re)
}

/// A Kubernetes quantity in milli-units, for comparing against maximums.
pub fn parse_quantity_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() || num.starts_with('-') {
        return None;
    }
    let num = num.strip_prefix('+').unwrap_or(num);
    if num.is_empty() || num.contains(['+', '-']) || num.matches('.').count() > 1 || num == "." {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.len() > 18 || frac_part.len() > 9 {
        return None;
    }
    // Work in nano-units so that fractions such as 0.5 or 1.5Gi are exact.
    let int: i128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let mut frac: i128 = 0;
    for (i, d) in frac_part.bytes().enumerate() {
        frac += i128::from(d - b'0') * 10i128.pow(8 - i as u32);
    }
    let nanos = int * 1_000_000_000 + frac;
    // (numerator, denominator) of the suffix's multiplier.
    let (num, den): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        _ => return None,
    };
    // nano-units to milli-units: divide by 1e6.
    Some(nanos.checked_mul(num)? / den / 1_000_000)
}

/// Whether `name` is an RFC 1123 DNS label (a valid container name).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A label value Kubernetes accepts: at most 63 of `[A-Za-z0-9._-]`, alphanumeric ends.
pub fn sanitize_label_value(v: &str) -> String {
    let mut s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    while s.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.pop();
    }
    while s.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.remove(0);
    }
    s
}

fn glob_matches(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| {
        globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher().is_match(value))
            .unwrap_or(false)
    })
}

/// The job variables as `(key, value)` pairs, for `$VAR` expansion in configured values.
fn variable_pairs(payload: &JobPayload, concurrent_id: u32) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = payload
        .variables
        .iter()
        .filter(|v| v.public)
        .map(|v| (v.key.clone(), v.value.clone()))
        .collect();
    v.push(("CI_CONCURRENT_ID".into(), concurrent_id.to_string()));
    v
}

fn var<'a>(payload: &'a JobPayload, key: &str) -> Option<&'a str> {
    payload
        .variables
        .iter()
        .rev()
        .find(|v| v.key == key)
        .map(|v| v.value.as_str())
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

struct ResourceKeys<'a> {
    prefix: &'a str,
    var_prefix: &'a str,
    values: [(&'a str, &'a str, &'a str, &'a str); 6],
}

fn resource_keys<'a>(cfg: &'a KubernetesConfig, which: &str) -> ResourceKeys<'a> {
    // (k8s resource name, limit|request, configured value, max allowed)
    match which {
        "service" => ResourceKeys {
            prefix: "service_",
            var_prefix: "KUBERNETES_SERVICE_",
            values: [
                (
                    "cpu",
                    "limit",
                    &cfg.service_cpu_limit,
                    &cfg.service_cpu_limit_overwrite_max_allowed,
                ),
                (
                    "cpu",
                    "request",
                    &cfg.service_cpu_request,
                    &cfg.service_cpu_request_overwrite_max_allowed,
                ),
                (
                    "memory",
                    "limit",
                    &cfg.service_memory_limit,
                    &cfg.service_memory_limit_overwrite_max_allowed,
                ),
                (
                    "memory",
                    "request",
                    &cfg.service_memory_request,
                    &cfg.service_memory_request_overwrite_max_allowed,
                ),
                (
                    "ephemeral-storage",
                    "limit",
                    &cfg.service_ephemeral_storage_limit,
                    &cfg.service_ephemeral_storage_limit_overwrite_max_allowed,
                ),
                (
                    "ephemeral-storage",
                    "request",
                    &cfg.service_ephemeral_storage_request,
                    &cfg.service_ephemeral_storage_request_overwrite_max_allowed,
                ),
            ],
        },
        "helper" => ResourceKeys {
            prefix: "helper_",
            var_prefix: "KUBERNETES_HELPER_",
            values: [
                (
                    "cpu",
                    "limit",
                    &cfg.helper_cpu_limit,
                    &cfg.helper_cpu_limit_overwrite_max_allowed,
                ),
                (
                    "cpu",
                    "request",
                    &cfg.helper_cpu_request,
                    &cfg.helper_cpu_request_overwrite_max_allowed,
                ),
                (
                    "memory",
                    "limit",
                    &cfg.helper_memory_limit,
                    &cfg.helper_memory_limit_overwrite_max_allowed,
                ),
                (
                    "memory",
                    "request",
                    &cfg.helper_memory_request,
                    &cfg.helper_memory_request_overwrite_max_allowed,
                ),
                (
                    "ephemeral-storage",
                    "limit",
                    &cfg.helper_ephemeral_storage_limit,
                    &cfg.helper_ephemeral_storage_limit_overwrite_max_allowed,
                ),
                (
                    "ephemeral-storage",
                    "request",
                    &cfg.helper_ephemeral_storage_request,
                    &cfg.helper_ephemeral_storage_request_overwrite_max_allowed,
                ),
            ],
        },
        _ => ResourceKeys {
            prefix: "",
            var_prefix: "KUBERNETES_",
            values: [
                (
                    "cpu",
                    "limit",
                    &cfg.cpu_limit,
                    &cfg.cpu_limit_overwrite_max_allowed,
                ),
                (
                    "cpu",
                    "request",
                    &cfg.cpu_request,
                    &cfg.cpu_request_overwrite_max_allowed,
                ),
                (
                    "memory",
                    "limit",
                    &cfg.memory_limit,
                    &cfg.memory_limit_overwrite_max_allowed,
                ),
                (
                    "memory",
                    "request",
                    &cfg.memory_request,
                    &cfg.memory_request_overwrite_max_allowed,
                ),
                (
                    "ephemeral-storage",
                    "limit",
                    &cfg.ephemeral_storage_limit,
                    &cfg.ephemeral_storage_limit_overwrite_max_allowed,
                ),
                (
                    "ephemeral-storage",
                    "request",
                    &cfg.ephemeral_storage_request,
                    &cfg.ephemeral_storage_request_overwrite_max_allowed,
                ),
            ],
        },
    }
}

/// Requests and limits for one kind of container, with `KUBERNETES_*` overwrites applied
/// when a maximum is configured (GitLab Runner ignores an overwrite without a maximum).
fn resources(
    cfg: &KubernetesConfig,
    payload: &JobPayload,
    which: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<ResourceRequirements>, PodError> {
    let keys = resource_keys(cfg, which);
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    for (res, kind, configured, max) in keys.values {
        let res_var = res.replace('-', "_").to_uppercase();
        let variable = format!("{}{}_{}", keys.var_prefix, res_var, kind.to_uppercase());
        let key_base = format!("{}{}_{}", keys.prefix, res.replace('-', "_"), kind);
        let mut value = configured.to_string();
        if let Some(over) = var(payload, &variable).filter(|v| !v.is_empty()) {
            if max.is_empty() {
                warnings.push(format!(
                    "{variable} is ignored: {key_base}_overwrite_max_allowed is not set in [runners.kubernetes]"
                ));
            } else {
                let o = parse_quantity_milli(over).ok_or_else(|| PodError::BadQuantity {
                    what: variable.clone(),
                    value: over.to_string(),
                })?;
                let m = parse_quantity_milli(max).ok_or_else(|| PodError::BadQuantity {
                    what: format!("{key_base}_overwrite_max_allowed"),
                    value: max.to_string(),
                })?;
                if o > m {
                    return Err(PodError::OverwriteTooHigh {
                        variable,
                        value: over.to_string(),
                        max: max.to_string(),
                        key: format!("{key_base}_overwrite_max_allowed"),
                    });
                }
                value = over.to_string();
            }
        }
        if value.is_empty() {
            continue;
        }
        if parse_quantity_milli(&value).is_none() {
            return Err(PodError::BadQuantity {
                what: key_base,
                value,
            });
        }
        if kind == "limit" {
            limits.insert(res.to_string(), q(&value));
        } else {
            requests.insert(res.to_string(), q(&value));
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return Ok(None);
    }
    Ok(Some(ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..Default::default()
    }))
}

/// A regex-guarded overwrite: `None` when not asked for or not enabled (with a warning).
fn regex_overwrite(
    payload: &JobPayload,
    variable: &str,
    key: &str,
    regex: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, PodError> {
    let Some(value) = var(payload, variable).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if regex.is_empty() {
        warnings.push(format!(
            "{variable} is ignored: {key} is not set in [runners.kubernetes]"
        ));
        return Ok(None);
    }
    let re = compile_overwrite_regex(regex).map_err(|e| PodError::BadRegex {
        key: key.into(),
        message: e.to_string(),
    })?;
    if !re.is_match(value) {
        return Err(PodError::OverwriteNotAllowed {
            variable: variable.into(),
            value: value.into(),
            key: key.into(),
            regex: regex.into(),
        });
    }
    Ok(Some(value.to_string()))
}

/// `KUBERNETES_POD_ANNOTATIONS_*`-style `key=value` overwrites whose key matches `regex`.
fn keyed_overwrites(
    payload: &JobPayload,
    prefix: &str,
    key: &str,
    regex: &str,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, PodError> {
    let mut out = BTreeMap::new();
    let asked: Vec<_> = payload
        .variables
        .iter()
        .filter(|v| v.key.starts_with(prefix))
        .collect();
    if asked.is_empty() {
        return Ok(out);
    }
    if regex.is_empty() {
        warnings.push(format!(
            "{prefix}* variables are ignored: {key} is not set in [runners.kubernetes]"
        ));
        return Ok(out);
    }
    let re = compile_overwrite_regex(regex).map_err(|e| PodError::BadRegex {
        key: key.into(),
        message: e.to_string(),
    })?;
    for v in asked {
        let (k, val) = v.value.split_once('=').unwrap_or((v.value.as_str(), ""));
        if !re.is_match(k) {
            return Err(PodError::OverwriteNotAllowed {
                variable: v.key.clone(),
                value: v.value.clone(),
                key: key.into(),
                regex: regex.into(),
            });
        }
        out.insert(k.to_string(), val.to_string());
    }
    Ok(out)
}

fn container_security_context(
    sc: &config::ContainerSecurityContext,
    privileged: Option<bool>,
    allow_escalation: Option<bool>,
    cap_add: &[String],
    cap_drop: &[String],
) -> SecurityContext {
    let mut add: Vec<String> = cap_add.to_vec();
    let mut drop: Vec<String> = Vec::new();
    // NET_RAW is dropped unless an administrator adds it back (GitLab Runner's default).
    if !add.iter().any(|c| c == "NET_RAW") {
        drop.push("NET_RAW".into());
    }
    drop.extend(cap_drop.iter().cloned());
    if let Some(c) = &sc.capabilities {
        add.extend(c.add.iter().cloned());
        drop.extend(c.drop.iter().cloned());
    }
    add.retain(|a| !drop.contains(a));
    drop.dedup();
    SecurityContext {
        privileged: Some(sc.privileged.or(privileged).unwrap_or(false)),
        allow_privilege_escalation: sc.allow_privilege_escalation.or(allow_escalation),
        run_as_user: sc.run_as_user,
        run_as_group: sc.run_as_group,
        run_as_non_root: sc.run_as_non_root,
        read_only_root_filesystem: sc.read_only_root_filesystem,
        proc_mount: (!sc.proc_mount.is_empty()).then(|| sc.proc_mount.clone()),
        se_linux_options: (!sc.selinux_type.is_empty()).then(|| SELinuxOptions {
            type_: Some(sc.selinux_type.clone()),
            ..Default::default()
        }),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then_some(add),
            drop: Some(drop),
        }),
        ..Default::default()
    }
}

/// snake_case keys of a TOML table to the camelCase JSON Kubernetes expects.
fn toml_to_k8s_json(v: &toml::Value) -> serde_json::Value {
    fn camel(k: &str) -> String {
        let mut out = String::new();
        let mut up = false;
        for c in k.chars() {
            if c == '_' {
                up = true;
            } else if up {
                out.extend(c.to_uppercase());
                up = false;
            } else {
                out.push(c);
            }
        }
        out
    }
    match v {
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (camel(k), toml_to_k8s_json(v))).collect())
        }
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_k8s_json).collect()),
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
    }
}

fn pull_policy(
    cfg: &KubernetesConfig,
    job_policies: Option<&Vec<String>>,
) -> Result<Option<String>, PodError> {
    let chosen: Vec<String> = match job_policies.filter(|p| !p.is_empty()) {
        Some(p) => p.clone(),
        None => cfg.pull_policy.0.clone(),
    };
    let allowed: Vec<String> = if cfg.allowed_pull_policies.is_empty() {
        cfg.pull_policy.0.clone()
    } else {
        cfg.allowed_pull_policies.clone()
    };
    // Kubernetes takes one policy; the first one is used, as GitLab Runner does.
    let Some(first) = chosen.first() else {
        return Ok(None);
    };
    if job_policies.is_some_and(|p| !p.is_empty()) && !allowed.is_empty() && !allowed.contains(first) {
        return Err(PodError::PullPolicyNotAllowed {
            policy: first.clone(),
            allowed,
        });
    }
    pull_policy_name(first)
        .map(|p| Some(p.to_string()))
        .ok_or_else(|| PodError::UnknownPullPolicy(first.clone()))
}

/// A Pod name as GitLab Runner's: `runner-<token8>-project-<id>-concurrent-<n>-<suffix>`,
/// at most 63 characters.
pub fn pod_name(payload: &JobPayload, params: &PodParams) -> String {
    let token: String = params
        .runner_short_token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    let suffix: String = params
        .suffix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let head = format!(
        "runner-{}-project-{}-concurrent-{}",
        if token.is_empty() { "podci" } else { &token },
        payload.job_info.project_id,
        params.concurrent_id
    );
    let max_head = 63usize.saturating_sub(suffix.len() + 1);
    let mut head: String = head.chars().take(max_head).collect();
    while head.ends_with('-') {
        head.pop();
    }
    if suffix.is_empty() {
        head
    } else {
        format!("{head}-{suffix}")
    }
}

/// Builds the Pod and Secret for a job. Pure: the same inputs give the same objects.
pub fn build_pod(
    cfg: &KubernetesConfig,
    payload: &JobPayload,
    params: &PodParams,
) -> Result<JobPod, PodError> {
    let mut warnings = Vec::new();
    let vars = variable_pairs(payload, params.concurrent_id);
    let expand = |s: &str| podci_model::expand::expand_existing(s, &vars);

    // Images and allow-lists.
    let image = payload
        .image
        .as_ref()
        .map(|i| i.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| (!cfg.image.is_empty()).then(|| cfg.image.clone()))
        .ok_or(PodError::NoImage)?;
    let image = expand(&image);
    if !cfg.allowed_images.is_empty() && !glob_matches(&cfg.allowed_images, &image) {
        return Err(PodError::ImageNotAllowed {
            image,
            allowed: cfg.allowed_images.clone(),
        });
    }
    for s in &payload.services {
        if !cfg.allowed_services.is_empty() && !glob_matches(&cfg.allowed_services, &s.name) {
            return Err(PodError::ServiceNotAllowed {
                image: s.name.clone(),
                allowed: cfg.allowed_services.clone(),
            });
        }
    }

    // Overwrites.
    let namespace = regex_overwrite(
        payload,
        "KUBERNETES_NAMESPACE_OVERWRITE",
        "namespace_overwrite_allowed",
        &cfg.namespace_overwrite_allowed,
        &mut warnings,
    )?
    .unwrap_or_else(|| cfg.namespace.clone());
    let service_account = regex_overwrite(
        payload,
        "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE",
        "service_account_overwrite_allowed",
        &cfg.service_account_overwrite_allowed,
        &mut warnings,
    )?
    .or_else(|| (!cfg.service_account.is_empty()).then(|| cfg.service_account.clone()));
    let bearer_token_overwrite = match var(payload, "KUBERNETES_BEARER_TOKEN").filter(|v| !v.is_empty()) {
        Some(t) if cfg.bearer_token_overwrite_allowed => Some(t.to_string()),
        Some(_) => {
            warnings
                .push("KUBERNETES_BEARER_TOKEN is ignored: bearer_token_overwrite_allowed is false".into());
            None
        }
        None => None,
    };
    let extra_annotations = keyed_overwrites(
        payload,
        "KUBERNETES_POD_ANNOTATIONS_",
        "pod_annotations_overwrite_allowed",
        &cfg.pod_annotations_overwrite_allowed,
        &mut warnings,
    )?;
    let extra_labels = keyed_overwrites(
        payload,
        "KUBERNETES_POD_LABELS_",
        "pod_labels_overwrite_allowed",
        &cfg.pod_labels_overwrite_allowed,
        &mut warnings,
    )?;
    let extra_selectors = keyed_overwrites(
        payload,
        "KUBERNETES_NODE_SELECTOR_",
        "node_selector_overwrite_allowed",
        &cfg.node_selector_overwrite_allowed,
        &mut warnings,
    )?;

    let name = pod_name(payload, params);
    let project = payload.job_info.project_id;
    let job_id = payload.id;
    let scripts_dir = format!("/scripts-{project}-{job_id}");
    let logs_dir = format!("/logs-{project}-{job_id}");
    let build_dir = var(payload, "CI_PROJECT_DIR")
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{BUILDS_DIR}/{}",
                sanitize_label_value(&payload.job_info.project_name)
            )
        });

    // Labels and annotations.
    let mut labels = BTreeMap::new();
    for (k, v) in &cfg.pod_labels {
        labels.insert(k.clone(), sanitize_label_value(&expand(v)));
    }
    for (k, v) in extra_labels {
        labels.insert(k, sanitize_label_value(&v));
    }
    let project_unique = format!(
        "runner-{}-project-{project}-concurrent-{}",
        params.runner_short_token, params.concurrent_id
    );
    // Ours and GitLab Runner's; set last so that they cannot be overwritten.
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(
        RUNNER_LABEL.into(),
        sanitize_label_value(&params.runner_short_token),
    );
    labels.insert("pod".into(), sanitize_label_value(&project_unique));
    labels.insert(
        "job.runner.gitlab.com/pod".into(),
        sanitize_label_value(&project_unique),
    );
    labels.insert("project.runner.gitlab.com/id".into(), project.to_string());
    labels.insert(
        "project.runner.gitlab.com/name".into(),
        sanitize_label_value(&payload.job_info.project_name),
    );
    labels.insert(
        "manager.runner.gitlab.com/id-short".into(),
        sanitize_label_value(&params.runner_short_token),
    );
    labels.insert("podci.dev/job-id".into(), job_id.to_string());

    let timeout = payload.runner_info.timeout;
    let mut annotations = BTreeMap::new();
    for (k, v) in &cfg.pod_annotations {
        annotations.insert(k.clone(), expand(v));
    }
    annotations.extend(extra_annotations);
    annotations.insert("job.runner.gitlab.com/id".into(), job_id.to_string());
    annotations.insert("job.runner.gitlab.com/url".into(), params.job_url.clone());
    annotations.insert("job.runner.gitlab.com/sha".into(), payload.git_info.sha.clone());
    annotations.insert(
        "job.runner.gitlab.com/before_sha".into(),
        payload.git_info.before_sha.clone(),
    );
    annotations.insert(
        "job.runner.gitlab.com/ref".into(),
        payload.git_info.reference.clone(),
    );
    annotations.insert("job.runner.gitlab.com/name".into(), payload.job_info.name.clone());
    annotations.insert("job.runner.gitlab.com/timeout".into(), format!("{timeout}s"));
    annotations.insert("project.runner.gitlab.com/id".into(), project.to_string());
    // After this moment no live runner can still own the Pod: the job deadline has
    // passed, plus the start and cleanup allowances.
    let deadline = params.now_unix
        + timeout as i64
        + cfg.poll_timeout as i64
        + cfg.cleanup_timeout().as_secs() as i64
        + 60;
    annotations.insert(
        DEADLINE_ANNOTATION.into(),
        jiff::Timestamp::from_second(deadline)
            .map(|t| t.to_string())
            .unwrap_or_default(),
    );

    // The per-job Secret: registry credentials and non-public variables.
    let secret_name = format!("{name}-job");
    let mut secret_data: BTreeMap<String, ByteString> = BTreeMap::new();
    let registry_creds: Vec<_> = payload
        .credentials
        .iter()
        .filter(|c| c.kind == "registry")
        .collect();
    if !registry_creds.is_empty() {
        let mut auths = serde_json::Map::new();
        for c in &registry_creds {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
            auths.insert(
                c.url.clone(),
                serde_json::json!({"username": c.username, "password": c.password, "auth": auth}),
            );
        }
        let json = serde_json::json!({"auths": auths}).to_string();
        secret_data.insert(".dockerconfigjson".into(), ByteString(json.into_bytes()));
    }
    let mut env = Vec::new();
    let mut file_items = Vec::new();
    let valid_key = |k: &str| {
        let mut b = k.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    for v in &payload.variables {
        if !valid_key(&v.key) {
            continue;
        }
        if v.file {
            secret_data.insert(v.key.clone(), ByteString(v.value.clone().into_bytes()));
            file_items.push(KeyToPath {
                key: v.key.clone(),
                path: v.key.clone(),
                mode: Some(0o400),
            });
            env.push(EnvVar {
                name: v.key.clone(),
                value: Some(format!("{FILE_VARIABLES_DIR}/{}", v.key)),
                value_from: None,
            });
        } else if v.public {
            env.push(EnvVar {
                name: v.key.clone(),
                value: Some(v.value.clone()),
                value_from: None,
            });
        } else {
            secret_data.insert(v.key.clone(), ByteString(v.value.clone().into_bytes()));
            env.push(EnvVar {
                name: v.key.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key: v.key.clone(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            });
        }
    }
    // A later definition of a key wins, as in the shell script.
    let mut seen = std::collections::BTreeSet::new();
    env.reverse();
    env.retain(|e| seen.insert(e.name.clone()));
    env.reverse();

    let meta = |n: &str| ObjectMeta {
        name: Some(n.to_string()),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..Default::default()
    };
    let secret = (!secret_data.is_empty()).then(|| Secret {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                DEADLINE_ANNOTATION.to_string(),
                annotations.get(DEADLINE_ANNOTATION).cloned().unwrap_or_default(),
            )])),
            ..meta(&secret_name)
        },
        type_: Some(
            if registry_creds.is_empty() {
                "Opaque"
            } else {
                "kubernetes.io/dockerconfigjson"
            }
            .into(),
        ),
        data: Some(secret_data),
        immutable: Some(true),
        ..Default::default()
    });

    // Volumes.
    let empty_dir = |n: &str| Volume {
        name: n.into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    };
    let mut volumes = vec![empty_dir("repo"), empty_dir("scripts"), empty_dir("logs")];
    let mut mounts = vec![
        VolumeMount {
            name: "repo".into(),
            mount_path: BUILDS_DIR.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "scripts".into(),
            mount_path: scripts_dir.clone(),
            ..Default::default()
        },
        VolumeMount {
            name: "logs".into(),
            mount_path: logs_dir.clone(),
            ..Default::default()
        },
    ];
    if !file_items.is_empty() {
        volumes.push(Volume {
            name: "podci-variables".into(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(secret_name.clone()),
                items: Some(file_items),
                default_mode: Some(0o400),
                optional: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "podci-variables".into(),
            mount_path: FILE_VARIABLES_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let helper_mounts = mounts.clone();
    let user_mount =
        |name: &str, mount_path: &str, sub_path: &str, read_only: bool, propagation: &str| VolumeMount {
            name: name.into(),
            mount_path: mount_path.into(),
            sub_path: (!sub_path.is_empty()).then(|| sub_path.into()),
            read_only: read_only.then_some(true),
            mount_propagation: (!propagation.is_empty()).then(|| propagation.into()),
            ..Default::default()
        };
    let v = &cfg.volumes;
    for h in &v.host_path {
        volumes.push(Volume {
            name: h.name.clone(),
            host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                path: if h.host_path.is_empty() {
                    h.mount_path.clone()
                } else {
                    h.host_path.clone()
                },
                type_: None,
            }),
            ..Default::default()
        });
        mounts.push(user_mount(
            &h.name,
            &h.mount_path,
            &h.sub_path,
            h.read_only,
            &h.mount_propagation,
        ));
    }
    for p in &v.pvc {
        // The name is both the volume's and the claim's; `$CI_CONCURRENT_ID` in it gives
        // each job slot its own claim.
        let pvc_name = expand(&p.name);
        volumes.push(Volume {
            name: pvc_name.clone(),
            persistent_volume_claim: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name.clone(),
                read_only: p.read_only.then_some(true),
            }),
            ..Default::default()
        });
        mounts.push(user_mount(
            &pvc_name,
            &p.mount_path,
            &p.sub_path,
            p.read_only,
            &p.mount_propagation,
        ));
    }
    let items = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, p)| KeyToPath {
                    key: k.clone(),
                    path: p.clone(),
                    mode: None,
                })
                .collect()
        })
    };
    for c in &v.config_map {
        volumes.push(Volume {
            name: c.name.clone(),
            config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                name: c.name.clone(),
                items: items(&c.items),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(user_mount(&c.name, &c.mount_path, &c.sub_path, c.read_only, ""));
    }
    for s in &v.secret {
        volumes.push(Volume {
            name: s.name.clone(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(s.name.clone()),
                items: items(&s.items),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(user_mount(&s.name, &s.mount_path, &s.sub_path, s.read_only, ""));
    }
    for e in &v.empty_dir {
        volumes.push(Volume {
            name: e.name.clone(),
            empty_dir: Some(k8s_openapi::api::core::v1::EmptyDirVolumeSource {
                medium: (!e.medium.is_empty()).then(|| e.medium.clone()),
                size_limit: (!e.size_limit.is_empty()).then(|| q(&e.size_limit)),
            }),
            ..Default::default()
        });
        mounts.push(user_mount(&e.name, &e.mount_path, &e.sub_path, false, ""));
    }
    for c in &v.csi {
        volumes.push(Volume {
            name: c.name.clone(),
            csi: Some(k8s_openapi::api::core::v1::CSIVolumeSource {
                driver: c.driver.clone(),
                fs_type: (!c.fs_type.is_empty()).then(|| c.fs_type.clone()),
                read_only: c.read_only.then_some(true),
                volume_attributes: (!c.volume_attributes.is_empty()).then(|| c.volume_attributes.clone()),
                node_publish_secret_ref: None,
            }),
            ..Default::default()
        });
        mounts.push(user_mount(&c.name, &c.mount_path, &c.sub_path, c.read_only, ""));
    }

    // Containers.
    let shell = vec![
        "sh".to_string(),
        "-c".to_string(),
        podci_model::script::detect_shell_script().to_string(),
    ];
    let job_image = payload.image.as_ref();
    let (command, args) = match job_image.and_then(|i| i.entrypoint.clone()) {
        Some(ep) if ep.iter().any(|e| !e.is_empty()) => (ep, Some(shell.clone())),
        _ => (shell.clone(), None),
    };
    let build = Container {
        name: BUILD_CONTAINER.into(),
        image: Some(image),
        image_pull_policy: pull_policy(cfg, job_image.and_then(|i| i.pull_policy.as_ref()))?,
        command: Some(command),
        args,
        env: Some(env.clone()),
        stdin: Some(true),
        volume_mounts: Some(mounts.clone()),
        resources: resources(cfg, payload, "build", &mut warnings)?,
        security_context: Some(container_security_context(
            &cfg.build_container_security_context,
            cfg.privileged,
            cfg.allow_privilege_escalation,
            &cfg.cap_add,
            &cfg.cap_drop,
        )),
        ports: job_image.map(|i| ports(&i.ports)).filter(|p| !p.is_empty()),
        ..Default::default()
    };
    let helper = Container {
        name: HELPER_CONTAINER.into(),
        image: Some(if cfg.helper_image.is_empty() {
            DEFAULT_HELPER_IMAGE.into()
        } else {
            cfg.helper_image.clone()
        }),
        image_pull_policy: pull_policy(cfg, None)?,
        command: Some(shell.clone()),
        stdin: Some(true),
        volume_mounts: Some(helper_mounts),
        resources: resources(cfg, payload, "helper", &mut warnings)?,
        security_context: Some(container_security_context(
            &cfg.helper_container_security_context,
            None,
            Some(false),
            &[],
            &[],
        )),
        ..Default::default()
    };
    let mut containers = vec![build, helper];
    let service_resources = resources(cfg, payload, "service", &mut warnings)?;
    // Services see the public, non-file variables only: secrets and file mounts stay in
    // the build container.
    let public_env: Vec<EnvVar> = env
        .iter()
        .filter(|e| {
            payload
                .variables
                .iter()
                .rev()
                .find(|v| v.key == e.name)
                .is_some_and(|v| v.public && !v.file)
        })
        .cloned()
        .collect();
    for (i, s) in payload.services.iter().enumerate() {
        let alias = s
            .alias
            .as_deref()
            .unwrap_or("")
            .split([',', ' '])
            .find(|a| !a.is_empty())
            .unwrap_or("");
        let name = if is_dns_label(alias) && !containers.iter().any(|c| c.name == alias) {
            alias.to_string()
        } else {
            format!("svc-{i}")
        };
        let mut senv = public_env.clone();
        for sv in &s.variables {
            senv.retain(|e| e.name != sv.key);
            senv.push(EnvVar {
                name: sv.key.clone(),
                value: Some(sv.value.clone()),
                value_from: None,
            });
        }
        let (command, args) = match (&s.entrypoint, &s.command) {
            (Some(ep), cmd) if ep.iter().any(|e| !e.is_empty()) => (Some(ep.clone()), cmd.clone()),
            (_, Some(cmd)) if !cmd.is_empty() => (None, Some(cmd.clone())),
            _ => (None, None),
        };
        containers.push(Container {
            name,
            image: Some(expand(&s.name)),
            image_pull_policy: pull_policy(cfg, s.pull_policy.as_ref())?,
            command,
            args,
            env: Some(senv),
            ports: Some(ports(&s.ports)).filter(|p| !p.is_empty()),
            resources: service_resources.clone(),
            security_context: Some(container_security_context(
                &cfg.service_container_security_context,
                cfg.privileged,
                cfg.allow_privilege_escalation,
                &cfg.cap_add,
                &cfg.cap_drop,
            )),
            ..Default::default()
        });
    }

    let mut node_selector = cfg.node_selector.clone();
    node_selector.extend(extra_selectors);
    let tolerations: Vec<Toleration> = cfg
        .node_tolerations
        .iter()
        .map(|(k, effect)| {
            let (key, value) = match k.split_once('=') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (k.clone(), None),
            };
            Toleration {
                operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
                key: (!key.is_empty()).then_some(key),
                value,
                effect: (!effect.is_empty()).then(|| effect.clone()),
                toleration_seconds: None,
            }
        })
        .collect();
    let psc = &cfg.pod_security_context;
    let pod_security_context = PodSecurityContext {
        fs_group: psc.fs_group,
        run_as_group: psc.run_as_group,
        run_as_non_root: psc.run_as_non_root,
        run_as_user: psc.run_as_user,
        supplemental_groups: (!psc.supplemental_groups.is_empty()).then(|| psc.supplemental_groups.clone()),
        se_linux_options: (!psc.selinux_type.is_empty()).then(|| SELinuxOptions {
            type_: Some(psc.selinux_type.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pull_secrets: Vec<LocalObjectReference> = cfg
        .image_pull_secrets
        .iter()
        .map(|n| LocalObjectReference { name: n.clone() })
        .collect();
    if !registry_creds.is_empty() {
        pull_secrets.push(LocalObjectReference {
            name: secret_name.clone(),
        });
    }
    let affinity = match &cfg.affinity {
        Some(t) => serde_json::from_value(toml_to_k8s_json(&toml::Value::Table(t.clone()))).ok(),
        None => None,
    };
    let spec = PodSpec {
        restart_policy: Some("Never".into()),
        active_deadline_seconds: (timeout > 0).then(|| timeout as i64 + 1),
        service_account_name: service_account,
        automount_service_account_token: Some(cfg.automount_service_account_token.unwrap_or(false)),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        affinity,
        host_aliases: (!cfg.host_aliases.is_empty()).then(|| {
            cfg.host_aliases
                .iter()
                .map(|h| HostAlias {
                    ip: h.ip.clone(),
                    hostnames: Some(h.hostnames.clone()),
                })
                .collect()
        }),
        dns_policy: (!cfg.dns_policy.is_empty()).then(|| dns_policy(&cfg.dns_policy)),
        scheduler_name: (!cfg.scheduler_name.is_empty()).then(|| cfg.scheduler_name.clone()),
        priority_class_name: (!cfg.priority_class_name.is_empty()).then(|| cfg.priority_class_name.clone()),
        runtime_class_name: cfg.runtime_class_name.clone().filter(|r| !r.is_empty()),
        security_context: (pod_security_context != PodSecurityContext::default())
            .then_some(pod_security_context),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        termination_grace_period_seconds: cfg
            .pod_termination_grace_period_seconds
            .or(cfg.termination_grace_period_seconds),
        volumes: Some(volumes),
        containers,
        ..Default::default()
    };
    let pod = Pod {
        metadata: meta(&name),
        spec: Some(spec),
        status: None,
    };
    Ok(JobPod {
        name,
        namespace,
        pod,
        secret,
        scripts_dir,
        logs_dir,
        build_dir,
        warnings,
        bearer_token_overwrite,
    })
}

fn dns_policy(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "none" => "None".into(),
        "default" => "Default".into(),
        "cluster-first" | "clusterfirst" => "ClusterFirst".into(),
        "cluster-first-with-host-net" | "clusterfirstwithhostnet" => "ClusterFirstWithHostNet".into(),
        _ => p.into(),
    }
}

fn ports(ps: &[podci_model::payload::Port]) -> Vec<ContainerPort> {
    ps.iter()
        .filter(|p| p.number > 0)
        .map(|p| ContainerPort {
            container_port: i32::from(p.number),
            name: p.name.clone().filter(|n| is_dns_label(n) && n.len() <= 15),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect()
}
