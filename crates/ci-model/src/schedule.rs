//! The pipeline scheduling state machine: given the jobs of a pipeline (after `parallel`
//! expansion) and the results reported so far, decide which jobs may start, which are
//! skipped, which wait for a user (`manual`) or a timer (`scheduled`), which failures are
//! retried, and what the pipeline's status is.
//!
//! It follows GitLab's own processing so that a local run and a GitLab run of the same
//! pipeline take the same path: `Ci::PipelineProcessing::AtomicProcessingService` (walk
//! the stages in order, decide each `created` job from the composite status of what it
//! waits for), `Ci::ProcessBuildService` (which composite statuses let each `when` run),
//! `Gitlab::Ci::Status::Composite` (how a set of job statuses folds into one),
//! `Gitlab::Ci::Build::AutoRetry` (which failures get a new attempt), the pipeline's
//! `state_machine :status` (a finished pipeline that gets work again shows `running`),
//! and `Ci::ResetSkippedJobsService` (playing or retrying a job revives skipped
//! dependents).
//!
//! Pure: no I/O, no clock. Time is an input (`Event::TimeElapsed { now }`, seconds on any
//! monotonic scale the caller likes), so the machine behaves the same in tests, in the
//! runner and in a browser.
//!
//! ```
//! use podci_model::schedule::{Action, Event, JobResult, JobSpec, PipelineStatus, Scheduler};
//!
//! let mut s = Scheduler::new(vec![JobSpec::new("build", 0), JobSpec::new("test", 1)]);
//! assert_eq!(s.start(), vec![Action::Enqueue { job: "build".into(), attempt: 1 }]);
//! s.on_event(Event::Started { job: "build".into() })?;
//! let next = s.on_event(Event::Finished { job: "build".into(), result: JobResult::Success })?;
//! assert_eq!(next, vec![Action::Enqueue { job: "test".into(), attempt: 1 }]);
//! assert_eq!(s.status(), PipelineStatus::Running);
//! # Ok::<(), podci_model::schedule::ScheduleError>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// When a job runs relative to the jobs before it (`when:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// Run when everything before succeeded (allowed failures count as success).
    OnSuccess,
    /// Run only when something before failed.
    OnFailure,
    /// Run whatever happened before.
    Always,
    /// Wait for a user to play it once everything before succeeded.
    Manual,
    /// Start `start_in` seconds after everything before succeeded.
    Delayed {
        /// Seconds between becoming runnable and starting.
        start_in: u64,
    },
    /// Never run (a job with `when: never` normally does not reach the pipeline at all).
    Never,
}

/// `allow_failure:` — whether a failure of this job fails the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowFailure {
    /// A failure fails the pipeline.
    No,
    /// A failure is a warning.
    Yes,
    /// A failure is a warning only when the script exited with one of these codes.
    ExitCodes(Vec<i32>),
}

/// Why a job failed, as GitLab names it (`failure_reason`). Used by `retry:when`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// `unknown_failure`
    UnknownFailure,
    /// `script_failure`
    ScriptFailure,
    /// `api_failure`
    ApiFailure,
    /// `stuck_or_timeout_failure`
    StuckOrTimeoutFailure,
    /// `runner_system_failure`
    RunnerSystemFailure,
    /// `missing_dependency_failure`
    MissingDependencyFailure,
    /// `runner_unsupported`
    RunnerUnsupported,
    /// `stale_schedule`
    StaleSchedule,
    /// `job_execution_timeout`
    JobExecutionTimeout,
    /// `archived_failure`
    ArchivedFailure,
    /// `unmet_prerequisites`
    UnmetPrerequisites,
    /// `scheduler_failure`
    SchedulerFailure,
    /// `data_integrity_failure`
    DataIntegrityFailure,
    /// Any other reason GitLab or a runner knows (`image_pull_failure`, ...), kept verbatim.
    Other(String),
}

impl FailureReason {
    const NAMED: [(&'static str, FailureReason); 13] = [
        ("unknown_failure", FailureReason::UnknownFailure),
        ("script_failure", FailureReason::ScriptFailure),
        ("api_failure", FailureReason::ApiFailure),
        ("stuck_or_timeout_failure", FailureReason::StuckOrTimeoutFailure),
        ("runner_system_failure", FailureReason::RunnerSystemFailure),
        (
            "missing_dependency_failure",
            FailureReason::MissingDependencyFailure,
        ),
        ("runner_unsupported", FailureReason::RunnerUnsupported),
        ("stale_schedule", FailureReason::StaleSchedule),
        ("job_execution_timeout", FailureReason::JobExecutionTimeout),
        ("archived_failure", FailureReason::ArchivedFailure),
        ("unmet_prerequisites", FailureReason::UnmetPrerequisites),
        ("scheduler_failure", FailureReason::SchedulerFailure),
        ("data_integrity_failure", FailureReason::DataIntegrityFailure),
    ];

    /// Reads GitLab's name of a reason; unknown names are kept as [`FailureReason::Other`].
    pub fn parse(name: &str) -> FailureReason {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| FailureReason::Other(name.to_string()))
    }

    /// GitLab's name of the reason.
    pub fn as_str(&self) -> &str {
        match self {
            FailureReason::Other(s) => s,
            known => Self::NAMED
                .iter()
                .find(|(_, r)| r == known)
                .map(|(n, _)| *n)
                .unwrap_or("unknown_failure"),
        }
    }

    /// GitLab never retries these automatically, whatever `retry:` says
    /// (`AutoRetry::RETRY_OVERRIDES`): another attempt could not succeed.
    fn never_retried(&self) -> bool {
        matches!(self, FailureReason::MissingDependencyFailure)
            || matches!(self, FailureReason::Other(s) if matches!(s.as_str(),
                "ci_quota_exceeded" | "no_matching_runner" | "forward_deployment_failure"
                | "environment_creation_failure"))
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `retry:when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryWhen {
    /// `always`: any failure reason.
    Always,
    /// One named reason.
    Reason(FailureReason),
}

impl RetryWhen {
    /// Reads one `retry:when` entry.
    pub fn parse(name: &str) -> RetryWhen {
        if name == "always" {
            RetryWhen::Always
        } else {
            RetryWhen::Reason(FailureReason::parse(name))
        }
    }
}

/// `retry:` of a job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retry {
    /// `retry:max` (GitLab allows 0..=2): how many new attempts after the first.
    pub max: u8,
    /// `retry:when`; `None` means GitLab's default: `[always]` without `exit_codes`,
    /// nothing (only exit codes decide) with them.
    pub when: Option<Vec<RetryWhen>>,
    /// `retry:exit_codes`: a failure with one of these exit codes is retried whatever its
    /// reason (GitLab ORs the two conditions).
    pub exit_codes: Option<Vec<i32>>,
}

/// One entry of `needs:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedRef {
    /// Name of the needed job (after parallel expansion).
    pub name: String,
    /// `optional: true`: a need on a job that is not in the pipeline is dropped.
    pub optional: bool,
}

impl NeedRef {
    /// A required need.
    pub fn new(name: impl Into<String>) -> NeedRef {
        NeedRef {
            name: name.into(),
            optional: false,
        }
    }
}

/// A job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Unique job name (after parallel expansion, e.g. `test 1/3`).
    pub name: String,
    /// Index of the job's stage in the pipeline's `stages:` list.
    pub stage: usize,
    /// `None`: wait for all earlier stages. `Some([])`: start at once. `Some(list)`:
    /// wait only for those jobs.
    pub needs: Option<Vec<NeedRef>>,
    /// `when:`
    pub when: When,
    /// `allow_failure:`
    pub allow_failure: AllowFailure,
    /// `retry:`
    pub retry: Retry,
    /// `interruptible:`; carried for the caller's auto-cancel decisions.
    pub interruptible: bool,
}

impl JobSpec {
    /// A plain `on_success` job in `stage` with no needs, no retry, no allowed failure.
    pub fn new(name: impl Into<String>, stage: usize) -> JobSpec {
        JobSpec {
            name: name.into(),
            stage,
            needs: None,
            when: When::OnSuccess,
            allow_failure: AllowFailure::No,
            retry: Retry::default(),
            interruptible: false,
        }
    }
}

/// A job's status, with GitLab's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    /// Waiting for what it depends on.
    Created,
    /// May start now.
    Pending,
    /// Started.
    Running,
    /// Finished successfully.
    Success,
    /// Finished with a failure.
    Failed,
    /// Canceled.
    Canceled,
    /// Will not run.
    Skipped,
    /// Waiting for a user to play it.
    Manual,
    /// Waiting for its `start_in` timer.
    Scheduled,
}

impl JobStatus {
    /// GitLab's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Scheduled => "scheduled",
        }
    }

    /// `Ci::HasStatus::COMPLETED_STATUSES`.
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a pipeline or a stage, with GitLab's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PipelineStatus {
    /// Nothing decided yet.
    Created,
    /// Jobs may start, none has.
    Pending,
    /// Work is under way.
    Running,
    /// Finished; allowed failures make it a success with warnings.
    Success,
    /// Finished with a failure that was not allowed.
    Failed,
    /// Canceled.
    Canceled,
    /// Nothing ran.
    Skipped,
    /// Blocked on a manual job.
    Manual,
    /// Waiting for a delayed job's timer.
    Scheduled,
}

impl PipelineStatus {
    /// GitLab's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Created => "created",
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
            PipelineStatus::Skipped => "skipped",
            PipelineStatus::Manual => "manual",
            PipelineStatus::Scheduled => "scheduled",
        }
    }

    /// Whether nothing more will happen without a retry (`COMPLETED_STATUSES`).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success
                | PipelineStatus::Failed
                | PipelineStatus::Canceled
                | PipelineStatus::Skipped
        )
    }

    fn as_job_status(self) -> JobStatus {
        match self {
            PipelineStatus::Created => JobStatus::Created,
            PipelineStatus::Pending => JobStatus::Pending,
            PipelineStatus::Running => JobStatus::Running,
            PipelineStatus::Success => JobStatus::Success,
            PipelineStatus::Failed => JobStatus::Failed,
            PipelineStatus::Canceled => JobStatus::Canceled,
            PipelineStatus::Skipped => JobStatus::Skipped,
            PipelineStatus::Manual => JobStatus::Manual,
            PipelineStatus::Scheduled => JobStatus::Scheduled,
        }
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a composite status is made of: GitLab folds allowed failures into
/// `success_with_warnings` and allowed manual jobs into `ignored` before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Job(JobStatus),
    SuccessWithWarnings,
    Ignored,
}

/// The result of folding a set of job statuses (`Gitlab::Ci::Status::Composite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Composite {
    /// The folded status; `None` for an empty set.
    pub status: Option<PipelineStatus>,
    /// Whether an allowed failure is among them (`success_with_warnings`).
    pub warnings: bool,
}

/// Folds `(status, allow_failure)` pairs exactly as `Gitlab::Ci::Status::Composite`
/// does. `dag` is the variant used for a job's `needs`: a skipped or ignored need (an
/// allowed manual job nobody played) skips the job.
pub fn composite<I>(statuses: I, dag: bool) -> Composite
where
    I: IntoIterator<Item = (JobStatus, bool)>,
{
    let set: BTreeSet<Part> = statuses
        .into_iter()
        .map(|(s, allow_failure)| match (s, allow_failure) {
            (JobStatus::Failed | JobStatus::Canceled, true) => Part::SuccessWithWarnings,
            (JobStatus::Manual, true) => Part::Ignored,
            (s, _) => Part::Job(s),
        })
        .collect();
    let warnings = set.contains(&Part::SuccessWithWarnings);
    if set.is_empty() {
        return Composite {
            status: None,
            warnings,
        };
    }
    use JobStatus as J;
    use PipelineStatus as P;
    let has = |s: J| set.contains(&Part::Job(s));
    let only_of = |allowed: &[Part]| set.iter().all(|p| allowed.contains(p));
    let sww = Part::SuccessWithWarnings;
    let ign = Part::Ignored;
    // A skipped or ignored need skips a DAG job. (Older GitLab also folded an incomplete
    // need into `pending`; newer GitLab reports the plain composite, which is just as
    // incomplete, so the processing decision is the same.)
    let status = if (dag && (has(J::Skipped) || set.contains(&ign))) || only_of(&[Part::Job(J::Skipped), ign])
    {
        P::Skipped
    } else if only_of(&[Part::Job(J::Success), Part::Job(J::Skipped), sww, ign]) {
        P::Success
    } else if only_of(&[Part::Job(J::Created), sww, ign]) {
        P::Created
    } else if only_of(&[
        Part::Job(J::Canceled),
        Part::Job(J::Success),
        Part::Job(J::Skipped),
        sww,
        ign,
    ]) {
        P::Canceled
    } else if only_of(&[
        Part::Job(J::Pending),
        Part::Job(J::Created),
        Part::Job(J::Skipped),
        sww,
        ign,
    ]) {
        P::Pending
    } else if has(J::Running) || has(J::Pending) {
        P::Running
    } else if has(J::Manual) {
        P::Manual
    } else if has(J::Scheduled) {
        P::Scheduled
    } else if has(J::Created) {
        P::Running
    } else {
        P::Failed
    };
    Composite {
        status: Some(status),
        warnings,
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// Exit code 0.
    Success,
    /// A failure with GitLab's reason and, when a script ran, its exit code.
    Failed {
        /// GitLab's `failure_reason`.
        reason: FailureReason,
        /// The script's exit code, if one is known.
        exit_code: Option<i32>,
    },
    /// Canceled while it ran.
    Canceled,
}

/// Something that happened to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An executor picked up a pending job.
    Started {
        /// Job name.
        job: String,
    },
    /// A pending or running job ended.
    Finished {
        /// Job name.
        job: String,
        /// How it ended.
        result: JobResult,
    },
    /// A user played a manual job, or started a scheduled one before its time.
    Played {
        /// Job name.
        job: String,
    },
    /// Time passed; scheduled jobs whose time has come start.
    TimeElapsed {
        /// The current time, on the scale of [`Scheduler::set_time`].
        now: u64,
    },
    /// A user retried one finished job (a new attempt, not counted against `retry:max`).
    Retried {
        /// Job name.
        job: String,
    },
    /// A user retried every failed or canceled job of the pipeline.
    RetriedFailed,
    /// The pipeline was canceled.
    Canceled,
}

/// What the caller must do or may show after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The job is pending: start it.
    Enqueue {
        /// Job name.
        job: String,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The job will not run.
    Skip {
        /// Job name.
        job: String,
    },
    /// The job waits for a user to play it.
    WaitManual {
        /// Job name.
        job: String,
    },
    /// The job starts by itself at `at` (or when played).
    Schedule {
        /// Job name.
        job: String,
        /// When, on the caller's time scale.
        at: u64,
    },
    /// The job failed and gets a new attempt (an `Enqueue` for it follows).
    Retry {
        /// Job name.
        job: String,
        /// Number of the new attempt.
        attempt: u32,
        /// Why the previous attempt failed.
        reason: FailureReason,
    },
    /// The job was canceled; if it was already started, the executor must stop it.
    Cancel {
        /// Job name.
        job: String,
        /// Whether the job had been started (`running`).
        was_running: bool,
    },
}

/// An event the machine cannot apply. Each names the job and what it was doing so that
/// the caller can see which of its reports was out of order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The event names a job that is not in the pipeline.
    #[error("job `{0}` is not in this pipeline")]
    UnknownJob(String),
    /// The event does not fit the job's current status.
    #[error("job `{job}` cannot be {action}: it is {status}")]
    WrongStatus {
        /// Job name.
        job: String,
        /// What the event tried.
        action: &'static str,
        /// The job's status at the time.
        status: JobStatus,
    },
    /// Two jobs share a name, so events could not tell them apart.
    #[error("job name `{0}` appears twice; expand `parallel` into distinct names first")]
    DuplicateJob(String),
}

#[derive(Debug, Clone)]
struct JobState {
    spec: JobSpec,
    /// `needs` with absent optional ones dropped; `None` for stage ordering.
    needs: Option<Vec<usize>>,
    status: JobStatus,
    /// The `allow_failure` column: with exit-code criteria it becomes true only when the
    /// failure's exit code is listed.
    allow_failure: bool,
    attempt: u32,
    /// Automatic retries used so far (`retries_count`).
    auto_retries: u32,
    scheduled_at: Option<u64>,
    failure: Option<(FailureReason, Option<i32>)>,
}

/// The pipeline's state machine. See the module documentation.
#[derive(Debug, Clone)]
pub struct Scheduler {
    jobs: Vec<JobState>,
    by_name: HashMap<String, usize>,
    /// Distinct stage indices, ascending.
    stages: Vec<usize>,
    /// Per stage (same order as `stages`), job indices in processing order (needs first).
    stage_order: Vec<Vec<usize>>,
    status: PipelineStatus,
    stage_status: Vec<PipelineStatus>,
    now: u64,
    started: bool,
    /// Set by [`Event::Canceled`] until a user plays or retries something: GitLab's
    /// `cancel` event puts the pipeline in `canceled` even while a blocking manual job
    /// (which cancellation leaves playable) would make the composite `manual`.
    canceled: bool,
    /// `workflow:auto_cancel:on_job_failure: all`.
    auto_cancel_on_failure: bool,
}

impl Scheduler {
    /// Builds the machine. Fails only on duplicate job names; needs on jobs that are not
    /// in the pipeline are dropped (validation reports required ones earlier).
    pub fn try_new(jobs: Vec<JobSpec>) -> Result<Scheduler, ScheduleError> {
        let mut by_name = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            if by_name.insert(j.name.clone(), i).is_some() {
                return Err(ScheduleError::DuplicateJob(j.name.clone()));
            }
        }
        let states: Vec<JobState> = jobs
            .into_iter()
            .map(|spec| {
                let needs = spec.needs.as_ref().map(|list| {
                    let mut v: Vec<usize> = list
                        .iter()
                        .filter_map(|n| by_name.get(&n.name).copied())
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                });
                JobState {
                    allow_failure: spec.allow_failure == AllowFailure::Yes,
                    needs,
                    spec,
                    status: JobStatus::Created,
                    attempt: 1,
                    auto_retries: 0,
                    scheduled_at: None,
                    failure: None,
                }
            })
            .collect();
        let stages: Vec<usize> = states
            .iter()
            .map(|j| j.spec.stage)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let stage_order = stages.iter().map(|&s| dag_order(&states, s)).collect::<Vec<_>>();
        let stage_status = vec![PipelineStatus::Created; stages.len()];
        Ok(Scheduler {
            jobs: states,
            by_name,
            stages,
            stage_order,
            status: PipelineStatus::Created,
            stage_status,
            now: 0,
            started: false,
            canceled: false,
            auto_cancel_on_failure: false,
        })
    }

    /// Builds the machine; a duplicate name keeps the first job of that name for events
    /// (use [`Scheduler::try_new`] to be told).
    pub fn new(jobs: Vec<JobSpec>) -> Scheduler {
        let mut seen = BTreeSet::new();
        let unique = jobs.into_iter().filter(|j| seen.insert(j.name.clone())).collect();
        match Scheduler::try_new(unique) {
            Ok(s) => s,
            // Unreachable: names were made unique above. An empty machine is harmless.
            Err(_) => Scheduler {
                jobs: Vec::new(),
                by_name: HashMap::new(),
                stages: Vec::new(),
                stage_order: Vec::new(),
                status: PipelineStatus::Created,
                stage_status: Vec::new(),
                now: 0,
                started: false,
                canceled: false,
                auto_cancel_on_failure: false,
            },
        }
    }

    /// `workflow:auto_cancel:on_job_failure: all`: the first failure that is not allowed
    /// cancels every job that has not finished (manual jobs stay playable), as GitLab's
    /// auto-cancel does. The pipeline then shows `failed`.
    pub fn auto_cancel_on_job_failure(mut self, on: bool) -> Scheduler {
        self.auto_cancel_on_failure = on;
        self
    }

    /// Sets the current time (before [`Scheduler::start`], or whenever the caller's clock
    /// moves), so that delayed jobs are scheduled relative to it.
    pub fn set_time(&mut self, now: u64) {
        self.now = now;
    }

    /// Processes the pipeline for the first time. Calling it again does nothing.
    pub fn start(&mut self) -> Vec<Action> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let mut actions = Vec::new();
        self.process(&mut actions);
        actions
    }

    /// Applies one event and processes the pipeline.
    pub fn on_event(&mut self, ev: Event) -> Result<Vec<Action>, ScheduleError> {
        let mut actions = Vec::new();
        if !self.started {
            self.started = true;
            self.process(&mut actions);
        }
        match ev {
            Event::Started { job } => {
                let i = self.index(&job)?;
                match self.jobs[i].status {
                    JobStatus::Pending => self.jobs[i].status = JobStatus::Running,
                    // A report racing a cancel is not an error.
                    JobStatus::Canceled => {}
                    status => {
                        return Err(ScheduleError::WrongStatus {
                            job,
                            action: "started",
                            status,
                        });
                    }
                }
            }
            Event::Finished { job, result } => {
                let i = self.index(&job)?;
                match self.jobs[i].status {
                    JobStatus::Pending | JobStatus::Running => self.finish(i, result, &mut actions),
                    JobStatus::Canceled => {}
                    status => {
                        return Err(ScheduleError::WrongStatus {
                            job,
                            action: "finished",
                            status,
                        });
                    }
                }
            }
            Event::Played { job } => {
                let i = self.index(&job)?;
                match self.jobs[i].status {
                    JobStatus::Manual | JobStatus::Scheduled => {
                        self.canceled = false;
                        self.enqueue(i, &mut actions);
                        self.reset_skipped_dependents(&[i]);
                    }
                    status => {
                        return Err(ScheduleError::WrongStatus {
                            job,
                            action: "played",
                            status,
                        });
                    }
                }
            }
            Event::TimeElapsed { now } => {
                self.now = self.now.max(now);
                for i in 0..self.jobs.len() {
                    let j = &self.jobs[i];
                    if j.status == JobStatus::Scheduled && j.scheduled_at.is_some_and(|at| at <= self.now) {
                        self.enqueue(i, &mut actions);
                    }
                }
            }
            Event::Retried { job } => {
                let i = self.index(&job)?;
                let status = self.jobs[i].status;
                if !matches!(
                    status,
                    JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
                ) {
                    return Err(ScheduleError::WrongStatus {
                        job,
                        action: "retried",
                        status,
                    });
                }
                self.canceled = false;
                self.user_retry(i, true, &mut actions);
                self.reset_skipped_dependents(&[i]);
            }
            Event::RetriedFailed => {
                let failed: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| matches!(self.jobs[i].status, JobStatus::Failed | JobStatus::Canceled))
                    .collect();
                self.canceled &= failed.is_empty();
                for &i in &failed {
                    self.user_retry(i, false, &mut actions);
                }
                if !failed.is_empty() {
                    self.reset_skipped_dependents(&failed);
                }
            }
            Event::Canceled => {
                self.canceled = true;
                self.cancel_unfinished(&mut actions);
            }
        }
        self.process(&mut actions);
        Ok(actions)
    }

    /// The pipeline's status, as GitLab would show it.
    pub fn status(&self) -> PipelineStatus {
        self.status
    }

    /// Whether an allowed failure happened (GitLab's "passed with warnings").
    pub fn has_warnings(&self) -> bool {
        composite(self.jobs.iter().map(|j| (j.status, j.allow_failure)), false).warnings
    }

    /// Whether the pipeline has reached a final status. A pipeline blocked on a manual
    /// job or waiting for a timer is not finished.
    pub fn is_finished(&self) -> bool {
        self.status.is_complete()
    }

    /// Whether no job is pending or running: nothing more happens until a user plays
    /// a job, the clock reaches [`Scheduler::next_wakeup`], or a retry.
    pub fn is_idle(&self) -> bool {
        !self
            .jobs
            .iter()
            .any(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running))
    }

    /// The earliest time a scheduled job is due, so the caller knows when to send
    /// [`Event::TimeElapsed`].
    pub fn next_wakeup(&self) -> Option<u64> {
        self.jobs
            .iter()
            .filter(|j| j.status == JobStatus::Scheduled)
            .filter_map(|j| j.scheduled_at)
            .min()
    }

    /// A job's status, or `None` for a name not in the pipeline.
    pub fn job_status(&self, name: &str) -> Option<JobStatus> {
        self.by_name.get(name).map(|&i| self.jobs[i].status)
    }

    /// A job's attempt number (1 for the first).
    pub fn job_attempt(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).map(|&i| self.jobs[i].attempt)
    }

    /// When a scheduled job is due.
    pub fn job_scheduled_at(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).and_then(|&i| self.jobs[i].scheduled_at)
    }

    /// Whether the job's failure (if any) is allowed.
    pub fn job_allowed_to_fail(&self, name: &str) -> Option<bool> {
        self.by_name.get(name).map(|&i| self.jobs[i].allow_failure)
    }

    /// The status of a stage (by its index), as GitLab shows it; `None` when no job is
    /// in that stage.
    pub fn stage_status(&self, stage: usize) -> Option<PipelineStatus> {
        self.stages
            .iter()
            .position(|&s| s == stage)
            .map(|p| self.stage_status[p])
    }

    /// All jobs with their statuses, in input order.
    pub fn jobs(&self) -> impl Iterator<Item = (&str, JobStatus)> {
        self.jobs.iter().map(|j| (j.spec.name.as_str(), j.status))
    }

    /// Cancels every job in `CANCELABLE_STATUSES`; manual jobs stay playable and
    /// finished ones keep their result.
    fn cancel_unfinished(&mut self, actions: &mut Vec<Action>) {
        for j in &mut self.jobs {
            // CANCELABLE_STATUSES: manual jobs stay playable, finished ones stay.
            let was_running = j.status == JobStatus::Running;
            if matches!(
                j.status,
                JobStatus::Created | JobStatus::Pending | JobStatus::Running | JobStatus::Scheduled
            ) {
                if j.status != JobStatus::Created {
                    actions.push(Action::Cancel {
                        job: j.spec.name.clone(),
                        was_running,
                    });
                }
                j.status = JobStatus::Canceled;
                j.scheduled_at = None;
            }
        }
    }

    fn index(&self, name: &str) -> Result<usize, ScheduleError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| ScheduleError::UnknownJob(name.to_string()))
    }

    fn enqueue(&mut self, i: usize, actions: &mut Vec<Action>) {
        let j = &mut self.jobs[i];
        j.status = JobStatus::Pending;
        j.scheduled_at = None;
        actions.push(Action::Enqueue {
            job: j.spec.name.clone(),
            attempt: j.attempt,
        });
    }

    fn finish(&mut self, i: usize, result: JobResult, actions: &mut Vec<Action>) {
        match result {
            JobResult::Success => self.jobs[i].status = JobStatus::Success,
            JobResult::Canceled => self.jobs[i].status = JobStatus::Canceled,
            JobResult::Failed { reason, exit_code } => {
                if self.auto_retry_allowed(i, &reason, exit_code) {
                    let j = &mut self.jobs[i];
                    j.auto_retries += 1;
                    j.attempt += 1;
                    actions.push(Action::Retry {
                        job: j.spec.name.clone(),
                        attempt: j.attempt,
                        reason,
                    });
                    self.enqueue(i, actions);
                    return;
                }
                let j = &mut self.jobs[i];
                j.status = JobStatus::Failed;
                j.allow_failure = match &j.spec.allow_failure {
                    AllowFailure::No => false,
                    AllowFailure::Yes => true,
                    AllowFailure::ExitCodes(codes) => exit_code.is_some_and(|c| codes.contains(&c)),
                };
                j.failure = Some((reason, exit_code));
                let allowed = j.allow_failure;
                if self.auto_cancel_on_failure && !allowed {
                    self.cancel_unfinished(actions);
                }
            }
        }
    }

    /// `Gitlab::Ci::Build::AutoRetry#allowed?`.
    fn auto_retry_allowed(&self, i: usize, reason: &FailureReason, exit_code: Option<i32>) -> bool {
        let j = &self.jobs[i];
        let retry = &j.spec.retry;
        let when_default = if retry.exit_codes.is_none() {
            vec![RetryWhen::Always]
        } else {
            Vec::new()
        };
        let when = retry.when.as_ref().unwrap_or(&when_default);
        let on_reason = when
            .iter()
            .any(|w| matches!(w, RetryWhen::Always) || *w == RetryWhen::Reason(reason.clone()));
        let on_exit_code = match (exit_code, &retry.exit_codes) {
            (Some(c), Some(codes)) => codes.contains(&c),
            _ => false,
        };
        let max = if reason.never_retried() {
            0
        } else if (on_reason || on_exit_code) && retry.max > 0 {
            u32::from(retry.max)
        } else if *reason == FailureReason::SchedulerFailure {
            2
        } else {
            0
        };
        max > 0 && max > j.auto_retries
    }

    /// `Ci::RetryJobService`: a user's new attempt. A manual or delayed job the user
    /// retries by hand starts at once; from "retry failed jobs" it waits again.
    fn user_retry(&mut self, i: usize, by_hand: bool, actions: &mut Vec<Action>) {
        let j = &mut self.jobs[i];
        j.attempt += 1;
        j.failure = None;
        j.scheduled_at = None;
        j.allow_failure = j.spec.allow_failure == AllowFailure::Yes;
        if by_hand && matches!(j.spec.when, When::Manual | When::Delayed { .. }) {
            self.enqueue(i, actions);
        } else {
            j.status = JobStatus::Created;
        }
    }

    /// `Ci::ResetSkippedJobsService`: skipped jobs in later stages, or needing one of
    /// `from` (transitively), are decided again.
    fn reset_skipped_dependents(&mut self, from: &[usize]) {
        let Some(min_stage) = from.iter().map(|&i| self.jobs[i].spec.stage).min() else {
            return;
        };
        let mut descendants: BTreeSet<usize> = from.iter().copied().collect();
        loop {
            let before = descendants.len();
            for (k, j) in self.jobs.iter().enumerate() {
                if let Some(needs) = &j.needs
                    && needs.iter().any(|n| descendants.contains(n))
                {
                    descendants.insert(k);
                }
            }
            if descendants.len() == before {
                break;
            }
        }
        for (k, j) in self.jobs.iter_mut().enumerate() {
            if j.status == JobStatus::Skipped && (j.spec.stage > min_stage || descendants.contains(&k)) {
                j.status = JobStatus::Created;
            }
        }
    }

    /// One pass of `AtomicProcessingService#process!`, repeated until nothing changes.
    fn process(&mut self, actions: &mut Vec<Action>) {
        loop {
            let mut changed = false;
            for si in 0..self.stages.len() {
                let stage = self.stages[si];
                // Earlier stages do not change while this one is decided, so their
                // composite is computed once per stage (GitLab memoizes it the same way);
                // this keeps a pass linear in jobs times stages.
                let mut prior: Option<PipelineStatus> = None;
                for oi in 0..self.stage_order[si].len() {
                    let i = self.stage_order[si][oi];
                    if self.jobs[i].status != JobStatus::Created {
                        continue;
                    }
                    let dag = self.jobs[i].needs.is_some();
                    let previous = match &self.jobs[i].needs {
                        Some(needs) => composite(
                            needs
                                .iter()
                                .map(|&n| (self.jobs[n].status, self.jobs[n].allow_failure)),
                            true,
                        )
                        .status
                        .unwrap_or(PipelineStatus::Success),
                        None => *prior.get_or_insert_with(|| {
                            composite(
                                self.jobs
                                    .iter()
                                    .filter(|j| j.spec.stage < stage)
                                    .map(|j| (j.status, j.allow_failure)),
                                false,
                            )
                            .status
                            .unwrap_or(PipelineStatus::Success)
                        }),
                    };
                    if !previous.as_job_status().is_complete() {
                        continue;
                    }
                    // Deliberate deviation: GitLab's DAG composite answers `skipped` as
                    // soon as one need is skipped, so a `when: always` job would start
                    // while its other needs still run. podci lets it wait for them; the
                    // decision (run) is the same, only the timing is safe.
                    if dag
                        && self.jobs[i].spec.when == When::Always
                        && self.jobs[i].needs.as_ref().is_some_and(|needs| {
                            needs.iter().any(|&n| {
                                let need = &self.jobs[n];
                                // An allowed manual need is `ignored`: nothing to wait for.
                                !(need.status.is_complete()
                                    || (need.status == JobStatus::Manual && need.allow_failure))
                            })
                        })
                    {
                        continue;
                    }
                    changed = true;
                    self.decide(i, previous, dag, actions);
                }
            }
            if !changed {
                break;
            }
        }
        for si in 0..self.stages.len() {
            let stage = self.stages[si];
            let c = composite(
                self.jobs
                    .iter()
                    .filter(|j| j.spec.stage == stage)
                    .map(|j| (j.status, j.allow_failure)),
                false,
            );
            self.stage_status[si] = transition(self.stage_status[si], c.status, false);
        }
        let c = composite(self.jobs.iter().map(|j| (j.status, j.allow_failure)), false);
        self.status = if self.canceled {
            PipelineStatus::Canceled
        } else {
            transition(self.status, c.status, true)
        };
    }

    /// `Ci::ProcessBuildService`.
    fn decide(&mut self, i: usize, previous: PipelineStatus, dag: bool, actions: &mut Vec<Action>) {
        use PipelineStatus as P;
        let runs = match self.jobs[i].spec.when {
            When::OnSuccess | When::Manual | When::Delayed { .. } => {
                previous == P::Success || (!dag && previous == P::Skipped)
            }
            When::OnFailure => previous == P::Failed,
            When::Always => matches!(previous, P::Success | P::Failed | P::Skipped),
            When::Never => false,
        };
        let name = self.jobs[i].spec.name.clone();
        if !runs {
            self.jobs[i].status = JobStatus::Skipped;
            actions.push(Action::Skip { job: name });
            return;
        }
        match self.jobs[i].spec.when {
            When::Delayed { start_in } => {
                let at = self.now.saturating_add(start_in);
                let j = &mut self.jobs[i];
                j.status = JobStatus::Scheduled;
                j.scheduled_at = Some(at);
                actions.push(Action::Schedule { job: name, at });
            }
            When::Manual => {
                self.jobs[i].status = JobStatus::Manual;
                actions.push(Action::WaitManual { job: name });
            }
            _ => self.enqueue(i, actions),
        }
    }
}

/// `Ci::Pipeline#set_status` / `Ci::Stage#set_status` through their state machines: a
/// composite `created` changes nothing, and `enqueue` turns a finished pipeline that
/// gets work again into `running` rather than `pending` (stages go to `pending`).
fn transition(current: PipelineStatus, composite: Option<PipelineStatus>, pipeline: bool) -> PipelineStatus {
    use PipelineStatus as P;
    // An empty set counts as success, as in `StatusCollection#status_for_array`.
    let new = composite.unwrap_or(P::Success);
    match new {
        P::Created => current,
        P::Pending if pipeline => match current {
            P::Success | P::Failed | P::Canceled | P::Running => P::Running,
            _ => P::Pending,
        },
        other => other,
    }
}

/// Jobs of one stage in an order where needed jobs come first (GitLab sorts with
/// `YamlProcessor::Dag.order`); ties keep input order.
fn dag_order(jobs: &[JobState], stage: usize) -> Vec<usize> {
    let members: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].spec.stage == stage).collect();
    let mut placed = vec![false; jobs.len()];
    let mut out = Vec::with_capacity(members.len());
    while out.len() < members.len() {
        let mut progress = false;
        for &i in &members {
            if placed[i] {
                continue;
            }
            let ready = jobs[i].needs.as_ref().is_none_or(|needs| {
                needs
                    .iter()
                    .all(|&n| placed[n] || jobs[n].spec.stage != stage || n == i)
            });
            if ready {
                placed[i] = true;
                out.push(i);
                progress = true;
            }
        }
        if !progress {
            // A cycle (validation rejects these): keep the rest in input order.
            for &i in &members {
                if !placed[i] {
                    placed[i] = true;
                    out.push(i);
                }
            }
        }
    }
    out
}

/// The scheduler's view of the jobs of a loaded [`Pipeline`](crate::Pipeline): one
/// [`JobSpec`] per instance (`parallel` expanded), with `when`, `start_in`,
/// `allow_failure` (including `exit_codes`), `retry` and `interruptible` read from the
/// job's configuration.
///
/// `jobs` are the jobs that are in the pipeline after `rules` (pass all of
/// `pipeline.jobs` when there are none); a need on a job that is not among them is
/// dropped, as GitLab drops optional needs and validation already reported required ones.
/// A need on a parallel job waits for every instance of it. Needs on other projects or
/// pipelines are not jobs of this pipeline and are left out.
pub fn job_specs(pipeline: &crate::Pipeline, jobs: &[&crate::Job]) -> Vec<JobSpec> {
    let instances: HashMap<&str, &[String]> = jobs
        .iter()
        .map(|j| (j.name.as_str(), j.instances.as_slice()))
        .collect();
    let mut out = Vec::new();
    for job in jobs {
        let stage = pipeline.stages.iter().position(|s| *s == job.stage).unwrap_or(0);
        let config = &job.config;
        let when = match job.when.as_str() {
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "never" => When::Never,
            "delayed" => When::Delayed {
                start_in: config
                    .get("start_in")
                    .and_then(|n| n.scalar_to_string())
                    .and_then(|s| crate::parse_duration(&s))
                    .unwrap_or(0),
            },
            _ => When::OnSuccess,
        };
        let allow_failure = match config.get("allow_failure").and_then(|n| n.as_map()) {
            Some(m) => AllowFailure::ExitCodes(int_list(m.get("exit_codes"))),
            None if job.allow_failure => AllowFailure::Yes,
            None => AllowFailure::No,
        };
        let retry = match config.get("retry") {
            Some(n) => match (n.as_int(), n.as_map()) {
                (Some(max), _) => Retry {
                    max: u8::try_from(max).unwrap_or(0),
                    ..Retry::default()
                },
                (None, Some(m)) => Retry {
                    max: m
                        .get("max")
                        .and_then(|n| n.as_int())
                        .and_then(|i| u8::try_from(i).ok())
                        .unwrap_or(0),
                    when: m
                        .get("when")
                        .map(|w| str_list(w).into_iter().map(|s| RetryWhen::parse(&s)).collect()),
                    exit_codes: m.get("exit_codes").map(|c| int_list(Some(c))),
                },
                _ => Retry::default(),
            },
            None => Retry::default(),
        };
        let interruptible = config
            .get("interruptible")
            .and_then(|n| n.as_bool())
            .unwrap_or(false);
        let needs = job.needs.as_ref().map(|needs| {
            needs
                .iter()
                .filter(|n| !n.external)
                .flat_map(|n| {
                    let names: Vec<String> = match instances.get(n.job.as_str()) {
                        Some(list) if !list.is_empty() => list.to_vec(),
                        _ => vec![n.job.clone()],
                    };
                    names.into_iter().map(move |name| NeedRef {
                        name,
                        optional: n.optional,
                    })
                })
                .collect()
        });
        let names: Vec<String> = if job.instances.is_empty() {
            vec![job.name.clone()]
        } else {
            job.instances.clone()
        };
        for name in names {
            out.push(JobSpec {
                name,
                stage,
                needs: needs.clone(),
                when: when.clone(),
                allow_failure: allow_failure.clone(),
                retry: retry.clone(),
                interruptible,
            });
        }
    }
    out
}

/// A scalar or a list of scalars, as text.
fn str_list(node: &crate::yaml::Node) -> Vec<String> {
    match node.as_seq() {
        Some(items) => items.iter().filter_map(|i| i.scalar_to_string()).collect(),
        None => node.scalar_to_string().into_iter().collect(),
    }
}

/// An integer or a list of integers; anything else is left out.
fn int_list(node: Option<&crate::yaml::Node>) -> Vec<i32> {
    let Some(node) = node else {
        return Vec::new();
    };
    let one = |n: &crate::yaml::Node| n.as_int().and_then(|i| i32::try_from(i).ok());
    match node.as_seq() {
        Some(items) => items.iter().filter_map(one).collect(),
        None => one(node).into_iter().collect(),
    }
}
