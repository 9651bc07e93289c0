//! Which executor runs a runner's jobs: the seam between the job manager and the
//! executors (`executor/`: shell; podci-k8s: kubernetes). The manager only sees
//! `manager::Executor`; this module adapts the executor layer's `run_job` and podci-k8s's
//! `KubernetesExecutor` to it and supplies what a job from GitLab needs that a local
//! pipeline does not: sources cloned from `payload.git_info`, and artifacts moved through
//! GitLab's artifacts API. On Kubernetes those run in the Pod's helper container as
//! `podci helper ...` steps (see `cmd_helper`), with the job payload in the job Secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use podci_model::payload::JobPayload;
use podci_model::schedule::FailureReason;
use tokio_util::sync::CancellationToken;

use crate::config::{ExecutorKind, RunnerConfig};
use crate::executor::shell::ShellExecutor;
use crate::executor::{
    ArtifactTransport, Hooks, JobDirs, JobOutcome, Sources, StageError, TraceSink, run_job,
};
use crate::gitlab::trace::TraceWriter;
use crate::gitlab::{Client, UploadOptions, short_token};
use crate::manager::{self, ExecRequest, Executor, ExecutorFactory, Outcome};

struct Factory;

impl ExecutorFactory for Factory {
    fn executor(&self, runner: &RunnerConfig) -> Result<Arc<dyn Executor>, String> {
        match runner.executor {
            // `shell` as GitLab Runner has it: bash or sh (PowerShell is not offered).
            ExecutorKind::Shell => {
                let exec = match runner.shell.as_deref() {
                    None => ShellExecutor::detect(),
                    Some(s @ ("bash" | "sh")) => ShellExecutor::with_program(s),
                    Some(other) => {
                        return Err(format!(
                            "shell = {other:?} is not supported by podci; use bash or sh"
                        ));
                    }
                };
                Ok(Arc::new(Shell { exec: Arc::new(exec) }))
            }
            // podci-k8s parses its own table (kept raw by our config parser); the client
            // is made on the first job, since kubeconfig loading is async.
            ExecutorKind::Kubernetes => {
                let table = runner.kubernetes.clone().unwrap_or_default();
                let config = podci_k8s::KubernetesConfig::from_table(table)
                    .map_err(|e| format!("[runners.kubernetes] of runner {:?}: {e}", runner.name))?;
                Ok(Arc::new(Kubernetes {
                    config: Arc::new(config),
                    executor: Arc::new(tokio::sync::OnceCell::new()),
                }))
            }
            ExecutorKind::Docker => Err("podci has no docker executor in `podci run`; use shell".into()),
        }
    }
}

/// The executors this build offers.
pub fn factory() -> Arc<dyn ExecutorFactory> {
    Arc::new(Factory)
}

struct Shell {
    exec: Arc<ShellExecutor>,
}

/// Adds config.toml's `environment` entries to the job's variables.
fn add_environment(payload: &mut JobPayload, runner: &RunnerConfig) {
    for e in &runner.environment {
        if let Some((k, v)) = e.split_once('=') {
            payload.variables.push(podci_model::payload::JobVariable {
                key: k.to_string(),
                value: v.to_string(),
                public: true,
                ..Default::default()
            });
        }
    }
}

/// config.toml's `pre_build_script` and `post_build_script` around the job's `script`, as
/// GitLab Runner runs them: in the same step, so a failing `pre_build_script` stops it and
/// `post_build_script` runs only after a successful script.
fn add_build_scripts(payload: &mut JobPayload, runner: &RunnerConfig) {
    let pre = runner
        .pre_build_script
        .as_deref()
        .filter(|s| !s.trim().is_empty());
    let post = runner
        .post_build_script
        .as_deref()
        .filter(|s| !s.trim().is_empty());
    if pre.is_none() && post.is_none() {
        return;
    }
    if let Some(step) = payload.steps.iter_mut().find(|s| s.name == "script") {
        if let Some(pre) = pre {
            step.script.insert(0, pre.to_string());
        }
        if let Some(post) = post {
            step.script.push(post.to_string());
        }
    }
}

/// Sets a public variable, replacing earlier definitions.
fn set_variable(payload: &mut JobPayload, key: &str, value: &str) {
    payload.variables.retain(|v| v.key != key);
    payload.variables.push(podci_model::payload::JobVariable {
        key: key.to_string(),
        value: value.to_string(),
        public: true,
        ..Default::default()
    });
}

/// One watcher for both of GitLab's stop signals: the executors have one token.
fn cancel_on_signals(
    signals: &crate::gitlab::trace::JobSignals,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        let signals = signals.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signals.canceling.cancelled() => {}
                _ = signals.abort.cancelled() => {}
            }
            cancel.cancel();
        })
    };
    (cancel, watcher)
}

/// Jobs as Pods through podci-k8s.
struct Kubernetes {
    config: Arc<podci_k8s::KubernetesConfig>,
    executor: Arc<tokio::sync::OnceCell<podci_k8s::KubernetesExecutor>>,
}

/// The helper program in the helper image; `podci` on its PATH.
const HELPER_PROGRAM: &str = "podci";

/// The helper steps of a job: GitLab Runner's stages around the script, each a
/// `podci helper` call whose inputs come from the helper's environment.
fn helper_steps(payload: &JobPayload) -> (Vec<podci_k8s::HelperStep>, Vec<podci_k8s::HelperStep>) {
    use podci_k8s::{FailureReason as R, HelperStep, HelperWhen};
    let step = |name: &str, title: &str, args: &str, when: HelperWhen, failure: Option<R>| HelperStep {
        name: name.into(),
        title: title.into(),
        script: format!("{HELPER_PROGRAM} helper {args}"),
        when,
        failure,
    };
    let mut before = vec![step(
        "get_sources",
        "Getting source from Git repository",
        "get-sources",
        HelperWhen::Always,
        Some(R::RunnerSystemFailure),
    )];
    if !payload.cache.is_empty() {
        // A cache that cannot be restored is a warning in GitLab Runner.
        before.push(step(
            "restore_cache",
            "Restoring cache",
            "cache-pull",
            HelperWhen::Always,
            None,
        ));
    }
    if payload.dependencies.iter().any(|d| d.artifacts_file.is_some()) {
        before.push(step(
            "download_artifacts",
            "Downloading artifacts",
            "artifacts-download",
            HelperWhen::Always,
            Some(R::RunnerSystemFailure),
        ));
    }
    let mut after = Vec::new();
    if !payload.cache.is_empty() {
        after.push(step(
            "archive_cache",
            "Saving cache for successful job",
            "cache-push --job-status success",
            HelperWhen::OnSuccess,
            None,
        ));
        after.push(step(
            "archive_cache_on_failure",
            "Saving cache for failed job",
            "cache-push --job-status failed",
            HelperWhen::OnFailure,
            None,
        ));
    }
    if !payload.artifacts.is_empty() {
        after.push(step(
            "upload_artifacts_on_success",
            "Uploading artifacts for successful job",
            "artifacts-upload --job-status success",
            HelperWhen::OnSuccess,
            Some(R::RunnerSystemFailure),
        ));
        if payload
            .artifacts
            .iter()
            .any(|a| a.when != "on_success" && !a.when.is_empty())
        {
            after.push(step(
                "upload_artifacts_on_failure",
                "Uploading artifacts for failed job",
                "artifacts-upload --job-status failed",
                HelperWhen::OnFailure,
                None,
            ));
        }
    }
    (before, after)
}

struct K8sSink(TraceWriter);

impl podci_k8s::TraceSink for K8sSink {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

impl Executor for Kubernetes {
    fn run(&self, req: ExecRequest) -> manager::BoxFuture<Outcome> {
        let config = self.config.clone();
        let cell = self.executor.clone();
        Box::pin(async move {
            let exec = cell
                .get_or_try_init(|| async {
                    // `host`/`bearer_token`/`ca_file` as GitLab Runner, else the in-cluster
                    // ServiceAccount or the kubeconfig; the job fails with
                    // runner_configuration_error when none works.
                    let client = podci_k8s::client_for(&config).await?;
                    let mut opts = podci_k8s::ExecutorOptions::new(&req.runner.token);
                    opts.retry_base = std::time::Duration::from_millis(200);
                    Ok::<_, podci_k8s::ClientError>(podci_k8s::KubernetesExecutor::new(
                        client,
                        (*config).clone(),
                        opts,
                    ))
                })
                .await;
            let exec = match exec {
                Ok(e) => e.clone(),
                Err(e) => {
                    req.trace
                        .write(format!("\x1b[31;1mERROR: {e}\x1b[0;m\n").as_bytes());
                    return Outcome::Failed {
                        reason: "runner_configuration_error".into(),
                        exit_code: None,
                    };
                }
            };
            let mut payload = (*req.payload).clone();
            add_environment(&mut payload, &req.runner);
            add_build_scripts(&mut payload, &req.runner);
            // Where the repository lives in the Pod (the `repo` volume at /builds), as
            // GitLab Runner: <builds_dir>/<namespace>/<project>.
            let project_path = payload
                .variables
                .iter()
                .rev()
                .find(|v| v.key == "CI_PROJECT_PATH")
                .map(|v| v.value.clone())
                .filter(|p| !p.is_empty() && !p.split('/').any(|s| s.is_empty() || s == ".." || s == "."))
                .unwrap_or_else(|| format!("project-{}", payload.job_info.project_id));
            let project_dir = format!("{}/{project_path}", podci_k8s::pod::BUILDS_DIR);
            set_variable(&mut payload, "CI_PROJECT_DIR", &project_dir);
            set_variable(&mut payload, "CI_BUILDS_DIR", podci_k8s::pod::BUILDS_DIR);
            set_variable(&mut payload, "CI_CONCURRENT_ID", &req.concurrent_id.to_string());
            set_variable(
                &mut payload,
                "CI_CONCURRENT_PROJECT_ID",
                &req.concurrent_id.to_string(),
            );
            // Only what `podci helper` reads goes into the job Secret, not the scripts.
            let payload_json = match serde_json::to_string(&crate::cmd_helper::helper_payload(&payload)) {
                Ok(j) => j,
                Err(e) => {
                    req.trace.write(
                        format!("\x1b[31;1mERROR: cannot encode the job for the helper: {e}\x1b[0;m\n")
                            .as_bytes(),
                    );
                    return Outcome::Failed {
                        reason: "runner_system_failure".into(),
                        exit_code: None,
                    };
                }
            };
            let mut helper_env = vec![
                podci_k8s::HelperEnv::secret(crate::cmd_helper::ENV_JOB, &payload_json),
                podci_k8s::HelperEnv::public(crate::cmd_helper::ENV_URL, &req.runner.url),
                podci_k8s::HelperEnv::public(crate::cmd_helper::ENV_PROJECT_DIR, &project_dir),
            ];
            // The whole cache configuration, S3 keys included, through the per-job Secret.
            if let Some(settings) = crate::job_cache::CacheSettings::of_runner(&req.runner) {
                helper_env.push(podci_k8s::HelperEnv::secret(
                    crate::cmd_helper::ENV_CACHE,
                    &settings.to_json(),
                ));
            }
            let (mut before_steps, after_steps) = helper_steps(&payload);
            // `pre_get_sources_script` runs where the sources are fetched: in the helper.
            if let (Some(pre), Some(first)) = (
                req.runner
                    .pre_get_sources_script
                    .as_deref()
                    .filter(|s| !s.trim().is_empty()),
                before_steps.first_mut(),
            ) {
                first.script = format!("{pre}\n{}", first.script);
            }
            let job_url = payload
                .variables
                .iter()
                .rev()
                .find(|v| v.key == "CI_JOB_URL")
                .map(|v| v.value.clone())
                .unwrap_or_default();
            let concurrent_id = u32::try_from(req.concurrent_id).unwrap_or(u32::MAX);
            let (cancel, watcher) = cancel_on_signals(&req.signals);
            let mut sink = K8sSink(req.trace.clone());
            // podci-k8s's job future is `Send`: it runs on this runtime's worker threads.
            let job = podci_k8s::Job {
                payload: &payload,
                concurrent_id,
                job_url,
                before_steps,
                after_steps,
                helper_env,
            };
            let outcome = exec.run(&job, &mut sink, cancel).await;
            watcher.abort();
            match outcome {
                podci_k8s::Outcome::Success => Outcome::Success,
                podci_k8s::Outcome::Failed {
                    reason, exit_code, ..
                } => Outcome::Failed {
                    reason: reason.as_str().to_string(),
                    exit_code,
                },
                podci_k8s::Outcome::Canceled => Outcome::Failed {
                    reason: "job_canceled".into(),
                    exit_code: None,
                },
            }
        })
    }
}

struct Sink(TraceWriter);

impl TraceSink for Sink {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

fn builds_dir(runner: &RunnerConfig) -> PathBuf {
    match &runner.builds_dir {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join("podci-builds"),
    }
}

impl Executor for Shell {
    fn run(&self, req: ExecRequest) -> manager::BoxFuture<Outcome> {
        let exec = self.exec.clone();
        Box::pin(async move {
            let root = builds_dir(&req.runner).join(format!(
                "{}-{}",
                short_token(&req.runner.token),
                req.payload.id
            ));
            let dirs = JobDirs::new(&root);
            // `[runners.cache]` (S3 or local) or `cache_dir`; this process talks to the store.
            let settings = crate::job_cache::CacheSettings::of_runner(&req.runner);
            let cache: Option<Arc<dyn crate::executor::CacheTransport>> = match settings {
                None => None,
                Some(s) => match s.open(req.payload.job_info.project_id) {
                    Ok(cache) => Some(Arc::new(crate::exec::transport::StoreCache { cache })),
                    Err(e) => {
                        req.trace.write(
                            format!("\x1b[0;33mWARNING: {e}; caches are off for this job\x1b[0;m\n")
                                .as_bytes(),
                        );
                        None
                    }
                },
            };
            let hooks = Hooks {
                sources: Some(Arc::new(GitSources)),
                cache,
                artifacts: Some(Arc::new(GitlabArtifacts {
                    client: req.client.clone(),
                })),
            };
            // The executor layer has one token: canceling and aborting both stop the step;
            // after_script then runs (bounded by its own timeout).
            let (cancel, watcher) = cancel_on_signals(&req.signals);
            let mut payload = (*req.payload).clone();
            add_environment(&mut payload, &req.runner);
            add_build_scripts(&mut payload, &req.runner);
            set_variable(&mut payload, "CI_CONCURRENT_ID", &req.concurrent_id.to_string());
            let mut sink = Sink(req.trace.clone());
            let outcome = run_job(&*exec, payload, &dirs, &hooks, &mut sink, cancel).await;
            watcher.abort();
            let _ = tokio::fs::remove_dir_all(&root).await;
            match outcome {
                JobOutcome::Success => Outcome::Success,
                JobOutcome::Failed { reason, exit_code } => Outcome::Failed {
                    reason: reason.as_str().to_string(),
                    exit_code,
                },
                JobOutcome::Canceled => Outcome::Failed {
                    reason: "job_canceled".into(),
                    exit_code: None,
                },
            }
        })
    }
}

/// Clones `payload.git_info` into the project directory. A job token in the URL goes to
/// git through the environment (a credential helper reads it), never the argument list.
pub(crate) struct GitSources;

fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.password().unwrap_or_default().is_empty() => {
            let user = u.username().to_string();
            let pass = u.password().unwrap_or_default().to_string();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            (u.to_string(), Some((user, pass)))
        }
        _ => (url.to_string(), None),
    }
}

async fn git(dir: &Path, args: &[&str], creds: Option<&(String, String)>) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.current_dir(dir).args(args).env("GIT_TERMINAL_PROMPT", "0");
    if let Some((user, pass)) = creds {
        cmd.env("PODCI_GIT_USER", user).env("PODCI_GIT_PASSWORD", pass);
    }
    let out = cmd.output().await.map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl Sources for GitSources {
    fn prepare<'a>(
        &'a self,
        payload: &'a JobPayload,
        dirs: &'a JobDirs,
        trace: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<(), StageError>> {
        async move {
            let g = &payload.git_info;
            if g.repo_url.is_empty() {
                trace("No repository to fetch (git_info.repo_url is empty)");
                return Ok(());
            }
            let (url, creds) = split_credentials(&g.repo_url);
            trace(&format!("Fetching changes with git depth set to {}...", g.depth));
            let fail = |e: String| StageError {
                reason: FailureReason::RunnerSystemFailure,
                message: format!("git: {e}"),
            };
            let p = &dirs.project;
            git(p, &["init", "-q"], None).await.map_err(fail)?;
            // `git -c` must precede the subcommand: the helper goes in front.
            let mut fetch: Vec<String> = vec!["fetch".into(), "-q".into()];
            if g.depth > 0 {
                fetch.push(format!("--depth={}", g.depth));
            }
            fetch.push(url.clone());
            if g.refspecs.is_empty() {
                fetch.push(g.sha.clone());
            } else {
                fetch.extend(g.refspecs.iter().cloned());
            }
            let args: Vec<&str> = fetch.iter().map(String::as_str).collect();
            let r = match &creds {
                Some(c) => {
                    let mut a = vec![
                        "-c",
                        "credential.helper=!f() { echo \"username=$PODCI_GIT_USER\"; echo \"password=$PODCI_GIT_PASSWORD\"; }; f",
                    ];
                    a.extend(args.iter());
                    git(p, &a, Some(c)).await
                }
                None => git(p, &args, None).await,
            };
            r.map_err(fail)?;
            trace(&format!("Checking out {:.8} as {}...", g.sha, g.reference));
            git(p, &["-c", "advice.detachedHead=false", "checkout", "-q", "-f", &g.sha], None)
                .await
                .map_err(fail)?;
            Ok(())
        }
        .boxed()
    }
}

/// Artifacts through GitLab: `POST /jobs/:id/artifacts`, one upload per entry of the
/// payload's `artifacts` (the `archive` and each `reports:` type, in GitLab's format for
/// it), and `GET /jobs/:dep/artifacts` with each dependency's token. `reports:dotenv`
/// variables need no download: GitLab parses them on upload and puts them into the
/// payloads of the jobs that depend on this one.
pub(crate) struct GitlabArtifacts {
    pub(crate) client: Client,
}

fn when_matches(when: &str, succeeded: bool) -> bool {
    match when {
        "always" => true,
        "on_failure" => !succeeded,
        _ => succeeded,
    }
}

/// The file name of an upload, as GitLab Runner's `artifactFilename`: the base name of
/// the entry's `name` (`artifacts` when unset, `default` when empty) plus the format's
/// extension.
fn artifact_filename(name: Option<&str>, format: &str) -> String {
    let name = name.unwrap_or("artifacts");
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let base = if base.is_empty() || base == "." {
        "default"
    } else {
        base
    };
    match format {
        "zip" | "zipzstd" => format!("{base}.zip"),
        "gzip" => format!("{base}.gz"),
        "tarzstd" => format!("{base}.tar.zst"),
        _ => base.to_string(),
    }
}

/// Why an artifacts entry could not be packed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackError {
    /// `artifact_format` is none GitLab Runner writes.
    #[error("artifact_format {0:?} is not supported (zip, gzip or raw)")]
    Format(String),
    /// `raw` sends one file as it is.
    #[error("only one file can be sent as raw; {0} files match")]
    TooManyForRaw(usize),
    /// The paths or the archive.
    #[error("{0}")]
    Archive(String),
}

/// Packs `entries` of `dir` into `out` in `format`; returns how many files went in.
/// `gzip` is GitLab Runner's: one gzip member per regular file (name and mtime in the
/// member header), which GitLab reads member by member; `raw` is the single file as is.
pub(crate) fn pack(
    dir: &Path,
    entries: &[podci_cache::paths::Entry],
    format: &str,
    out: &Path,
) -> Result<usize, PackError> {
    use podci_cache::paths::EntryKind;
    let io = |e: std::io::Error| PackError::Archive(format!("{}: {e}", out.display()));
    let files: Vec<&podci_cache::paths::Entry> =
        entries.iter().filter(|e| e.kind == EntryKind::File).collect();
    match format {
        "zip" | "" => {
            let f = std::fs::File::create(out).map_err(io)?;
            podci_cache::archive::write_zip(dir, entries, f)
                .map_err(|e| PackError::Archive(e.to_string()))?;
            Ok(files.len())
        }
        "gzip" => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
            for e in &files {
                let path = dir.join(&e.rel);
                let mut src = std::fs::File::open(&path)
                    .map_err(|err| PackError::Archive(format!("{}: {err}", path.display())))?;
                let mtime = e
                    .meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(0));
                let base = e.rel.rsplit('/').next().unwrap_or(&e.rel);
                let mut gz = flate2::GzBuilder::new()
                    .filename(base.as_bytes())
                    .comment(e.rel.as_bytes())
                    .mtime(mtime)
                    .write(&mut f, flate2::Compression::default());
                std::io::copy(&mut src, &mut gz).map_err(io)?;
                gz.finish().map_err(io)?;
            }
            std::io::Write::flush(&mut f).map_err(io)?;
            Ok(files.len())
        }
        "raw" => match files.as_slice() {
            [] => Ok(0),
            [one] => {
                std::fs::copy(dir.join(&one.rel), out).map_err(io)?;
                Ok(1)
            }
            many => Err(PackError::TooManyForRaw(many.len())),
        },
        other => Err(PackError::Format(other.to_string())),
    }
}

/// GitLab's `{"message": ...}` of a refused upload, else the body as it came.
fn gitlab_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match &v["message"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => v["error"].as_str().map(str::to_string),
            other => Some(other.to_string()),
        })
        .unwrap_or_else(|| body.trim().to_string())
}

fn status_text(code: u16) -> String {
    match reqwest::StatusCode::from_u16(code) {
        Ok(s) => format!("{code} {}", s.canonical_reason().unwrap_or_default()),
        Err(_) => code.to_string(),
    }
}

impl ArtifactTransport for GitlabArtifacts {
    fn download<'a>(
        &'a self,
        payload: &'a JobPayload,
        project_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StageError>> {
        async move {
            for d in payload.dependencies.iter().filter(|d| d.artifacts_file.is_some()) {
                let tmp = project_dir.with_extension(format!("dep-{}.zip", d.id));
                let fail = |m: String| StageError {
                    reason: FailureReason::MissingDependencyFailure,
                    message: format!("cannot download artifacts of {} ({}): {m}", d.name, d.id),
                };
                self.client
                    .download_artifacts(d.id, &d.token, &tmp)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let dir = project_dir.to_path_buf();
                let file = tmp.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::open(&file).map_err(|e| e.to_string())?;
                    podci_cache::archive::extract_zip(f, &dir).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| fail(e.to_string()))?;
                let _ = tokio::fs::remove_file(&tmp).await;
                r.map_err(fail)?;
            }
            Ok(Vec::new())
        }
        .boxed()
    }

    /// One upload per matching entry, in payload order, as GitLab Runner's
    /// `artifacts-uploader` calls; the first failure stops the rest. A failure's message
    /// starts with the trace lines of the uploads done before it (one per line).
    fn upload<'a>(
        &'a self,
        payload: &'a JobPayload,
        project_dir: &'a Path,
        succeeded: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, StageError>> {
        async move {
            let mut lines: Vec<String> = Vec::new();
            let fail = |lines: &mut Vec<String>, m: String| {
                lines.push(m);
                StageError::system(lines.join("\n"))
            };
            for (i, a) in payload.artifacts.iter().enumerate() {
                if !when_matches(&a.when, succeeded) {
                    continue;
                }
                let kind = if a.artifact_type.is_empty() {
                    "archive"
                } else {
                    a.artifact_type.as_str()
                };
                let format = if a.artifact_format.is_empty() {
                    "zip"
                } else {
                    a.artifact_format.as_str()
                };
                let (paths, exclude, untracked, dir) = (
                    a.paths.clone(),
                    a.exclude.clone(),
                    a.untracked,
                    project_dir.to_path_buf(),
                );
                let file = project_dir.with_extension(format!("artifacts-{i}"));
                let out = file.clone();
                let fmt = format.to_string();
                let built =
                    tokio::task::spawn_blocking(move || -> Result<(usize, usize, Vec<String>), PackError> {
                        let set =
                            podci_cache::paths::PathSet::with_untracked(&paths, &exclude, untracked, &dir)
                                .map_err(|e| PackError::Archive(e.to_string()))?;
                        let collected = set.collect(&dir).map_err(|e| PackError::Archive(e.to_string()))?;
                        if collected.files.is_empty() {
                            return Ok((0, 0, collected.warnings));
                        }
                        let n = pack(&dir, &collected.files, &fmt, &out)?;
                        Ok((collected.files.len(), n, collected.warnings))
                    })
                    .await
                    .map_err(|e| StageError::system(e.to_string()))?;
                let (found, packed, warnings) = match built {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&file).await;
                        return Err(fail(
                            &mut lines,
                            format!("cannot pack artifacts as {kind:?}: {e}"),
                        ));
                    }
                };
                lines.extend(warnings.into_iter().map(|w| format!("WARNING: {w}")));
                lines.push(format!(
                    "{}: found {found} matching artifact files and directories",
                    a.paths.join(", ")
                ));
                if found == 0 || packed == 0 {
                    let _ = tokio::fs::remove_file(&file).await;
                    lines.push("WARNING: No files to upload".into());
                    continue;
                }
                let opts = UploadOptions {
                    filename: artifact_filename(a.name.as_deref(), format),
                    format: format.into(),
                    kind: kind.into(),
                    expire_in: a.expire_in.clone().filter(|e| !e.is_empty()),
                };
                let r = self
                    .client
                    .upload_artifacts(payload.id, &payload.token, &file, &opts)
                    .await;
                let _ = tokio::fs::remove_file(&file).await;
                let head = format!("Uploading artifacts as {kind:?} to coordinator...");
                match r {
                    Ok(()) => lines.push(format!("{head} 201 Created")),
                    Err(crate::gitlab::ApiError::Status { status, body, .. }) => {
                        return Err(fail(
                            &mut lines,
                            format!("{head} {} ({})", status_text(status), gitlab_message(&body)),
                        ));
                    }
                    Err(e) => return Err(fail(&mut lines, format!("{head} failed: {e}"))),
                }
            }
            Ok(lines)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_scripts_wrap_the_script_step() {
        let mut p = JobPayload::default();
        p.steps.push(podci_model::payload::Step {
            name: "script".into(),
            script: vec!["make".into()],
            ..Default::default()
        });
        p.steps.push(podci_model::payload::Step {
            name: "after_script".into(),
            script: vec!["cleanup".into()],
            ..Default::default()
        });
        let runner = RunnerConfig {
            pre_build_script: Some("echo pre\necho pre2".into()),
            post_build_script: Some("echo post".into()),
            ..Default::default()
        };
        add_build_scripts(&mut p, &runner);
        assert_eq!(p.steps[0].script, ["echo pre\necho pre2", "make", "echo post"]);
        assert_eq!(p.steps[1].script, ["cleanup"]);
        let mut q = p.clone();
        add_build_scripts(&mut q, &RunnerConfig::default());
        assert_eq!(q.steps, p.steps);
    }

    #[test]
    fn helper_steps_follow_the_payload() {
        let mut p = JobPayload::default();
        let (before, after) = helper_steps(&p);
        assert_eq!(
            before.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["get_sources"]
        );
        assert!(after.is_empty());
        p.cache.push(Default::default());
        p.artifacts.push(podci_model::payload::Artifact {
            when: "always".into(),
            ..Default::default()
        });
        p.dependencies.push(podci_model::payload::Dependency {
            artifacts_file: Some(Default::default()),
            ..Default::default()
        });
        let (before, after) = helper_steps(&p);
        assert_eq!(
            before.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["get_sources", "restore_cache", "download_artifacts"]
        );
        let names: Vec<_> = after.iter().map(|s| (s.name.as_str(), s.when)).collect();
        use podci_k8s::HelperWhen::*;
        assert_eq!(
            names,
            [
                ("archive_cache", OnSuccess),
                ("archive_cache_on_failure", OnFailure),
                ("upload_artifacts_on_success", OnSuccess),
                ("upload_artifacts_on_failure", OnFailure)
            ]
        );
        // Cache errors warn; an artifact upload of a successful job fails it.
        assert!(after[0].failure.is_none());
        assert!(after[2].failure.is_some());
        assert!(
            before
                .iter()
                .all(|s| !s.script.contains(&p.token) || p.token.is_empty())
        );
    }

    #[test]
    fn upload_file_names_as_gitlab_runner() {
        assert_eq!(artifact_filename(None, "zip"), "artifacts.zip");
        assert_eq!(artifact_filename(Some("my build"), "zip"), "my build.zip");
        assert_eq!(artifact_filename(Some("dir/junit.xml"), "gzip"), "junit.xml.gz");
        assert_eq!(artifact_filename(Some(""), "gzip"), "default.gz");
        assert_eq!(
            artifact_filename(Some("gl-sast-report.json"), "raw"),
            "gl-sast-report.json"
        );
    }

    #[test]
    fn gzip_has_one_member_per_file_and_raw_takes_one_file() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("r")).unwrap();
        std::fs::write(dir.path().join("r/a.xml"), "<a/>").unwrap();
        std::fs::write(dir.path().join("r/b.xml"), "<b/>").unwrap();
        let set = podci_cache::paths::PathSet::new(&["r/".to_string()], &[]).unwrap();
        let entries = set.collect(dir.path()).unwrap().files;
        let out = dir.path().join("out.gz");
        assert_eq!(pack(dir.path(), &entries, "gzip", &out).unwrap(), 2);
        let data = std::fs::read(&out).unwrap();
        let mut rest = &data[..];
        let mut members = Vec::new();
        while !rest.is_empty() {
            let mut d = flate2::bufread::GzDecoder::new(rest);
            let mut body = String::new();
            d.read_to_string(&mut body).unwrap();
            let name = d
                .header()
                .and_then(|h| h.filename())
                .map(|n| String::from_utf8_lossy(n).into_owned());
            members.push((name.unwrap_or_default(), body));
            rest = d.into_inner();
        }
        assert_eq!(
            members,
            [
                ("a.xml".to_string(), "<a/>".to_string()),
                ("b.xml".to_string(), "<b/>".to_string())
            ]
        );
        assert!(matches!(
            pack(dir.path(), &entries, "raw", &out),
            Err(PackError::TooManyForRaw(2))
        ));
        let one = podci_cache::paths::PathSet::new(&["r/a.xml".to_string()], &[])
            .unwrap()
            .collect(dir.path())
            .unwrap()
            .files;
        assert_eq!(pack(dir.path(), &one, "raw", &out).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "<a/>");
        assert!(matches!(
            pack(dir.path(), &one, "tar", &out),
            Err(PackError::Format(_))
        ));
    }

    #[test]
    fn gitlab_messages_from_answers() {
        assert_eq!(
            gitlab_message(r#"{"message":"Invalid Format"}"#),
            "Invalid Format"
        );
        assert_eq!(
            gitlab_message(r#"{"error":"artifact_type does not have a valid value"}"#),
            "artifact_type does not have a valid value"
        );
        assert_eq!(gitlab_message("plain text "), "plain text");
        assert_eq!(status_text(400), "400 Bad Request");
    }

    #[test]
    fn credentials_leave_the_url() {
        let (u, c) = split_credentials("https://gitlab-ci-token:glcbt-secret@gitlab.example.com/g/p.git");
        assert_eq!(u, "https://gitlab.example.com/g/p.git");
        assert_eq!(c, Some(("gitlab-ci-token".into(), "glcbt-secret".into())));
        assert_eq!(split_credentials("file:///tmp/repo").1, None);
    }
}
