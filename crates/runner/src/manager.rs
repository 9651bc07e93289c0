//! The job manager: asks GitLab for jobs and runs them, within the configured limits.
//!
//! Owns: one request loop per runner and `request_concurrency` slot, the `concurrent`
//! and per-runner `limit` accounting, the two-phase commit (`PUT running` before a job
//! starts), job timeouts, cancellation from GitLab, graceful shutdown, and swapping in a
//! re-read `config.toml` without dropping running jobs. How a job runs is an
//! [`Executor`]'s business; the seam is [`ExecutorFactory`], so that the shell executor
//! and podci-k8s plug in without the manager knowing either.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use podci_model::payload::JobPayload;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RunnerConfig};
use crate::gitlab::trace::{Finished, JobSession, JobSignals, TraceWriter};
use crate::gitlab::{Backoff, Client, JobRequest, JobState, Update, short_token};
use crate::metrics::Metrics;

/// How a job ended, as an executor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step passed.
    Success,
    /// A failure with GitLab's reason (`script_failure`, ...) and the exit code if known.
    Failed {
        /// GitLab's `failure_reason`.
        reason: String,
        /// The script's exit code.
        exit_code: Option<i32>,
    },
}

/// Everything an executor gets for one job.
pub struct ExecRequest {
    /// The job as GitLab sent it.
    pub payload: Arc<JobPayload>,
    /// Where the (already masked) output goes.
    pub trace: TraceWriter,
    /// `canceling` (run after_script, then stop) and `abort` (stop now).
    pub signals: JobSignals,
    /// The runner's configuration.
    pub runner: Arc<RunnerConfig>,
    /// The GitLab client, for artifacts.
    pub client: Client,
    /// `CI_CONCURRENT_ID`: the lowest of this runner's job slots free when the job
    /// started, unique among its running jobs (a PVC name may carry it).
    pub concurrent_id: usize,
}

/// A boxed future, so that executors need no async-trait machinery.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs jobs. Must honour `signals` and return once `abort` fires.
pub trait Executor: Send + Sync {
    /// Runs one job to its end.
    fn run(&self, req: ExecRequest) -> BoxFuture<Outcome>;
}

/// Picks the executor for a runner entry (`executor = "shell"`, `"kubernetes"`).
pub trait ExecutorFactory: Send + Sync {
    /// The executor for `runner`, or why there is none.
    fn executor(&self, runner: &RunnerConfig) -> Result<Arc<dyn Executor>, String>;
}

/// Counts running jobs against `concurrent` and each runner's `limit`.
#[derive(Default)]
struct Slots {
    state: Mutex<(usize, HashMap<String, usize>)>,
    /// Slot ids in use per runner, for `CI_CONCURRENT_ID`.
    ids: Mutex<HashMap<String, std::collections::BTreeSet<usize>>>,
    freed: Notify,
}

impl Slots {
    fn try_reserve(&self, runner: &str, concurrent: usize, limit: usize) -> Option<usize> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = s.1.get(runner).copied().unwrap_or(0);
        if s.0 >= concurrent || (limit > 0 && mine >= limit) {
            return None;
        }
        s.0 += 1;
        *s.1.entry(runner.to_string()).or_default() += 1;
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let used = ids.entry(runner.to_string()).or_default();
        let id = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        used.insert(id);
        Some(id)
    }

    fn release(&self, runner: &str, id: usize) {
        if let Some(used) = self.ids.lock().unwrap_or_else(|p| p.into_inner()).get_mut(runner) {
            used.remove(&id);
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(1);
        if let Some(n) = s.1.get_mut(runner) {
            *n = n.saturating_sub(1);
        }
        drop(s);
        self.freed.notify_waiters();
    }

    fn running(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// Releases a slot when a job task ends, however it ends.
struct SlotGuard {
    slots: Arc<Slots>,
    runner: String,
    id: usize,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.release(&self.runner, self.id);
    }
}

/// How the manager should stop.
#[derive(Clone, Default)]
pub struct Stop {
    /// Stop asking for jobs (SIGTERM, SIGINT, SIGQUIT).
    pub requests: CancellationToken,
    /// Abort running jobs (SIGTERM/SIGINT after `shutdown_timeout`).
    pub jobs: CancellationToken,
}

/// The job manager.
pub struct Manager {
    metrics: Arc<Metrics>,
    executors: Arc<dyn ExecutorFactory>,
    system_id: String,
    slots: Arc<Slots>,
    /// Patch interval for new jobs (GitLab's default unless a test shortens it).
    trace_interval: Duration,
    /// Stop after this many jobs (for tests and benchmarks; 0 = never).
    max_jobs: usize,
    taken: Arc<std::sync::atomic::AtomicUsize>,
}

impl Manager {
    /// A manager using `executors`; `system_id` identifies this runner manager to GitLab.
    pub fn new(metrics: Arc<Metrics>, executors: Arc<dyn ExecutorFactory>, system_id: String) -> Manager {
        Manager {
            metrics,
            executors,
            system_id,
            slots: Arc::new(Slots::default()),
            trace_interval: crate::gitlab::trace::DEFAULT_INTERVAL,
            max_jobs: 0,
            taken: Arc::default(),
        }
    }

    /// Shortens the trace patch interval.
    pub fn trace_interval(mut self, d: Duration) -> Manager {
        self.trace_interval = d;
        self
    }

    /// Stops requesting after `n` jobs (0: never).
    pub fn max_jobs(mut self, n: usize) -> Manager {
        self.max_jobs = n;
        self
    }

    /// Runs until `stop.requests` fires, re-reading the configuration whenever `reload`
    /// yields a new one; then waits for running jobs (they are aborted when `stop.jobs`
    /// fires).
    pub async fn run(
        mut self,
        mut config: Config,
        mut reload: tokio::sync::mpsc::Receiver<Config>,
        stop: Stop,
    ) -> anyhow::Result<()> {
        loop {
            let generation = stop.requests.child_token();
            let mut pollers = tokio::task::JoinSet::new();
            self.start_pollers(&config, &generation, &stop, &mut pollers)?;
            let mut reloaded = None;
            tokio::select! {
                _ = stop.requests.cancelled() => {}
                c = reload.recv() => reloaded = c,
                _ = async { while pollers.join_next().await.is_some() {} } => {}
            }
            generation.cancel();
            while pollers.join_next().await.is_some() {}
            match reloaded {
                Some(c) => {
                    tracing::info!("configuration reloaded: {} runner(s)", c.runners.len());
                    config = c;
                }
                None => break,
            }
        }
        // Requests stopped; running jobs hold slots until their final update is done.
        loop {
            let freed = self.slots.freed.notified();
            if self.slots.running() == 0 {
                break;
            }
            freed.await;
        }
        Ok(())
    }

    fn start_pollers(
        &mut self,
        config: &Config,
        generation: &CancellationToken,
        stop: &Stop,
        pollers: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<()> {
        let limits: Vec<(String, usize)> = config
            .runners
            .iter()
            .map(|r| (short_token(&r.token), r.limit))
            .collect();
        self.metrics.set_limits(config.concurrent, &limits);
        for r in &config.runners {
            let executor = match self.executors.executor(r) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(runner = %short_token(&r.token), "runner skipped: {e}");
                    self.metrics.error("error");
                    continue;
                }
            };
            let client = Client::new(&r.url, &short_token(&r.token), self.metrics.clone())?;
            let runner = Arc::new(r.clone());
            for _ in 0..r.request_concurrency {
                let p = Poller {
                    client: client.clone(),
                    runner: runner.clone(),
                    executor: executor.clone(),
                    slots: self.slots.clone(),
                    metrics: self.metrics.clone(),
                    system_id: self.system_id.clone(),
                    concurrent: config.concurrent,
                    check_interval: Duration::from_secs(config.check_interval),
                    stop: generation.clone(),
                    abort_jobs: stop.jobs.clone(),
                    trace_interval: self.trace_interval,
                    max_jobs: self.max_jobs,
                    taken: self.taken.clone(),
                };
                pollers.spawn(p.run());
            }
        }
        Ok(())
    }
}

/// One request loop of one runner.
struct Poller {
    client: Client,
    runner: Arc<RunnerConfig>,
    executor: Arc<dyn Executor>,
    slots: Arc<Slots>,
    metrics: Arc<Metrics>,
    system_id: String,
    concurrent: usize,
    check_interval: Duration,
    stop: CancellationToken,
    abort_jobs: CancellationToken,
    trace_interval: Duration,
    max_jobs: usize,
    taken: Arc<std::sync::atomic::AtomicUsize>,
}

impl Poller {
    async fn run(self) {
        use std::sync::atomic::Ordering;
        let name = short_token(&self.runner.token);
        let mut last_update: Option<String> = None;
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled()
                || (self.max_jobs > 0 && self.taken.load(Ordering::SeqCst) >= self.max_jobs)
            {
                return;
            }
            // Ask only when a job could start: GitLab hands out a job per request.
            let freed = self.slots.freed.notified();
            let Some(slot_id) = self.slots.try_reserve(&name, self.concurrent, self.runner.limit) else {
                tokio::select! {
                    _ = freed => {}
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let guard = SlotGuard {
                slots: self.slots.clone(),
                runner: name.clone(),
                id: slot_id,
            };
            let answer = tokio::select! {
                a = self.client.request_job(&self.runner.token, &self.system_id, last_update.as_deref()) => a,
                _ = self.stop.cancelled() => return,
            };
            let wait = match answer {
                Ok(JobRequest::Job(payload)) => {
                    failures = 0;
                    self.taken.fetch_add(1, Ordering::SeqCst);
                    let job = JobTask {
                        client: self.client.clone(),
                        runner: self.runner.clone(),
                        executor: self.executor.clone(),
                        metrics: self.metrics.clone(),
                        abort_jobs: self.abort_jobs.clone(),
                        trace_interval: self.trace_interval,
                        concurrent_id: slot_id,
                    };
                    let metrics = self.metrics.clone();
                    let runner = name.clone();
                    tokio::spawn(async move {
                        let id = payload.id;
                        // A panic here would lose the job without a word; at least say so.
                        if let Err(e) = tokio::spawn(job.run(*payload)).await {
                            metrics.error("error");
                            tracing::error!(runner = %runner, job = id, "job task ended abnormally: {e}");
                        }
                        drop(guard);
                    });
                    continue;
                }
                Ok(JobRequest::NoJob { last_update: l }) => {
                    failures = 0;
                    if l.is_some() {
                        last_update = l;
                    }
                    self.check_interval
                }
                Ok(JobRequest::Later(after)) => after.unwrap_or(self.check_interval),
                Err(e) => {
                    failures += 1;
                    self.metrics.error("warning");
                    tracing::warn!(runner = %name, "job request failed: {e}");
                    Backoff::DEFAULT.wait(failures).max(Duration::from_millis(200))
                }
            };
            drop(guard);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }
}

/// One job, from the two-phase commit to the final update.
struct JobTask {
    client: Client,
    runner: Arc<RunnerConfig>,
    executor: Arc<dyn Executor>,
    metrics: Arc<Metrics>,
    abort_jobs: CancellationToken,
    trace_interval: Duration,
    concurrent_id: usize,
}

/// Maps a failure reason to one the server accepts (`features.failure_reasons`).
fn supported_reason(payload: &JobPayload, reason: &str) -> String {
    let listed = &payload.features.failure_reasons;
    // `job_canceled` is GitLab Runner's own reason for a canceled job and goes out as it
    // is (GitLab accepts any string there and records the job canceled).
    if reason == JOB_CANCELED || listed.is_empty() || listed.iter().any(|r| r == reason) {
        reason.to_string()
    } else if listed.iter().any(|r| r == "unknown_failure") {
        "unknown_failure".to_string()
    } else {
        "script_failure".to_string()
    }
}

/// The failure reason of a job GitLab canceled (GitLab Runner's `JobCanceled`).
pub const JOB_CANCELED: &str = "job_canceled";

/// How long a job's confirmation (`PUT running`) is retried while GitLab gives no
/// definite answer. A confirmation whose answer was lost may have been applied, so giving
/// up early would leave the job running on GitLab with nobody to end it.
const CONFIRM_PATIENCE: Duration = Duration::from_secs(300);

/// What the two-phase commit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmed {
    /// GitLab accepted `running`: run the job.
    Yes,
    /// GitLab accepted, but the job is already being canceled: report it canceled.
    Canceling,
    /// GitLab refused (403/404/409, or the job is canceled): the job is not ours.
    Withdrawn,
    /// No definite answer within [`CONFIRM_PATIENCE`].
    Unknown,
}

impl JobTask {
    /// The two-phase commit. Transient failures (no answer, a lost answer, 5xx, 429) are
    /// retried until GitLab says yes or no: a job handed out but never confirmed returns to
    /// GitLab's queue by itself, and after that the confirmation is refused, so retrying
    /// cannot run a job twice.
    async fn confirm(&self, id: u64, token: &str, name: &str) -> Confirmed {
        let running = JobState {
            state: "running",
            failure_reason: None,
            exit_code: None,
            output: None,
        };
        let started = std::time::Instant::now();
        let mut rounds = 0u32;
        loop {
            match self
                .client
                .update_job(id, token, &running, Backoff::DEFAULT)
                .await
            {
                Ok(Update::Ok { job_status }) => {
                    return match job_status.as_deref() {
                        Some("canceling") => Confirmed::Canceling,
                        Some("canceled") | Some("failed") => {
                            tracing::info!(runner = %name, job = id, "job canceled before it started");
                            Confirmed::Withdrawn
                        }
                        _ => Confirmed::Yes,
                    };
                }
                Ok(Update::NotYet { .. }) => return Confirmed::Yes,
                Ok(Update::Gone) | Ok(Update::ResendTrace) => {
                    tracing::warn!(runner = %name, job = id, "GitLab withdrew the job before it started");
                    return Confirmed::Withdrawn;
                }
                Err(e) => {
                    self.metrics.error("warning");
                    rounds += 1;
                    if started.elapsed() >= CONFIRM_PATIENCE {
                        tracing::error!(runner = %name, job = id, "could not confirm the job: {e}");
                        return Confirmed::Unknown;
                    }
                    tracing::warn!(runner = %name, job = id, "confirming the job failed, retrying: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Backoff::DEFAULT.wait(rounds)) => {}
                        // Forced shutdown: as GitLab Runner killed mid-request, leave it.
                        _ = self.abort_jobs.cancelled() => {
                            tracing::error!(runner = %name, job = id, "shutting down before GitLab confirmed the job: {e}");
                            return Confirmed::Withdrawn;
                        }
                    }
                }
            }
        }
    }

    async fn run(self, payload: JobPayload) {
        let name = short_token(&self.runner.token);
        let id = payload.id;
        let token = payload.token.clone();
        // Two-phase commit: the job is ours only once GitLab accepts `running`.
        let confirmed = self.confirm(id, &token, &name).await;
        if confirmed == Confirmed::Withdrawn {
            return;
        }
        let executor_name = self.runner.executor.as_str();
        self.metrics.job_running(&name, executor_name, 1);
        let limit = self.runner.output_limit.saturating_mul(1024);
        let trace = TraceWriter::new(limit);
        let signals = JobSignals::default();
        let mut session = JobSession::new(self.client.clone(), id, token, trace.clone(), signals.clone())
            .with_interval(self.trace_interval);
        let payload = Arc::new(payload);
        let timeout = Duration::from_secs(if payload.runner_info.timeout == 0 {
            podci_model::payload::DEFAULT_TIMEOUT
        } else {
            payload.runner_info.timeout
        });
        let run: BoxFuture<Outcome> = match confirmed {
            // GitLab Runner does not start a job whose confirmation already says
            // canceling: it reports it canceled at once.
            Confirmed::Canceling => {
                signals.canceling.cancel();
                Box::pin(async {
                    Outcome::Failed {
                        reason: JOB_CANCELED.into(),
                        exit_code: None,
                    }
                })
            }
            // Never confirmed (GitLab unreachable throughout): if the confirmation did land,
            // only a final update ends the job on GitLab's side, so report it failed.
            Confirmed::Unknown => {
                trace.write(
                    b"\x1b[31;1mERROR: Job failed (system failure): could not confirm the job with GitLab\x1b[0;m\n",
                );
                Box::pin(async {
                    Outcome::Failed {
                        reason: "runner_system_failure".into(),
                        exit_code: None,
                    }
                })
            }
            Confirmed::Yes | Confirmed::Withdrawn => {
                let run = self.executor.run(ExecRequest {
                    payload: payload.clone(),
                    trace: trace.clone(),
                    signals: signals.clone(),
                    runner: self.runner.clone(),
                    client: self.client.clone(),
                    concurrent_id: self.concurrent_id,
                });
                let trace = trace.clone();
                // A panicking executor must still end its job on GitLab, not leave it
                // running there until GitLab declares it stuck.
                Box::pin(async move {
                    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
                        Ok(o) => o,
                        Err(_) => {
                            trace.write(
                                b"\x1b[31;1mERROR: Job failed (system failure): the executor panicked\x1b[0;m\n",
                            );
                            Outcome::Failed {
                                reason: "runner_system_failure".into(),
                                exit_code: None,
                            }
                        }
                    }
                })
            }
        };
        let done = CancellationToken::new();
        let streaming = {
            let done = done.clone();
            async move {
                session.stream_until(done).await;
                session
            }
        };
        let timed = {
            let signals = signals.clone();
            let abort_jobs = self.abort_jobs.clone();
            let trace = trace.clone();
            async move {
                let mut run = run;
                let mut timed_out = false;
                let outcome = tokio::select! {
                    o = &mut run => o,
                    _ = tokio::time::sleep(timeout) => {
                        timed_out = true;
                        signals.abort.cancel();
                        run.await
                    }
                    _ = abort_jobs.cancelled() => {
                        signals.abort.cancel();
                        run.await
                    }
                };
                if timed_out {
                    trace.write(
                        format!(
                            "\x1b[31;1mERROR: Job failed: execution took longer than {} seconds\x1b[0;m\n",
                            timeout.as_secs()
                        )
                        .as_bytes(),
                    );
                    return Outcome::Failed {
                        reason: "job_execution_timeout".into(),
                        exit_code: None,
                    };
                }
                if abort_jobs.is_cancelled() && outcome != Outcome::Success {
                    return Outcome::Failed {
                        reason: "runner_system_failure".into(),
                        exit_code: None,
                    };
                }
                outcome
            }
        };
        let (outcome, mut session) = tokio::join!(
            async {
                let o = timed.await;
                done.cancel();
                o
            },
            streaming
        );
        // A job GitLab asked to cancel (`Job-Status: canceling`) ends as GitLab Runner
        // ends it: `state: failed, failure_reason: job_canceled`, whatever the script's
        // own result; GitLab then records it canceled.
        let outcome = match outcome {
            Outcome::Failed { .. } if signals.canceling.is_cancelled() => Outcome::Failed {
                reason: JOB_CANCELED.into(),
                exit_code: None,
            },
            o => o,
        };
        let (state, reason, exit_code) = match &outcome {
            Outcome::Success => ("success", None, None),
            Outcome::Failed { reason, exit_code } => {
                self.metrics.job_failed(&name, reason);
                ("failed", Some(supported_reason(&payload, reason)), *exit_code)
            }
        };
        let size = trace.snapshot().len() as u64;
        match session
            .finish(state, reason, exit_code, Duration::from_secs(3600))
            .await
        {
            Ok(Finished::Recorded) => {
                self.metrics.trace_bytes(size);
                tracing::info!(runner = %name, job = id, "job {state}");
            }
            Ok(Finished::Gone) => {
                tracing::info!(runner = %name, job = id, "job was no longer ours at its end")
            }
            Err(e) => {
                self.metrics.error("error");
                tracing::error!(runner = %name, job = id, "final update never reached GitLab: {e}");
            }
        }
        self.metrics.job_running(&name, executor_name, -1);
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "manager_idle_tests.rs"]
mod idle_tests;
