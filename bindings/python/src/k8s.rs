//! `podci.k8s`: the Pod (and per-job Secret) podci's Kubernetes executor would create for
//! a job, from podci-k8s's pure `build_pod`. Nothing here talks to a cluster.
//!
//! The payload and a configuration given as a dict arrive as JSON text (the Python layer
//! serialises them), which is the payload's own wire format and maps one to one onto the
//! `[runners.kubernetes]` TOML table.

use podci_k8s::{ConfigError, KubernetesConfig, PodError, PodParams, build_pod};
use podci_model::payload::JobPayload;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::json_to_py;
use crate::errors::raise;

/// `podci.KubernetesError` with `kind` and no object.
fn k8s_error(py: Python<'_>, kind: &str, message: &str) -> PyErr {
    let fields = PyDict::new(py);
    if let Err(e) = fields.set_item("kind", kind) {
        return e;
    }
    raise(py, "KubernetesError", message, &fields)
}

fn config_error(py: Python<'_>, e: &ConfigError) -> PyErr {
    let kind = match e {
        ConfigError::Toml(_) => "config",
        ConfigError::UnknownKeys(_) => "config_unknown_keys",
        ConfigError::Invalid { .. } => "config_invalid",
    };
    k8s_error(py, kind, &e.to_string())
}

fn pod_error(py: Python<'_>, e: &PodError) -> PyErr {
    let kind = match e {
        PodError::ImageNotAllowed { .. } => "image_not_allowed",
        PodError::ServiceNotAllowed { .. } => "service_not_allowed",
        PodError::NoImage => "no_image",
        PodError::PullPolicyNotAllowed { .. } => "pull_policy_not_allowed",
        PodError::UnknownPullPolicy(_) => "unknown_pull_policy",
        PodError::OverwriteTooHigh { .. } => "overwrite_too_high",
        PodError::OverwriteNotAllowed { .. } => "overwrite_not_allowed",
        PodError::BadQuantity { .. } => "bad_quantity",
        PodError::BadRegex { .. } => "bad_regex",
    };
    k8s_error(py, kind, &e.to_string())
}

/// A configuration from TOML text: a whole `config.toml` (the first `[[runners]]`'s
/// `kubernetes` table, feature flags applied), a `[runners.kubernetes]` section with its
/// header, or the section's keys alone.
fn config_from_toml(text: &str) -> Result<KubernetesConfig, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
    match table.get("runners") {
        Some(toml::Value::Array(_)) => KubernetesConfig::from_runner_config_toml(text),
        Some(toml::Value::Table(runners)) if table.len() == 1 => match runners.get("kubernetes") {
            Some(toml::Value::Table(k)) if runners.len() == 1 => KubernetesConfig::from_table(k.clone()),
            _ => Err(ConfigError::Toml(
                "expected [runners.kubernetes] keys, a [runners.kubernetes] section or a config.toml with [[runners]]"
                    .into(),
            )),
        },
        _ => KubernetesConfig::from_table(table),
    }
}

/// Builds the job's Pod and Secret. `config_json` is the `[runners.kubernetes]` table as
/// JSON, `config_toml` the same as TOML text; exactly one is given. Returns `{"name",
/// "namespace", "pod", "secret", "warnings"}`. See `podci.k8s.pod_for`.
#[pyfunction]
#[pyo3(signature = (
    payload_json, *, config_json, config_toml, runner_token, concurrent_id, suffix, now_unix, job_url
))]
#[allow(clippy::too_many_arguments)]
pub fn pod_for<'py>(
    py: Python<'py>,
    payload_json: &str,
    config_json: Option<&str>,
    config_toml: Option<&str>,
    runner_token: &str,
    concurrent_id: u32,
    suffix: &str,
    now_unix: i64,
    job_url: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let payload: JobPayload = serde_json::from_str(payload_json).map_err(|e| {
        k8s_error(
            py,
            "payload",
            &format!("the payload is not a GitLab job payload (as Pipeline.payload returns): {e}"),
        )
    })?;
    let config = match (config_json, config_toml) {
        (Some(json), None) => {
            let table: toml::Table = serde_json::from_str(json).map_err(|e| {
                k8s_error(
                    py,
                    "config",
                    &format!(
                        "the configuration dict is not a [runners.kubernetes] table (no None values): {e}"
                    ),
                )
            })?;
            KubernetesConfig::from_table(table)
        }
        (None, Some(text)) => config_from_toml(text),
        _ => {
            return Err(k8s_error(
                py,
                "config",
                "give the configuration either as a dict or as TOML text",
            ));
        }
    }
    .map_err(|e| config_error(py, &e))?;
    let job_url = job_url.unwrap_or_else(|| {
        payload
            .variables
            .iter()
            .find(|v| v.key == "CI_JOB_URL")
            .map(|v| v.value.clone())
            .unwrap_or_default()
    });
    let params = PodParams {
        runner_short_token: runner_token.to_string(),
        concurrent_id,
        suffix: suffix.to_string(),
        now_unix,
        job_url,
    };
    let jp = build_pod(&config, &payload, &params).map_err(|e| pod_error(py, &e))?;
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| k8s_error(py, "serialize", &format!("cannot serialise the Pod: {e}")))
    };
    let out = serde_json::json!({
        "name": jp.name,
        "namespace": jp.namespace,
        "pod": to_json(serde_json::to_value(&jp.pod))?,
        "secret": match &jp.secret {
            Some(s) => to_json(serde_json::to_value(s))?,
            None => serde_json::Value::Null,
        },
        "warnings": jp.warnings,
    });
    json_to_py(py, &out)
}
