//! The executor layer: runs one GitLab job (a [`JobPayload`]) to a [`JobOutcome`].
//!
//! Shared by `podci exec` (jobs from a local `.gitlab-ci.yml`) and `podci run` (jobs from
//! a GitLab server). It owns the job's life cycle in GitLab Runner's order — get sources,
//! restore caches, download artifacts, `script`, `after_script`, save caches, upload
//! artifacts — and the trace: every byte passes the job's [`Masker`] before it reaches
//! the caller's [`TraceSink`]. What differs between callers is passed in:
//!
//! * [`Executor`]: where a step's shell script runs ([`shell::ShellExecutor`]: local
//!   processes; [`docker::DockerExecutor`]: containers through the Docker engine API);
//! * [`Hooks`]: source preparation ([`Sources`]: a local working copy here, a `git
//!   clone` of `payload.git_info` in the runner), the cache store ([`CacheTransport`]) and
//!   the artifact transport ([`ArtifactTransport`]: a local directory here, GitLab's
//!   artifacts API there);
//! * a [`CancellationToken`]: canceling stops the running step (process group / container
//!   killed), then `after_script` runs with `CI_JOB_STATUS=canceled`, and the outcome is
//!   [`JobOutcome::Canceled`].
//!
//! ```no_run
//! # async fn demo(payload: podci_model::payload::JobPayload) {
//! use podci::executor::{run_job, Hooks, JobDirs, shell::ShellExecutor};
//! let exec = ShellExecutor::detect();
//! let dirs = JobDirs::new("/tmp/job-1");
//! let mut sink = Vec::<u8>::new();
//! let outcome = run_job(&exec, payload, &dirs, &Hooks::default(), &mut sink,
//!                       tokio_util::sync::CancellationToken::new()).await;
//! println!("{outcome:?}");
//! # }
//! ```

pub mod docker;
pub mod shell;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use podci_model::mask::Masker;
use podci_model::payload::{JobPayload, JobVariable, Step};
use podci_model::schedule::{FailureReason, JobResult};
use podci_model::script::{self, ScriptOptions, Shell, StepEndScanner};
use tokio_util::sync::CancellationToken;

/// Where a job's trace goes (already masked). Terminal view and log file in `podci exec`,
/// GitLab's `PATCH /trace` in `podci run`.
pub trait TraceSink: Send {
    /// Appends masked trace bytes.
    fn write(&mut self, bytes: &[u8]);
}

impl TraceSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// How a job ended, with GitLab's failure reason and the script's exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every `script` command succeeded.
    Success,
    /// The job failed.
    Failed {
        /// GitLab's `failure_reason` (`script_failure`, `job_execution_timeout`,
        /// `image_pull_failure`, `runner_system_failure`, ...).
        reason: FailureReason,
        /// The script's exit code, when a script ran.
        exit_code: Option<i32>,
    },
    /// Canceled through the token.
    Canceled,
}

impl JobOutcome {
    /// The scheduler's view of the outcome.
    pub fn to_result(&self) -> JobResult {
        match self {
            JobOutcome::Success => JobResult::Success,
            JobOutcome::Failed { reason, exit_code } => JobResult::Failed {
                reason: reason.clone(),
                exit_code: *exit_code,
            },
            JobOutcome::Canceled => JobResult::Canceled,
        }
    }
}

/// The directories of one job. Everything the job writes stays below `root`.
#[derive(Debug, Clone)]
pub struct JobDirs {
    /// Root of the job's directories.
    pub root: PathBuf,
    /// `CI_PROJECT_DIR`: the working copy.
    pub project: PathBuf,
    /// File variables and scratch space (`<root>/tmp`), never inside the working copy.
    pub tmp: PathBuf,
}

impl JobDirs {
    /// `root/project` and `root/tmp`.
    pub fn new(root: impl Into<PathBuf>) -> JobDirs {
        let root = root.into();
        JobDirs {
            project: root.join("project"),
            tmp: root.join("tmp"),
            root,
        }
    }
}

/// A failure of a preparation stage (sources, caches, artifacts) that fails the job.
#[derive(Debug, Clone)]
pub struct StageError {
    /// GitLab's failure reason to report.
    pub reason: FailureReason,
    /// What went wrong, for the trace (must not contain secrets).
    pub message: String,
}

impl StageError {
    /// A `runner_system_failure`.
    pub fn system(message: impl Into<String>) -> StageError {
        StageError {
            reason: FailureReason::RunnerSystemFailure,
            message: message.into(),
        }
    }
}

/// Puts the job's sources into `dirs.project` (the "get sources" stage).
pub trait Sources: Send + Sync {
    /// Fills the (empty, existing) project directory. Progress lines go to `trace`.
    fn prepare<'a>(
        &'a self,
        payload: &'a JobPayload,
        dirs: &'a JobDirs,
        trace: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<(), StageError>>;
}

/// Restores and saves caches (`cache:` of the payload; keys already final).
pub trait CacheTransport: Send + Sync {
    /// Restores the first of `keys` that exists; returns a line for the trace.
    fn restore<'a>(&'a self, keys: &'a [String], project_dir: &'a Path) -> BoxFuture<'a, String>;
    /// Saves `cache` under `key`; returns a line for the trace. Errors are warnings.
    fn save<'a>(
        &'a self,
        key: &'a str,
        cache: &'a podci_model::payload::Cache,
        project_dir: &'a Path,
    ) -> BoxFuture<'a, String>;
}

/// Moves artifacts between jobs.
pub trait ArtifactTransport: Send + Sync {
    /// Extracts the artifacts of `payload.dependencies` (those with an `artifacts_file`)
    /// into `project_dir`; returns their `reports:dotenv` variables, later jobs winning.
    fn download<'a>(
        &'a self,
        payload: &'a JobPayload,
        project_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StageError>>;
    /// Stores the job's `artifacts` (those whose `when` matches); returns trace lines. A
    /// failure's message may start with trace lines of what was stored before it: all
    /// lines but the last are shown as they are, the last as the error.
    fn upload<'a>(
        &'a self,
        payload: &'a JobPayload,
        project_dir: &'a Path,
        succeeded: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, StageError>>;
}

/// The pluggable stages of a job. `None` skips the stage.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Get sources. `None`: the caller already filled the project directory.
    pub sources: Option<Arc<dyn Sources>>,
    /// Cache store.
    pub cache: Option<Arc<dyn CacheTransport>>,
    /// Artifact transport.
    pub artifacts: Option<Arc<dyn ArtifactTransport>>,
}

/// One step script to run.
pub struct StepRun<'a> {
    /// The rendered script (holds variable values: feed it on stdin or through a private
    /// file, never in an argument list).
    pub script: String,
    /// The job's directories (the executor maps them into a container if it uses one).
    pub dirs: &'a JobDirs,
    /// Kill the step when this is canceled (the step then reports [`StepEnd::Killed`]).
    pub cancel: CancellationToken,
    /// Kill the step after this long (then [`StepEnd::TimedOut`]).
    pub timeout: Option<Duration>,
}

/// How a step's process ended, seen from outside the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// The process exited with this code.
    Exited(i32),
    /// Killed through the cancel token.
    Killed,
    /// Killed by the timeout.
    TimedOut,
}

/// Where step scripts run. An executor knows processes or containers, nothing of
/// GitLab's stages: [`run_job`] drives those.
pub trait Executor: Send + Sync {
    /// A name for the trace header (`shell`, `docker`).
    fn name(&self) -> &str;
    /// Which shell the scripts are rendered for.
    fn shell(&self) -> Shell;
    /// Directory paths as the script sees them (`CI_PROJECT_DIR`, tmp): a container maps
    /// the host directories to its own paths.
    fn script_dirs(&self, dirs: &JobDirs) -> (String, String) {
        (
            dirs.project.to_string_lossy().into_owned(),
            dirs.tmp.to_string_lossy().into_owned(),
        )
    }
    /// Gets ready for a job (e.g. checks the image, starts services). The error fails the
    /// job with its reason (`image_pull_failure`, ...).
    fn prepare<'a, 'p>(
        &'a self,
        payload: &'p JobPayload,
        dirs: &'p JobDirs,
    ) -> BoxFuture<'p, Result<Box<dyn Session + 'a>, StageError>>
    where
        'a: 'p;
}

/// One job's use of an executor (a container, or nothing for the shell).
pub trait Session: Send {
    /// Runs one step script; raw output (stdout and stderr interleaved) goes to `output`.
    fn run_step<'a>(
        &'a mut self,
        step: StepRun<'a>,
        output: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<StepEnd, StageError>>;
    /// Releases what `prepare` created. Runs whatever happened before.
    fn cleanup(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Masks and forwards trace bytes; the one path by which anything reaches the sink.
struct Trace<'s> {
    masker: Masker,
    sink: &'s mut dyn TraceSink,
}

impl Trace<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let out = self.masker.write(b);
        if !out.is_empty() {
            self.sink.write(&out);
        }
    }
    fn line(&mut self, s: &str) {
        self.bytes(s.as_bytes());
        self.bytes(b"\n");
    }
    fn notice(&mut self, s: &str) {
        self.line(&format!("\x1b[32;1m{s}\x1b[0;m"));
    }
    fn warn(&mut self, s: &str) {
        self.line(&format!("\x1b[0;33mWARNING: {s}\x1b[0;m"));
    }
    fn error(&mut self, s: &str) {
        self.line(&format!("\x1b[31;1mERROR: {s}\x1b[0;m"));
    }
    fn finish(&mut self) {
        let out = self.masker.finish();
        if !out.is_empty() {
            self.sink.write(&out);
        }
    }
}

/// A random string of `[0-9a-f]` from the kernel's generator (nonces, job tokens).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if ok.is_err() {
        // No /dev/urandom: fall back to the clock and pid mixed through a hash; the nonce
        // only has to be unguessable by the job's own output.
        let seed = format!("{:?}{}", Instant::now(), std::process::id());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (i, b) in buf.iter_mut().enumerate() {
            std::hash::Hash::hash(&(seed.as_str(), i), &mut h);
            *b = std::hash::Hasher::finish(&h) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Cache keys to try for one `cache:` entry: the key and fallbacks with variables
/// expanded and sanitized as GitLab Runner does.
pub(crate) fn cache_keys(
    payload: &JobPayload,
    c: &podci_model::payload::Cache,
) -> Result<Vec<String>, String> {
    let vars = payload
        .variables
        .iter()
        .map(|v| (v.key.clone(), v.value.clone()))
        .collect();
    let spec = podci_cache::CacheSpec {
        key: c.key.clone(),
        fallback_keys: c.fallback_keys.clone(),
        paths: c.paths.clone(),
        untracked: c.untracked,
        policy: c.policy.parse().unwrap_or_default(),
        when: c.when.parse().unwrap_or_default(),
    };
    let ctx = podci_cache::JobContext {
        variables: vars,
        job_name: payload.job_info.name.clone(),
        ref_name: payload.git_info.reference.clone(),
    };
    podci_cache::key::runner_keys(&spec, &ctx).map_err(|e| e.to_string())
}

/// Runs one job through all of GitLab's stages. Never panics on job input; every
/// problem becomes a trace line and a [`JobOutcome`].
pub async fn run_job(
    executor: &dyn Executor,
    mut payload: JobPayload,
    dirs: &JobDirs,
    hooks: &Hooks,
    sink: &mut dyn TraceSink,
    cancel: CancellationToken,
) -> JobOutcome {
    let mut trace = Trace {
        masker: Masker::for_job(&payload),
        sink,
    };
    let outcome = run_stages(executor, &mut payload, dirs, hooks, &mut trace, cancel).await;
    match &outcome {
        JobOutcome::Success => trace.notice("Job succeeded"),
        JobOutcome::Canceled => trace.error("Job canceled"),
        JobOutcome::Failed { reason, exit_code } => match exit_code {
            Some(c) => trace.error(&format!("Job failed: exit code {c} ({reason})")),
            None => trace.error(&format!("Job failed ({reason})")),
        },
    }
    trace.finish();
    outcome
}

async fn run_stages(
    executor: &dyn Executor,
    payload: &mut JobPayload,
    dirs: &JobDirs,
    hooks: &Hooks,
    trace: &mut Trace<'_>,
    cancel: CancellationToken,
) -> JobOutcome {
    trace.notice(&format!(
        "Running with podci {} on {} executor",
        env!("CARGO_PKG_VERSION"),
        executor.name()
    ));
    for d in [&dirs.project, &dirs.tmp] {
        if let Err(e) = std::fs::create_dir_all(d) {
            trace.error(&format!("cannot create {}: {e}", d.display()));
            return failed(FailureReason::RunnerSystemFailure, None);
        }
    }
    // Variables only the runner knows, as GitLab Runner sets them.
    let (project_dir, _) = executor.script_dirs(dirs);
    let builds_dir = Path::new(&project_dir)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (key, value) in [("CI_PROJECT_DIR", project_dir), ("CI_BUILDS_DIR", builds_dir)] {
        payload.variables.retain(|v| v.key != key);
        payload.variables.push(JobVariable {
            key: key.into(),
            value,
            public: true,
            ..JobVariable::default()
        });
    }
    let mut session = match executor.prepare(payload, dirs).await {
        Ok(s) => s,
        Err(e) => {
            trace.error(&e.message);
            return failed(e.reason, None);
        }
    };
    let outcome = run_in_session(executor, session.as_mut(), payload, dirs, hooks, trace, cancel).await;
    session.cleanup().await;
    outcome
}

fn failed(reason: FailureReason, exit_code: Option<i32>) -> JobOutcome {
    JobOutcome::Failed { reason, exit_code }
}

async fn run_in_session(
    executor: &dyn Executor,
    session: &mut (dyn Session + '_),
    payload: &mut JobPayload,
    dirs: &JobDirs,
    hooks: &Hooks,
    trace: &mut Trace<'_>,
    cancel: CancellationToken,
) -> JobOutcome {
    // Get sources.
    if let Some(src) = &hooks.sources {
        trace.notice("Getting source from Git repository");
        let mut lines: Vec<String> = Vec::new();
        let res = {
            let mut push = |l: &str| lines.push(l.to_string());
            src.prepare(payload, dirs, &mut push).await
        };
        for l in &lines {
            trace.line(l);
        }
        if let Err(e) = res {
            trace.error(&e.message);
            return failed(e.reason, None);
        }
    }
    if cancel.is_cancelled() {
        return JobOutcome::Canceled;
    }
    // Restore caches.
    if let Some(cache) = &hooks.cache {
        for c in &payload.cache {
            let policy: podci_cache::Policy = c.policy.parse().unwrap_or_default();
            if !policy.pulls() {
                continue;
            }
            match cache_keys(payload, c) {
                Ok(keys) => {
                    trace.notice(&format!(
                        "Restoring cache {}",
                        keys.first().map_or("", String::as_str)
                    ));
                    let line = cache.restore(&keys, &dirs.project).await;
                    trace.line(&line);
                }
                Err(e) => trace.warn(&format!("cache not restored: {e}")),
            }
        }
    }
    // Download artifacts.
    if let Some(arts) = &hooks.artifacts
        && payload.dependencies.iter().any(|d| d.artifacts_file.is_some())
    {
        for d in payload.dependencies.iter().filter(|d| d.artifacts_file.is_some()) {
            trace.notice(&format!("Downloading artifacts for {} ({})", d.name, d.id));
        }
        match arts.download(payload, &dirs.project).await {
            Ok(vars) => {
                for (key, value) in vars {
                    payload.variables.retain(|v| v.key != key);
                    payload.variables.push(JobVariable {
                        key,
                        value,
                        public: true,
                        ..JobVariable::default()
                    });
                }
            }
            Err(e) => {
                trace.error(&e.message);
                return failed(e.reason, None);
            }
        }
    }

    // The script step.
    let nonce = random_hex(16);
    let (build_dir, tmp_dir) = executor.script_dirs(dirs);
    let opts = |status: Option<script::JobStatus>| ScriptOptions {
        shell: executor.shell(),
        nonce: nonce.clone(),
        start_time: now_unix(),
        build_dir: build_dir.clone(),
        tmp_dir: tmp_dir.clone(),
        job_status: status,
    };
    let mut outcome = JobOutcome::Success;
    if let Some(step) = payload.steps.iter().find(|s| s.name == "script").cloned() {
        let end = run_step(
            session,
            payload,
            &step,
            opts(None),
            &nonce,
            dirs,
            cancel.clone(),
            trace,
        )
        .await;
        outcome = match end {
            // The end marker carries the script's own code; the process code is the
            // fallback when the shell died before printing it.
            Ok((StepEnd::Exited(code), marker)) => match marker.unwrap_or(code) {
                0 if code == 0 => JobOutcome::Success,
                0 => failed(FailureReason::ScriptFailure, Some(code)),
                c => failed(FailureReason::ScriptFailure, Some(c)),
            },
            Ok((StepEnd::Killed, _)) => JobOutcome::Canceled,
            Ok((StepEnd::TimedOut, _)) => {
                trace.error(&format!("execution took longer than {} seconds", step.timeout));
                failed(FailureReason::JobExecutionTimeout, None)
            }
            Err(e) => {
                trace.error(&e.message);
                failed(e.reason, None)
            }
        };
    }
    if outcome == JobOutcome::Success && cancel.is_cancelled() {
        outcome = JobOutcome::Canceled;
    }

    // after_script: a fresh shell, whatever happened, with the job's status. It is not
    // stopped by the job's cancel (it is what a cancel runs), only by its own timeout.
    if let Some(step) = payload.steps.iter().find(|s| s.name == "after_script").cloned() {
        let status = match outcome {
            JobOutcome::Success => script::JobStatus::Success,
            JobOutcome::Canceled => script::JobStatus::Canceled,
            JobOutcome::Failed { .. } => script::JobStatus::Failed,
        };
        // GitLab Runner bounds after_script by 5 minutes unless configured otherwise.
        let mut step = step;
        step.timeout = step.timeout.clamp(1, 300);
        let end = run_step(
            session,
            payload,
            &step,
            opts(Some(status)),
            &nonce,
            dirs,
            CancellationToken::new(),
            trace,
        )
        .await;
        match end {
            Ok((StepEnd::Exited(0), _)) => {}
            Ok((StepEnd::TimedOut, _)) => trace.warn("after_script timed out"),
            Ok(_) => trace.warn("after_script failed"),
            Err(e) => trace.warn(&e.message),
        }
    }
    if outcome == JobOutcome::Canceled {
        return outcome;
    }
    let succeeded = outcome == JobOutcome::Success;

    // Save caches.
    if let Some(cache) = &hooks.cache {
        for c in &payload.cache {
            let policy: podci_cache::Policy = c.policy.parse().unwrap_or_default();
            let when: podci_cache::When = c.when.parse().unwrap_or_default();
            if !policy.pushes() || !when.matches(succeeded) {
                continue;
            }
            match cache_keys(payload, c) {
                Ok(keys) => {
                    let Some(key) = keys.first() else { continue };
                    trace.notice(&format!("Saving cache {key}"));
                    let line = cache.save(key, c, &dirs.project).await;
                    trace.line(&line);
                }
                Err(e) => trace.warn(&format!("cache not saved: {e}")),
            }
        }
    }
    // Upload artifacts.
    if let Some(arts) = &hooks.artifacts
        && !payload.artifacts.is_empty()
    {
        trace.notice("Uploading artifacts");
        match arts.upload(payload, &dirs.project, succeeded).await {
            Ok(lines) => {
                for l in lines {
                    trace.line(&l);
                }
            }
            Err(e) => {
                // Lines of the uploads done before the failure come first.
                let mut lines: Vec<&str> = e.message.lines().collect();
                let last = lines.pop().unwrap_or_default();
                for l in lines {
                    trace.line(l);
                }
                trace.error(last);
                if succeeded {
                    return failed(e.reason, None);
                }
            }
        }
    }
    outcome
}

/// Renders and runs one step; returns how the process ended and the exit code from the
/// script's end marker (which survives wrappers such as `docker exec`).
#[allow(clippy::too_many_arguments)]
async fn run_step(
    session: &mut (dyn Session + '_),
    payload: &JobPayload,
    step: &Step,
    opts: ScriptOptions,
    nonce: &str,
    dirs: &JobDirs,
    cancel: CancellationToken,
    trace: &mut Trace<'_>,
) -> Result<(StepEnd, Option<i32>), StageError> {
    // The timeout is enforced here, from outside, so the script needs no watchdog.
    let timeout = (step.timeout > 0).then(|| Duration::from_secs(step.timeout));
    let mut no_watchdog = step.clone();
    no_watchdog.timeout = 0;
    let text = script::render_step(payload, &no_watchdog, &opts)
        .map_err(|e| StageError::system(format!("cannot render the job script: {e}")))?;
    let mut scanner = StepEndScanner::new(nonce);
    let end = {
        let mut out = |b: &[u8]| {
            let passed = scanner.write(b);
            if !passed.is_empty() {
                trace.bytes(&passed);
            }
        };
        session
            .run_step(
                StepRun {
                    script: text,
                    dirs,
                    cancel,
                    timeout,
                },
                &mut out,
            )
            .await
    };
    let rest = scanner.finish();
    trace.bytes(&rest);
    let end = end?;
    Ok((end, scanner.exit_code()))
}
