//! `podci deploy` as a library: read manifests (files, directories, kustomizations), set
//! container images by container name, apply them with server-side apply (field manager
//! `podci`), and wait for Deployments, StatefulSets and DaemonSets to roll out.
//!
//! This module owns the whole deploy flow; the CLI (`cmd_deploy`) and the Python bindings
//! only build [`DeployOptions`], a [`kube::Client`] ([`client`]) and print [`DeployEvent`]s.
//! Submodules: `manifests` (reading), `images` (image setting), `apply` (discovery and
//! server-side apply, dry-run diff), `rollout` (status judgement as `kubectl rollout
//! status` does, failure reports), `yaml` (printing objects).

mod apply;
mod images;
mod manifests;
mod rollout;
mod yaml;

use std::path::PathBuf;
use std::time::Duration;

pub use images::{parse_image_arg, set_images};
pub use manifests::{Manifest, read_manifests};
pub use rollout::{RolloutState, judge_rollout};
pub use yaml::to_yaml;

/// The field manager podci's server-side apply uses: `kubectl get -o yaml
/// --show-managed-fields` names it, and a later `kubectl apply --server-side` by another
/// manager conflicts with it instead of silently taking fields over.
pub const FIELD_MANAGER: &str = "podci";

/// What to deploy and how.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Files (`.yaml`, `.yml`, `.json`, multi-document), directories of them (not
    /// recursive, like `kubectl apply -f DIR`), or kustomization directories.
    pub paths: Vec<PathBuf>,
    /// `(container name, image reference)`: every container and init container of that
    /// name in a workload gets the image. One that matches no container is an error.
    pub images: Vec<(String, String)>,
    /// Namespace for namespaced objects; `None`: the object's own, else the
    /// kubeconfig's default.
    pub namespace: Option<String>,
    /// Wait for workloads to roll out.
    pub wait: bool,
    /// Bound for the whole wait.
    pub timeout: Duration,
    /// Server-side dry run (`dryRun=All`): nothing changes; the result carries the diff.
    pub dry_run: bool,
    /// Kubeconfig file; `None`: `$KUBECONFIG`, `~/.kube/config` or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; `None`: the current context.
    pub context: Option<String>,
    /// How many log lines of each failing container a failure report carries.
    pub log_lines: usize,
    /// How often rollout status is polled while waiting.
    pub poll_interval: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            paths: Vec::new(),
            images: Vec::new(),
            namespace: None,
            wait: false,
            timeout: Duration::from_secs(300),
            dry_run: false,
            kubeconfig: None,
            context: None,
            log_lines: 20,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    /// Dry run: would be created.
    WouldCreate,
    /// Dry run: would change.
    WouldConfigure,
    /// Dry run: the server's result equals the live object.
    WouldStayUnchanged,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::WouldCreate => "created (dry run)",
            Action::WouldConfigure => "configured (dry run)",
            Action::WouldStayUnchanged => "unchanged (dry run)",
        })
    }
}

/// One object sent to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub action: Action,
}

impl std::fmt::Display for AppliedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.to_ascii_lowercase(), self.name)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        write!(f, " {}", self.action)
    }
}

/// A workload's rollout as far as it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStatus {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub done: bool,
    /// The last status line (`kubectl rollout status` wording).
    pub message: String,
}

/// Progress as it happens, for a terminal or a log.
#[derive(Debug, Clone)]
pub enum DeployEvent {
    /// A manifest source was read.
    Read { source: String, objects: usize },
    /// An object was applied (or dry-run applied).
    Applied(AppliedObject),
    /// A rollout status line changed.
    Progress { workload: String, message: String },
    /// A workload finished rolling out.
    RolledOut { workload: String },
}

/// What a deploy did.
#[derive(Debug, Clone, Default)]
pub struct DeployResult {
    pub objects: Vec<AppliedObject>,
    /// One entry per Deployment/StatefulSet/DaemonSet when waiting.
    pub rollouts: Vec<RolloutStatus>,
    /// Dry run: a unified diff of live objects against the server's dry-run result
    /// (empty when nothing would change).
    pub diff: String,
    /// Dry run: the objects as the server would store them, as YAML documents.
    pub rendered: String,
}

/// A Pod of a failed rollout, with what explains the failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodReport {
    pub name: String,
    /// Why it is failing: `CrashLoopBackOff`, `ErrImagePull`, `exit code 1`...
    pub reason: String,
    /// Its events, oldest first, as `Type Reason: message`.
    pub events: Vec<String>,
    /// `(container, last log lines)`.
    pub logs: Vec<(String, Vec<String>)>,
}

/// Why a rollout failed, with the failing Pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutFailure {
    /// `deployment/web`.
    pub workload: String,
    pub namespace: String,
    pub reason: String,
    pub pods: Vec<PodReport>,
}

impl std::fmt::Display for RolloutFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}: {}", self.workload, self.namespace, self.reason)?;
        for p in &self.pods {
            write!(f, "\n  pod {}: {}", p.name, p.reason)?;
            if !p.events.is_empty() {
                write!(f, "\n    events:")?;
                for e in &p.events {
                    write!(f, "\n      {e}")?;
                }
            }
            for (c, lines) in &p.logs {
                if lines.is_empty() {
                    write!(f, "\n    logs of {c}: (none)")?;
                    continue;
                }
                write!(f, "\n    last log lines of {c}:")?;
                for l in lines {
                    write!(f, "\n      | {l}")?;
                }
            }
        }
        Ok(())
    }
}

/// Everything that stops a deploy, each worded so that the user knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no manifests given: pass -f FILE or -f DIR")]
    NoPaths,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: document {document}: {message}")]
    Parse {
        path: PathBuf,
        document: usize,
        message: String,
    },
    #[error("{path}: no .yaml, .yml or .json files in this directory")]
    EmptyDir { path: PathBuf },
    #[error("kustomization {dir}: `kubectl kustomize` failed: {message}")]
    Kustomize { dir: PathBuf, message: String },
    #[error("--image {arg:?}: expected NAME=IMAGE, for example app=registry.example.com/app:1.2")]
    ImageArg { arg: String },
    #[error(
        "--image {name}={image}: no container or init container named {name:?} in any workload (containers: {known})"
    )]
    ImageUnmatched {
        name: String,
        image: String,
        known: String,
    },
    #[error(
        "{api_version} {kind} is not served by this cluster (check apiVersion/kind, or install its CRD first)"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("{file}: {kind}/{name} says namespace {own:?} but --namespace is {flag:?}: remove one of them")]
    NamespaceMismatch {
        file: String,
        kind: String,
        name: String,
        own: String,
        flag: String,
    },
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{kind}/{name}: the API server refused it: {source}")]
    Api {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("rollout failed: {0}")]
    RolloutFailed(Box<RolloutFailure>),
    #[error("rollout did not finish within {timeout:?}: {failure}")]
    Timeout {
        timeout: Duration,
        failure: Box<RolloutFailure>,
    },
}

impl DeployError {
    /// The failure report of a failed or timed-out rollout.
    pub fn rollout_failure(&self) -> Option<&RolloutFailure> {
        match self {
            DeployError::RolloutFailed(f) | DeployError::Timeout { failure: f, .. } => Some(f),
            _ => None,
        }
    }
}

/// A client from `opts.kubeconfig`/`opts.context`, or the environment's defaults
/// (`$KUBECONFIG`, `~/.kube/config`, in-cluster ServiceAccount).
pub async fn client(opts: &DeployOptions) -> Result<kube::Client, DeployError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kopts = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| DeployError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kopts)
                .await
                .map_err(|e| DeployError::Kubeconfig(format!("{}: {e}", path.display())))?
        }
        None if opts.context.is_some() => kube::Config::from_kubeconfig(&kopts)
            .await
            .map_err(|e| DeployError::Kubeconfig(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| DeployError::Kubeconfig(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| DeployError::Kubeconfig(e.to_string()))
}

/// Whether a cluster is configured at all (`$KUBECONFIG`, `~/.kube/config`, or running
/// in a Pod), so that a caller can choose a client-side dry run without one.
pub fn cluster_configured(opts: &DeployOptions) -> bool {
    if opts.kubeconfig.is_some() {
        return true;
    }
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        return true;
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .is_some_and(|p| p.is_file())
}

/// Read the manifests and set the images: what would be applied, without a cluster.
pub fn render(opts: &DeployOptions) -> Result<Vec<Manifest>, DeployError> {
    let mut manifests = read_manifests(&opts.paths)?;
    set_images(&mut manifests, &opts.images)?;
    Ok(manifests)
}

/// Read, set images, apply with server-side apply, and (with `opts.wait`) wait for the
/// workloads to roll out. `progress` sees every step as it happens.
pub async fn deploy(
    client: kube::Client,
    opts: &DeployOptions,
    progress: &mut dyn FnMut(DeployEvent),
) -> Result<DeployResult, DeployError> {
    let manifests = read_manifests(&opts.paths)?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for m in &manifests {
        match counts.last_mut() {
            Some((s, n)) if *s == m.source => *n += 1,
            _ => counts.push((m.source.clone(), 1)),
        }
    }
    for (source, objects) in counts {
        progress(DeployEvent::Read { source, objects });
    }
    let mut manifests = manifests;
    set_images(&mut manifests, &opts.images)?;
    let default_ns = opts
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let applied = apply::apply_all(&client, &manifests, opts, &default_ns, progress).await?;
    let mut result = DeployResult {
        objects: applied.objects,
        diff: applied.diff,
        rendered: applied.rendered,
        rollouts: Vec::new(),
    };
    if opts.wait && !opts.dry_run {
        result.rollouts = rollout::wait_all(&client, &applied.workloads, opts, progress).await?;
    }
    Ok(result)
}
