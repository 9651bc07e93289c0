//! `podci.run`: a local pipeline through the runner library's `exec::run_pipeline` (the
//! orchestration behind `podci exec`), with trace lines handed to a Python callback and
//! per-job results as Python objects.
//!
//! The run releases the GIL; the callback takes it once per line, on whichever runtime
//! thread produced the line. Ctrl-C (`KeyboardInterrupt`), an exception raised by the
//! callback, or a [`Cancel`] handle cancel the pipeline the way Ctrl-C cancels
//! `podci exec`: running jobs get their `after_script`, then the call returns or raises.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use podci::exec::{self, ExecError, ExecutorKind, RunObserver};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio_util::sync::CancellationToken;

use crate::convert::py_repr;
use crate::errors::{pipeline_error, raise};
use crate::model::Diagnostic;

/// How often a running pipeline looks for Ctrl-C (Python signal handlers).
const SIGNAL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// A handle that cancels a running `podci.run` from another thread (the `run_async`
/// wrapper cancels through it when its task is cancelled).
#[pyclass(module = "podci", frozen)]
#[derive(Clone, Default)]
pub struct Cancel {
    token: CancellationToken,
}

#[pymethods]
impl Cancel {
    #[new]
    fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels the pipeline: no new job starts, running jobs get their `after_script`.
    fn cancel(&self) {
        self.token.cancel();
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    fn __repr__(&self) -> String {
        format!(
            "Cancel(cancelled={})",
            if self.token.is_cancelled() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// One job of a finished local pipeline.
#[pyclass(module = "podci", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct JobResult {
    /// Instance name.
    pub name: String,
    /// Stage.
    pub stage: String,
    /// GitLab's status name: `success`, `failed`, `canceled`, `skipped`, `manual`, ...
    pub status: String,
    /// Failed, and `allow_failure` allowed it.
    pub allowed_failure: bool,
    /// Seconds the last attempt took; `None` when the job never started.
    pub duration: Option<f64>,
    /// Attempts made (`retry:`); 0 when the job never started.
    pub attempts: u32,
    /// GitLab's `failure_reason` when it failed (`script_failure`, ...).
    pub failure_reason: Option<String>,
    /// The script's exit code when it failed with one.
    pub exit_code: Option<i32>,
    /// The raw trace file (ANSI colours and section markers included).
    pub log_path: Option<String>,
    /// The trace as a person reads it: colours and section markers removed.
    pub log: String,
}

#[pymethods]
impl JobResult {
    /// `status == "success"`, or a failure that was allowed.
    #[getter]
    fn ok(&self) -> bool {
        self.status == "success" || self.allowed_failure
    }

    fn __repr__(&self) -> String {
        format!(
            "JobResult(name={}, stage={}, status={}, duration={}, exit_code={})",
            py_repr(&self.name),
            py_repr(&self.stage),
            py_repr(&self.status),
            self.duration.map_or_else(|| "None".into(), |d| format!("{d:.3}")),
            self.exit_code.map_or_else(|| "None".into(), |c| c.to_string()),
        )
    }
}

/// A finished local pipeline.
#[pyclass(module = "podci", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PipelineResult {
    /// Whether `workflow:rules` created the pipeline (when not, nothing ran).
    pub created: bool,
    /// The local pipeline number (`CI_PIPELINE_ID`).
    pub pipeline_id: u64,
    /// GitLab's pipeline status: `success`, `failed`, `canceled`, `skipped`, ...
    pub status: String,
    /// Cancelled (Ctrl-C, `Cancel.cancel()`, a cancelled `run_async` task).
    pub canceled: bool,
    /// A job failed that was allowed to ("passed with warnings").
    pub has_warnings: bool,
    /// The ref it ran for.
    pub ref_name: String,
    /// Whether `ref_name` is a tag.
    pub tag: bool,
    /// The commit (empty outside a git repository).
    pub sha: String,
    /// Directory of the job logs.
    pub logs_dir: String,
    /// Every job, in stage and configuration order.
    pub jobs: Vec<JobResult>,
}

#[pymethods]
impl PipelineResult {
    /// `status == "success"`.
    #[getter]
    fn ok(&self) -> bool {
        self.status == "success"
    }

    /// A job's result by name, or `None`.
    fn job(&self, name: &str) -> Option<JobResult> {
        self.jobs.iter().find(|j| j.name == name).cloned()
    }

    fn __repr__(&self) -> String {
        format!(
            "PipelineResult(pipeline_id={}, status={}, jobs={})",
            self.pipeline_id,
            py_repr(&self.status),
            self.jobs.len()
        )
    }
}

impl PipelineResult {
    /// Reads each job's log; runs without the GIL.
    fn from_run(run: exec::PipelineRun) -> PipelineResult {
        let jobs = run
            .jobs
            .into_iter()
            .map(|j| {
                let (failure_reason, exit_code) = match &j.outcome {
                    Some(podci::executor::JobOutcome::Failed { reason, exit_code }) => {
                        (Some(reason.to_string()), *exit_code)
                    }
                    _ => (None, None),
                };
                let log = j
                    .log
                    .as_deref()
                    .and_then(|p| exec::output::read_clean_log(p).ok())
                    .unwrap_or_default();
                JobResult {
                    name: j.name,
                    stage: j.stage,
                    status: j.status.as_str().to_string(),
                    allowed_failure: j.allowed_failure,
                    duration: j.duration.map(|d| d.as_secs_f64()),
                    attempts: j.attempts,
                    failure_reason,
                    exit_code,
                    log_path: j.log.map(|p| p.display().to_string()),
                    log,
                }
            })
            .collect();
        PipelineResult {
            created: run.created,
            pipeline_id: run.pipeline_id,
            status: run.status.as_str().to_string(),
            canceled: run.canceled,
            has_warnings: run.has_warnings,
            ref_name: run.ref_name,
            tag: run.tag,
            sha: run.sha,
            logs_dir: run.logs_dir.display().to_string(),
            jobs,
        }
    }
}

/// Hands lines to the Python callback. The first exception the callback raises cancels
/// the pipeline and is raised by `run` afterwards; later lines are not delivered.
struct PyObserver {
    on_log: Option<Py<PyAny>>,
    error: Mutex<Option<PyErr>>,
    cancel: CancellationToken,
}

impl PyObserver {
    fn failed(&self) -> bool {
        self.error.lock().map_or(true, |e| e.is_some())
    }
}

impl RunObserver for PyObserver {
    fn job_line(&self, job: &str, line: &str) {
        let Some(cb) = &self.on_log else { return };
        if self.failed() {
            return;
        }
        Python::attach(|py| {
            if let Err(e) = cb.call1(py, (job, line))
                && let Ok(mut slot) = self.error.lock()
            {
                slot.get_or_insert(e);
                self.cancel.cancel();
            }
        });
    }
}

fn exec_error(py: Python<'_>, err: ExecError) -> PyErr {
    let message = err.to_string();
    match err {
        ExecError::Invalid { pipeline, .. } => {
            let diags = pipeline
                .diagnostics
                .iter()
                .filter(|d| d.severity == podci_model::Severity::Error)
                .map(|d| Diagnostic::from_model(d, &pipeline.sources))
                .collect();
            pipeline_error(py, &message, diags, None)
        }
        ExecError::Evaluation {
            diagnostics,
            pipeline,
            ..
        } => {
            let diags = diagnostics
                .iter()
                .map(|d| Diagnostic::from_model(d, &pipeline.sources))
                .collect();
            pipeline_error(py, &message, diags, None)
        }
        ExecError::NoSuchJob { job, .. } => pipeline_error(py, &message, Vec::new(), Some(&job)),
        ExecError::UnknownExecutor(_) => PyValueError::new_err(message),
        ExecError::Variables(_) | ExecError::Setup(_) => raise(py, "Error", &message, &PyDict::new(py)),
    }
}

/// Runs the pipeline of `project`. See `podci.run`.
#[pyfunction]
#[pyo3(signature = (
    project, *, file, jobs, variables, executor, concurrency, on_log, cancel, branch, tag,
    source, needs, manual, cache_dir, work_dir, keep, with_dirty
))]
#[allow(clippy::too_many_arguments)]
pub fn run_pipeline(
    py: Python<'_>,
    project: PathBuf,
    file: Option<PathBuf>,
    jobs: Vec<String>,
    variables: Vec<(String, String)>,
    executor: String,
    concurrency: Option<usize>,
    on_log: Option<Py<PyAny>>,
    cancel: Option<PyRef<'_, Cancel>>,
    branch: Option<String>,
    tag: Option<String>,
    source: String,
    needs: bool,
    manual: bool,
    cache_dir: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    keep: bool,
    with_dirty: bool,
) -> PyResult<PipelineResult> {
    let executor: ExecutorKind = executor.parse().map_err(|e| exec_error(py, e))?;
    for (k, _) in &variables {
        if k.is_empty() || k.contains('=') {
            return Err(PyValueError::new_err(format!(
                "{} is not a valid variable name",
                py_repr(k)
            )));
        }
    }
    if concurrency == Some(0) {
        return Err(PyValueError::new_err("concurrency must be at least 1"));
    }
    let concurrency =
        concurrency.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let project = std::path::absolute(&project).map_err(|e| {
        raise(
            py,
            "Error",
            &format!("{}: {e}", project.display()),
            &PyDict::new(py),
        )
    })?;
    let opts = exec::Options {
        project,
        file,
        variables: variables.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        branch,
        tag,
        source,
        compare_to: None,
        jobs,
        needs,
        manual,
        concurrency,
        with_dirty,
        cache_dir,
        work_dir,
        keep,
        executor,
        dry_run: false,
        live: Some(false),
        includes: podci::cmd_lint::IncludeArgs::default(),
    };
    let token = cancel.map(|c| c.token.clone()).unwrap_or_default();
    let observer = Arc::new(PyObserver {
        on_log,
        error: Mutex::new(None),
        cancel: token.clone(),
    });
    let rt = crate::runtime::get(py)?;
    let obs: Arc<dyn RunObserver> = observer.clone();
    let (outcome, interrupt) = py.detach(|| {
        rt.block_on(async {
            let fut = exec::run_pipeline(opts, obs, token.clone());
            tokio::pin!(fut);
            let mut interrupt: Option<PyErr> = None;
            loop {
                tokio::select! {
                    r = &mut fut => {
                        return (r.map(PipelineResult::from_run), interrupt);
                    }
                    () = tokio::time::sleep(SIGNAL_CHECK) => {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            if interrupt.is_some() {
                                // A second Ctrl-C: do not wait for after_script either.
                                podci::executor::shell::kill_all();
                            } else {
                                interrupt = Some(e);
                            }
                            token.cancel();
                        }
                    }
                }
            }
        })
    });
    if let Some(e) = interrupt {
        return Err(e);
    }
    if let Some(e) = observer.error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    outcome.map_err(|e| exec_error(py, e))
}
