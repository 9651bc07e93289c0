//! `podci.Pipeline` and friends: podci-model's loaded pipeline, its jobs and diagnostics,
//! evaluation for a commit and job payloads, as Python objects.
//!
//! Objects are immutable snapshots: a `Pipeline` shares one loaded `podci_model::Pipeline`
//! with the jobs and evaluations made from it, so reading attributes never re-parses.

use std::path::PathBuf;
use std::sync::Arc;

use podci_model::eval::{EvaluatedJob, Evaluation, PipelineContext, Variable, VariableLevel};
use podci_model::yaml::{Mapping, Node, SourceMap, Value};
use podci_model::{LoadOptions, NoFiles, Severity};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{json_to_py, node_to_py, py_repr};
use crate::errors::pipeline_error;
use crate::files::DirSource;

/// One error or warning about the configuration, in GitLab's wording.
#[pyclass(module = "podci", frozen, eq, hash, from_py_object)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// `"error"` or `"warning"`.
    #[pyo3(get)]
    pub severity: &'static str,
    /// The message exactly as GitLab words it.
    #[pyo3(get)]
    pub message: String,
    /// The file the position refers to (the main file or an included one).
    #[pyo3(get)]
    pub file: String,
    /// 1-based line, or `None` when GitLab reports no position.
    #[pyo3(get)]
    pub line: Option<u32>,
    /// 1-based column, or `None` when GitLab reports no position.
    #[pyo3(get)]
    pub column: Option<u32>,
}

impl Diagnostic {
    pub(crate) fn from_model(d: &podci_model::Diagnostic, sources: &SourceMap) -> Diagnostic {
        let (file, line, column) = match d.span {
            Some(s) if s.line > 0 => (sources.name(s.file), Some(s.line), Some(s.col)),
            Some(s) => (sources.name(s.file), None, None),
            None => (sources.name(0), None, None),
        };
        Diagnostic {
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            message: d.message.clone(),
            file: file.to_string(),
            line,
            column,
        }
    }
}

#[pymethods]
impl Diagnostic {
    /// Makes a diagnostic (podci makes them; this exists for tests and unpickling).
    #[new]
    #[pyo3(signature = (severity, message, file, line=None, column=None))]
    fn py_new(
        severity: &str,
        message: String,
        file: String,
        line: Option<u32>,
        column: Option<u32>,
    ) -> PyResult<Diagnostic> {
        let severity = match severity {
            "error" => "error",
            "warning" => "warning",
            other => {
                return Err(PyValueError::new_err(format!(
                    "severity must be 'error' or 'warning', not {}",
                    py_repr(other)
                )));
            }
        };
        Ok(Diagnostic {
            severity,
            message,
            file,
            line,
            column,
        })
    }

    /// Pickles as its constructor arguments, so exceptions carrying diagnostics can cross
    /// process boundaries.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (
        Bound<'py, pyo3::types::PyType>,
        (&'static str, String, String, Option<u32>, Option<u32>),
    ) {
        let d = slf.get();
        (
            slf.get_type(),
            (d.severity, d.message.clone(), d.file.clone(), d.line, d.column),
        )
    }

    /// `FILE:LINE:COLUMN: message`, the form editors and CI logs link to.
    fn __str__(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", self.file, self.message),
            _ => format!("{}: {}", self.file, self.message),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Diagnostic(severity={}, message={}, file={}, line={}, column={})",
            py_repr(self.severity),
            py_repr(&self.message),
            py_repr(&self.file),
            opt(self.line),
            opt(self.column)
        )
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "None".to_string(), |v| v.to_string())
}

/// One entry of a job's `needs:`.
#[pyclass(module = "podci", frozen, eq, hash, from_py_object)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Need {
    /// The needed job.
    #[pyo3(get)]
    pub job: String,
    /// Whether its artifacts are downloaded.
    #[pyo3(get)]
    pub artifacts: bool,
    /// Whether the need is ignored when the job is not in the pipeline.
    #[pyo3(get)]
    pub optional: bool,
    /// The need refers to another project or pipeline.
    #[pyo3(get)]
    pub external: bool,
}

#[pymethods]
impl Need {
    fn __repr__(&self) -> String {
        format!(
            "Need(job={}, artifacts={}, optional={}, external={})",
            py_repr(&self.job),
            py_bool(self.artifacts),
            py_bool(self.optional),
            py_bool(self.external)
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// What an evaluated job needs to build its payload later: the evaluation it came from.
struct EvalState {
    pipeline: Arc<podci_model::Pipeline>,
    evaluation: Evaluation,
    ctx: PipelineContext,
}

/// A job: as configured (`Pipeline.jobs`) or as created for one commit
/// (`Pipeline.evaluate`).
#[pyclass(module = "podci", frozen)]
pub struct Job {
    /// The job name; for an evaluated `parallel` job, the instance name (`test 1/2`).
    #[pyo3(get)]
    name: String,
    /// The configured job this is (equal to `name` unless it is a `parallel` instance).
    #[pyo3(get)]
    job: String,
    /// Its stage.
    #[pyo3(get)]
    stage: String,
    /// `when:` (after rules, for an evaluated job).
    #[pyo3(get)]
    when: String,
    /// `allow_failure:` (after rules, for an evaluated job).
    #[pyo3(get)]
    allow_failure: bool,
    needs: Option<Vec<Need>>,
    /// The image name (`image:` or `image:name:`), `default:` applied.
    #[pyo3(get)]
    image: Option<String>,
    variables: Vec<(String, String)>,
    /// A trigger job (`trigger:`) rather than a script job.
    #[pyo3(get)]
    trigger: bool,
    /// The names GitLab gives the jobs it creates from this one (`parallel`).
    #[pyo3(get)]
    instances: Vec<String>,
    /// Line of the job's key in its file.
    #[pyo3(get)]
    line: u32,
    /// Job id within the evaluated pipeline, `None` for a configured job.
    #[pyo3(get)]
    id: Option<u64>,
    /// Delay of a `when: delayed` job in seconds.
    #[pyo3(get)]
    start_in: Option<u64>,
    config: Mapping,
    eval: Option<Arc<EvalState>>,
}

fn config_variables(cfg: &Mapping) -> Vec<(String, String)> {
    let Some(m) = cfg.get("variables").and_then(Node::as_map) else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| {
            let value = match &v.value {
                Value::Map(vm) => vm
                    .get("value")
                    .and_then(Node::scalar_to_string)
                    .unwrap_or_default(),
                _ => v.scalar_to_string().unwrap_or_default(),
            };
            (k.to_string(), value)
        })
        .collect()
}

fn image_name(cfg: &Mapping) -> Option<String> {
    let image = cfg.get("image")?;
    match &image.value {
        Value::Map(m) => m.get("name").and_then(Node::scalar_to_string),
        Value::Null => None,
        _ => image.scalar_to_string(),
    }
}

impl Job {
    fn configured(j: &podci_model::Job) -> Job {
        Job {
            name: j.name.clone(),
            job: j.name.clone(),
            stage: j.stage.clone(),
            when: j.when.clone(),
            allow_failure: j.allow_failure,
            needs: j.needs.as_ref().map(|n| {
                n.iter()
                    .map(|n| Need {
                        job: n.job.clone(),
                        artifacts: n.artifacts,
                        optional: n.optional,
                        external: n.external,
                    })
                    .collect()
            }),
            image: image_name(&j.config),
            variables: config_variables(&j.config),
            trigger: j.trigger,
            instances: j.instances.clone(),
            line: j.span.line,
            id: None,
            start_in: None,
            config: j.config.clone(),
            eval: None,
        }
    }

    fn from_evaluation(ej: &EvaluatedJob, state: &Arc<EvalState>) -> Job {
        let configured = state.pipeline.job(&ej.job);
        let config = configured.map(|j| j.config.clone()).unwrap_or_default();
        Job {
            name: ej.name.clone(),
            job: ej.job.clone(),
            stage: ej.stage.clone(),
            when: ej.when.clone(),
            allow_failure: ej.allow_failure,
            needs: ej.needs.as_ref().map(|n| {
                n.iter()
                    .map(|(job, artifacts, optional)| Need {
                        job: job.clone(),
                        artifacts: *artifacts,
                        optional: *optional,
                        external: false,
                    })
                    .collect()
            }),
            image: image_name(&config),
            variables: ej
                .variables()
                .into_iter()
                .map(|v| (v.key.clone(), v.value.clone()))
                .collect(),
            trigger: configured.is_some_and(|j| j.trigger),
            instances: vec![ej.name.clone()],
            line: configured.map_or(0, |j| j.span.line),
            id: Some(ej.id),
            start_in: ej.start_in,
            config,
            eval: Some(Arc::clone(state)),
        }
    }
}

#[pymethods]
impl Job {
    /// `needs:` entries, or `None` when the job follows stage order.
    #[getter]
    fn needs(&self) -> Option<Vec<Need>> {
        self.needs.clone()
    }

    /// Variables: for a configured job its `variables:` block; for an evaluated job every
    /// variable it gets (predefined, global, job, matrix, rules and pipeline variables),
    /// each with its winning value.
    #[getter]
    fn variables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.variables {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// `rules:` as written (after `extends:` and `!reference`), or `None`.
    #[getter]
    fn rules<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.config.get("rules").map(|r| node_to_py(py, r)).transpose()
    }

    /// The job's whole configuration with `default:` applied, as dicts and lists.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.config.iter() {
            d.set_item(k, node_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// Whether this job comes from `Pipeline.evaluate` (and so has an id and variables).
    #[getter]
    fn evaluated(&self) -> bool {
        self.eval.is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "Job(name={}, stage={}, when={}, allow_failure={})",
            py_repr(&self.name),
            py_repr(&self.stage),
            py_repr(&self.when),
            py_bool(self.allow_failure)
        )
    }
}

/// A loaded `.gitlab-ci.yml`: includes, `extends:` and `!reference` resolved, validated
/// as GitLab validates it.
#[pyclass(module = "podci", frozen)]
pub struct Pipeline {
    inner: Arc<podci_model::Pipeline>,
    root: Option<PathBuf>,
}

/// Reads `Mapping`-like Python objects (anything with `.items()`) into string pairs.
fn string_pairs(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<(String, String)>> {
    let items = obj
        .call_method0("items")
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a mapping of str to str")))?;
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        let k: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{what}: keys must be str")))?;
        let v: String = v
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{what}: the value of {k} must be str")))?;
        out.push((k, v));
    }
    Ok(out)
}

impl Pipeline {
    fn diagnostics_of(&self, severity: Option<Severity>) -> Vec<Diagnostic> {
        self.inner
            .diagnostics
            .iter()
            .filter(|d| severity.is_none_or(|s| d.severity == s))
            .map(|d| Diagnostic::from_model(d, &self.inner.sources))
            .collect()
    }

    /// Files of the project directory (for `exists:` rules); none for text without one.
    fn project_files(&self) -> Vec<String> {
        match &self.root {
            Some(root) => {
                let src = DirSource { root: root.clone() };
                podci_model::FileSource::local_files(&src).unwrap_or_default()
            }
            None => Vec::new(),
        }
    }

    /// A push to the default branch, the context `payload(name)` uses.
    fn default_ctx(&self) -> PipelineContext {
        PipelineContext {
            existing_files: self.project_files(),
            ..PipelineContext::default()
        }
    }

    fn ensure_valid(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.is_valid() {
            return Ok(());
        }
        let errors = self.diagnostics_of(Some(Severity::Error));
        let first = errors.first().map(Diagnostic::__str__).unwrap_or_default();
        let more = match errors.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Err(pipeline_error(
            py,
            &format!("the pipeline configuration is invalid: {first}{more}"),
            errors,
            None,
        ))
    }

    fn evaluate_ctx(&self, py: Python<'_>, ctx: PipelineContext) -> PyResult<Arc<EvalState>> {
        self.ensure_valid(py)?;
        let pipeline = Arc::clone(&self.inner);
        let evaluation = py.detach(|| pipeline.evaluate(&ctx));
        if !evaluation.errors.is_empty() {
            let diags: Vec<Diagnostic> = evaluation
                .errors
                .iter()
                .map(|d| Diagnostic::from_model(d, &self.inner.sources))
                .collect();
            let first = diags.first().map(Diagnostic::__str__).unwrap_or_default();
            return Err(pipeline_error(
                py,
                &format!("GitLab would not create this pipeline: {first}"),
                diags,
                None,
            ));
        }
        Ok(Arc::new(EvalState {
            pipeline: Arc::clone(&self.inner),
            evaluation,
            ctx,
        }))
    }
}

#[pymethods]
impl Pipeline {
    /// Stages in order, including `.pre` and `.post`.
    #[getter]
    fn stages(&self) -> Vec<String> {
        self.inner.stages.clone()
    }

    /// Visible jobs in configuration order (before `parallel` expansion).
    #[getter]
    fn jobs(&self) -> Vec<Job> {
        self.inner.jobs.iter().map(Job::configured).collect()
    }

    /// Errors: when not empty, GitLab would refuse the pipeline.
    #[getter]
    fn errors(&self) -> Vec<Diagnostic> {
        self.diagnostics_of(Some(Severity::Error))
    }

    /// Warnings GitLab shows for an accepted pipeline.
    #[getter]
    fn warnings(&self) -> Vec<Diagnostic> {
        self.diagnostics_of(Some(Severity::Warning))
    }

    /// Errors and warnings in the order they were found.
    #[getter]
    fn diagnostics(&self) -> Vec<Diagnostic> {
        self.diagnostics_of(None)
    }

    /// Whether GitLab would accept the configuration.
    #[getter]
    fn valid(&self) -> bool {
        self.inner.is_valid()
    }

    /// Files read through `include:`, in the order they were read.
    #[getter]
    fn included(&self) -> Vec<String> {
        self.inner.included.clone()
    }

    /// The main file's name as diagnostics show it.
    #[getter]
    fn file(&self) -> String {
        self.inner.sources.name(0).to_string()
    }

    /// A configured job by name, or `None`.
    fn job(&self, name: &str) -> Option<Job> {
        self.inner.job(name).map(Job::configured)
    }

    /// The merged configuration (includes inlined, `extends:` merged, `!reference`
    /// replaced) as dicts and lists.
    fn merged<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        node_to_py(py, &self.inner.config)
    }

    /// The merged configuration as YAML that loads back to the same configuration.
    fn merged_yaml(&self) -> String {
        podci_model::emit::to_yaml(&self.inner.config)
    }

    /// The jobs GitLab would create for a commit, in stage order.
    ///
    /// Raises `PipelineError` when the configuration is invalid or GitLab would refuse to
    /// create the pipeline (e.g. a need on a job that rules left out).
    #[pyo3(signature = (
        *, branch=None, tag=None, source="push", variables=None, changed_files=None,
        default_branch="main", existing_files=None, sha=None, protected=false,
        merge_request=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        py: Python<'_>,
        branch: Option<String>,
        tag: Option<String>,
        source: &str,
        variables: Option<Bound<'_, PyAny>>,
        changed_files: Option<Vec<String>>,
        default_branch: &str,
        existing_files: Option<Vec<String>>,
        sha: Option<String>,
        protected: bool,
        merge_request: Option<(String, String)>,
    ) -> PyResult<Vec<Job>> {
        let (ref_name, is_tag) = match (branch, tag) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "give either branch= or tag=, not both: a pipeline runs for one ref",
                ));
            }
            (Some(b), None) => (b, false),
            (None, Some(t)) => (t, true),
            (None, None) => match &merge_request {
                Some((src, _)) => (src.clone(), false),
                None => (default_branch.to_string(), false),
            },
        };
        if let Some(s) = &sha
            && (s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(PyValueError::new_err(format!(
                "sha={} is not a 40-digit hexadecimal commit SHA",
                py_repr(s)
            )));
        }
        let mut user = Vec::new();
        if let Some(v) = &variables {
            for (k, v) in string_pairs(v, "variables")? {
                // Variables given for one pipeline are not public: GitLab Runner keeps
                // such values out of places every job reader can see.
                let mut var = Variable::plain(&k, &v, VariableLevel::Pipeline);
                var.public = false;
                user.push(var);
            }
        }
        let existing_files = match existing_files {
            Some(f) => f,
            None => self.project_files(),
        };
        let mut ctx = PipelineContext {
            source: source.to_string(),
            ref_name,
            tag: is_tag,
            default_branch: default_branch.to_string(),
            protected_ref: protected,
            changed_files,
            existing_files,
            variables: user,
            merge_request,
            ..PipelineContext::default()
        };
        if let Some(s) = sha {
            ctx.sha = s;
        }
        let state = self.evaluate_ctx(py, ctx)?;
        Ok(state
            .evaluation
            .jobs
            .iter()
            .map(|ej| Job::from_evaluation(ej, &state))
            .collect())
    }

    /// The JSON payload GitLab sends a runner for `job` on `POST /api/v4/jobs/request`, as
    /// a dict.
    ///
    /// `job` is a job from `evaluate()` (its commit and variables are used) or a job name
    /// (evaluated for a push to the default branch). `token` becomes `CI_JOB_TOKEN`.
    #[pyo3(signature = (job, *, token="podci-local-job-token"))]
    fn payload<'py>(
        &self,
        py: Python<'py>,
        job: &Bound<'py, PyAny>,
        token: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (name, state) = if let Ok(j) = job.cast::<Job>() {
            let j = j.get();
            match &j.eval {
                Some(state) => {
                    if !Arc::ptr_eq(&state.pipeline, &self.inner) {
                        return Err(pipeline_error(
                            py,
                            &format!(
                                "job {} was evaluated from another Pipeline object; call payload() on that one",
                                j.name
                            ),
                            Vec::new(),
                            Some(&j.name),
                        ));
                    }
                    (j.name.clone(), Arc::clone(state))
                }
                None => (j.name.clone(), self.evaluate_ctx(py, self.default_ctx())?),
            }
        } else if let Ok(name) = job.extract::<String>() {
            (name, self.evaluate_ctx(py, self.default_ctx())?)
        } else {
            return Err(PyTypeError::new_err(
                "job must be a podci.Job or a job name (str)",
            ));
        };
        let payload = state
            .pipeline
            .payload(&state.evaluation, &name, &state.ctx, token);
        let Some(payload) = payload else {
            let why = match state.evaluation.decisions.iter().find(|(n, _)| *n == name) {
                Some(_) => format!(
                    "job {name} is not created for {} on {}: its rules or only/except leave it out",
                    state.ctx.source, state.ctx.ref_name
                ),
                None => {
                    let known: Vec<&str> = state.evaluation.jobs.iter().map(|j| j.name.as_str()).collect();
                    format!(
                        "no job named {} in this pipeline (jobs created: {})",
                        py_repr(&name),
                        known.join(", ")
                    )
                }
            };
            return Err(pipeline_error(py, &why, Vec::new(), Some(&name)));
        };
        let value = serde_json::to_value(&payload).map_err(|e| {
            pipeline_error(
                py,
                &format!("payload of {name} is not serializable: {e}"),
                Vec::new(),
                Some(&name),
            )
        })?;
        json_to_py(py, &value)
    }

    /// Raises `PipelineError` (with every error as `.diagnostics`) unless the pipeline is
    /// valid.
    fn raise_for_errors(&self, py: Python<'_>) -> PyResult<()> {
        self.ensure_valid(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Pipeline(file={}, valid={}, stages={}, jobs={})",
            py_repr(self.inner.sources.name(0)),
            py_bool(self.inner.is_valid()),
            self.inner.stages.len(),
            self.inner.jobs.len()
        )
    }
}

/// Loads configuration `text` named `name`; `include_dir` is the repository root for
/// `include:local` (no includes are readable without it). The Python `podci.load` reads
/// files and picks these arguments.
#[pyfunction]
#[pyo3(signature = (name, text, include_dir=None))]
pub fn load_text(py: Python<'_>, name: &str, text: &str, include_dir: Option<PathBuf>) -> Pipeline {
    let root = include_dir.clone();
    let pipeline = py.detach(|| match include_dir {
        Some(root) => podci_model::load(name, text, &DirSource { root }, &LoadOptions::default()),
        None => podci_model::load(name, text, &NoFiles, &LoadOptions::default()),
    });
    Pipeline {
        inner: Arc::new(pipeline),
        root,
    }
}
