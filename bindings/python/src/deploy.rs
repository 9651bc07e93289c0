//! `podci.deploy`: the runner library's `deploy` (manifests, images by container name,
//! server-side apply, rollout wait) with its results and errors as Python objects.
//!
//! The call releases the GIL; progress lines go to an optional Python callback, which
//! takes the GIL per line. Ctrl-C stops waiting (`KeyboardInterrupt`); objects already
//! applied stay applied, as with an interrupted `podci deploy`.

use std::path::PathBuf;
use std::time::Duration;

use podci::deploy::{self, Action, DeployError, DeployEvent, DeployOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{py_repr, py_repr_opt};
use crate::errors::raise;

/// How often a running deploy looks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// One object sent to the API server.
#[pyclass(module = "podci", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct AppliedObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `created`, `configured` or `unchanged` (what a dry run would do, when it is one).
    pub action: String,
    /// What `kubectl apply` would print (`deployment/web in shop configured`).
    pub text: String,
}

#[pymethods]
impl AppliedObject {
    fn __str__(&self) -> String {
        self.text.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "AppliedObject(kind={}, name={}, namespace={}, action={})",
            py_repr(&self.kind),
            py_repr(&self.name),
            py_repr_opt(self.namespace.as_deref()),
            py_repr(&self.action)
        )
    }
}

/// A workload's rollout.
#[pyclass(module = "podci", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct RolloutStatus {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub done: bool,
    /// The last status line, in `kubectl rollout status` wording.
    pub message: String,
}

#[pymethods]
impl RolloutStatus {
    fn __repr__(&self) -> String {
        format!(
            "RolloutStatus(kind={}, name={}, namespace={}, done={}, message={})",
            py_repr(&self.kind),
            py_repr(&self.name),
            py_repr(&self.namespace),
            if self.done { "True" } else { "False" },
            py_repr(&self.message)
        )
    }
}

/// What a deploy did.
#[pyclass(module = "podci", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct DeployResult {
    /// Every object applied, in manifest order.
    pub objects: Vec<AppliedObject>,
    /// One per Deployment, StatefulSet and DaemonSet when waiting.
    pub rollouts: Vec<RolloutStatus>,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Whether an API server was asked (a dry run without a configured cluster only
    /// renders the manifests).
    pub cluster: bool,
    /// Dry run: a unified diff of the live objects against what the server would store.
    pub diff: String,
    /// Dry run: the objects as YAML documents (as the server would store them, or as
    /// rendered locally without a cluster).
    pub rendered: String,
}

#[pymethods]
impl DeployResult {
    fn __repr__(&self) -> String {
        format!(
            "DeployResult(objects={}, rollouts={}, dry_run={})",
            self.objects.len(),
            self.rollouts.len(),
            if self.dry_run { "True" } else { "False" }
        )
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Created | Action::WouldCreate => "created",
        Action::Configured | Action::WouldConfigure => "configured",
        Action::Unchanged | Action::WouldStayUnchanged => "unchanged",
    }
}

fn applied(o: &deploy::AppliedObject) -> AppliedObject {
    AppliedObject {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        name: o.name.clone(),
        namespace: o.namespace.clone(),
        action: action_name(o.action).to_string(),
        text: o.to_string(),
    }
}

fn event_line(e: &DeployEvent) -> String {
    match e {
        DeployEvent::Read { source, objects } => format!("read {source}: {objects} object(s)"),
        DeployEvent::Applied(o) => o.to_string(),
        DeployEvent::Progress { workload, message } => format!("{workload}: {message}"),
        DeployEvent::RolledOut { workload } => format!("{workload}: rolled out"),
    }
}

/// `podci.KubernetesError` from a deploy error: its message, `kind` (the variant),
/// `namespace`/`name` of the object or workload, `status`/`reason` of an API refusal and
/// `pods` (the failing Pods' reasons, events and last log lines) of a failed rollout.
fn deploy_error(py: Python<'_>, err: &DeployError) -> PyErr {
    let fields = PyDict::new(py);
    let fill = || -> PyResult<()> {
        let kind = match err {
            DeployError::NoPaths => "no_paths",
            DeployError::Read { .. } => "read",
            DeployError::Parse { .. } => "parse",
            DeployError::EmptyDir { .. } => "empty_dir",
            DeployError::Kustomize { .. } => "kustomize",
            DeployError::ImageArg { .. } => "image_arg",
            DeployError::ImageUnmatched { .. } => "image_unmatched",
            DeployError::UnknownKind { .. } => "unknown_kind",
            DeployError::NamespaceMismatch { .. } => "namespace_mismatch",
            DeployError::Kubeconfig(_) => "kubeconfig",
            DeployError::Api { .. } => "api",
            DeployError::RolloutFailed(_) => "rollout_failed",
            DeployError::Timeout { .. } => "timeout",
        };
        fields.set_item("kind", kind)?;
        match err {
            DeployError::NamespaceMismatch { name, flag, .. } => {
                fields.set_item("name", name)?;
                fields.set_item("namespace", flag)?;
            }
            DeployError::Api { name, error, .. } => {
                fields.set_item("name", name)?;
                if let kube::Error::Api(status) = error {
                    fields.set_item("status", status.code)?;
                    fields.set_item("reason", &status.reason)?;
                }
            }
            _ => {}
        }
        if let Some(f) = err.rollout_failure() {
            fields.set_item("name", &f.workload)?;
            fields.set_item("namespace", &f.namespace)?;
            fields.set_item("reason", &f.reason)?;
            let pods = PyList::empty(py);
            for p in &f.pods {
                let d = PyDict::new(py);
                d.set_item("name", &p.name)?;
                d.set_item("reason", &p.reason)?;
                d.set_item("events", &p.events)?;
                let logs = PyDict::new(py);
                for (c, lines) in &p.logs {
                    logs.set_item(c, lines)?;
                }
                d.set_item("logs", logs)?;
                pods.append(d)?;
            }
            fields.set_item("pods", pods)?;
        }
        Ok(())
    };
    if let Err(e) = fill() {
        return e;
    }
    raise(py, "KubernetesError", &err.to_string(), &fields)
}

/// Deploys manifests. See `podci.deploy`.
#[pyfunction(name = "deploy")]
#[pyo3(signature = (paths, *, images, namespace, wait, timeout, dry_run, kubeconfig, context, on_progress))]
#[allow(clippy::too_many_arguments)]
pub fn deploy_manifests(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    images: Vec<(String, String)>,
    namespace: Option<String>,
    wait: bool,
    timeout: f64,
    dry_run: bool,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    on_progress: Option<Py<PyAny>>,
) -> PyResult<DeployResult> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "timeout must be a positive number of seconds",
        ));
    }
    let opts = DeployOptions {
        paths,
        images,
        namespace,
        wait,
        timeout: Duration::from_secs_f64(timeout),
        dry_run,
        kubeconfig,
        context,
        ..DeployOptions::default()
    };
    if dry_run && !deploy::cluster_configured(&opts) {
        // As `podci deploy --dry-run` without a cluster: the manifests as they would be
        // sent, images set, nothing asked of a server.
        let manifests = py
            .detach(|| deploy::render(&opts))
            .map_err(|e| deploy_error(py, &e))?;
        let rendered = manifests
            .iter()
            .map(|m| format!("---\n{}\n", deploy::to_yaml(&m.object).trim_end()))
            .collect();
        return Ok(DeployResult {
            objects: Vec::new(),
            rollouts: Vec::new(),
            dry_run,
            cluster: false,
            diff: String::new(),
            rendered,
        });
    }
    let rt = crate::runtime::get(py)?;
    let outcome: PyResult<Result<deploy::DeployResult, DeployError>> = py.detach(|| {
        rt.block_on(async {
            let mut progress = |e: DeployEvent| {
                if let Some(cb) = &on_progress {
                    let line = event_line(&e);
                    Python::attach(|py| {
                        // A failing callback must not abort a half-applied deploy; its
                        // exception is reported as unraisable, like a failing __del__.
                        if let Err(err) = cb.call1(py, (line,)) {
                            err.write_unraisable(py, Some(cb.bind(py)));
                        }
                    });
                }
            };
            let fut = async {
                let client = deploy::client(&opts).await?;
                deploy::deploy(client, &opts, &mut progress).await
            };
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => return Ok(r),
                    () = tokio::time::sleep(SIGNAL_CHECK) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    });
    let r = outcome?.map_err(|e| deploy_error(py, &e))?;
    Ok(DeployResult {
        objects: r.objects.iter().map(applied).collect(),
        rollouts: r
            .rollouts
            .iter()
            .map(|s| RolloutStatus {
                kind: s.kind.clone(),
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                done: s.done,
                message: s.message.clone(),
            })
            .collect(),
        dry_run,
        cluster: true,
        diff: r.diff,
        rendered: r.rendered,
    })
}
