//! Helper steps: caller-given scripts run in the helper container before the build steps
//! (get sources, restore caches, download artifacts) and after them (save caches, upload
//! artifacts), as GitLab Runner's helper image does.
//!
//! Owns: the step description ([`HelperStep`], [`HelperWhen`]), the environment the
//! helper container gets for them ([`HelperEnv`]: secrets through the per-job Secret, never
//! argv), and the Pod edits that give the helper what it needs ([`add_helper_env`]). The
//! crate stays GitLab-agnostic: what a script does is the caller's business; this module
//! only describes it, and the executor runs it, streams its output and maps its exit
//! status to a failure reason. The executor runs a helper step as it runs a build step:
//! written to the scripts volume through an exec's stdin and started detached, its
//! output appended to the job's log file and read back with offsets, its exit code in an
//! end marker, so a dropped API connection neither loses output nor the outcome.
//!
//! Secret keys: each secret [`HelperEnv`] is one key `podci-helper.<NAME>` of the per-job
//! Secret (`<pod>-job`), next to the job's own secret variables; nothing else of the
//! job goes there. What the caller puts into those variables is its choice; podci's
//! runner passes only what its `podci helper` commands read (see its `cmd_helper`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status};

use crate::executor::FailureReason;
use crate::pod::{BUILD_CONTAINER, DEADLINE_ANNOTATION, HELPER_CONTAINER, JobPod};

/// When an after-step runs, given how the build steps ended (GitLab's `when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HelperWhen {
    /// Only when every build step succeeded (GitLab's default).
    #[default]
    OnSuccess,
    /// Only when a build step failed or timed out.
    OnFailure,
    /// Either way.
    Always,
}

impl HelperWhen {
    /// GitLab's names: `on_success`, `on_failure`, `always`; anything else is `on_success`.
    pub fn parse(s: &str) -> HelperWhen {
        match s {
            "on_failure" => HelperWhen::OnFailure,
            "always" => HelperWhen::Always,
            _ => HelperWhen::OnSuccess,
        }
    }

    /// Whether the step runs after a job that `succeeded` (or not).
    pub fn matches(self, succeeded: bool) -> bool {
        match self {
            HelperWhen::OnSuccess => succeeded,
            HelperWhen::OnFailure => !succeeded,
            HelperWhen::Always => true,
        }
    }
}

/// One script the helper container runs (`sh -c`, stderr joined to stdout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperStep {
    /// A short name for logs (`get_sources`, `upload_artifacts`).
    pub name: String,
    /// A line printed to the trace before the step's output (GitLab's section titles such
    /// as "Getting source from Git repository"); empty for none.
    pub title: String,
    /// The script. It is sent through an exec's stdin into a file on the scripts volume
    /// (owner-only), not into the Pod spec or an argv; still, secrets belong in
    /// [`HelperEnv`], which reaches the container through the job Secret.
    pub script: String,
    /// For after-steps: when it runs. Before-steps always run.
    pub when: HelperWhen,
    /// The job's failure reason when the script fails; `None` makes a failure a warning
    /// (GitLab treats cache errors so).
    pub failure: Option<FailureReason>,
}

impl HelperStep {
    /// A step whose failure fails the job with `runner_system_failure`.
    pub fn new(name: &str, title: &str, script: &str) -> HelperStep {
        HelperStep {
            name: name.into(),
            title: title.into(),
            script: script.into(),
            when: HelperWhen::OnSuccess,
            failure: Some(FailureReason::RunnerSystemFailure),
        }
    }
}

/// A variable for the helper container's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct HelperEnv {
    /// The variable's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Goes through the per-job Secret (`secretKeyRef`), never into the Pod spec.
    pub secret: bool,
}

impl std::fmt::Debug for HelperEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperEnv")
            .field("name", &self.name)
            .field("value", if self.secret { &"[MASKED]" } else { &self.value })
            .finish()
    }
}

impl HelperEnv {
    /// A plain variable (visible in the Pod spec).
    pub fn public(name: &str, value: &str) -> HelperEnv {
        HelperEnv {
            name: name.into(),
            value: value.into(),
            secret: false,
        }
    }

    /// A secret variable (through the per-job Secret).
    pub fn secret(name: &str, value: &str) -> HelperEnv {
        HelperEnv {
            name: name.into(),
            value: value.into(),
            secret: true,
        }
    }
}

/// The Secret key of a helper variable; a prefix keeps it apart from job variables.
fn secret_key(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("podci-helper.{clean}")
}

/// Gives the helper container `env` (secret ones through the per-job Secret, created if
/// the job had none) and the build container's user volumes (a PVC cache, say), which
/// helper steps such as cache restore need. Pure: it edits the objects before creation.
pub fn add_helper_env(jp: &mut JobPod, env: &[HelperEnv]) {
    let secret_name = format!("{}-job", jp.name);
    let mut vars = Vec::new();
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    for e in env {
        if e.secret {
            let key = secret_key(&e.name);
            data.insert(key.clone(), ByteString(e.value.clone().into_bytes()));
            vars.push(EnvVar {
                name: e.name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key,
                        optional: None,
                    }),
                    ..Default::default()
                }),
            });
        } else {
            vars.push(EnvVar {
                name: e.name.clone(),
                value: Some(e.value.clone()),
                value_from: None,
            });
        }
    }
    if !data.is_empty() {
        match jp.secret.as_mut() {
            Some(s) => s.data.get_or_insert_with(BTreeMap::new).extend(data),
            None => {
                let meta = &jp.pod.metadata;
                let deadline = meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEADLINE_ANNOTATION))
                    .cloned()
                    .unwrap_or_default();
                jp.secret = Some(Secret {
                    metadata: ObjectMeta {
                        name: Some(secret_name),
                        namespace: Some(jp.namespace.clone()),
                        labels: meta.labels.clone(),
                        annotations: Some(BTreeMap::from([(DEADLINE_ANNOTATION.to_string(), deadline)])),
                        ..Default::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some(data),
                    immutable: Some(true),
                    ..Default::default()
                });
            }
        }
    }
    let Some(spec) = jp.pod.spec.as_mut() else { return };
    let build_mounts = spec
        .containers
        .iter()
        .find(|c| c.name == BUILD_CONTAINER)
        .and_then(|c| c.volume_mounts.clone())
        .unwrap_or_default();
    if let Some(helper) = spec.containers.iter_mut().find(|c| c.name == HELPER_CONTAINER) {
        let henv = helper.env.get_or_insert_with(Vec::new);
        for v in vars {
            henv.retain(|e| e.name != v.name);
            henv.push(v);
        }
        let mounts = helper.volume_mounts.get_or_insert_with(Vec::new);
        for m in build_mounts {
            if !mounts.iter().any(|h| h.mount_path == m.mount_path) {
                mounts.push(m);
            }
        }
    }
}

/// The exit code in an exec's final Status: 0 for Success, the `ExitCode` cause
/// (a string, as real servers send it) otherwise; `None` when the Status says nothing.
pub fn exec_exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn when_follows_gitlab() {
        assert!(HelperWhen::parse("on_success").matches(true));
        assert!(!HelperWhen::parse("on_success").matches(false));
        assert!(HelperWhen::parse("on_failure").matches(false));
        assert!(!HelperWhen::parse("on_failure").matches(true));
        assert!(HelperWhen::parse("always").matches(false));
        assert!(HelperWhen::parse("bogus").matches(true));
    }

    #[test]
    fn exit_code_from_status() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exec_exit_code(&ok), Some(0));
        let failed = Status {
            status: Some("Failure".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    field: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exec_exit_code(&failed), Some(3));
        assert_eq!(exec_exit_code(&Status::default()), None);
    }

    #[test]
    fn debug_hides_secret_values() {
        let s = format!("{:?}", HelperEnv::secret("JOB_TOKEN", "glcbt-abc"));
        assert!(!s.contains("glcbt-abc"), "{s}");
    }
}
