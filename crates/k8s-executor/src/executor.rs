//! The job lifecycle over `kube::Client`.
//!
//! Owns: creating the Secret and Pod, following the Pod through one watch (re-listing
//! after `410 Gone`, re-watching after a dropped stream) instead of polling, turning
//! start failures into GitLab failure reasons (image pull errors with the registry's
//! message, unschedulable Pods quoting their events), running each step, streaming the
//! log file, cancel and timeout, and a bounded cleanup.
//!
//! How a step runs. Its script (from [`podci_model::script::render_step`]) goes through
//! the build shell's stdin: with [`Strategy::Attach`] over a `pods/attach` kept open for
//! the whole job, as a here-document that one `sh -s` runs (see `attach_launcher`);
//! with [`Strategy::Exec`] written to the scripts volume and started detached through a
//! `pods/exec` of `sh` (`detached_launcher`; the write runs alongside the log reading and
//! ends when the shell does, so a shell that exits without reading cannot hang the job).
//! Either way its output is appended to `output.log` on the logs volume, which one
//! long-lived `pods/exec` of `tail -c +OFFSET -f` in the helper streams back. The executor counts
//! the bytes it received; after a dropped connection it starts `tail` again at that
//! offset, so nothing is lost or repeated. The step's exit code arrives in the end
//! marker the script prints last ([`podci_model::script::StepEndScanner`]), since attach
//! reports Success whatever the exit code. Helper steps (sources, caches, artifacts) run
//! the same way in the helper container: detached, logged to `output.log`, ended by a
//! marker, so a dropped connection loses neither their output nor their exit code.
//!
//! The job future ([`KubernetesExecutor::run`]) is `Send`: no `&self` of the job's state
//! (which holds `Send`-only connection futures) lives across an await, so a runner can
//! `tokio::spawn` a job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod, Secret};
use kube::api::{
    Api, AttachParams, AttachedProcess, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use podci_model::mask::Masker;
use podci_model::payload::{JobPayload, Step};
use podci_model::script::{JobStatus, ScriptOptions, Shell, StepEndScanner, render_step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{KubernetesConfig, Strategy};
use crate::helper::{HelperEnv, HelperStep, add_helper_env, exec_exit_code};
use crate::pod::{BUILD_CONTAINER, HELPER_CONTAINER, JobPod, PodParams, build_pod};

/// Where masked trace bytes go (a terminal, a file, GitLab's trace PATCH).
pub trait TraceSink: Send {
    /// Appends bytes to the trace.
    fn write(&mut self, bytes: &[u8]);
}

impl TraceSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// GitLab's failure reasons (the `failure_reason` of the final job update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    ScriptFailure,
    RunnerSystemFailure,
    JobExecutionTimeout,
    ImagePullFailure,
    UnknownFailure,
    RunnerConfigurationError,
    RunnerExternalDependencyFailure,
    RunnerInterrupted,
}

impl FailureReason {
    /// The name GitLab expects.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ImagePullFailure => "image_pull_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::RunnerConfigurationError => "runner_configuration_error",
            FailureReason::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            FailureReason::RunnerInterrupted => "runner_interrupted",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every script step succeeded.
    Success,
    /// The job failed; `message` is also in the trace.
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
        message: String,
    },
    /// Canceled through the token; `after_script` has run.
    Canceled,
}

/// Per-runner settings that are not in `[runners.kubernetes]`.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The runner's token (only its first 8 characters are used, in names and labels).
    pub runner_short_token: String,
    /// First delay of the API retry backoff (doubling, capped at 2 s, 5 attempts).
    pub retry_base: Duration,
    /// How long service ports may take to accept connections before the job goes on
    /// with a warning (GitLab's `wait_for_services_timeout`, 30 s by default).
    pub services_timeout: Duration,
}

impl ExecutorOptions {
    /// Options for a runner; only the first 8 characters of `runner_token` are kept.
    pub fn new(runner_token: &str) -> Self {
        ExecutorOptions {
            runner_short_token: runner_token.chars().take(8).collect(),
            retry_base: Duration::from_millis(200),
            services_timeout: Duration::from_secs(30),
        }
    }
}

/// One job to run.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub payload: &'a JobPayload,
    /// `CI_CONCURRENT_ID`.
    pub concurrent_id: u32,
    /// The job's URL in GitLab (an annotation), may be empty.
    pub job_url: String,
    /// Scripts the helper container runs before the build steps (sources, caches,
    /// artifacts), in order; the first failure with a reason ends the job.
    pub before_steps: Vec<HelperStep>,
    /// Scripts the helper container runs after the build steps and `after_script`
    /// (save caches, upload artifacts), each when its `when` matches the job's result.
    pub after_steps: Vec<HelperStep>,
    /// The helper container's environment for those scripts (secrets via the Secret).
    pub helper_env: Vec<HelperEnv>,
}

impl<'a> Job<'a> {
    /// A job in slot 0 with no URL.
    pub fn new(payload: &'a JobPayload) -> Self {
        Job {
            payload,
            concurrent_id: 0,
            job_url: String::new(),
            before_steps: Vec::new(),
            after_steps: Vec::new(),
            helper_env: Vec::new(),
        }
    }
}

/// Runs jobs as Pods through one `kube::Client`; cheap to share.
#[derive(Clone)]
pub struct KubernetesExecutor {
    client: kube::Client,
    config: Arc<KubernetesConfig>,
    options: ExecutorOptions,
}

/// The latest known state of the job's Pod, published by the watch task.
#[derive(Debug, Clone, Default)]
struct PodView {
    pod: Option<Pod>,
    deleted: bool,
    /// The watch could not be re-established.
    error: Option<String>,
}

/// Why the job stopped early (not a step's own exit code).
#[derive(Debug)]
enum Stop {
    Failed(FailureReason, String),
    Canceled,
    Timeout,
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        // No /dev/urandom: a hash of the time and process is still unique enough.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let mut v = h.finish();
        for b in bytes.iter_mut() {
            *b = (v & 0xff) as u8;
            v = v.rotate_right(8);
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        kube::Error::UpgradeConnection(u) => {
            let s = u.to_string();
            s.contains("500")
                || s.contains("503")
                || s.contains("429")
                || s.contains("502")
                || s.contains("504")
        }
        _ => false,
    }
}

/// An API error as a user reads it: the server's message, not the whole Status.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Retries transient API errors (429, 5xx, connection failures) with a doubling backoff
/// capped at 2 s, 5 attempts, as GitLab Runner does.
async fn retry<T, F, Fut>(base: Duration, mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = base;
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 5 && is_transient(&e) => {
                tracing::debug!(attempt, error = %e, "transient Kubernetes API error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn container<'p>(pod: &'p Pod, name: &str) -> Option<&'p ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

fn is_running(pod: &Pod, name: &str) -> bool {
    container(pod, name)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

fn terminated(pod: &Pod, name: &str) -> Option<i32> {
    container(pod, name)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// A start failure visible in the Pod's status.
fn start_failure(pod: &Pod) -> Option<(FailureReason, String)> {
    let st = pod.status.as_ref()?;
    if st.phase.as_deref() == Some("Failed") {
        let why = st.reason.clone().unwrap_or_default();
        if why == "DeadlineExceeded" {
            return Some((
                FailureReason::JobExecutionTimeout,
                "the Pod exceeded its activeDeadlineSeconds".into(),
            ));
        }
        return Some((
            FailureReason::RunnerSystemFailure,
            format!(
                "the Pod failed before the job started: {} {}",
                why,
                st.message.clone().unwrap_or_default()
            ),
        ));
    }
    for c in st.container_statuses.iter().flatten() {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            if (c.name == BUILD_CONTAINER || c.name == HELPER_CONTAINER)
                && let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref())
            {
                return Some((
                    FailureReason::RunnerSystemFailure,
                    format!(
                        "container {:?} ended before the job started (exit code {}, {})",
                        c.name,
                        t.exit_code,
                        t.reason.clone().unwrap_or_default()
                    ),
                ));
            }
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or("");
        let message = w.message.clone().unwrap_or_default();
        match reason {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some((
                    FailureReason::ImagePullFailure,
                    format!(
                        "failed to pull image {:?} for container {:?}: {reason}: {message}",
                        c.image, c.name
                    ),
                ));
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some((
                    FailureReason::RunnerSystemFailure,
                    format!("container {:?} cannot start: {reason}: {message}", c.name),
                ));
            }
            _ => {}
        }
    }
    None
}

/// How long one send of a detached launcher may take (exec, write, the shell's
/// confirmation) before the connection counts as stalled and the launcher is sent again.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a detached launcher is sent when its connection keeps dropping.
const LAUNCH_SENDS: u32 = 3;

/// Marker an exec'd launcher prints on its stdout when the script `name` starts
/// (`start`) or when a repeated send finds it already started (`skip`).
fn launch_marker(kind: &str, nonce: &str, name: &str) -> String {
    format!("podci-launch-{kind}:{nonce}:{name}")
}

/// Text for the stdin of an exec'd `sh` (the exec strategy's build steps, and helper
/// steps) that starts `body` detached from the exec, exactly once however often it is
/// sent, with its output appended to the job's log file.
///
/// Why detached: the exec's process group ends with its connection, and a connection
/// may drop mid-step; the script must outlive it, its output must land in the log file
/// (read back with offsets by [`LogReader`]) and its exit code in an end marker there.
/// So, as in [`attach_launcher`]:
/// - `extra_files` and the launch file `<scripts>/<name>.<send>` are written by
///   here-documents whose delimiter carries the job's random nonce, so no line of a
///   script can end them early; the file name differs per send, so a connection cut
///   half-way through one send never leaves a truncated file that a later send runs;
/// - the launch file claims the step with a noclobber-created `<name>.started` file and
///   prints the start marker on the exec's stdout, or the skip marker when an earlier
///   send already started it: the executor learns that the launcher ran, and a resend
///   after a dropped connection never runs the script twice;
/// - the script runs under `setsid` (its own session, so it survives the exec), its pid
///   in `<name>.pid` (for cancel), and the exec's shell waits for that pid file and
///   exits: nothing keeps the exec open, and nothing depends on closing its stdin.
fn detached_launcher(
    jp: &JobPod,
    name: &str,
    send: u32,
    body: &str,
    nonce: &str,
    extra_files: &[(String, &str)],
) -> String {
    let q = podci_model::script::quote;
    let base = format!("{}/{name}", jp.scripts_dir);
    let launch = q(&format!("{base}.{send}"));
    let pid = q(&format!("{base}.pid"));
    let delim = format!("PODCI_D_{}_{send}", nonce.replace('-', "_"));
    let mut text = String::new();
    // Scripts may hold commands worth hiding from other users of the node: owner only.
    text.push_str("[ -n \"$podci_um\" ] || podci_um=$(umask); umask 077\n");
    for (path, content) in extra_files {
        text.push_str(&format!("cat > {} <<'{delim}'\n{content}", q(path)));
        if !content.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&delim);
        text.push('\n');
    }
    text.push_str(&format!("cat > {launch} <<'{delim}'\n"));
    text.push_str(&format!(
        "set -C; if true 2>/dev/null > {started}; then set +C; echo {start}; else echo {skip}; exit 0; fi\n",
        started = q(&format!("{base}.started")),
        start = launch_marker("start", nonce, name),
        skip = launch_marker("skip", nonce, name),
    ));
    text.push_str(&format!(
        "[ -d {bd} ] || mkdir -p {bd} 2>/dev/null; exec </dev/null >> {log} 2>&1\necho $$ > {pid}\n",
        bd = q(&jp.build_dir),
        log = q(&jp.log_file()),
    ));
    text.push_str(body);
    if !body.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&delim);
    text.push('\n');
    text.push_str(&format!(
        "umask $podci_um\nif command -v setsid >/dev/null 2>&1; then setsid sh {launch} </dev/null & else sh {launch} </dev/null & fi\n"
    ));
    // `sleep 0.01` is not POSIX; where it fails, `sleep 1` paces the loop.
    text.push_str(&format!(
        "i=0; while [ ! -s {pid} ] && [ $i -lt 3000 ]; do sleep 0.01 2>/dev/null || sleep 1; i=$((i+1)); done\nexit 0\n"
    ));
    text
}

/// What one send of a detached launcher came to.
enum Launch {
    /// The start or skip marker arrived: the script runs (or ran).
    Started,
    /// The connection dropped or stalled before the marker: send again.
    Dropped(String),
    /// The shell ended by itself without starting the script: sending again would not help.
    Ended(String),
}

/// Sends a detached launcher (one text per send, see [`detached_launcher`]) through an
/// exec of `sh` in `container`, again after a dropped connection, until the shell
/// confirms the start. Owns everything it uses, so it runs alongside the log reader.
async fn launch_detached(
    pods: Api<Pod>,
    pod: String,
    container: &'static str,
    texts: Vec<String>,
    markers: [String; 2],
    what: String,
    base: Duration,
) -> Result<(), Stop> {
    let mut last = String::new();
    for (send, text) in texts.iter().enumerate() {
        if send > 0 {
            tokio::time::sleep(base * send as u32).await;
        }
        match launch_once(&pods, &pod, container, text, &markers, base).await {
            Launch::Started => return Ok(()),
            Launch::Dropped(why) => {
                tracing::debug!(send, %why, "the launcher's connection dropped; sending it again");
                last = why;
            }
            Launch::Ended(why) => {
                return Err(Stop::Failed(
                    FailureReason::RunnerSystemFailure,
                    format!("cannot start {what}: {why}"),
                ));
            }
        }
    }
    Err(Stop::Failed(
        FailureReason::RunnerSystemFailure,
        format!("cannot start {what}: the connection to the {container} container keeps dropping ({last})"),
    ))
}

/// One send: writes `text` to the exec's stdin while reading its stdout for the markers
/// and waiting for its status, all at once. The write never blocks the rest: kube's stdin
/// is a bounded in-memory pipe that stays open when its connection task ends, so a
/// write to a shell that exited without reading would otherwise wait forever.
async fn launch_once(
    pods: &Api<Pod>,
    pod: &str,
    container: &'static str,
    text: &str,
    markers: &[String; 2],
    base: Duration,
) -> Launch {
    let ap = AttachParams::default()
        .container(container)
        .stdin(true)
        .stdout(true)
        .stderr(false);
    let mut p = match retry(base, || pods.exec(pod, ["sh"], &ap)).await {
        Ok(p) => p,
        Err(e) if is_transient(&e) => return Launch::Dropped(api_error(&e)),
        Err(e) => {
            return Launch::Ended(format!(
                "cannot exec sh in the {container} container: {}",
                api_error(&e)
            ));
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(status)) = (p.stdin(), p.stdout(), p.take_status()) else {
        p.abort();
        return Launch::Ended("the exec gave no stdin, stdout or status".into());
    };
    let result = {
        let mut status = std::pin::pin!(status);
        let mut write = std::pin::pin!(async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.flush().await
        });
        let deadline = tokio::time::sleep(LAUNCH_TIMEOUT);
        let mut deadline = std::pin::pin!(deadline);
        let mut written = false;
        let mut seen = false;
        let mut stdout_open = true;
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                // Output first: what the shell printed before its status is read first.
                biased;
                r = stdout.read(&mut buf), if stdout_open => match r {
                    Ok(n) if n > 0 => {
                        tail.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&tail);
                        if markers.iter().any(|m| text.contains(m.as_str())) {
                            seen = true;
                        }
                        let keep = 256.min(tail.len());
                        tail.drain(..tail.len() - keep);
                    }
                    _ => stdout_open = false,
                },
                r = &mut write, if !written => {
                    written = true;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "writing the launcher failed; waiting for the exec's end");
                    }
                }
                st = &mut status => {
                    break if seen {
                        Launch::Started
                    } else {
                        match st {
                            Some(st) => Launch::Ended(format!(
                                "the shell in the {container} container ended ({}) before it started the script{}",
                                match exec_exit_code(&st) {
                                    Some(c) => format!("exit code {c}"),
                                    None => st.message.clone().unwrap_or_else(|| "no exit code".into()),
                                },
                                if written { "" } else { ", without reading all of it" }
                            )),
                            None => Launch::Dropped("the connection ended before the shell confirmed the start".into()),
                        }
                    };
                }
                _ = &mut deadline => {
                    break if seen {
                        Launch::Started
                    } else {
                        Launch::Dropped(format!("no confirmation within {} s", LAUNCH_TIMEOUT.as_secs()))
                    };
                }
            }
        }
    };
    // Abort first: the socket goes away without a CLOSE signal for stdin.
    p.abort();
    drop(stdin);
    result
}

/// Polls an optional launch; pending forever once it is done (or when there is none).
async fn poll_launch(
    launch: &mut Option<futures::future::BoxFuture<'static, Result<(), Stop>>>,
) -> Result<(), Stop> {
    match launch.as_mut() {
        Some(f) => f.await,
        None => futures::future::pending().await,
    }
}

impl KubernetesExecutor {
    /// An executor for the given configuration.
    pub fn new(client: kube::Client, config: KubernetesConfig, options: ExecutorOptions) -> Self {
        KubernetesExecutor {
            client,
            config: Arc::new(config),
            options,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    /// Runs one job to its end and cleans up. Never panics on API or job behaviour: every
    /// problem becomes an [`Outcome::Failed`] with its reason and a line in the trace.
    pub async fn run(&self, job: &Job<'_>, sink: &mut dyn TraceSink, cancel: CancellationToken) -> Outcome {
        let payload = job.payload;
        let mut masker = Masker::for_job(payload);
        let now = jiff::Timestamp::now();
        let params = PodParams {
            runner_short_token: self.options.runner_short_token.clone(),
            concurrent_id: job.concurrent_id,
            suffix: random_suffix(8),
            now_unix: now.as_second(),
            job_url: job.job_url.clone(),
        };
        let mut jp = match build_pod(&self.config, payload, &params) {
            Ok(jp) => jp,
            Err(e) => {
                let msg = format!("ERROR: {e}");
                emit(sink, &mut masker, &format!("\x1b[31;1m{msg}\x1b[0;m\n"));
                sink.write(&masker.finish());
                return Outcome::Failed {
                    reason: FailureReason::RunnerConfigurationError,
                    exit_code: None,
                    message: e.to_string(),
                };
            }
        };
        if !job.helper_env.is_empty() || !job.before_steps.is_empty() || !job.after_steps.is_empty() {
            add_helper_env(&mut jp, &job.helper_env);
        }
        for w in &jp.warnings {
            emit(sink, &mut masker, &format!("\x1b[0;33mWARNING: {w}\x1b[0;m\n"));
        }
        emit(
            sink,
            &mut masker,
            &format!(
                "Using Kubernetes executor with image {} ...\nUsing Kubernetes namespace: {}\n",
                jp.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
                jp.namespace
            ),
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &jp.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &jp.namespace);
        let mut run = JobRun {
            exec: self,
            jp: &jp,
            pods: pods.clone(),
            masker,
            nonce: random_suffix(24),
            attach: None,
            log: None,
            before_steps: &job.before_steps,
            after_steps: &job.after_steps,
            sends: Default::default(),
            marker_buf: Vec::new(),
            helper_seq: 0,
        };
        let result = run.run_inner(payload, sink, &cancel, &secrets).await;
        // Cleanup, bounded; it runs whatever happened above (also after a cancel).
        if let Some(a) = run.attach.take() {
            a.close();
        }
        if let Some(l) = run.log.take() {
            l.close();
        }
        let cleanup = self.cleanup(&pods, &secrets, &jp);
        if tokio::time::timeout(self.config.cleanup_timeout(), cleanup)
            .await
            .is_err()
        {
            emit(
                sink,
                &mut run.masker,
                &format!(
                    "\x1b[0;33mWARNING: cleanup of Pod {} did not finish within cleanup_resources_timeout; the orphan sweeper will remove it\x1b[0;m\n",
                    jp.name
                ),
            );
        }
        let outcome = match result {
            Ok(None) => {
                emit(sink, &mut run.masker, "\x1b[32;1mJob succeeded\x1b[0;m\n");
                Outcome::Success
            }
            Ok(Some(code)) => {
                let message = format!("command terminated with exit code {code}");
                emit(
                    sink,
                    &mut run.masker,
                    &format!("\x1b[31;1mERROR: Job failed: {message}\x1b[0;m\n"),
                );
                Outcome::Failed {
                    reason: FailureReason::ScriptFailure,
                    exit_code: Some(code),
                    message,
                }
            }
            Err(Stop::Canceled) => {
                emit(
                    sink,
                    &mut run.masker,
                    "\x1b[31;1mERROR: Job failed: canceled\x1b[0;m\n",
                );
                Outcome::Canceled
            }
            Err(Stop::Timeout) => {
                let message = format!(
                    "execution took longer than {}s seconds",
                    payload.runner_info.timeout
                );
                emit(
                    sink,
                    &mut run.masker,
                    &format!("\x1b[31;1mERROR: Job failed: {message}\x1b[0;m\n"),
                );
                Outcome::Failed {
                    reason: FailureReason::JobExecutionTimeout,
                    exit_code: None,
                    message,
                }
            }
            Err(Stop::Failed(reason, message)) => {
                emit(
                    sink,
                    &mut run.masker,
                    &format!(
                        "\x1b[31;1mERROR: Job failed ({}): {message}\x1b[0;m\n",
                        reason.as_str()
                    ),
                );
                Outcome::Failed {
                    reason,
                    exit_code: None,
                    message,
                }
            }
        };
        sink.write(&run.masker.finish());
        outcome
    }

    async fn cleanup(&self, pods: &Api<Pod>, secrets: &Api<Secret>, jp: &JobPod) {
        let dp = DeleteParams {
            grace_period_seconds: Some(self.config.cleanup_grace_period_seconds.unwrap_or(0).max(0) as u32),
            ..Default::default()
        };
        let base = self.options.retry_base;
        // Pod and Secret go at once: two independent round trips.
        let pod = async {
            if let Err(e) = retry(base, || pods.delete(&jp.name, &dp)).await
                && !is_not_found(&e)
            {
                tracing::warn!(pod = %jp.name, error = %e, "cannot delete the job Pod");
            }
        };
        let secret = async {
            if let Some(name) = jp.secret.as_ref().and_then(|s| s.metadata.name.clone())
                && let Err(e) = retry(base, || secrets.delete(&name, &dp)).await
                && !is_not_found(&e)
            {
                tracing::warn!(secret = %name, error = %e, "cannot delete the job Secret");
            }
        };
        tokio::join!(pod, secret);
    }
}

fn emit(sink: &mut dyn TraceSink, masker: &mut Masker, text: &str) {
    let out = masker.write(text.as_bytes());
    sink.write(&out);
}

/// State of one running job.
struct JobRun<'e> {
    exec: &'e KubernetesExecutor,
    jp: &'e JobPod,
    pods: Api<Pod>,
    masker: Masker,
    nonce: String,
    attach: Option<Attached>,
    log: Option<LogReader>,
    /// Helper scripts around the build steps (see [`Job::before_steps`]).
    before_steps: &'e [HelperStep],
    after_steps: &'e [HelperStep],
    /// Launcher sends so far per step (each gets its own here-document delimiter).
    sends: std::collections::HashMap<usize, u32>,
    /// The tail of the attach's stdout, for markers split across reads.
    marker_buf: Vec<u8>,
    /// Helper steps started so far (each gets its own files and end-marker nonce).
    helper_seq: u32,
}

/// An open attach to the build shell: the process, its stdin writer (kept: dropping it
/// alone would close the shell's stdin through the v5 CLOSE signal and end the build
/// container) and a future that completes when the connection's task has ended.
struct Attached {
    process: AttachedProcess,
    stdin: tokio::io::WriteHalf<tokio::io::SimplexStream>,
    /// The shell's stdout: only podci's start/skip markers are printed there (a step's
    /// own output goes to the log file). Read continuously so kube's task never blocks.
    stdout: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>,
    ended: futures::future::BoxFuture<'static, ()>,
    /// `ended` has completed (it must not be polled again).
    is_ended: bool,
}

/// What an open attach reported.
enum AttachEvent {
    /// `n` bytes of the shell's stdout are in the buffer.
    Output(usize),
    /// The connection is gone.
    Ended,
}

/// The next event of the attach; pending forever when there is none.
async fn attach_event(a: Option<&mut Attached>, buf: &mut [u8]) -> AttachEvent {
    let Some(a) = a else {
        return futures::future::pending().await;
    };
    loop {
        if a.is_ended {
            return AttachEvent::Ended;
        }
        match a.stdout.as_mut() {
            Some(out) => tokio::select! {
                biased;
                r = out.read(buf) => match r {
                    Ok(n) if n > 0 => return AttachEvent::Output(n),
                    _ => a.stdout = None,
                },
                _ = &mut a.ended => a.is_ended = true,
            },
            None => {
                (&mut a.ended).await;
                a.is_ended = true;
            }
        }
    }
}

/// Opens an attach to the build container's shell: stdin to start steps, stdout for the
/// launcher's markers.
async fn open_attach(pods: &Api<Pod>, name: &str, base: Duration) -> Result<Attached, kube::Error> {
    // kube cuts stdin into frames of at most its pipe size (1 KiB by default) and the
    // 4 KiB its reader takes at once. A larger pipe lets a launcher of up to 4 KiB go out
    // as one WebSocket frame: one TCP segment, never held back by Nagle's algorithm
    // waiting for the server's (delayed) acknowledgement of the previous frame.
    let ap = AttachParams::default()
        .container(BUILD_CONTAINER)
        .stdin(true)
        .stdout(true)
        .stderr(false)
        .max_stdin_buf_size(64 * 1024);
    let mut process = retry(base, || pods.attach(name, &ap)).await?;
    let (Some(stdin), Some(status)) = (process.stdin(), process.take_status()) else {
        process.abort();
        return Err(kube::Error::Service("attach gave no stdin".into()));
    };
    let stdout = process.stdout();
    let ended: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
        let _ = status.await;
    });
    Ok(Attached {
        process,
        stdin,
        stdout,
        ended,
        is_ended: false,
    })
}

/// The marker the attach launcher prints on the shell's stdout when step `index` starts
/// (`start`) or when a repeated launcher finds it already started (`skip`).
fn start_marker(kind: &str, nonce: &str, index: usize) -> String {
    format!("podci-step-{kind}:{nonce}:{index}")
}

/// Heredoc delimiter of one send of a step's launcher; unique per send.
fn attach_delimiter(nonce: &str, index: usize, send: u32) -> String {
    format!("PODCI_L_{}_{index}_{send}", nonce.replace('-', "_"))
}

/// Text for the build shell's stdin (attach strategy) that starts step `index` exactly
/// once, however the connection drops while it is sent.
///
/// One process per step: the build shell starts `sh -s` with the step script as a
/// here-document, and that shell claims the step, sends its own output to the log file
/// and prints the end marker itself (the script's last line), as GitLab Runner's attach
/// strategy does; no launch file is written by `cat` and no extra processes run.
///
/// kube sends stdin in frames, and a dropped connection delivers some leading frames
/// of a text and loses the rest; the shell would then hold a half-read here-document, and
/// blindly resending could run a step twice or run a truncated script. So:
/// - the launcher is one here-document (`sh -s <<'DELIM'`, on the first line, which
///   always travels in the first frame) whose delimiter is unique per send;
/// - its whole content is one `{ ... }` group, which the shell parses completely before
///   it runs any of it: a here-document cut anywhere before the closing brace is a
///   syntax error, so a truncated script never runs a single command;
/// - a repeated send starts with the previous send's delimiter on a line of its own,
///   which ends that send's here-document if it was cut inside it, or is a harmless
///   unknown command if the previous send arrived whole;
/// - the group claims the step with a noclobber-created `.started` file, so a second
///   copy that does arrive prints the skip marker and exits instead of running again;
/// - the start/skip marker on the shell's stdout tells the executor the launcher ran.
///
/// The script never touches a file of its own: the shell keeps the here-document in a
/// pipe or a private temporary file, so no umask juggling is needed to keep it secret.
fn attach_launcher(jp: &JobPod, index: usize, send: u32, script: &str, nonce: &str) -> String {
    let file = format!("{}/step_{index}", jp.scripts_dir);
    let q = podci_model::script::quote;
    let delim = attach_delimiter(nonce, index, send);
    let mut text = String::new();
    if send > 0 {
        text.push('\n');
        text.push_str(&attach_delimiter(nonce, index, send - 1));
        text.push('\n');
    }
    text.push_str(&format!("sh -s <<'{delim}'\n{{\n"));
    text.push_str(&format!(
        // `true` (a regular builtin: a failed redirection does not end the shell, and no
        // subshell is forked) creates the claim file only if it does not exist yet.
        "set -C; if true 2>/dev/null > {started}; then set +C; echo {start}; else echo {skip}; exit 0; fi\n",
        started = q(&format!("{file}.started")),
        start = start_marker("start", nonce, index),
        skip = start_marker("skip", nonce, index),
    ));
    text.push_str(&format!(
        "[ -d {bd} ] || mkdir -p {bd} 2>/dev/null; exec </dev/null >> {log} 2>&1\necho $$ > {pid}\n",
        bd = q(&jp.build_dir),
        log = q(&jp.log_file()),
        pid = q(&format!("{file}.pid")),
    ));
    text.push_str(script);
    if !script.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("}\n");
    text.push_str(&delim);
    text.push('\n');
    text
}

impl Attached {
    fn close(self) {
        // Abort first: the socket goes away without a CLOSE signal for stdin.
        self.process.abort();
        drop(self.stdin);
    }

    /// Whether the connection is known to be gone (a write would vanish unsent).
    fn is_dead(&mut self) -> bool {
        use futures::FutureExt;
        if !self.is_ended && (&mut self.ended).now_or_never().is_some() {
            self.is_ended = true;
        }
        self.is_ended
    }
}

impl JobRun<'_> {
    fn base(&self) -> Duration {
        self.exec.options.retry_base
    }

    /// `Ok(None)`: all steps passed; `Ok(Some(code))`: a script step failed.
    async fn run_inner(
        &mut self,
        payload: &JobPayload,
        sink: &mut dyn TraceSink,
        cancel: &CancellationToken,
        secrets: &Api<Secret>,
    ) -> Result<Option<i32>, Stop> {
        let base = self.base();
        let jp = self.jp;
        let sys = |what: &str, e: kube::Error| {
            Stop::Failed(
                FailureReason::RunnerSystemFailure,
                format!("{what}: {}", api_error(&e)),
            )
        };
        // 1. Secret, then Pod.
        let pp = PostParams::default();
        if let Some(secret) = &jp.secret {
            retry(base, || secrets.create(&pp, secret))
                .await
                .map_err(|e| sys("cannot create the job Secret", e))?;
        }
        let created = match retry(base, || self.pods.create(&pp, &jp.pod)).await {
            Ok(p) => p,
            Err(e) => {
                let reason = if matches!(&e, kube::Error::Api(s) if s.code == 403 || s.code == 422) {
                    FailureReason::RunnerConfigurationError
                } else {
                    FailureReason::RunnerSystemFailure
                };
                return Err(Stop::Failed(
                    reason,
                    format!("cannot create Pod {}: {}", jp.name, api_error(&e)),
                ));
            }
        };
        let owner_uid = created.metadata.uid.clone();
        let rv = created.metadata.resource_version.clone().unwrap_or_default();
        let (view_tx, mut view) = watch::channel(PodView {
            pod: Some(created),
            ..Default::default()
        });
        let watcher = tokio::spawn(watch_pod(self.pods.clone(), jp.name.clone(), rv, view_tx, base));
        let _abort = AbortOnDrop(watcher);
        emit(
            sink,
            &mut self.masker,
            &format!("Waiting for pod {}/{} to be running...\n", jp.namespace, jp.name),
        );

        // The Secret is owned by the Pod, so the garbage collector removes it with the Pod
        // even if this runner dies before its cleanup. Not needed to run the job, so it
        // goes while the Pod starts instead of before.
        let owner = async {
            if let (Some(secret), Some(uid)) = (&jp.secret, owner_uid) {
                let name = secret.metadata.name.clone().unwrap_or_default();
                let patch = serde_json::json!({"metadata": {"ownerReferences": [{
                    "apiVersion": "v1", "kind": "Pod", "name": jp.name, "uid": uid
                }]}});
                let patch = Patch::Merge(&patch);
                let patch_params = PatchParams::default();
                retry(base, || secrets.patch(&name, &patch_params, &patch))
                    .await
                    .map_err(|e| sys("cannot set the job Secret's owner", e))?;
            }
            Ok::<(), Stop>(())
        };
        let job_deadline = (payload.runner_info.timeout > 0)
            .then(|| tokio::time::Instant::now() + Duration::from_secs(payload.runner_info.timeout));

        // 2. Wait for the build and helper containers to run, then for the services.
        let (owned, running) = tokio::join!(owner, self.wait_running(&mut view, cancel, job_deadline));
        running?;
        owned?;
        self.wait_services(sink, &mut view, cancel, job_deadline).await?;
        emit(
            sink,
            &mut self.masker,
            &format!("Running on {} via podci-k8s...\n", jp.name),
        );

        // 3a. Helper steps before the build steps (sources, caches, artifacts).
        for h in self.before_steps {
            self.run_helper(h, sink, &mut view, cancel, job_deadline).await?;
        }

        // 3. Steps.
        let mut failed: Option<i32> = None;
        let mut stop: Option<Stop> = None;
        let steps: Vec<&Step> = payload
            .steps
            .iter()
            .filter(|s| s.name != "after_script")
            .collect();
        for (i, step) in steps.iter().enumerate() {
            let ok = failed.is_none() && stop.is_none();
            let run = match step.when.as_str() {
                "always" => true,
                "on_failure" => !ok,
                _ => ok,
            };
            if !run || stop.is_some() {
                continue;
            }
            match self
                .run_step(payload, step, i, None, sink, &mut view, cancel, job_deadline)
                .await
            {
                Ok(0) => {}
                Ok(code) => {
                    if !step.allow_failure {
                        failed = Some(code);
                    }
                }
                Err(s) => stop = Some(s),
            }
        }
        // 4. after_script after success, failure, cancel or timeout (not when the Pod is gone).
        if let Some(after) = payload
            .steps
            .iter()
            .find(|s| s.name == "after_script" && !s.script.is_empty())
        {
            let status = match (&stop, failed) {
                (Some(Stop::Canceled), _) => Some(JobStatus::Canceled),
                (Some(Stop::Timeout), _) | (None, Some(_)) => Some(JobStatus::Failed),
                (None, None) => Some(JobStatus::Success),
                (Some(Stop::Failed(..)), _) => None,
            };
            if let Some(status) = status {
                // after_script gets its own time budget, like GitLab's (5 min default).
                let budget = Duration::from_secs(if after.timeout > 0 { after.timeout } else { 300 });
                let deadline = Some(tokio::time::Instant::now() + budget);
                let after_cancel = CancellationToken::new();
                let r = self
                    .run_step(
                        payload,
                        after,
                        steps.len(),
                        Some(status),
                        sink,
                        &mut view,
                        &after_cancel,
                        deadline,
                    )
                    .await;
                if let Err(Stop::Failed(_, m)) = r {
                    emit(
                        sink,
                        &mut self.masker,
                        &format!("\x1b[0;33mWARNING: after_script failed: {m}\x1b[0;m\n"),
                    );
                }
            }
        }
        // 5. Helper steps after the job (save caches, upload artifacts); a timed-out job
        // counts as failed, as in GitLab Runner. Not after a cancel or a lost Pod.
        if matches!(stop, None | Some(Stop::Timeout)) {
            let succeeded = failed.is_none() && stop.is_none();
            // They get their own time budget: the job's may be spent.
            let deadline = Some(
                job_deadline
                    .filter(|d| *d > tokio::time::Instant::now() + Duration::from_secs(60))
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(600)),
            );
            let after_cancel = CancellationToken::new();
            for h in self.after_steps.iter().filter(|h| h.when.matches(succeeded)) {
                if let Err(s) = self.run_helper(h, sink, &mut view, &after_cancel, deadline).await
                    && failed.is_none()
                    && stop.is_none()
                {
                    stop = Some(s);
                }
            }
        }
        match stop {
            Some(s) => Err(s),
            None => Ok(failed),
        }
    }

    /// The launch of script `name` (see [`detached_launcher`]) in `container`: one text
    /// per send, run alongside the log reading.
    fn launch_future(
        &self,
        container: &'static str,
        name: &str,
        body: &str,
        extra_files: &[(String, &str)],
        what: String,
    ) -> futures::future::BoxFuture<'static, Result<(), Stop>> {
        let texts = (0..LAUNCH_SENDS)
            .map(|send| detached_launcher(self.jp, name, send, body, &self.nonce, extra_files))
            .collect();
        let markers = [
            launch_marker("start", &self.nonce, name),
            launch_marker("skip", &self.nonce, name),
        ];
        Box::pin(launch_detached(
            self.pods.clone(),
            self.jp.name.clone(),
            container,
            texts,
            markers,
            what,
            self.base(),
        ))
    }

    /// Runs one helper script in the helper container as build steps run: started
    /// detached through `pods/exec` (see [`detached_launcher`]), its output (stderr
    /// joined to stdout) appended to the job's log file and read back with offsets by the
    /// job's [`LogReader`], its exit code from an end marker in that log. A dropped
    /// connection therefore loses and repeats no byte and leaves the outcome known. A
    /// failure is a warning or, when the step names a reason, the job's failure.
    async fn run_helper(
        &mut self,
        h: &HelperStep,
        sink: &mut dyn TraceSink,
        view: &mut watch::Receiver<PodView>,
        cancel: &CancellationToken,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Stop> {
        if !h.title.is_empty() {
            emit(
                sink,
                &mut self.masker,
                &format!("\x1b[32;1m{}\x1b[0;m\n", h.title),
            );
        }
        self.open_streams().await?;
        let seq = self.helper_seq;
        self.helper_seq += 1;
        let name = format!("helper_{seq}");
        // The script runs from its own file, so that a syntax error in it ends that `sh`
        // and the end marker still follows. The marker's nonce is the helper's own: a
        // late marker of a killed build step cannot end a helper step.
        let marker_nonce = format!("{}-h{seq}", self.nonce);
        let q = podci_model::script::quote;
        let script_file = format!("{}/{name}.sh", self.jp.scripts_dir);
        let body = format!(
            "sh {file}\n__podci_rc=$?\nprintf '\\n%s%s:%s\\n' {prefix} {nonce} \"$__podci_rc\"\nexit \"$__podci_rc\"\n",
            file = q(&script_file),
            prefix = q(podci_model::script::STEP_END_PREFIX),
            nonce = q(&marker_nonce),
        );
        let mut launch = Some(self.launch_future(
            HELPER_CONTAINER,
            &name,
            &body,
            &[(script_file, h.script.as_str())],
            format!("the helper step {}", h.name),
        ));
        let mut scanner = StepEndScanner::new(&marker_nonce);
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let mut buf = vec![0u8; 64 * 1024];
        let code = loop {
            let Some(log) = self.log.as_mut() else {
                return Err(Stop::Failed(
                    FailureReason::RunnerSystemFailure,
                    "log reader missing".into(),
                ));
            };
            tokio::select! {
                r = log.read(&mut buf) => match r {
                    Ok(n) => {
                        let out = scanner.write(&buf[..n]);
                        let masked = self.masker.write(&out);
                        sink.write(&masked);
                        if let Some(code) = scanner.exit_code() {
                            let rest = scanner.finish();
                            let masked = self.masker.write(&rest);
                            sink.write(&masked);
                            break code;
                        }
                    }
                    Err(e) => {
                        return Err(Stop::Failed(
                            FailureReason::RunnerSystemFailure,
                            format!("lost the output of the helper step {}: {e}", h.name),
                        ));
                    }
                },
                r = poll_launch(&mut launch) => {
                    launch = None;
                    r?;
                }
                r = view.changed() => {
                    if r.is_err() {
                        return Err(Stop::Failed(FailureReason::RunnerSystemFailure, "the Pod watch ended".into()));
                    }
                    if let Some(s) = self.pod_gone(view) {
                        if let Some(log) = self.log.as_mut() {
                            let tail = log.drain(Duration::from_millis(300)).await;
                            let out = scanner.write(&tail);
                            let mut out = self.masker.write(&out);
                            out.extend(self.masker.write(&scanner.finish()));
                            sink.write(&out);
                        }
                        return Err(s);
                    }
                }
                _ = cancel.cancelled() => {
                    self.signal_detached(HELPER_CONTAINER, &name).await;
                    return Err(Stop::Canceled);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                    self.signal_detached(HELPER_CONTAINER, &name).await;
                    return Err(Stop::Timeout);
                }
            }
        };
        if code == 0 {
            return Ok(());
        }
        let what = format!("the helper step {} failed with exit code {code}", h.name);
        match h.failure {
            Some(reason) => Err(Stop::Failed(reason, what)),
            None => {
                emit(
                    sink,
                    &mut self.masker,
                    &format!("\x1b[0;33mWARNING: {what}\x1b[0;m\n"),
                );
                Ok(())
            }
        }
    }

    /// Sends TERM to the process group of a detached script (see [`detached_launcher`]:
    /// `setsid` makes its pid the group's id), or to the script alone without `setsid`.
    async fn signal_detached(&mut self, container: &'static str, name: &str) {
        let pid_file = format!("{}/{name}.pid", self.jp.scripts_dir);
        let kill = "p=$(cat \"$1\" 2>/dev/null) && [ -n \"$p\" ] && { kill -TERM -- \"-$p\" 2>/dev/null || kill -TERM \"$p\" 2>/dev/null; }; true";
        self.exec_signal(container, kill, pid_file).await;
    }

    /// Runs `sh -c KILL sh PID_FILE` in `container` and waits (bounded) for it to end:
    /// the one short exec that every cancel path sends. Failures are ignored: the Pod's
    /// deletion stops whatever the signal did not.
    async fn exec_signal(&mut self, container: &'static str, kill: &str, pid_file: String) {
        let ap = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(false);
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            kill.to_string(),
            "sh".to_string(),
            pid_file,
        ];
        if let Ok(mut p) = retry(self.base(), || self.pods.exec(&self.jp.name, cmd.clone(), &ap)).await {
            if let Some(st) = p.take_status() {
                let _ = tokio::time::timeout(Duration::from_secs(10), st).await;
            }
            p.abort();
        }
    }

    async fn wait_running(
        &mut self,
        view: &mut watch::Receiver<PodView>,
        cancel: &CancellationToken,
        job_deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Stop> {
        let poll_timeout = tokio::time::Instant::now() + Duration::from_secs(self.exec.config.poll_timeout);
        loop {
            {
                let v = view.borrow_and_update();
                if let Some(e) = &v.error {
                    return Err(Stop::Failed(FailureReason::RunnerSystemFailure, e.clone()));
                }
                if v.deleted {
                    return Err(Stop::Failed(
                        FailureReason::RunnerSystemFailure,
                        format!("Pod {} was deleted before the job started", self.jp.name),
                    ));
                }
                if let Some(p) = &v.pod {
                    if let Some((reason, msg)) = start_failure(p) {
                        return Err(Stop::Failed(reason, msg));
                    }
                    if is_running(p, BUILD_CONTAINER) && is_running(p, HELPER_CONTAINER) {
                        return Ok(());
                    }
                }
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
            tokio::select! {
                r = view.changed() => if r.is_err() {
                    return Err(Stop::Failed(FailureReason::RunnerSystemFailure, "the Pod watch ended".into()));
                },
                _ = cancel.cancelled() => return Err(Stop::Canceled),
                _ = tokio::time::sleep_until(job_deadline.unwrap_or(far)) => return Err(Stop::Timeout),
                _ = tokio::time::sleep_until(poll_timeout) => {
                    return Err(self.not_started_failure(view).await);
                }
            }
        }
    }

    /// Holds the first step until every service container runs and, where a service
    /// declares ports (`ports`, or GitLab's `HEALTHCHECK_TCP_PORT` variable), until they
    /// accept TCP connections from inside the Pod. A service that never runs fails the
    /// job like a Pod that does not start (`poll_timeout`, image pull errors); ports
    /// that stay closed past `services_timeout` get GitLab's "probably didn't start
    /// properly" warning and the job goes on, as GitLab Runner's health check does.
    async fn wait_services(
        &mut self,
        sink: &mut dyn TraceSink,
        view: &mut watch::Receiver<PodView>,
        cancel: &CancellationToken,
        job_deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Stop> {
        let services = service_containers(&self.jp.pod);
        if services.is_empty() {
            return Ok(());
        }
        let timeout = self.exec.options.services_timeout;
        emit(
            sink,
            &mut self.masker,
            &format!(
                "Waiting for services to be up and running (timeout {} seconds)...\n",
                timeout.as_secs()
            ),
        );
        let poll_timeout = tokio::time::Instant::now() + Duration::from_secs(self.exec.config.poll_timeout);
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let ended: Vec<(String, i32)>;
        loop {
            {
                let v = view.borrow_and_update();
                if let Some(e) = &v.error {
                    return Err(Stop::Failed(FailureReason::RunnerSystemFailure, e.clone()));
                }
                if v.deleted {
                    return Err(Stop::Failed(
                        FailureReason::RunnerSystemFailure,
                        format!("Pod {} was deleted before the job started", self.jp.name),
                    ));
                }
                if let Some(p) = &v.pod {
                    if let Some((reason, msg)) = start_failure(p) {
                        return Err(Stop::Failed(reason, msg));
                    }
                    let waiting = services
                        .iter()
                        .any(|(name, _)| !is_running(p, name) && terminated(p, name).is_none());
                    if !waiting {
                        ended = services
                            .iter()
                            .filter_map(|(name, _)| terminated(p, name).map(|code| (name.clone(), code)))
                            .collect();
                        break;
                    }
                }
            }
            tokio::select! {
                r = view.changed() => if r.is_err() {
                    return Err(Stop::Failed(FailureReason::RunnerSystemFailure, "the Pod watch ended".into()));
                },
                _ = cancel.cancelled() => return Err(Stop::Canceled),
                _ = tokio::time::sleep_until(job_deadline.unwrap_or(far)) => return Err(Stop::Timeout),
                _ = tokio::time::sleep_until(poll_timeout) => {
                    return Err(self.not_started_failure(view).await);
                }
            }
        }
        for (name, code) in &ended {
            emit(
                sink,
                &mut self.masker,
                &format!(
                    "\x1b[0;33m*** WARNING:\x1b[0;m Service {name} probably didn't start properly.\n\nHealth check error:\ncontainer {name} exited with code {code}\n\n"
                ),
            );
        }
        let ports: Vec<(String, u16)> = services
            .iter()
            .filter(|(name, _)| !ended.iter().any(|(n, _)| n == name))
            .flat_map(|(name, ports)| ports.iter().map(move |p| (name.clone(), *p)))
            .collect();
        if ports.is_empty() {
            if ended.len() < services.len() {
                emit(
                    sink,
                    &mut self.masker,
                    "Services are running; none declares a port (ports, HEALTHCHECK_TCP_PORT), so readiness beyond a running container is not checked\n",
                );
            }
            return Ok(());
        }
        let results = tokio::select! {
            r = self.probe_ports(&ports, timeout) => r,
            _ = cancel.cancelled() => return Err(Stop::Canceled),
            _ = tokio::time::sleep_until(job_deadline.unwrap_or(far)) => return Err(Stop::Timeout),
        };
        for (name, port) in &ports {
            let verdict = results.iter().find(|(p, _)| p == port).map(|(_, v)| v.as_str());
            if verdict == Some("ok") {
                continue;
            }
            let why = match verdict {
                Some("timeout") => format!(
                    "port {port} did not accept TCP connections within {} seconds",
                    timeout.as_secs()
                ),
                Some("notool") => {
                    format!("port {port} cannot be checked: the helper image has none of bash, nc or python3")
                }
                _ => format!("port {port} could not be checked"),
            };
            emit(
                sink,
                &mut self.masker,
                &format!(
                    "\x1b[0;33m*** WARNING:\x1b[0;m Service {name} probably didn't start properly.\n\nHealth check error:\n{why}\n\n"
                ),
            );
        }
        Ok(())
    }

    /// Checks from the helper container (the Pod's network namespace) that each port
    /// accepts a TCP connection on 127.0.0.1, all within `timeout`. Returns
    /// `(port, "ok" | "timeout" | "notool")`; an API failure returns what was learnt.
    async fn probe_ports(&mut self, ports: &[(String, u16)], timeout: Duration) -> Vec<(u16, String)> {
        let mut cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            PORT_PROBE_SCRIPT.to_string(),
            "sh".to_string(),
            timeout.as_secs().max(1).to_string(),
        ];
        let mut uniq: Vec<u16> = ports.iter().map(|(_, p)| *p).collect();
        uniq.sort_unstable();
        uniq.dedup();
        cmd.extend(uniq.iter().map(|p| p.to_string()));
        let ap = AttachParams::default()
            .container(HELPER_CONTAINER)
            .stdin(false)
            .stdout(true)
            .stderr(false);
        let mut out = Vec::new();
        match retry(self.base(), || self.pods.exec(&self.jp.name, cmd.clone(), &ap)).await {
            Ok(mut p) => {
                if let Some(mut stdout) = p.stdout() {
                    let _ =
                        tokio::time::timeout(timeout + Duration::from_secs(10), stdout.read_to_end(&mut out))
                            .await;
                }
                p.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot exec the service port check"),
        }
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| {
                let rest = l.trim().strip_prefix("podci-port:")?;
                let (port, verdict) = rest.split_once(':')?;
                Some((port.parse().ok()?, verdict.to_string()))
            })
            .collect()
    }

    /// The failure for a Pod that did not start within `poll_timeout`, quoting its events.
    async fn not_started_failure(&mut self, view: &watch::Receiver<PodView>) -> Stop {
        let events: Api<Event> = Api::namespaced(self.exec.client.clone(), &self.jp.namespace);
        let lp = ListParams::default().fields(&format!("involvedObject.name={}", self.jp.name));
        let quoted = match retry(self.base(), || events.list(&lp)).await {
            Ok(list) => list
                .items
                .iter()
                .map(|e| {
                    format!(
                        "{} {}: {}",
                        e.type_.as_deref().unwrap_or(""),
                        e.reason.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(events unavailable: {})", api_error(&e)),
        };
        let status = view
            .borrow()
            .pod
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| {
                c.iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
            .map(|c| {
                format!(
                    " ({}: {})",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        Stop::Failed(
            FailureReason::RunnerSystemFailure,
            format!(
                "timed out after poll_timeout = {}s waiting for Pod {} to start{status}; events: {}",
                self.exec.config.poll_timeout,
                self.jp.name,
                if quoted.is_empty() {
                    "none".to_string()
                } else {
                    quoted
                }
            ),
        )
    }

    /// Opens what a step needs and is not open yet: the log reader (once per job) and,
    /// with the attach strategy, the attach. Both at once: each is an API round trip and
    /// a process start in the Pod.
    async fn open_streams(&mut self) -> Result<(), Stop> {
        let base = self.base();
        if self.attach.as_mut().is_some_and(|a| a.is_dead())
            && let Some(a) = self.attach.take()
        {
            a.close();
        }
        let want_attach = self.exec.config.strategy == Strategy::Attach && self.attach.is_none();
        let want_log = self.log.is_none();
        let log_fut = async {
            if want_log {
                Some(
                    LogReader::open(
                        self.pods.clone(),
                        self.jp.name.clone(),
                        self.jp.log_file(),
                        base,
                        self.jp.build_dir.clone(),
                    )
                    .await,
                )
            } else {
                None
            }
        };
        let attach_fut = async {
            if want_attach {
                Some(open_attach(&self.pods, &self.jp.name, base).await)
            } else {
                None
            }
        };
        let (log, attach) = tokio::join!(log_fut, attach_fut);
        let mut failure = None;
        match log {
            Some(Ok(l)) => self.log = Some(l),
            Some(Err(e)) => failure = Some(format!("cannot read the job log: {}", api_error(&e))),
            None => {}
        }
        match attach {
            Some(Ok(a)) => self.attach = Some(a),
            Some(Err(e)) => {
                failure.get_or_insert(format!("cannot attach to the build container: {}", api_error(&e)));
            }
            None => {}
        }
        match failure {
            Some(m) => Err(Stop::Failed(FailureReason::RunnerSystemFailure, m)),
            None => Ok(()),
        }
    }

    /// Attach strategy: sends step `index`'s launcher as soon as the attach is open, while
    /// the log reader (once per job) is still being opened. The step need not wait for
    /// the reader: the reader starts at the file offset it has delivered up to (0 for a
    /// new job), so output written before it runs is still read, once.
    async fn start_attached(&mut self, index: usize, script: &str) -> Result<(), Stop> {
        let reader = if self.log.is_none() {
            Some(LogReader::open(
                self.pods.clone(),
                self.jp.name.clone(),
                self.jp.log_file(),
                self.base(),
                self.jp.build_dir.clone(),
            ))
        } else {
            None
        };
        let log_fut = async {
            match reader {
                Some(f) => Some(f.await),
                None => None,
            }
        };
        let (log, sent) = tokio::join!(log_fut, self.send_step(index, script));
        match log {
            Some(Ok(l)) => self.log = Some(l),
            Some(Err(e)) => {
                return Err(Stop::Failed(
                    FailureReason::RunnerSystemFailure,
                    format!("cannot read the job log: {}", api_error(&e)),
                ));
            }
            None => {}
        }
        sent
    }

    /// Sends step `index`'s launcher through the attach (opening one if needed); a
    /// failed write attaches again and sends again (see [`attach_launcher`]).
    async fn send_step(&mut self, index: usize, script: &str) -> Result<(), Stop> {
        for _ in 0..3 {
            if self.attach.as_mut().is_some_and(|a| a.is_dead())
                && let Some(a) = self.attach.take()
            {
                a.close();
            }
            if self.attach.is_none() {
                let a = open_attach(&self.pods, &self.jp.name, self.base())
                    .await
                    .map_err(|e| {
                        Stop::Failed(
                            FailureReason::RunnerSystemFailure,
                            format!("cannot attach to the build container: {}", api_error(&e)),
                        )
                    })?;
                self.attach = Some(a);
            }
            let send = {
                let n = self.sends.entry(index).or_insert(0);
                *n += 1;
                *n - 1
            };
            let text = attach_launcher(self.jp, index, send, script, &self.nonce);
            let Some(a) = self.attach.as_mut() else { continue };
            // kube's stdin is a bounded in-memory pipe whose reader is its connection
            // task: when that task dies mid-text the pipe does not close, and a write
            // larger than its buffer would wait forever. The task's end is the signal.
            let Attached {
                stdin,
                ended,
                is_ended,
                ..
            } = a;
            let write = async {
                stdin.write_all(text.as_bytes()).await?;
                stdin.flush().await
            };
            let r = if *is_ended {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            } else {
                tokio::select! {
                    r = write => r,
                    _ = ended => {
                        *is_ended = true;
                        Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
                    }
                }
            };
            if r.is_ok() {
                return Ok(());
            }
            tracing::debug!(index, send, "attach write failed; attaching again");
            if let Some(a) = self.attach.take() {
                a.close();
            }
        }
        Err(Stop::Failed(
            FailureReason::RunnerSystemFailure,
            "cannot write the step to the build container's stdin".into(),
        ))
    }

    /// Whether the attach output so far holds step `index`'s start or skip marker.
    fn marker_seen(&mut self, index: usize, bytes: &[u8]) -> bool {
        self.marker_buf.extend_from_slice(bytes);
        let text = String::from_utf8_lossy(&self.marker_buf).into_owned();
        let found = [
            start_marker("start", &self.nonce, index),
            start_marker("skip", &self.nonce, index),
        ]
        .iter()
        .any(|m| text.contains(m.as_str()));
        // Keep only what could be the start of a marker split across reads.
        let keep = 128.min(self.marker_buf.len());
        self.marker_buf.drain(..self.marker_buf.len() - keep);
        if found {
            self.marker_buf.clear();
        }
        found
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &mut self,
        payload: &JobPayload,
        step: &Step,
        index: usize,
        job_status: Option<JobStatus>,
        sink: &mut dyn TraceSink,
        view: &mut watch::Receiver<PodView>,
        cancel: &CancellationToken,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<i32, Stop> {
        let opts = ScriptOptions {
            shell: Shell::Detect,
            nonce: self.nonce.clone(),
            start_time: jiff::Timestamp::now().as_second().max(0) as u64,
            build_dir: self.jp.build_dir.clone(),
            tmp_dir: format!("{}.tmp", self.jp.build_dir),
            job_status,
        };
        let script = render_step(payload, step, &opts)
            .map_err(|e| Stop::Failed(FailureReason::RunnerSystemFailure, e.to_string()))?;
        let attach = self.exec.config.strategy == Strategy::Attach;
        // The exec strategy's launcher is sent alongside the log reading below, so that
        // neither a large write nor a shell that never reads can hold the output up.
        let mut launch = None;
        if attach {
            self.start_attached(index, &script).await?;
        } else {
            self.open_streams().await?;
            launch = Some(self.launch_future(
                BUILD_CONTAINER,
                &format!("step_{index}"),
                &script,
                &[],
                format!("step {index}"),
            ));
        }
        // Until the shell confirms the step started (its start or skip marker on the
        // attach's stdout, or the step's end marker in the log), a dropped attach means
        // the launcher may not have arrived: attach again and send it again.
        let mut unconfirmed = attach;
        let mut resends = 0u32;
        let mut out_buf = vec![0u8; 4096];
        let started = Instant::now();
        let mut scanner = StepEndScanner::new(&self.nonce);
        let mut stopping: Option<Stop> = None;
        let mut kill_deadline: Option<tokio::time::Instant> = None;
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(log) = self.log.as_mut() else {
                return Err(Stop::Failed(
                    FailureReason::RunnerSystemFailure,
                    "log reader missing".into(),
                ));
            };
            tokio::select! {
                r = log.read(&mut buf) => match r {
                    Ok(n) => {
                        let out = scanner.write(&buf[..n]);
                        let masked = self.masker.write(&out);
                        sink.write(&masked);
                        if let Some(code) = scanner.exit_code() {
                            let rest = scanner.finish();
                            let masked = self.masker.write(&rest);
                            sink.write(&masked);
                            if let Some(s) = stopping {
                                return Err(s);
                            }
                            if code == podci_model::script::TIMEOUT_EXIT_CODE
                                && step.timeout > 0
                                && started.elapsed() >= Duration::from_secs(step.timeout)
                            {
                                return Err(Stop::Timeout);
                            }
                            return Ok(code);
                        }
                    }
                    Err(e) => return Err(stopping.unwrap_or(Stop::Failed(FailureReason::RunnerSystemFailure, format!("lost the job log: {e}")))),
                },
                r = view.changed() => {
                    if r.is_err() {
                        return Err(Stop::Failed(FailureReason::RunnerSystemFailure, "the Pod watch ended".into()));
                    }
                    if let Some(s) = self.pod_gone(view) {
                        // Let the reader deliver what is already in the file.
                        if let Some(log) = self.log.as_mut() {
                            let tail = log.drain(Duration::from_millis(300)).await;
                            let out = scanner.write(&tail);
                            let mut out = self.masker.write(&out);
                            out.extend(self.masker.write(&scanner.finish()));
                            sink.write(&out);
                        }
                        return Err(stopping.unwrap_or(s));
                    }
                }
                ev = attach_event(self.attach.as_mut(), &mut out_buf) => match ev {
                    AttachEvent::Output(n) => {
                        if unconfirmed && self.marker_seen(index, &out_buf[..n]) {
                            unconfirmed = false;
                        }
                    }
                    AttachEvent::Ended => {
                        if let Some(a) = self.attach.take() {
                            a.close();
                        }
                        if unconfirmed && stopping.is_none() {
                            resends += 1;
                            if resends > 5 {
                                return Err(Stop::Failed(
                                    FailureReason::RunnerSystemFailure,
                                    "the attach to the build container keeps dropping before the step starts".into(),
                                ));
                            }
                            tracing::debug!(index, resends, "attach dropped before the step was confirmed; sending it again");
                            self.send_step(index, &script).await?;
                        }
                    }
                },
                r = poll_launch(&mut launch) => {
                    launch = None;
                    if let Err(s) = r {
                        return Err(stopping.unwrap_or(s));
                    }
                }
                _ = cancel.cancelled(), if stopping.is_none() => {
                    emit(sink, &mut self.masker, "\x1b[0;33mWARNING: the job was canceled; stopping the script\x1b[0;m\n");
                    self.signal_step(index).await;
                    stopping = Some(Stop::Canceled);
                    kill_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if stopping.is_none() => {
                    emit(sink, &mut self.masker, "\x1b[0;33mWARNING: the job timed out; stopping the script\x1b[0;m\n");
                    self.signal_step(index).await;
                    stopping = Some(Stop::Timeout);
                    kill_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                }
                _ = tokio::time::sleep_until(kill_deadline.unwrap_or(far)), if kill_deadline.is_some() => {
                    return Err(stopping.unwrap_or(Stop::Canceled));
                }
            }
        }
    }

    /// A reason to stop if the Pod or the build container is gone.
    fn pod_gone(&self, view: &watch::Receiver<PodView>) -> Option<Stop> {
        let v = view.borrow();
        if let Some(e) = &v.error {
            return Some(Stop::Failed(FailureReason::RunnerSystemFailure, e.clone()));
        }
        if v.deleted {
            return Some(Stop::Failed(
                FailureReason::RunnerSystemFailure,
                format!("Pod {} was deleted while the job ran", self.jp.name),
            ));
        }
        let p = v.pod.as_ref()?;
        if phase(p) == "Failed" {
            let reason = p
                .status
                .as_ref()
                .and_then(|s| s.reason.clone())
                .unwrap_or_default();
            if reason == "DeadlineExceeded" {
                return Some(Stop::Timeout);
            }
            return Some(Stop::Failed(
                FailureReason::RunnerSystemFailure,
                format!(
                    "Pod {} failed: {reason} {}",
                    self.jp.name,
                    p.status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_default()
                ),
            ));
        }
        for c in [BUILD_CONTAINER, HELPER_CONTAINER] {
            if let Some(code) = terminated(p, c) {
                return Some(Stop::Failed(
                    FailureReason::RunnerSystemFailure,
                    format!("the {c} container ended unexpectedly with exit code {code}"),
                ));
            }
        }
        None
    }

    /// Sends TERM to the running step shell (its script passes it on to the commands).
    async fn signal_step(&mut self, index: usize) {
        let pid_file = format!("{}/step_{index}.pid", self.jp.scripts_dir);
        self.exec_signal(
            BUILD_CONTAINER,
            "kill -TERM \"$(cat \"$1\")\" 2>/dev/null; true",
            pid_file,
        )
        .await;
    }
}

/// Service containers of the Pod (all but build and helper) with the ports to check:
/// their `ports` and GitLab's `HEALTHCHECK_TCP_PORT` service variable.
fn service_containers(pod: &Pod) -> Vec<(String, Vec<u16>)> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.name != BUILD_CONTAINER && c.name != HELPER_CONTAINER)
        .map(|c| {
            let mut ports: Vec<u16> = c
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| u16::try_from(p.container_port).ok())
                .collect();
            let hc = c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "HEALTHCHECK_TCP_PORT")
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.trim().parse::<u16>().ok());
            ports.extend(hc);
            ports.sort_unstable();
            ports.dedup();
            (c.name.clone(), ports)
        })
        .collect()
}

/// Run in the helper container: `$1` seconds in all, then one port per argument. Prints
/// `podci-port:PORT:ok|timeout|notool` for each. Uses whichever of bash (`/dev/tcp`),
/// nc or python3 the image has, since helper images differ.
const PORT_PROBE_SCRIPT: &str = r#"t=$1; shift
if command -v bash >/dev/null 2>&1; then tool=bash
elif command -v nc >/dev/null 2>&1; then tool=nc
elif command -v python3 >/dev/null 2>&1; then tool=py
else for p in "$@"; do echo "podci-port:$p:notool"; done; exit 0; fi
probe() {
  case $tool in
  bash) bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null ;;
  nc) nc -z 127.0.0.1 "$1" 2>/dev/null ;;
  py) python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null ;;
  esac
}
# `date +%s` counts whole seconds: one more keeps the wait at least t seconds.
end=$(( $(date +%s) + t + 1 ))
for p in "$@"; do
  while :; do
    if probe "$p"; then echo "podci-port:$p:ok"; break; fi
    if [ "$(date +%s)" -ge "$end" ]; then echo "podci-port:$p:timeout"; break; fi
    sleep 0.1 2>/dev/null || sleep 1
  done
done
"#;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the Pod: one watch from the creation's resourceVersion; after a dropped stream
/// it watches again from the last version seen, after `410 Gone` it re-lists first.
async fn watch_pod(pods: Api<Pod>, name: String, mut rv: String, tx: watch::Sender<PodView>, base: Duration) {
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    let mut failures = 0u32;
    loop {
        let stream = match retry(base, || pods.watch(&wp, &rv)).await {
            Ok(s) => s,
            Err(e) => {
                tx.send_modify(|v| v.error = Some(format!("cannot watch Pod {name}: {}", api_error(&e))));
                return;
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut relist = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatchEvent::Added(p)) | Ok(WatchEvent::Modified(p)) => {
                    failures = 0;
                    if let Some(v) = p.metadata.resource_version.clone() {
                        rv = v;
                    }
                    tx.send_modify(|v| v.pod = Some(p));
                }
                Ok(WatchEvent::Deleted(p)) => {
                    tx.send_modify(|v| {
                        v.pod = Some(p);
                        v.deleted = true;
                    });
                    return;
                }
                Ok(WatchEvent::Bookmark(b)) => rv = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) if e.code == 410 => {
                    relist = true;
                    break;
                }
                Ok(WatchEvent::Error(e)) => {
                    tracing::debug!(error = ?e, "watch error event");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch stream error");
                    break;
                }
            }
        }
        if relist {
            match retry(base, || pods.list(&lp)).await {
                Ok(list) => {
                    rv = list.metadata.resource_version.unwrap_or_default();
                    match list.items.into_iter().next() {
                        Some(p) => tx.send_modify(|v| v.pod = Some(p)),
                        None => {
                            tx.send_modify(|v| v.deleted = true);
                            return;
                        }
                    }
                }
                Err(e) => {
                    tx.send_modify(|v| {
                        v.error = Some(format!(
                            "cannot re-list Pod {name} after 410 Gone: {}",
                            api_error(&e)
                        ))
                    });
                    return;
                }
            }
        } else {
            failures += 1;
            if failures > 10 {
                tx.send_modify(|v| v.error = Some(format!("the watch of Pod {name} keeps failing")));
                return;
            }
            tokio::time::sleep(base * failures.min(10)).await;
        }
    }
}

/// Reads the job's log file through `tail -c +OFFSET -f` in the helper container and
/// resumes at the byte it stopped at after a dropped connection.
struct LogReader {
    pods: Api<Pod>,
    pod: String,
    path: String,
    base: Duration,
    /// Bytes delivered so far: the file offset of the next byte.
    offset: u64,
    proc: Option<LogProc>,
    /// A directory to create when `tail` starts (the build directory); may be empty.
    make_dir: String,
}

/// One `tail` exec: its stdout, and a future that completes when kube's connection task
/// has ended. The task can end on a connection error without closing stdout, so a read
/// alone could wait forever after a dropped connection.
struct LogProc {
    process: AttachedProcess,
    stdout: tokio::io::ReadHalf<tokio::io::SimplexStream>,
    ended: futures::future::BoxFuture<'static, ()>,
    is_ended: bool,
}

impl LogReader {
    async fn open(
        pods: Api<Pod>,
        pod: String,
        path: String,
        base: Duration,
        make_dir: String,
    ) -> Result<Self, kube::Error> {
        let mut r = LogReader {
            pods,
            pod,
            path,
            base,
            offset: 0,
            proc: None,
            make_dir,
        };
        r.connect().await?;
        Ok(r)
    }

    async fn connect(&mut self) -> Result<(), kube::Error> {
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            // The build directory is made here too, off the step's critical path, so
            // the launcher's `[ -d ]` usually spares it a mkdir process.
            ": >> \"$1\" 2>/dev/null; [ -z \"$3\" ] || [ -d \"$3\" ] || mkdir -p \"$3\" 2>/dev/null; exec tail -c +\"$2\" -f \"$1\"".to_string(),
            "sh".to_string(),
            self.path.clone(),
            (self.offset + 1).to_string(),
            self.make_dir.clone(),
        ];
        // A 64 KiB pipe instead of kube's 1 KiB: a burst of log output is handed over
        // in one piece instead of 1 KiB at a time.
        let ap = AttachParams::default()
            .container(HELPER_CONTAINER)
            .stdin(false)
            .stdout(true)
            .stderr(false)
            .max_stdout_buf_size(64 * 1024);
        let mut process = retry(self.base, || self.pods.exec(&self.pod, cmd.clone(), &ap)).await?;
        let (Some(stdout), Some(status)) = (process.stdout(), process.take_status()) else {
            process.abort();
            return Err(kube::Error::Service("exec gave no stdout".into()));
        };
        let ended: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = status.await;
        });
        self.proc = Some(LogProc {
            process,
            stdout,
            ended,
            is_ended: false,
        });
        Ok(())
    }

    /// The next bytes of the current connection; `None` when it has ended.
    async fn read_current(&mut self, buf: &mut [u8]) -> Option<usize> {
        let p = self.proc.as_mut()?;
        if !p.is_ended {
            tokio::select! {
                biased;
                r = p.stdout.read(buf) => return match r {
                    Ok(n) if n > 0 => Some(n),
                    _ => None,
                },
                _ = &mut p.ended => p.is_ended = true,
            }
        }
        // The task ended: what it wrote before is still buffered and readable at once.
        match tokio::time::timeout(Duration::from_millis(20), p.stdout.read(buf)).await {
            Ok(Ok(n)) if n > 0 => Some(n),
            _ => None,
        }
    }

    /// Reads the next bytes; reconnects (up to 10 times in a row) when the stream ends.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut attempts = 0u32;
        loop {
            if self.proc.is_some() {
                match self.read_current(buf).await {
                    Some(n) => {
                        self.offset += n as u64;
                        return Ok(n);
                    }
                    None => {
                        if let Some(p) = self.proc.take() {
                            p.process.abort();
                        }
                    }
                }
            }
            attempts += 1;
            if attempts > 10 {
                return Err(format!("the log stream of {} keeps dropping", self.pod));
            }
            tracing::debug!(offset = self.offset, "log stream ended; resuming");
            tokio::time::sleep(self.base * attempts.min(5) / 2).await;
            if let Err(e) = self.connect().await
                && attempts >= 10
            {
                return Err(format!(
                    "cannot resume the log of {}: {}",
                    self.pod,
                    api_error(&e)
                ));
            }
        }
    }

    /// What arrives within `wait`, for the last bytes before a container ended.
    async fn drain(&mut self, wait: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let end = tokio::time::Instant::now() + wait;
        while let Ok(Some(n)) = tokio::time::timeout_at(end, self.read_current(&mut buf)).await {
            self.offset += n as u64;
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    fn close(self) {
        if let Some(p) = self.proc {
            p.process.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job Pod whose scripts, logs and build directories are under `root`.
    fn job_pod(root: &std::path::Path) -> JobPod {
        let config =
            KubernetesConfig::from_toml_str("namespace = \"ci\"\nimage = \"alpine:3\"").expect("config");
        let payload = JobPayload::default();
        let params = PodParams {
            runner_short_token: "glrt1234".into(),
            concurrent_id: 0,
            suffix: "abc".into(),
            now_unix: 1_700_000_000,
            job_url: String::new(),
        };
        let mut jp = build_pod(&config, &payload, &params).expect("pod");
        for (dir, name) in [
            (&mut jp.scripts_dir, "scripts"),
            (&mut jp.logs_dir, "logs"),
            (&mut jp.build_dir, "builds/p"),
        ] {
            *dir = root.join(name).display().to_string();
        }
        std::fs::create_dir_all(&jp.scripts_dir).expect("mkdir");
        std::fs::create_dir_all(&jp.logs_dir).expect("mkdir");
        jp
    }

    /// Feeds `text` to a local `sh` as the exec's stdin and returns its stdout.
    fn run_sh(text: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("sh ends");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(path: &str, what: &str) -> String {
        for _ in 0..500 {
            if let Ok(s) = std::fs::read_to_string(path)
                && s.contains(what)
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what:?} never appeared in {path}");
    }

    #[test]
    fn detached_launcher_starts_once_however_often_it_is_sent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jp = job_pod(tmp.path());
        let nonce = "n0nce-abc";
        // The script: a file of its own, run by the launch file, whose output and exit
        // code (through the end marker) land in the log.
        let script_file = format!("{}/helper_0.sh", jp.scripts_dir);
        let body = format!(
            "sh {}\nprintf '\\n%s\\n' \"end:$?\"\n",
            podci_model::script::quote(&script_file)
        );
        let script = "echo 'quoted $HOME stays literal'\necho to-stderr >&2\nexit 3";
        let files = [(script_file.clone(), script)];
        let first = run_sh(&detached_launcher(&jp, "helper_0", 0, &body, nonce, &files));
        assert!(
            first.contains(&launch_marker("start", nonce, "helper_0")),
            "{first:?}"
        );
        let log = wait_for(&jp.log_file(), "end:3");
        assert_eq!(log, "quoted $HOME stays literal\nto-stderr\n\nend:3\n");
        // A second send (the first one's connection dropped) skips the step.
        let second = run_sh(&detached_launcher(&jp, "helper_0", 1, &body, nonce, &files));
        assert!(
            second.contains(&launch_marker("skip", nonce, "helper_0")),
            "{second:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            std::fs::read_to_string(jp.log_file()).expect("log"),
            log,
            "ran once"
        );
        // The script file is the owner's only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script_file)
            .expect("script")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    use std::io::Write;
    use std::process::{Command, Stdio};

    /// A job Pod whose scripts, logs and build directories are in `dir` on this machine.
    fn local_pod(dir: &std::path::Path) -> (JobPod, String) {
        let mut payload = JobPayload {
            id: 7,
            ..Default::default()
        };
        payload.job_info.project_id = 1;
        payload.steps = vec![Step {
            name: "script".into(),
            script: vec![
                format!("echo ran >> {}/runs.txt", dir.display()),
                "echo hello".into(),
                "exit 3".into(),
            ],
            timeout: 0,
            when: "on_success".into(),
            allow_failure: false,
        }];
        let cfg = KubernetesConfig::from_toml_str("image = \"debian:bookworm\"\nhelper_image = \"helper\"")
            .unwrap();
        let params = PodParams {
            runner_short_token: "t".into(),
            concurrent_id: 0,
            suffix: "x".into(),
            now_unix: 0,
            job_url: String::new(),
        };
        let mut jp = build_pod(&cfg, &payload, &params).unwrap();
        for (d, sub) in [
            (&mut jp.scripts_dir, "scripts"),
            (&mut jp.logs_dir, "logs"),
            (&mut jp.build_dir, "build"),
        ] {
            *d = dir.join(sub).display().to_string();
            std::fs::create_dir_all(&*d).unwrap();
        }
        let opts = ScriptOptions {
            shell: Shell::Detect,
            nonce: "testnonce1234567890abcd".into(),
            start_time: 0,
            build_dir: jp.build_dir.clone(),
            tmp_dir: format!("{}.tmp", jp.build_dir),
            job_status: None,
        };
        let script = render_step(&payload, &payload.steps[0], &opts).unwrap();
        (jp, script)
    }

    /// Feeds `input` to `shell` as the build container's shell reads its attach stdin.
    fn feed(shell: &[&str], input: &[u8]) -> String {
        let mut child = Command::new(shell[0])
            .args(&shell[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A launcher cut anywhere after its first line (the first frame carries that line)
    /// and followed by the next send runs the step exactly once, in the shells a build
    /// image may have: the truncated copy never runs a command, a whole copy runs and
    /// the repeated one only reports that the step already started.
    #[test]
    fn a_cut_launcher_then_a_resend_runs_the_step_exactly_once() {
        let nonce = "testnonce1234567890abcd";
        let shells: Vec<&str> = ["bash", "dash", "busybox"]
            .into_iter()
            .filter(|s| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {s}"))
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .collect();
        assert!(shells.contains(&"bash") && shells.contains(&"dash"), "{shells:?}");
        for shell in shells {
            // busybox is a multi-call binary: its shell is `busybox sh`.
            let argv: &[&str] = if shell == "busybox" {
                &["busybox", "sh"]
            } else {
                &[shell]
            };
            let first = {
                let dir = tempfile::tempdir().unwrap();
                let (jp, script) = local_pod(dir.path());
                attach_launcher(&jp, 0, 0, &script, nonce)
            };
            let first_line = first.find('\n').unwrap() + 1;
            let mut cuts: Vec<usize> = (first_line..first.len()).step_by(97).collect();
            let closed = first.len() - attach_delimiter(nonce, 0, 0).len() - 2;
            cuts.extend([
                first_line,
                closed - 2,
                closed - 1,
                closed,
                closed + 1,
                first.len() - 1,
                first.len(),
            ]);
            for cut in cuts {
                let dir = tempfile::tempdir().unwrap();
                let (jp, script) = local_pod(dir.path());
                let send0 = attach_launcher(&jp, 0, 0, &script, nonce);
                let send1 = attach_launcher(&jp, 0, 1, &script, nonce);
                let mut input = send0.as_bytes()[..cut].to_vec();
                input.extend_from_slice(send1.as_bytes());
                let stdout = feed(argv, &input);
                let runs = std::fs::read_to_string(dir.path().join("runs.txt")).unwrap_or_default();
                assert_eq!(
                    runs,
                    "ran\n",
                    "{shell}, cut at {cut}/{}: stdout {stdout:?}",
                    send0.len()
                );
                let log = std::fs::read_to_string(jp.log_file()).unwrap();
                let mut scanner = StepEndScanner::new(nonce);
                let shown = scanner.write(log.as_bytes());
                assert_eq!(scanner.exit_code(), Some(3), "{shell}, cut at {cut}: {log:?}");
                assert_eq!(
                    String::from_utf8_lossy(&shown).matches("hello\n").count(),
                    1,
                    "{log:?}"
                );
                assert_eq!(
                    stdout.matches(&start_marker("start", nonce, 0)).count(),
                    1,
                    "{shell} {cut}: {stdout:?}"
                );
                // The group's closing brace arrived: the first copy is whole (the next
                // send's leading newline and delimiter end its here-document).
                let closed = send0.len() - attach_delimiter(nonce, 0, 0).len() - 2;
                let whole = cut >= closed;
                assert_eq!(
                    stdout.contains(&start_marker("skip", nonce, 0)),
                    whole,
                    "{shell}, cut at {cut}: a whole first copy makes the second one skip: {stdout:?}"
                );
            }
        }
    }

    /// Two cut copies in a row, then a whole one: still one run.
    #[test]
    fn two_cut_sends_then_a_whole_one_run_the_step_once() {
        let nonce = "testnonce1234567890abcd";
        let dir = tempfile::tempdir().unwrap();
        let (jp, script) = local_pod(dir.path());
        let s0 = attach_launcher(&jp, 0, 0, &script, nonce);
        let s1 = attach_launcher(&jp, 0, 1, &script, nonce);
        let s2 = attach_launcher(&jp, 0, 2, &script, nonce);
        let mut input = s0.as_bytes()[..s0.len() / 2].to_vec();
        input.extend_from_slice(&s1.as_bytes()[..s1.len() - 10]);
        input.extend_from_slice(s2.as_bytes());
        let stdout = feed(&["bash"], &input);
        let runs = std::fs::read_to_string(dir.path().join("runs.txt")).unwrap_or_default();
        assert_eq!(runs, "ran\n", "{stdout:?}");
        assert_eq!(
            stdout.matches(&start_marker("start", nonce, 0)).count(),
            1,
            "{stdout:?}"
        );
    }

    /// The launcher for a one-line step fits one kube stdin frame (4 KiB), so Nagle's
    /// algorithm has no second frame to hold back.
    #[test]
    fn a_short_step_launcher_fits_one_stdin_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (jp, script) = local_pod(dir.path());
        let text = attach_launcher(&jp, 0, 0, &script, "testnonce1234567890abcd");
        assert!(text.len() <= 4096, "{} bytes", text.len());
    }
}
