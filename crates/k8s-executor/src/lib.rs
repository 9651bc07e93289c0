//! podci-k8s: run a GitLab CI job payload as one Kubernetes Pod.
//!
//! Three parts, each usable alone:
//! - [`config`]: the `[runners.kubernetes]` section of GitLab Runner's `config.toml`, with
//!   its key names and defaults, unknown keys reported by name.
//! - [`pod`]: a pure function from configuration + payload to the Pod and its Secret.
//! - [`executor`]: the lifecycle over `kube::Client`, driven by a watch (never a sleep
//!   loop): create, wait for the Pod, run each step through attach or exec, stream the
//!   log file with offsets so that a dropped connection loses and repeats nothing, run
//!   `after_script` on failure or cancel, delete with grace 0. [`sweep`] removes Pods and
//!   Secrets left behind by a runner that died.
//! - [`helper`]: caller-given scripts the helper container runs before and after the
//!   build steps (sources, caches, artifacts), with their secrets from the job Secret.
//! - [`client`]: the `kube::Client` that `host`, `bearer_token` and `ca_file` describe.
//!
//! The crate knows Kubernetes and nothing of YAML or GitLab's HTTP API: the input is a
//! [`podci_model::payload::JobPayload`], the output trace bytes (masked) to a
//! [`TraceSink`] and an [`Outcome`] carrying GitLab's failure reason names.
//!
//! ```no_run
//! use podci_k8s::{KubernetesConfig, KubernetesExecutor, Job, ExecutorOptions};
//! # async fn demo(client: kube::Client, payload: podci_model::payload::JobPayload) -> Result<(), Box<dyn std::error::Error>> {
//! let config = KubernetesConfig::from_toml_str("namespace = \"ci-jobs\"\nimage = \"alpine:3\"")?;
//! let exec = KubernetesExecutor::new(client, config, ExecutorOptions::new("glrt1234"));
//! let mut trace = Vec::new();
//! let outcome = exec
//!     .run(&Job::new(&payload), &mut trace, tokio_util::sync::CancellationToken::new())
//!     .await;
//! println!("{outcome:?}");
//! # Ok(()) }
//! ```

pub mod client;
pub mod config;
pub mod executor;
pub mod helper;
pub mod pod;
pub mod sweep;

pub use client::{ClientError, client_for};
pub use config::{ConfigError, KubernetesConfig, Strategy};
pub use executor::{ExecutorOptions, FailureReason, Job, KubernetesExecutor, Outcome, TraceSink};
pub use helper::{HelperEnv, HelperStep, HelperWhen};
pub use pod::{JobPod, PodError, PodParams, build_pod};
pub use sweep::{SweepReport, sweep_orphans};
