//! A GitLab runner-API server for podci's tests (never shipped).
//!
//! It follows GitLab's `lib/api/ci/runner.rb` as documented and as the payloads in
//! `../shared/conformance/gitlab/runner-payloads/` show: registration, the job request
//! (payloads built by podci-model from a `.gitlab-ci.yml`, handed out in the order the
//! pipeline scheduler allows), the two-phase commit, trace patches with `Content-Range`
//! and 416, the final update with its CRC32 checksum (412 when it does not match the
//! stored trace), artifacts, and cancellation. Faults are injected on demand, at a rate
//! and from a seed, so that a run can be repeated.
//!
//! Known differences from GitLab: no long poll (an empty queue answers 204 at once), a job
//! handed out but never confirmed returns to the queue after [`Options::ack_timeout`]
//! under a new job token (GitLab waits minutes, then retries it as a new job), one project
//! and any number of pipelines.
//!
//! For diagnosis, faults can also be scripted per endpoint ([`FakeGitlab::script_faults`])
//! and every job keeps its last calls ([`JobRecord::history`],
//! [`FakeGitlab::unfinished_report`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use podci_model::eval::{PipelineContext, Variable, VariableLevel};
use podci_model::payload::{ArtifactsFile, JobPayload};
use podci_model::schedule::{Action, Event, JobResult, Scheduler, job_specs};
use serde_json::{Value, json};

pub mod artifacts;
pub use artifacts::Upload;

/// Faults the server can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Fault {
    /// 500 without doing anything.
    Status500,
    /// 503 with `Retry-After: 1`.
    Unavailable503,
    /// 429 with `Retry-After: 1`.
    TooMany429,
    /// The connection drops before the request is applied.
    DropBefore,
    /// The request is applied, then the connection drops mid-answer.
    DropAfter,
    /// The answer comes 300 ms late.
    Slow,
    /// A trace patch: the server loses the end of its trace and answers 416.
    Rewind416,
    /// A final update: answered 412 and the stored trace is dropped (resend it all).
    Precondition412,
    /// A final update: answered 202, come back later.
    Accepted202,
}

/// The runner-API calls a scripted fault can target ([`FakeGitlab::script_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /jobs/request`.
    RequestJob,
    /// `PUT /jobs/:id` (the confirmation, keep-alives and the final update alike).
    UpdateJob,
    /// `PATCH /jobs/:id/trace`.
    PatchTrace,
}

/// How many calls a job's history keeps (the most recent ones).
const HISTORY: usize = 24;

/// All faults.
pub const ALL_FAULTS: &[Fault] = &[
    Fault::Status500,
    Fault::Unavailable503,
    Fault::TooMany429,
    Fault::DropBefore,
    Fault::DropAfter,
    Fault::Slow,
    Fault::Rewind416,
    Fault::Precondition412,
    Fault::Accepted202,
];

/// Server settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The registration token `POST /runners` accepts.
    pub registration_token: String,
    /// Runner tokens valid from the start (as if created in GitLab's UI).
    pub runner_tokens: Vec<String>,
    /// Fraction of API calls that fail (0.0 to 1.0).
    pub fault_rate: f64,
    /// Which faults; empty means all.
    pub faults: Vec<Fault>,
    /// RNG seed, for repeatable runs.
    pub seed: u64,
    /// `X-GitLab-Trace-Update-Interval` in seconds.
    pub trace_interval: u64,
    /// A job handed out but not confirmed (`PUT running`) returns to the queue after this.
    pub ack_timeout: Duration,
    /// The largest artifacts file accepted; larger uploads get 413 (GitLab's
    /// `max_artifacts_size`, 100 MiB by default).
    pub max_artifacts_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            registration_token: "GR1348941-registration".into(),
            runner_tokens: vec!["glrt-t1_fake-runner-token".into()],
            fault_rate: 0.0,
            faults: Vec::new(),
            seed: 1,
            trace_interval: 3,
            ack_timeout: Duration::from_secs(2),
            max_artifacts_size: 100 << 20,
        }
    }
}

/// A job's state on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for earlier stages.
    Created,
    /// In the queue.
    Pending,
    /// Handed out, not yet confirmed.
    Assigned,
    /// Confirmed by the runner.
    Running,
    /// Cancel requested; the runner runs after_script.
    Canceling,
    /// Final.
    Success,
    /// Final.
    Failed,
    /// Final.
    Canceled,
    /// Never ran.
    Skipped,
}

impl Status {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Success | Status::Failed | Status::Canceled | Status::Skipped
        )
    }
}

/// What the server knows about one job.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobRecord {
    /// Job id.
    pub id: u64,
    /// Job name.
    pub name: String,
    /// Pipeline id.
    pub pipeline: u64,
    /// State.
    pub status: Status,
    /// The stored trace.
    #[serde(skip)]
    pub trace: Vec<u8>,
    /// How many times a final state was recorded (must be 1).
    pub final_recorded: u32,
    /// How many times it was handed out.
    pub handed_out: u32,
    /// `failure_reason` of the final update.
    pub failure_reason: Option<String>,
    /// `exit_code` of the final update.
    pub exit_code: Option<i64>,
    /// `output.checksum` of the recorded final update.
    pub checksum: Option<String>,
    /// Final updates refused because the checksum did not match the stored trace.
    pub checksum_mismatches: u32,
    /// `state` of the recorded final update (`success` or `failed`; GitLab turns either
    /// into `canceled` for a job that was canceling).
    pub final_state: Option<String>,
    /// The most recent calls about this job and what the server did, oldest first, each
    /// with the milliseconds since the job was created (`+1234ms PATCH 0-9 -> 202 ...`):
    /// for failure messages, which call a job that never ended saw last, and when.
    pub history: Vec<String>,
    /// When the job was created, for the times in `history`.
    #[serde(skip)]
    created: Instant,
    /// The uploaded `archive` artifact and its query parameters.
    #[serde(skip)]
    pub artifacts: Option<(Vec<u8>, String)>,
    /// Every accepted upload, one per `artifact_type` (as GitLab keeps them).
    pub uploads: Vec<Upload>,
    /// Variables of the accepted `reports:dotenv` upload, passed to dependent jobs.
    pub dotenv: Vec<(String, String)>,
    /// The payload handed out.
    #[serde(skip)]
    pub payload: JobPayload,
}

impl JobRecord {
    fn note(&mut self, event: String) {
        if self.history.len() >= HISTORY {
            self.history.remove(0);
        }
        let ms = self.created.elapsed().as_millis();
        self.history.push(format!("+{ms}ms {event}"));
    }

    /// One line for a failure message: state, hand-outs, trace and the last calls seen.
    pub fn describe(&self) -> String {
        format!(
            "job {} {:?}: {:?}, handed out {}x, {} trace bytes ({}), final recorded {}x, last calls: [{}]",
            self.id,
            self.name,
            self.status,
            self.handed_out,
            self.trace.len(),
            self.trace_checksum(),
            self.final_recorded,
            self.history.join("; ")
        )
    }

    /// CRC32 of the stored trace, as `crc32:%08x`.
    pub fn trace_checksum(&self) -> String {
        format!("crc32:{:08x}", crc32fast::hash(&self.trace))
    }
}

struct Pipe {
    scheduler: Scheduler,
    /// Instance name -> job id.
    ids: HashMap<String, u64>,
    /// Keys of the project variables: they win over dotenv variables, as in GitLab.
    project_keys: Vec<String>,
}

struct State {
    opts: Options,
    runner_tokens: Vec<String>,
    next_runner_id: u64,
    jobs: Vec<JobRecord>,
    by_id: HashMap<u64, usize>,
    queue: std::collections::VecDeque<u64>,
    assigned_at: HashMap<u64, Instant>,
    pipelines: HashMap<u64, Pipe>,
    rng: u64,
    injected: HashMap<String, u64>,
    calls: u64,
    last_update: u64,
    /// Faults scripted by a test, per endpoint, consumed one per call before any random
    /// draw (`None`: this call goes through untouched).
    script: HashMap<Endpoint, std::collections::VecDeque<Option<Fault>>>,
}

impl State {
    fn rand(&mut self) -> f64 {
        // xorshift64*: repeatable from the seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn job_mut(&mut self, id: u64) -> Option<&mut JobRecord> {
        let i = *self.by_id.get(&id)?;
        self.jobs.get_mut(i)
    }

    /// Picks a fault for this call, if one is due and enabled.
    fn draw(&mut self, allowed: &[Fault]) -> Option<Fault> {
        if self.opts.fault_rate <= 0.0 || self.rand() >= self.opts.fault_rate {
            return None;
        }
        let enabled: Vec<Fault> = allowed
            .iter()
            .copied()
            .filter(|f| self.opts.faults.is_empty() || self.opts.faults.contains(f))
            .collect();
        if enabled.is_empty() {
            return None;
        }
        let f = enabled[(self.rand() * enabled.len() as f64) as usize % enabled.len()];
        *self.injected.entry(format!("{f:?}")).or_default() += 1;
        Some(f)
    }

    /// Jobs handed out but never confirmed go back to the queue.
    fn requeue_stale(&mut self) {
        let timeout = self.opts.ack_timeout;
        let stale: Vec<u64> = self
            .assigned_at
            .iter()
            .filter(|(_, t)| t.elapsed() >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.assigned_at.remove(&id);
            // GitLab retries a job its runner never acknowledged as a new job with a new
            // token, so a confirmation arriving late is refused (403) instead of letting
            // two runners run the same job; a fresh token does the same here.
            let token = format!("glcbt-fake-{id}-{:x}", (self.rand() * 1e15) as u64);
            if let Some(j) = self.job_mut(id)
                && j.status == Status::Assigned
            {
                j.status = Status::Pending;
                j.payload.token = token;
                j.note(format!(
                    "not confirmed within {timeout:?}: back in the queue with a new token"
                ));
                self.queue.push_front(id);
            }
        }
    }

    fn apply_actions(&mut self, pipeline: u64, actions: Vec<Action>) {
        for a in actions {
            let name = match &a {
                Action::Enqueue { job, .. } | Action::Skip { job } | Action::Cancel { job, .. } => {
                    job.clone()
                }
                _ => continue,
            };
            let Some(id) = self
                .pipelines
                .get(&pipeline)
                .and_then(|p| p.ids.get(&name))
                .copied()
            else {
                continue;
            };
            let Some(j) = self.job_mut(id) else { continue };
            match a {
                Action::Enqueue { .. } if !j.status.is_final() => {
                    j.status = Status::Pending;
                    self.queue.push_back(id);
                }
                Action::Skip { .. } if !j.status.is_final() => j.status = Status::Skipped,
                Action::Cancel { .. } if !j.status.is_final() => j.status = Status::Canceled,
                _ => {}
            }
        }
    }

    fn finish(&mut self, id: u64, result: JobResult) {
        let Some(j) = self.job_mut(id) else { return };
        let (pipeline, name) = (j.pipeline, j.name.clone());
        let actions = match self.pipelines.get_mut(&pipeline) {
            Some(p) => p
                .scheduler
                .on_event(Event::Finished { job: name, result })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        self.apply_actions(pipeline, actions);
    }
}

/// A running fake GitLab. Dropping it stops the server.
pub struct FakeGitlab {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Why a pipeline could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The `.gitlab-ci.yml` has errors.
    #[error("invalid .gitlab-ci.yml: {0}")]
    Invalid(String),
    /// The repository could not be read.
    #[error("repository {0}: {1}")]
    Repo(String, String),
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeGitlab {
    /// Starts a server on 127.0.0.1 on a free port.
    pub async fn start(opts: Options) -> std::io::Result<FakeGitlab> {
        Self::start_on("127.0.0.1:0", opts).await
    }

    /// Starts a server on `addr`.
    pub async fn start_on(addr: &str, opts: Options) -> std::io::Result<FakeGitlab> {
        let state = Arc::new(Mutex::new(State {
            runner_tokens: opts.runner_tokens.clone(),
            rng: opts.seed.max(1),
            opts,
            next_runner_id: 1,
            jobs: Vec::new(),
            by_id: HashMap::new(),
            queue: Default::default(),
            assigned_at: HashMap::new(),
            pipelines: HashMap::new(),
            injected: HashMap::new(),
            calls: 0,
            last_update: 1,
            script: HashMap::new(),
        }));
        let api = axum::Router::new()
            .route("/api/v4/runners", post(register).delete(unregister))
            .route("/api/v4/runners/verify", post(verify))
            .route("/api/v4/jobs/request", post(request_job))
            .route("/api/v4/jobs/{id}", put(update_job))
            .route("/api/v4/jobs/{id}/trace", patch(patch_trace))
            .route(
                "/api/v4/jobs/{id}/artifacts",
                post(upload_artifacts).get(download_artifacts),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), inject))
            .route("/_fake/jobs", get(list_jobs))
            .route("/_fake/summary", get(summary))
            .route("/_fake/jobs/{id}/trace", get(get_trace))
            .route("/_fake/jobs/{id}/cancel", post(cancel_job))
            .route("/_fake/runners", delete(forget_runners))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, api)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeGitlab {
            url,
            state,
            stop: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates a pipeline from `yaml` for a push of `repo`'s HEAD (when given) to `main`.
    /// `variables` are project variables `(key, value, masked)`. Returns the pipeline id.
    pub fn create_pipeline(
        &self,
        yaml: &str,
        repo: Option<&Path>,
        variables: &[(&str, &str, bool)],
    ) -> Result<u64, PipelineError> {
        let pipeline = podci_model::load(
            ".gitlab-ci.yml",
            yaml,
            &podci_model::MemorySource::new(),
            &podci_model::LoadOptions::default(),
        );
        if !pipeline.is_valid() {
            let msgs: Vec<String> = pipeline
                .errors()
                .map(|d| d.display(&pipeline.sources).to_string())
                .collect();
            return Err(PipelineError::Invalid(msgs.join("; ")));
        }
        let mut st = lock(&self.state);
        let pipeline_id = st.pipelines.len() as u64 + 1;
        let first_job_id = st.jobs.len() as u64 + 1;
        let (sha, repo_url) = match repo {
            Some(r) => {
                let out = std::process::Command::new("git")
                    .arg("-C")
                    .arg(r)
                    .args(["rev-parse", "HEAD"])
                    .output()
                    .map_err(|e| PipelineError::Repo(r.display().to_string(), e.to_string()))?;
                if !out.status.success() {
                    return Err(PipelineError::Repo(
                        r.display().to_string(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    ));
                }
                let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
                // GitLab keeps a persistent ref per pipeline; payloads fetch it by refspec.
                let ok = std::process::Command::new("git")
                    .arg("-C")
                    .arg(r)
                    .args(["update-ref", &format!("refs/pipelines/{pipeline_id}"), &sha])
                    .status()
                    .map_err(|e| PipelineError::Repo(r.display().to_string(), e.to_string()))?;
                if !ok.success() {
                    return Err(PipelineError::Repo(
                        r.display().to_string(),
                        format!("git update-ref refs/pipelines/{pipeline_id} failed"),
                    ));
                }
                (sha, Some(format!("file://{}", r.display())))
            }
            None => ("0".repeat(40), None),
        };
        let ctx = PipelineContext {
            server_url: self.url.clone(),
            pipeline_id,
            pipeline_iid: pipeline_id,
            first_job_id,
            sha,
            variables: variables
                .iter()
                .map(|(k, v, masked)| {
                    let mut var = Variable::plain(k, v, VariableLevel::Project);
                    var.masked = *masked;
                    var.public = !*masked;
                    var
                })
                .collect(),
            ..PipelineContext::default()
        };
        let eval = pipeline.evaluate(&ctx);
        let names: Vec<&str> = eval.jobs.iter().map(|j| j.job.as_str()).collect();
        let jobs: Vec<&podci_model::Job> = pipeline
            .jobs
            .iter()
            .filter(|j| names.contains(&j.name.as_str()))
            .collect();
        let mut scheduler = Scheduler::new(job_specs(&pipeline, &jobs));
        let mut ids = HashMap::new();
        for ej in &eval.jobs {
            let token = format!("glcbt-fake-{}-{:x}", ej.id, (st.rand() * 1e15) as u64);
            let Some(mut payload) = pipeline.payload(&eval, &ej.name, &ctx, &token) else {
                continue;
            };
            // Without a repository there is nothing to clone.
            payload.git_info.repo_url = repo_url.clone().unwrap_or_default();
            ids.insert(ej.name.clone(), ej.id);
            let index = st.jobs.len();
            st.by_id.insert(ej.id, index);
            st.jobs.push(JobRecord {
                id: ej.id,
                name: ej.name.clone(),
                pipeline: pipeline_id,
                status: Status::Created,
                trace: Vec::new(),
                final_recorded: 0,
                handed_out: 0,
                failure_reason: None,
                exit_code: None,
                checksum: None,
                checksum_mismatches: 0,
                final_state: None,
                history: Vec::new(),
                created: Instant::now(),
                artifacts: None,
                uploads: Vec::new(),
                dotenv: Vec::new(),
                payload,
            });
        }
        let actions = scheduler.start();
        let project_keys = variables.iter().map(|(k, _, _)| k.to_string()).collect();
        st.pipelines.insert(
            pipeline_id,
            Pipe {
                scheduler,
                ids,
                project_keys,
            },
        );
        st.apply_actions(pipeline_id, actions);
        st.last_update += 1;
        Ok(pipeline_id)
    }

    /// A snapshot of every job.
    pub fn jobs(&self) -> Vec<JobRecord> {
        lock(&self.state).jobs.clone()
    }

    /// Injected faults by kind.
    pub fn injected(&self) -> HashMap<String, u64> {
        lock(&self.state).injected.clone()
    }

    /// API calls answered (faulty or not).
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// Requests cancellation of a job, as a user pressing "Cancel" does.
    pub fn cancel(&self, id: u64) {
        cancel(&mut lock(&self.state), id);
    }

    /// Scripts the faults of the next calls to `endpoint`, one per call in order (`None`:
    /// that call goes through untouched), ahead of any random fault: a test replays an
    /// exact sequence, e.g. a confirmation applied but its answer lost, then five 500s.
    pub fn script_faults(&self, endpoint: Endpoint, faults: &[Option<Fault>]) {
        lock(&self.state)
            .script
            .entry(endpoint)
            .or_default()
            .extend(faults.iter().copied());
    }

    /// Every job that has not ended, one line each with its state on this server and the
    /// last calls it saw, plus the server's totals: what a failed test prints so that a
    /// hang can be diagnosed from a CI log alone.
    pub fn unfinished_report(&self) -> String {
        let st = lock(&self.state);
        let mut by_status: std::collections::BTreeMap<String, u64> = Default::default();
        for j in &st.jobs {
            *by_status.entry(format!("{:?}", j.status)).or_default() += 1;
        }
        let mut out = format!(
            "{} jobs by state {by_status:?}; {} API calls, injected {:?}; queue {:?}\n",
            st.jobs.len(),
            st.calls,
            st.injected,
            st.queue
        );
        for j in st.jobs.iter().filter(|j| !j.status.is_final()) {
            out.push_str(&j.describe());
            out.push('\n');
        }
        out
    }

    /// Cancels a job outright, as GitLab's "force cancel" of a canceling job (or a cancel
    /// for a runner without `cancel_gracefully`) does: it is `canceled` at once and every
    /// later call for it answers 403, which tells its runner to stop without a final state.
    pub fn force_cancel(&self, id: u64) {
        let mut st = lock(&self.state);
        let Some(j) = st.job_mut(id) else { return };
        if j.status.is_final() {
            return;
        }
        j.status = Status::Canceled;
        j.note("force-canceled".into());
        st.assigned_at.remove(&id);
        st.finish(id, JobResult::Canceled);
        st.last_update += 1;
    }

    /// Whether every job has ended.
    pub fn all_final(&self) -> bool {
        lock(&self.state).jobs.iter().all(|j| j.status.is_final())
    }

    /// Waits until every job has ended, or `timeout`.
    pub async fn wait_all_final(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.all_final() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.all_final()
    }

    /// Runner tokens currently valid.
    pub fn runner_tokens(&self) -> Vec<String> {
        lock(&self.state).runner_tokens.clone()
    }
}

/// GitLab's `cancel` event: a running job of a runner that announced `cancel_gracefully`
/// goes to `canceling` (the runner runs after_script and sends its final update); a job
/// not yet running, including one handed out but not yet acknowledged (GitLab keeps it
/// pending until the runner's `PUT running`), is canceled at once, and its runner's
/// confirmation is then refused.
fn cancel(st: &mut State, id: u64) {
    let Some(j) = st.job_mut(id) else { return };
    match j.status {
        Status::Running => {
            j.status = Status::Canceling;
            j.note("cancel requested: canceling".into());
        }
        Status::Created => {
            j.status = Status::Canceled;
            j.note("canceled before it was queued".into());
        }
        Status::Pending | Status::Assigned => {
            j.status = Status::Canceled;
            j.note("canceled before it ran".into());
            st.assigned_at.remove(&id);
            st.finish(id, JobResult::Canceled);
            st.last_update += 1;
        }
        _ => {}
    }
}

type Shared = AxState<Arc<Mutex<State>>>;

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn message(status: StatusCode, msg: &str) -> Response {
    reply(status, json!({ "message": msg }))
}

/// A body that fails after the headers: the client sees a dropped connection.
fn broken_body(parts: axum::http::response::Parts) -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Generic faults, before or after the handler; endpoint-specific ones are left to the
/// handlers through a request extension.
async fn inject(AxState(state): Shared, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let endpoint = if path.ends_with("/jobs/request") {
        Some(Endpoint::RequestJob)
    } else if path.ends_with("/trace") {
        Some(Endpoint::PatchTrace)
    } else if method == axum::http::Method::PUT {
        Some(Endpoint::UpdateJob)
    } else {
        None
    };
    let job = path
        .strip_prefix("/api/v4/jobs/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| id.parse::<u64>().ok());
    // The state a PUT carries, for the job's history (bodies are small JSON).
    let (req, what) = if endpoint == Some(Endpoint::UpdateJob) {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let state = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_string))
            .unwrap_or_default();
        (
            Request::from_parts(parts, Body::from(bytes)),
            format!("PUT state={state}"),
        )
    } else if endpoint == Some(Endpoint::PatchTrace) {
        let range = req
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        (req, format!("PATCH {range}"))
    } else {
        let w = format!("{method} {path}");
        (req, w)
    };
    let fault = {
        let mut st = lock(&state);
        st.calls += 1;
        st.requeue_stale();
        let scripted = endpoint
            .and_then(|e| st.script.get_mut(&e))
            .and_then(|q| q.pop_front());
        let mut allowed = vec![
            Fault::Status500,
            Fault::Unavailable503,
            Fault::TooMany429,
            Fault::DropBefore,
            Fault::DropAfter,
            Fault::Slow,
        ];
        if path.ends_with("/trace") {
            allowed.push(Fault::Rewind416);
        } else if method == axum::http::Method::PUT {
            allowed.push(Fault::Precondition412);
            allowed.push(Fault::Accepted202);
        }
        match scripted {
            Some(Some(f)) => {
                *st.injected.entry(format!("{f:?}")).or_default() += 1;
                Some(f)
            }
            Some(None) => None,
            None => st.draw(&allowed),
        }
    };
    let response = respond(fault, req, next).await;
    if let Some(id) = job {
        let mut st = lock(&state);
        if let Some(j) = st.job_mut(id) {
            let fault = fault.map(|f| format!(" [{f:?}]")).unwrap_or_default();
            j.note(format!(
                "{what} -> {}{fault} => {:?}",
                response.status().as_u16(),
                j.status
            ));
        }
    }
    response
}

/// The answer to one call, with `fault` applied.
async fn respond(fault: Option<Fault>, mut req: Request, next: Next) -> Response {
    match fault {
        Some(Fault::Status500) => message(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error"),
        Some(f @ (Fault::Unavailable503 | Fault::TooMany429)) => {
            let code = if f == Fault::TooMany429 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut r = message(code, "try again later");
            r.headers_mut()
                .insert("Retry-After", axum::http::HeaderValue::from_static("1"));
            r
        }
        Some(Fault::DropBefore) => {
            let (parts, _) = StatusCode::OK.into_response().into_parts();
            broken_body(parts)
        }
        Some(Fault::DropAfter) => {
            // Handlers see it too, to note that their answer never arrived.
            req.extensions_mut().insert(Fault::DropAfter);
            let r = next.run(req).await;
            let (parts, _) = r.into_parts();
            broken_body(parts)
        }
        Some(Fault::Slow) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            next.run(req).await
        }
        Some(f) => {
            req.extensions_mut().insert(f);
            next.run(req).await
        }
        None => next.run(req).await,
    }
}

async fn register(AxState(state): Shared, axum::Json(body): axum::Json<Value>) -> Response {
    let mut st = lock(&state);
    if body["token"].as_str() != Some(st.opts.registration_token.as_str()) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    let id = st.next_runner_id;
    st.next_runner_id += 1;
    let token = format!("glrt-t1_registered{id}-{:x}", (st.rand() * 1e15) as u64);
    st.runner_tokens.push(token.clone());
    reply(
        StatusCode::CREATED,
        json!({"id": id, "token": token, "token_expires_at": null}),
    )
}

async fn verify(AxState(state): Shared, axum::Json(body): axum::Json<Value>) -> Response {
    let st = lock(&state);
    let token = body["token"].as_str().unwrap_or_default();
    match st.runner_tokens.iter().position(|t| t == token) {
        Some(i) => reply(
            StatusCode::OK,
            json!({"id": i + 1, "token": token, "token_expires_at": null}),
        ),
        None => message(StatusCode::FORBIDDEN, "403 Forbidden"),
    }
}

async fn unregister(AxState(state): Shared, axum::Json(body): axum::Json<Value>) -> Response {
    let mut st = lock(&state);
    let token = body["token"].as_str().unwrap_or_default().to_string();
    let before = st.runner_tokens.len();
    st.runner_tokens.retain(|t| *t != token);
    if st.runner_tokens.len() < before {
        StatusCode::NO_CONTENT.into_response()
    } else {
        message(StatusCode::FORBIDDEN, "403 Forbidden")
    }
}

async fn forget_runners(AxState(state): Shared) -> Response {
    lock(&state).runner_tokens.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn request_job(
    AxState(state): Shared,
    fault: Option<axum::Extension<Fault>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut st = lock(&state);
    let token = body["token"].as_str().unwrap_or_default();
    if !st.runner_tokens.iter().any(|t| t == token) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    if body["info"]["features"]["two_phase_job_commit"] != json!(true) {
        return message(
            StatusCode::BAD_REQUEST,
            "runner does not announce two_phase_job_commit",
        );
    }
    while let Some(id) = st.queue.pop_front() {
        let Some(j) = st.job_mut(id) else { continue };
        if j.status != Status::Pending {
            continue;
        }
        j.status = Status::Assigned;
        j.handed_out += 1;
        let lost = if fault.map(|f| f.0) == Some(Fault::DropAfter) {
            ", answer dropped [DropAfter]"
        } else {
            ""
        };
        j.note(format!("handed out (#{}){lost}", j.handed_out));
        let mut payload = j.payload.clone();
        let pipeline = j.pipeline;
        st.assigned_at.insert(id, Instant::now());
        // Dependencies carry their tokens and artifacts as of now.
        let mut dotenv: Vec<(String, String)> = Vec::new();
        for d in &mut payload.dependencies {
            if let Some(dep) = st.by_id.get(&d.id).and_then(|&i| st.jobs.get(i))
                && dep.pipeline == pipeline
            {
                d.token = dep.payload.token.clone();
                d.artifacts_file = dep
                    .uploads
                    .iter()
                    .find(|u| u.artifact_type == "archive")
                    .map(|u| ArtifactsFile {
                        filename: u.filename.clone(),
                        size: u.size as u64,
                    });
                dotenv.extend(dep.dotenv.iter().cloned());
            }
        }
        // Dotenv variables of the dependencies (GitLab's `dependency_variables`): after the
        // job's own `variables:`, under the project's variables.
        let project_keys = st
            .pipelines
            .get(&pipeline)
            .map(|p| p.project_keys.clone())
            .unwrap_or_default();
        for (key, value) in dotenv {
            if project_keys.contains(&key) {
                continue;
            }
            payload.variables.push(podci_model::payload::JobVariable {
                key,
                value,
                public: false,
                ..Default::default()
            });
        }
        return match serde_json::to_value(&payload) {
            Ok(v) => reply(StatusCode::CREATED, v),
            Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&st.last_update.to_string()) {
        r.headers_mut().insert("X-GitLab-Last-Update", v);
    }
    r
}

fn job_token_ok(j: &JobRecord, headers: &HeaderMap, body_token: Option<&str>) -> bool {
    let h = headers.get("job-token").and_then(|v| v.to_str().ok());
    h.or(body_token) == Some(j.payload.token.as_str())
}

fn status_header(r: &mut Response, st: &State, j: Status) {
    let s = match j {
        Status::Canceling => "canceling",
        Status::Canceled => "canceled",
        Status::Failed => "failed",
        Status::Success => "success",
        _ => "running",
    };
    r.headers_mut()
        .insert("Job-Status", axum::http::HeaderValue::from_static(s));
    if let Ok(v) = axum::http::HeaderValue::from_str(&st.opts.trace_interval.to_string()) {
        r.headers_mut().insert("X-GitLab-Trace-Update-Interval", v);
    }
}

async fn update_job(
    AxState(state): Shared,
    UrlPath(id): UrlPath<u64>,
    fault: Option<axum::Extension<Fault>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut guard = lock(&state);
    let st = &mut *guard;
    let Some(j) = st.job_mut(id) else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !job_token_ok(j, &headers, body["token"].as_str()) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    let state_name = body["state"].as_str().unwrap_or_default();
    if state_name == "running" {
        return match j.status {
            Status::Assigned | Status::Running | Status::Canceling => {
                if j.status == Status::Assigned {
                    j.status = Status::Running;
                }
                let s = j.status;
                st.assigned_at.remove(&id);
                let mut r = message(StatusCode::OK, "200 OK");
                status_header(&mut r, st, s);
                r
            }
            _ => message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running"),
        };
    }
    if !matches!(j.status, Status::Running | Status::Canceling) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
    }
    match fault.map(|f| f.0) {
        Some(Fault::Accepted202) => {
            let mut r = message(StatusCode::ACCEPTED, "202 Accepted");
            r.headers_mut().insert(
                "X-GitLab-Trace-Update-Interval",
                axum::http::HeaderValue::from_static("1"),
            );
            return r;
        }
        Some(Fault::Precondition412) => {
            j.trace.clear();
            return message(StatusCode::PRECONDITION_FAILED, "412 Precondition Failed");
        }
        _ => {}
    }
    let checksum = body["output"]["checksum"].as_str().map(str::to_string);
    let bytesize = body["output"]["bytesize"].as_u64();
    if checksum.as_deref() != Some(j.trace_checksum().as_str()) || bytesize != Some(j.trace.len() as u64) {
        j.checksum_mismatches += 1;
        // The runner resends the whole trace (trace_reset): start again from nothing.
        j.trace.clear();
        return message(
            StatusCode::PRECONDITION_FAILED,
            "412 Precondition Failed - trace checksum mismatch",
        );
    }
    let result = match (state_name, j.status) {
        (_, Status::Canceling) => {
            j.status = Status::Canceled;
            JobResult::Canceled
        }
        ("success", _) => {
            j.status = Status::Success;
            JobResult::Success
        }
        ("failed", _) => {
            j.status = Status::Failed;
            let reason = body["failure_reason"].as_str().unwrap_or("unknown_failure");
            JobResult::Failed {
                reason: podci_model::schedule::FailureReason::parse(reason),
                exit_code: body["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok()),
            }
        }
        _ => return message(StatusCode::BAD_REQUEST, "400 Bad request - state is invalid"),
    };
    j.final_recorded += 1;
    j.final_state = Some(state_name.to_string());
    j.checksum = checksum;
    j.failure_reason = body["failure_reason"].as_str().map(str::to_string);
    j.exit_code = body["exit_code"].as_i64();
    st.finish(id, result);
    st.last_update += 1;
    message(StatusCode::OK, "200 OK")
}

fn range(headers: &HeaderMap) -> Option<(u64, u64)> {
    let v = headers.get("content-range")?.to_str().ok()?;
    let (a, b) = v.trim().split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

async fn patch_trace(
    AxState(state): Shared,
    UrlPath(id): UrlPath<u64>,
    fault: Option<axum::Extension<Fault>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut guard = lock(&state);
    let st = &mut *guard;
    let rng = st.rand();
    let Some(j) = st.job_mut(id) else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !job_token_ok(j, &headers, None) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    if !matches!(j.status, Status::Running | Status::Canceling) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
    }
    let range_header = |len: usize| axum::http::HeaderValue::from_str(&format!("0-{len}")).ok();
    if fault.map(|f| f.0) == Some(Fault::Rewind416) && !j.trace.is_empty() {
        let keep = (j.trace.len() as f64 * rng) as usize;
        j.trace.truncate(keep);
        let mut r = message(StatusCode::RANGE_NOT_SATISFIABLE, "416 Range Not Satisfiable");
        if let Some(v) = range_header(keep) {
            r.headers_mut().insert("Range", v);
        }
        return r;
    }
    let Some((start, end)) = range(&headers) else {
        return message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - Content-Range is missing",
        );
    };
    if body.len() > 1 << 20 {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "413 a patch is at most 1 MiB");
    }
    if start != j.trace.len() as u64 || end + 1 != start + body.len() as u64 {
        let mut r = message(StatusCode::RANGE_NOT_SATISFIABLE, "416 Range Not Satisfiable");
        if let Some(v) = range_header(j.trace.len()) {
            r.headers_mut().insert("Range", v);
        }
        return r;
    }
    j.trace.extend_from_slice(&body);
    let (len, s) = (j.trace.len(), j.status);
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Some(v) = range_header(len) {
        r.headers_mut().insert("Range", v);
    }
    status_header(&mut r, st, s);
    r
}

/// The first part of a multipart/form-data body named `file`: its file name and bytes.
fn multipart_file(headers: &HeaderMap, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let open = format!("--{boundary}\r\n");
    let start = find(body, open.as_bytes())? + open.len();
    let head_end = start + find(&body[start..], b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&body[start..head_end]);
    if !head.contains("name=\"file\"") {
        return None;
    }
    let close = format!("\r\n--{boundary}");
    let end = head_end + find(&body[head_end..], close.as_bytes())?;
    let filename = head
        .split("filename=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    Some((filename, body[head_end..end].to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn upload_artifacts(
    AxState(state): Shared,
    UrlPath(id): UrlPath<u64>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    let max_size = st.opts.max_artifacts_size;
    let Some(j) = st.job_mut(id) else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if !job_token_ok(j, &headers, None) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    if !matches!(j.status, Status::Running | Status::Canceling) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
    }
    let query = uri.query().unwrap_or_default().to_string();
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    };
    // GitLab's defaults for both parameters.
    let artifact_type = param("artifact_type").unwrap_or_else(|| "archive".into());
    let artifact_format = param("artifact_format").unwrap_or_else(|| "zip".into());
    let expire_in = param("expire_in");
    let Some((filename, file)) = multipart_file(&headers, &body) else {
        return message(StatusCode::BAD_REQUEST, "400 Bad request - file is missing");
    };
    if file.len() > max_size {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file size has reached maximum size limit",
        );
    }
    let refuse = |r: artifacts::Refusal| {
        message(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            &r.message,
        )
    };
    if let Err(r) = artifacts::check_type_and_format(&artifact_type, &artifact_format) {
        return refuse(r);
    }
    // One artifact per type: the same file again is a no-op, another one a conflict.
    if let Some(existing) = j.uploads.iter().find(|u| u.artifact_type == artifact_type) {
        if existing.data == file {
            return reply(StatusCode::CREATED, json!({}));
        }
        return message(
            StatusCode::BAD_REQUEST,
            "another artifact of the same type already exists",
        );
    }
    if artifact_type == "dotenv" {
        match artifacts::parse_dotenv(&file) {
            Ok(vars) => j.dotenv = vars,
            Err(r) => return refuse(r),
        }
    }
    if artifact_type == "archive" {
        j.artifacts = Some((file.clone(), query.clone()));
    }
    j.uploads.push(Upload {
        artifact_type,
        artifact_format,
        expire_in,
        filename,
        size: file.len(),
        data: file,
    });
    reply(StatusCode::CREATED, json!({}))
}

/// `%XX` and `+` of a query value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(x)) => {
                out.push(x);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn download_artifacts(
    AxState(state): Shared,
    UrlPath(id): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&state);
    let Some(j) = st.by_id.get(&id).and_then(|&i| st.jobs.get(i)) else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    // Any job token of the same pipeline may read (GitLab checks the dependency).
    let token = headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let allowed = st
        .jobs
        .iter()
        .any(|o| o.pipeline == j.pipeline && o.payload.token == token);
    if !allowed {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    match &j.artifacts {
        Some((a, _)) => (StatusCode::OK, a.clone()).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not Found"),
    }
}

async fn list_jobs(AxState(state): Shared) -> Response {
    let st = lock(&state);
    let jobs: Vec<Value> = st
        .jobs
        .iter()
        .map(|j| {
            let mut v = serde_json::to_value(j).unwrap_or_default();
            v["trace_checksum"] = json!(j.trace_checksum());
            v["trace_size"] = json!(j.trace.len());
            v
        })
        .collect();
    reply(StatusCode::OK, json!(jobs))
}

async fn summary(AxState(state): Shared) -> Response {
    let st = lock(&state);
    let mut by_status: HashMap<String, u64> = HashMap::new();
    for j in &st.jobs {
        *by_status
            .entry(
                serde_json::to_value(j.status)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
            .or_default() += 1;
    }
    let all_final = st.jobs.iter().all(|j| j.status.is_final());
    reply(
        StatusCode::OK,
        json!({"jobs": st.jobs.len(), "by_status": by_status, "all_final": all_final, "calls": st.calls, "injected": st.injected}),
    )
}

async fn get_trace(AxState(state): Shared, UrlPath(id): UrlPath<u64>) -> Response {
    let st = lock(&state);
    match st.by_id.get(&id).and_then(|&i| st.jobs.get(i)) {
        Some(j) => (StatusCode::OK, j.trace.clone()).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not Found"),
    }
}

async fn cancel_job(AxState(state): Shared, UrlPath(id): UrlPath<u64>) -> Response {
    cancel(&mut lock(&state), id);
    StatusCode::NO_CONTENT.into_response()
}
