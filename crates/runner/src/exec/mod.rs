//! `podci exec`'s orchestration: a local pipeline from `.gitlab-ci.yml` to a summary.
//!
//! Owns the order of things around the executor layer: the git context and user
//! variables become a [`PipelineContext`], podci-model evaluates the pipeline and builds
//! each job's payload, the [`Scheduler`] (podci-model's state machine: stages, needs,
//! `when`, `allow_failure`, retry) decides what starts, at most `--concurrency` jobs run
//! at once through [`crate::executor::run_job`], and Ctrl-C cancels the pipeline (running
//! jobs get their `after_script` with `CI_JOB_STATUS=canceled`).
//!
//! Two entry points share all of it: [`run`] is `podci exec` (terminal output, signals,
//! an exit code) and [`run_pipeline`] is the library's (lines to a [`RunObserver`],
//! cancellation through a token, per-job results as values), used by the Python package.

pub mod git;
pub mod output;
pub mod transport;
pub mod vars;
pub mod workcopy;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use podci_model::Pipeline;
use podci_model::eval::{Evaluation, PipelineContext, VariableLevel};
use podci_model::payload::{ArtifactsFile, JobPayload};
use podci_model::schedule::{
    self, Action, AllowFailure, Event, JobSpec, JobStatus, PipelineStatus, Scheduler, When,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, Hooks, JobDirs, JobOutcome};
use output::Display;
pub use output::RunObserver;

/// Which executor runs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Local bash/sh processes.
    Shell,
    /// Containers through the Docker engine API.
    Docker,
}

impl std::str::FromStr for ExecutorKind {
    type Err = ExecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shell" => Ok(ExecutorKind::Shell),
            "docker" => Ok(ExecutorKind::Docker),
            other => Err(ExecError::UnknownExecutor(other.to_string())),
        }
    }
}

/// Why a local pipeline did not run. A pipeline that ran and failed is not an error: its
/// [`PipelineRun`] says so.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The configuration has errors; `pipeline.diagnostics` lists them with positions.
    #[error("{file} is invalid; nothing ran: {}", first_error(pipeline))]
    Invalid {
        /// The pipeline file as named to the user.
        file: String,
        /// The loaded pipeline with its diagnostics and sources.
        pipeline: Box<Pipeline>,
    },
    /// Creating the pipeline failed as it would on GitLab (a `needs:` on a job that does
    /// not exist for this ref, ...).
    #[error("the pipeline cannot be created: {}", .messages.join("; "))]
    Evaluation {
        /// GitLab's messages, each with its position.
        messages: Vec<String>,
        /// The same as diagnostics.
        diagnostics: Vec<podci_model::Diagnostic>,
        /// The pipeline they point into.
        pipeline: Box<Pipeline>,
    },
    /// A job named to run is not in the evaluated pipeline.
    #[error("no job {job:?} in this pipeline; jobs are: {}", .jobs.join(", "))]
    NoSuchJob {
        /// The name asked for.
        job: String,
        /// The jobs there are.
        jobs: Vec<String>,
    },
    /// An executor name other than `shell` or `docker`.
    #[error("unknown executor {0:?}: use \"shell\" or \"docker\"")]
    UnknownExecutor(String),
    /// A variables file or `KEY=VALUE` that cannot be used.
    #[error(transparent)]
    Variables(#[from] vars::VarsError),
    /// Preparing the run failed (the pipeline file, working copies, cache or log
    /// directories, the async runtime).
    #[error("{0:#}")]
    Setup(anyhow::Error),
}

fn first_error(p: &Pipeline) -> String {
    p.diagnostics
        .iter()
        .find(|d| d.severity == podci_model::Severity::Error)
        .map(|d| d.display(&p.sources).to_string())
        .unwrap_or_default()
}

impl From<anyhow::Error> for ExecError {
    fn from(e: anyhow::Error) -> Self {
        ExecError::Setup(e)
    }
}

/// The result of a local pipeline run ([`run_pipeline`]).
#[derive(Debug, Clone)]
pub struct PipelineRun {
    /// Whether `workflow:rules` created the pipeline; when not, nothing ran and `jobs`
    /// is empty.
    pub created: bool,
    /// The local pipeline number (`CI_PIPELINE_ID`; the logs directory's name).
    pub pipeline_id: u64,
    /// GitLab's pipeline status at the end (`success`, `failed`, `canceled`, ...).
    pub status: PipelineStatus,
    /// Whether the run was canceled through the token (or a signal).
    pub canceled: bool,
    /// Whether a job failed that was allowed to fail (GitLab's "passed with warnings").
    pub has_warnings: bool,
    /// The ref the pipeline ran for.
    pub ref_name: String,
    /// Whether `ref_name` is a tag.
    pub tag: bool,
    /// The commit (empty outside a git repository).
    pub sha: String,
    /// Where the job logs are (`<project>/.podci/logs/<pipeline_id>`).
    pub logs_dir: PathBuf,
    /// Every job of the pipeline in stage and configuration order, run or not.
    pub jobs: Vec<JobRun>,
}

impl PipelineRun {
    /// A job's result by instance name.
    pub fn job(&self, name: &str) -> Option<&JobRun> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// One job of a [`PipelineRun`].
#[derive(Debug, Clone)]
pub struct JobRun {
    /// Instance name (`test 1/2` for a `parallel` job).
    pub name: String,
    /// Stage.
    pub stage: String,
    /// Final status (GitLab's names: `success`, `failed`, `canceled`, `skipped`,
    /// `manual`, ...).
    pub status: JobStatus,
    /// The job failed and was allowed to (`allow_failure`).
    pub allowed_failure: bool,
    /// Wall time of the last attempt; `None` when it never started.
    pub duration: Option<Duration>,
    /// Attempts made (`retry:`), 0 when it never started.
    pub attempts: u32,
    /// Its full trace (raw bytes, ANSI colours and section markers included).
    pub log: Option<PathBuf>,
    /// How the last attempt ended, with failure reason and exit code.
    pub outcome: Option<JobOutcome>,
}

/// Everything `podci exec` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project directory: the pipeline file, git context, `.podci/` and logs are
    /// found here.
    pub project: PathBuf,
    /// The pipeline file, relative to `project` (default `.gitlab-ci.yml`, else the
    /// embedded hello pipeline).
    pub file: Option<PathBuf>,
    /// `--variable KEY=VALUE`, in order.
    pub variables: Vec<String>,
    /// Branch override.
    pub branch: Option<String>,
    /// Tag override.
    pub tag: Option<String>,
    /// `CI_PIPELINE_SOURCE`.
    pub source: String,
    /// Ref to compute changed files against (default: the default branch).
    pub compare_to: Option<String>,
    /// Jobs to run (all when empty).
    pub jobs: Vec<String>,
    /// Also run what the named jobs need.
    pub needs: bool,
    /// Run manual jobs.
    pub manual: bool,
    /// Jobs at once.
    pub concurrency: usize,
    /// Include uncommitted changes in working copies.
    pub with_dirty: bool,
    /// Cache store directory.
    pub cache_dir: Option<PathBuf>,
    /// Where working copies and artifacts go.
    pub work_dir: Option<PathBuf>,
    /// Keep job working copies after the run.
    pub keep: bool,
    /// Executor.
    pub executor: ExecutorKind,
    /// Print the plan only (`podci exec`; [`run_pipeline`] ignores it).
    pub dry_run: bool,
    /// Live view (`None`: when stdout is a terminal).
    pub live: Option<bool>,
    /// Include handling.
    pub includes: crate::cmd_lint::IncludeArgs,
}

/// A loaded, evaluated pipeline and the jobs chosen to run.
struct Plan {
    pipeline: Pipeline,
    eval: Evaluation,
    ctx: PipelineContext,
    specs: Vec<JobSpec>,
    repo: Option<git::Repo>,
}

fn user_cache_base() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("podci")
}

/// A file-name-safe form of a job name (`test 1/2` -> `test_1_2`).
pub fn file_name(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn project_key(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| file_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "project".into());
    let digest = blake3_hex(dir.to_string_lossy().as_bytes());
    format!("{name}-{}", &digest[..12])
}

fn blake3_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn build_context(opts: &Options, project: &Path) -> Result<(PipelineContext, Option<git::Repo>), ExecError> {
    let repo = git::read(project);
    let mut ctx = PipelineContext {
        source: opts.source.clone(),
        ..PipelineContext::default()
    };
    let name = project
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".into());
    ctx.project_path = format!("local/{name}");
    ctx.server_url = "http://localhost".into();
    if let Some(r) = &repo {
        ctx.default_branch = r.default_branch.clone();
        if let Some(sha) = &r.sha {
            ctx.sha = sha.clone();
        }
        if let Some(b) = &r.before_sha {
            ctx.before_sha = b.clone();
        }
        ctx.commit_message = r.message.clone();
        ctx.commit_author = r.author.clone();
        if !r.timestamp.is_empty() {
            ctx.commit_timestamp = r.timestamp.clone();
        }
        match (&r.branch, &r.tag) {
            (Some(b), _) => ctx.ref_name = b.clone(),
            (None, Some(t)) => {
                ctx.ref_name = t.clone();
                ctx.tag = true;
            }
            (None, None) => ctx.ref_name = r.default_branch.clone(),
        }
        let compare = opts
            .compare_to
            .clone()
            .unwrap_or_else(|| r.default_branch.clone());
        ctx.changed_files = git::changed_files(project, r, &compare);
        ctx.existing_files = git::tracked_files(project);
    }
    if let Some(b) = &opts.branch {
        ctx.ref_name = b.clone();
        ctx.tag = false;
    }
    if let Some(t) = &opts.tag {
        ctx.ref_name = t.clone();
        ctx.tag = true;
    }
    // GitLab protects the default branch out of the box; locally that is the one ref
    // whose protected variables apply.
    ctx.protected_ref = !ctx.tag && ctx.ref_name == ctx.default_branch;

    let mut variables = Vec::new();
    if let Some(f) = vars::user_file() {
        variables.extend(vars::read_file(&f, VariableLevel::Group)?);
    }
    variables.extend(vars::read_file(
        &project.join(".podci").join("variables.yml"),
        VariableLevel::Project,
    )?);
    for v in &opts.variables {
        variables.push(vars::parse_option(v)?);
    }
    ctx.variables = variables;
    Ok((ctx, repo))
}

/// Instance names to run: the named jobs (by instance or by job name), with `--needs`
/// everything they need, transitively.
fn select(eval: &Evaluation, names: &[String], with_needs: bool) -> Result<BTreeSet<String>, ExecError> {
    let mut chosen = BTreeSet::new();
    for n in names {
        let found: Vec<&str> = eval
            .jobs
            .iter()
            .filter(|j| j.name == *n || j.job == *n)
            .map(|j| j.name.as_str())
            .collect();
        if found.is_empty() {
            return Err(ExecError::NoSuchJob {
                job: n.clone(),
                jobs: eval.jobs.iter().map(|j| j.name.clone()).collect(),
            });
        }
        chosen.extend(found.into_iter().map(str::to_string));
    }
    if with_needs {
        let mut todo: Vec<String> = chosen.iter().cloned().collect();
        while let Some(name) = todo.pop() {
            let Some(j) = eval.job(&name) else { continue };
            let needed: Vec<String> = match &j.needs {
                Some(needs) => needs.iter().map(|(n, _, _)| n.clone()).collect(),
                // Stage ordering: it needs every job of the earlier stages.
                None => eval
                    .jobs_before_stage(j.stage_index)
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
            };
            for n in needed {
                if eval.job(&n).is_some() && chosen.insert(n.clone()) {
                    todo.push(n);
                }
            }
        }
    }
    Ok(chosen)
}

/// Reads the pipeline file of `opts.project`. Relative names are kept as given, so that
/// diagnostics read as they do for `podci lint` run in the project directory.
fn load(opts: &Options) -> anyhow::Result<(String, Pipeline)> {
    let file = match &opts.file {
        Some(f) => Some(opts.project.join(f)),
        None => Some(opts.project.join(".gitlab-ci.yml")).filter(|f| f.exists()),
    };
    let Some(path) = file else {
        return crate::cmd_lint::load_pipeline(None, &opts.includes);
    };
    let name = opts
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(".gitlab-ci.yml"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let root = match &opts.includes.project_dir {
        Some(d) => opts.project.join(d),
        None => path
            .parent()
            .map_or_else(|| opts.project.clone(), Path::to_path_buf),
    };
    let source = crate::files::DirSource {
        root,
        projects: opts.includes.projects.iter().cloned().collect(),
        components: opts.includes.components.iter().cloned().collect(),
        templates: opts.includes.templates.clone(),
        remotes: opts.includes.remotes.iter().cloned().collect(),
        offline: opts.includes.offline,
    };
    let name = name.display().to_string();
    let pipeline = podci_model::load(&name, &text, &source, &podci_model::LoadOptions::default());
    Ok((name, pipeline))
}

/// Loads and evaluates the pipeline. `Ok(None)`: `workflow:rules` create no pipeline
/// for this ref (the context is returned for the message).
fn plan(opts: &Options) -> Result<Result<Plan, PipelineContext>, ExecError> {
    let project = &opts.project;
    let (file_name, pipeline) = load(opts)?;
    if !pipeline.is_valid() {
        return Err(ExecError::Invalid {
            file: file_name,
            pipeline: Box::new(pipeline),
        });
    }
    let (ctx, repo) = build_context(opts, project)?;
    let eval = pipeline.evaluate(&ctx);
    if !eval.created {
        return Ok(Err(ctx));
    }
    if !eval.errors.is_empty() {
        return Err(ExecError::Evaluation {
            messages: eval
                .errors
                .iter()
                .map(|d| d.display(&pipeline.sources).to_string())
                .collect(),
            diagnostics: eval.errors.clone(),
            pipeline: Box::new(pipeline),
        });
    }
    let chosen = if opts.jobs.is_empty() {
        None
    } else {
        Some(select(&eval, &opts.jobs, opts.needs)?)
    };
    let named: BTreeSet<&str> = opts.jobs.iter().map(String::as_str).collect();
    let base_jobs: Vec<&podci_model::Job> = {
        let present: BTreeSet<&str> = eval.jobs.iter().map(|j| j.job.as_str()).collect();
        pipeline
            .jobs
            .iter()
            .filter(|j| present.contains(j.name.as_str()))
            .collect()
    };
    let mut specs = Vec::new();
    for mut spec in schedule::job_specs(&pipeline, &base_jobs) {
        let Some(ej) = eval.job(&spec.name) else { continue };
        if chosen.as_ref().is_some_and(|c| !c.contains(&spec.name)) {
            continue;
        }
        // `when` and `allow_failure` after rules.
        spec.when = match ej.when.as_str() {
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "never" => When::Never,
            _ => When::OnSuccess,
        };
        if !matches!(spec.allow_failure, AllowFailure::ExitCodes(_)) {
            spec.allow_failure = if ej.allow_failure {
                AllowFailure::Yes
            } else {
                AllowFailure::No
            };
        }
        let wanted = opts.manual || named.contains(ej.name.as_str()) || named.contains(ej.job.as_str());
        if spec.when == When::Manual && wanted {
            spec.when = When::OnSuccess;
        }
        specs.push(spec);
    }
    Ok(Ok(Plan {
        pipeline,
        eval,
        ctx,
        specs,
        repo,
    }))
}

/// Runs `podci exec` in `opts.project`: terminal output, Ctrl-C/SIGTERM cancel, exit
/// code 0 (success), 1 (failed or invalid), 130 (canceled).
pub fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let plan = match plan(&opts) {
        Ok(Ok(p)) => p,
        Ok(Err(ctx)) => {
            eprintln!(
                "podci: workflow:rules create no pipeline for ref {}",
                ctx.ref_name
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(ExecError::Invalid { file, pipeline }) => {
            let mut err = std::io::stderr();
            crate::cmd_lint::print_diagnostics(&mut err, &pipeline)?;
            eprintln!("podci: {file} is invalid; nothing ran");
            return Ok(ExitCode::from(1));
        }
        Err(ExecError::Evaluation { messages, .. }) => {
            for m in messages {
                eprintln!("{m}");
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if opts.dry_run {
        print_plan(&plan);
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let live = opts.live.unwrap_or_else(|| {
        use std::io::IsTerminal;
        std::io::stdout().is_terminal()
    });
    let run = rt.block_on(async {
        let interrupts = Interrupts::signals()?;
        execute(opts, plan, Display::new(live), interrupts).await
    })?;
    Ok(if run.status == PipelineStatus::Success {
        ExitCode::SUCCESS
    } else if run.canceled {
        ExitCode::from(130)
    } else {
        ExitCode::from(1)
    })
}

/// Runs a pipeline as a library call: every line goes to `observer` (nothing is printed),
/// `cancel` cancels it as Ctrl-C does `podci exec` (running jobs get their
/// `after_script`), and the result carries each job's status, duration and log file.
///
/// Errors are for pipelines that could not start (invalid configuration, unknown job
/// names, an unusable directory); a pipeline whose jobs fail is an `Ok` with status
/// `failed`. Loading and the git context are read on the calling task (a few `git`
/// processes), then jobs run on the current tokio runtime.
pub async fn run_pipeline(
    opts: Options,
    observer: std::sync::Arc<dyn RunObserver>,
    cancel: CancellationToken,
) -> Result<PipelineRun, ExecError> {
    let plan = match plan(&opts)? {
        Ok(p) => p,
        Err(ctx) => {
            return Ok(PipelineRun {
                created: false,
                pipeline_id: 0,
                status: PipelineStatus::Skipped,
                canceled: false,
                has_warnings: false,
                ref_name: ctx.ref_name,
                tag: ctx.tag,
                sha: ctx.sha,
                logs_dir: opts.project.join(".podci").join("logs"),
                jobs: Vec::new(),
            });
        }
    };
    execute(
        opts,
        plan,
        Display::observed(observer),
        Interrupts::Token(Some(cancel)),
    )
    .await
}

/// Where cancellation comes from: the process's signals (the CLI) or a token (a library
/// caller, which owns the process's signal handling).
enum Interrupts {
    Signals {
        interrupt: tokio::signal::unix::Signal,
        terminate: tokio::signal::unix::Signal,
    },
    /// `None` once fired: a token stays canceled, and one cancellation is all it means.
    Token(Option<CancellationToken>),
}

impl Interrupts {
    fn signals() -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupts::Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
        })
    }

    /// Resolves at the next interrupt. Cancel-safe.
    async fn next(&mut self) {
        match self {
            Interrupts::Signals { interrupt, terminate } => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            Interrupts::Token(slot) => {
                let Some(token) = slot.as_ref() else {
                    return std::future::pending().await;
                };
                token.cancelled().await;
                *slot = None;
            }
        }
    }
}

/// The order the jobs would run in if every job succeeded: waves of jobs that may run
/// together.
fn waves(specs: &[JobSpec]) -> (Vec<Vec<String>>, Vec<String>) {
    let mut s = Scheduler::new(specs.to_vec());
    let mut waves = Vec::new();
    let mut not_run = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let absorb = |actions: Vec<Action>, pending: &mut Vec<String>, not_run: &mut Vec<String>| {
        for a in actions {
            match a {
                Action::Enqueue { job, .. } => pending.push(job),
                Action::Skip { job } | Action::WaitManual { job } => not_run.push(job),
                _ => {}
            }
        }
    };
    absorb(s.start(), &mut pending, &mut not_run);
    while !pending.is_empty() {
        let wave = std::mem::take(&mut pending);
        for j in &wave {
            let _ = s.on_event(Event::Started { job: j.clone() });
        }
        for j in &wave {
            if let Ok(a) = s.on_event(Event::Finished {
                job: j.clone(),
                result: schedule::JobResult::Success,
            }) {
                absorb(a, &mut pending, &mut not_run);
            }
        }
        waves.push(wave);
    }
    (waves, not_run)
}

fn print_plan(plan: &Plan) {
    let (waves, not_run) = waves(&plan.specs);
    println!(
        "Pipeline for {} {} ({}), {} job(s):",
        if plan.ctx.tag { "tag" } else { "branch" },
        plan.ctx.ref_name,
        plan.ctx.sha.get(..8).unwrap_or(&plan.ctx.sha),
        plan.specs.len()
    );
    for (i, wave) in waves.iter().enumerate() {
        println!("step {}:", i + 1);
        for name in wave {
            let Some(p) = plan
                .pipeline
                .payload(&plan.eval, name, &plan.ctx, "dry-run-token")
            else {
                continue;
            };
            let mut parts = vec![format!("stage {}", p.job_info.stage)];
            if let Some(img) = &p.image {
                parts.push(format!("image {}", img.name));
            }
            for c in &p.cache {
                parts.push(format!("cache {} ({})", c.key, c.policy));
            }
            let arts: Vec<String> = p.artifacts.iter().flat_map(|a| a.paths.clone()).collect();
            if !arts.is_empty() {
                parts.push(format!("artifacts {}", arts.join(" ")));
            }
            let deps: Vec<&str> = p.dependencies.iter().map(|d| &*d.name).collect();
            if !deps.is_empty() {
                parts.push(format!("from {}", deps.join(", ")));
            }
            println!("  {name}: {}", parts.join("; "));
        }
    }
    for n in not_run {
        let why = match plan.specs.iter().find(|s| s.name == n).map(|s| &s.when) {
            Some(When::Manual) => "manual (name it or use --manual)",
            Some(When::OnFailure) => "on_failure: only after a failure",
            _ => "skipped",
        };
        println!("not run: {n}: {why}");
    }
}

/// State of one job for the summary.
#[derive(Default)]
struct JobRecord {
    attempts: u32,
    duration: Option<Duration>,
    log: Option<PathBuf>,
    outcome: Option<JobOutcome>,
    /// The job's last attempt stored artifacts (files or dotenv variables).
    has_artifacts: bool,
}

fn next_pipeline_id(logs: &Path) -> u64 {
    std::fs::read_dir(logs)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
        + 1
}

async fn execute(
    opts: Options,
    mut plan: Plan,
    display: std::sync::Arc<Display>,
    mut interrupts: Interrupts,
) -> Result<PipelineRun, ExecError> {
    let project = opts.project.clone();
    let logs_root = project.join(".podci").join("logs");
    std::fs::create_dir_all(&logs_root).with_context(|| format!("cannot create {}", logs_root.display()))?;
    let pipeline_id = next_pipeline_id(&logs_root);
    let logs = logs_root.join(pipeline_id.to_string());
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    plan.ctx.pipeline_id = pipeline_id;
    plan.ctx.pipeline_iid = pipeline_id;
    let plan = plan;
    // Job ids must be unique across runs: artifacts and caches are found by them.
    let work = opts
        .work_dir
        .clone()
        .unwrap_or_else(|| user_cache_base().join("exec").join(project_key(&project)))
        .join(format!("{pipeline_id}-{}", std::process::id()));
    let snapshot = work.join("source");
    workcopy::snapshot(&project, plan.repo.as_ref(), opts.with_dirty, &snapshot)
        .with_context(|| format!("cannot prepare the working copy in {}", snapshot.display()))?;

    let cache_dir = opts.cache_dir.clone().unwrap_or_else(|| {
        user_cache_base()
            .join("exec")
            .join(project_key(&project))
            .join("cache")
    });
    let cache_store = podci_cache::Store::dir(&cache_dir)
        .with_context(|| format!("cannot open the cache directory {}", cache_dir.display()))?
        .with_fsync(false);
    let art_store = podci_cache::Store::dir(work.join("artifacts"))
        .context("cannot create the artifacts directory")?
        .with_fsync(false);
    let artifacts = podci_cache::Artifacts::new(art_store);
    let hooks = Hooks {
        sources: Some(Arc::new(transport::SnapshotSources {
            snapshot: snapshot.clone(),
        })),
        cache: Some(Arc::new(transport::StoreCache {
            cache: podci_cache::Cache::new(cache_store),
        })),
        artifacts: Some(Arc::new(transport::StoreArtifacts {
            artifacts: artifacts.clone(),
        })),
    };
    let executor: Arc<dyn Executor> = match opts.executor {
        ExecutorKind::Shell => Arc::new(crate::executor::shell::ShellExecutor::detect()),
        ExecutorKind::Docker => Arc::new(crate::executor::docker::DockerExecutor::from_env()),
    };
    let live = display.is_live();
    display.note(&format!(
        "podci exec: pipeline #{pipeline_id} for {} {} ({}), {} job(s), logs in {}",
        if plan.ctx.tag { "tag" } else { "branch" },
        plan.ctx.ref_name,
        plan.ctx.sha.get(..8).unwrap_or(&plan.ctx.sha),
        plan.specs.len(),
        logs.display()
    ));

    let mut sched = Scheduler::new(plan.specs.clone());
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut records: HashMap<String, JobRecord> = HashMap::new();
    let mut tokens: HashMap<String, CancellationToken> = HashMap::new();
    let mut running: JoinSet<(String, JobOutcome, Duration, PathBuf)> = JoinSet::new();
    let root = CancellationToken::new();
    let mut canceled = false;
    let concurrency = opts.concurrency.max(1);

    let mut actions = sched.start();
    loop {
        for a in actions.drain(..) {
            match a {
                Action::Enqueue { job, .. } => queue.push_back(job),
                Action::Skip { job } => display.note(&format!("[{job}] skipped")),
                Action::WaitManual { job } => {
                    display.note(&format!("[{job}] manual: not run (name it or use --manual)"))
                }
                Action::Retry { job, attempt, reason } => {
                    display.note(&format!("[{job}] failed ({reason}); retrying, attempt {attempt}"))
                }
                Action::Cancel { job, was_running } => {
                    queue.retain(|q| *q != job);
                    if was_running && let Some(t) = tokens.get(&job) {
                        t.cancel();
                    }
                }
                Action::Schedule { job, .. } => {
                    // Delayed jobs start at once locally: nobody waits for a timer here.
                    if let Ok(more) = sched.on_event(Event::Played { job }) {
                        actions_extend(&mut queue, more);
                    }
                }
            }
        }
        while running.len() < concurrency && !canceled {
            let Some(job) = queue.pop_front() else { break };
            if sched.on_event(Event::Started { job: job.clone() }).is_err() {
                continue;
            }
            let attempt = sched.job_attempt(&job).unwrap_or(1);
            let rec = records.entry(job.clone()).or_default();
            rec.attempts = attempt;
            let mut payload =
                match plan
                    .pipeline
                    .payload(&plan.eval, &job, &plan.ctx, &crate::executor::random_hex(20))
                {
                    Some(p) => p,
                    None => {
                        actions = sched
                            .on_event(Event::Finished {
                                job: job.clone(),
                                result: schedule::JobResult::Failed {
                                    reason: schedule::FailureReason::RunnerSystemFailure,
                                    exit_code: None,
                                },
                            })
                            .unwrap_or_default();
                        continue;
                    }
                };
            // Job ids repeat between runs (1, 2, ...); the artifact store is per run.
            mark_artifacts(&mut payload, &records);
            let token = root.child_token();
            tokens.insert(job.clone(), token.clone());
            let log = logs.join(format!("{}.log", file_name(&job)));
            let mut sink = display
                .job_sink(&job, &log, attempt)
                .with_context(|| format!("cannot write {}", log.display()))?;
            let dirs = JobDirs::new(work.join("jobs").join(file_name(&job)));
            let _ = std::fs::remove_dir_all(&dirs.root);
            let exec = Arc::clone(&executor);
            let hooks = hooks.clone();
            let keep = opts.keep;
            if !live {
                display.note(&format!("[{job}] started"));
            }
            running.spawn(async move {
                let t = Instant::now();
                let outcome =
                    crate::executor::run_job(exec.as_ref(), payload, &dirs, &hooks, &mut sink, token).await;
                let took = t.elapsed();
                let log = sink.finish();
                if !keep {
                    let root = dirs.root.clone();
                    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(root)).await;
                }
                (job, outcome, took, log)
            });
        }
        if running.is_empty() && (queue.is_empty() || canceled) {
            break;
        }
        tokio::select! {
            done = running.join_next() => {
                let Some(done) = done else { continue };
                let (job, outcome, took, log) = match done {
                    Ok(v) => v,
                    Err(e) => return Err(anyhow::anyhow!("a job task failed: {e}").into()),
                };
                tokens.remove(&job);
                // One manifest read per finished job, not one per dependent.
                let id = plan.eval.job(&job).map_or(0, |j| j.id);
                let has_artifacts = matches!(
                    artifacts.manifest(id).await,
                    Ok(Some(m)) if m.archive.is_some() || !m.dotenv.is_empty()
                );
                let rec = records.entry(job.clone()).or_default();
                rec.has_artifacts = has_artifacts;
                rec.duration = Some(took);
                rec.log = Some(log);
                rec.outcome = Some(outcome.clone());
                let status = match &outcome {
                    JobOutcome::Success => "succeeded".to_string(),
                    JobOutcome::Canceled => "canceled".to_string(),
                    JobOutcome::Failed { reason, exit_code: Some(c) } => format!("failed: exit code {c} ({reason})"),
                    JobOutcome::Failed { reason, exit_code: None } => format!("failed ({reason})"),
                };
                display.note(&format!("[{job}] {status} in {:.2}s", took.as_secs_f64()));
                actions = sched
                    .on_event(Event::Finished { job, result: outcome.to_result() })
                    .unwrap_or_default();
            }
            () = interrupts.next() => {
                cancel_all(&mut canceled, &root, &mut sched, &mut actions, &display, &mut queue);
            }
        }
    }

    let status = sched.status();
    let stage_of: HashMap<&str, &str> = plan
        .eval
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.stage.as_str()))
        .collect();
    let mut rows = Vec::new();
    let mut jobs = Vec::new();
    let order: BTreeMap<usize, &str> = plan
        .eval
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (i, j.name.as_str()))
        .collect();
    let statuses: HashMap<String, JobStatus> = sched.jobs().map(|(n, s)| (n.to_string(), s)).collect();
    for name in order.values() {
        let Some(st) = statuses.get(*name) else { continue };
        let rec = records.remove(*name).unwrap_or_default();
        let allowed = *st == JobStatus::Failed && sched.job_allowed_to_fail(name).unwrap_or(false);
        let stage = stage_of.get(name).copied().unwrap_or("").to_string();
        rows.push(output::Row {
            job: name.to_string(),
            stage: stage.clone(),
            status: if allowed {
                "failed (allowed)".into()
            } else {
                st.as_str().to_string()
            },
            duration: rec.duration,
            attempts: rec.attempts,
            log: rec.log.clone(),
        });
        jobs.push(JobRun {
            name: name.to_string(),
            stage,
            status: *st,
            allowed_failure: allowed,
            duration: rec.duration,
            attempts: rec.attempts,
            log: rec.log,
            outcome: rec.outcome,
        });
    }
    display.note("");
    display.note(output::summary(&rows).trim_end());
    let warn = if sched.has_warnings() {
        " with warnings"
    } else {
        ""
    };
    display.note(&format!("pipeline #{pipeline_id}: {status}{warn}"));
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(PipelineRun {
        created: true,
        pipeline_id,
        status,
        canceled,
        has_warnings: sched.has_warnings(),
        ref_name: plan.ctx.ref_name.clone(),
        tag: plan.ctx.tag,
        sha: plan.ctx.sha.clone(),
        logs_dir: logs,
        jobs,
    })
}

fn actions_extend(queue: &mut VecDeque<String>, actions: Vec<Action>) {
    for a in actions {
        if let Action::Enqueue { job, .. } = a {
            queue.push_back(job);
        }
    }
}

fn cancel_all(
    canceled: &mut bool,
    root: &CancellationToken,
    sched: &mut Scheduler,
    actions: &mut Vec<Action>,
    display: &Display,
    queue: &mut VecDeque<String>,
) {
    if *canceled {
        // A second Ctrl-C: do not wait for after_script either.
        display.note("podci exec: stopping now: every job process is killed");
        crate::executor::shell::kill_all();
    } else {
        display.note(
            "podci exec: canceling: running jobs get their after_script (Ctrl-C again to stop at once)",
        );
    }
    *canceled = true;
    queue.clear();
    root.cancel();
    if let Ok(a) = sched.on_event(Event::Canceled) {
        actions.extend(a);
    }
}

/// Marks the dependencies that stored artifacts in this run, so the job downloads them.
fn mark_artifacts(payload: &mut JobPayload, records: &HashMap<String, JobRecord>) {
    for d in &mut payload.dependencies {
        if records.get(&*d.name).is_some_and(|r| r.has_artifacts) {
            d.artifacts_file = Some(ArtifactsFile {
                filename: "artifacts.tar.zst".into(),
                size: 0,
            });
        }
    }
}
