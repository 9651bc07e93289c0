//! Which executor runs a runner's jobs: the seam between the job manager and the
//! executors (`executor/`: shell; podci-k8s: kubernetes, not wired yet). The manager only
//! sees `manager::Executor`; this module adapts the executor layer's
//! `run_job` to it and supplies what a job from GitLab needs that a local pipeline does
//! not: sources cloned from `payload.git_info`, and artifacts moved through GitLab's
//! artifacts API.

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
            // The seam for podci-k8s: an adapter like `Shell` over its Pod executor,
            // built from `runner.kubernetes` (kept raw for its own parser).
            ExecutorKind::Kubernetes => {
                Err("executor = \"kubernetes\" is not wired to podci-k8s yet; use shell".into())
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
            let hooks = Hooks {
                sources: Some(Arc::new(GitSources)),
                cache: None,
                artifacts: Some(Arc::new(GitlabArtifacts {
                    client: req.client.clone(),
                })),
            };
            // The executor layer has one token: canceling and aborting both stop the step;
            // after_script then runs (bounded by its own timeout).
            let cancel = CancellationToken::new();
            let watcher = {
                let cancel = cancel.clone();
                let signals = req.signals.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = signals.canceling.cancelled() => {}
                        _ = signals.abort.cancelled() => {}
                    }
                    cancel.cancel();
                })
            };
            let mut payload = (*req.payload).clone();
            for e in &req.runner.environment {
                if let Some((k, v)) = e.split_once('=') {
                    payload.variables.push(podci_model::payload::JobVariable {
                        key: k.to_string(),
                        value: v.to_string(),
                        public: true,
                        ..Default::default()
                    });
                }
            }
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
struct GitSources;

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

/// Artifacts through GitLab: `POST /jobs/:id/artifacts` (a zip of the `archive` entry)
/// and `GET /jobs/:dep/artifacts` with each dependency's token.
struct GitlabArtifacts {
    client: Client,
}

fn when_matches(when: &str, succeeded: bool) -> bool {
    match when {
        "always" => true,
        "on_failure" => !succeeded,
        _ => succeeded,
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

    fn upload<'a>(
        &'a self,
        payload: &'a JobPayload,
        project_dir: &'a Path,
        succeeded: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, StageError>> {
        async move {
            let mut lines = Vec::new();
            for a in payload
                .artifacts
                .iter()
                .filter(|a| a.artifact_type == "archive" || a.artifact_type.is_empty())
            {
                if !when_matches(&a.when, succeeded) {
                    continue;
                }
                let (paths, exclude, dir) = (a.paths.clone(), a.exclude.clone(), project_dir.to_path_buf());
                let zip = project_dir.with_extension("artifacts.zip");
                let out = zip.clone();
                let built = tokio::task::spawn_blocking(move || -> Result<(usize, Vec<String>), String> {
                    let set =
                        podci_cache::paths::PathSet::new(&paths, &exclude).map_err(|e| e.to_string())?;
                    let collected = set.collect(&dir).map_err(|e| e.to_string())?;
                    if collected.files.is_empty() {
                        return Ok((0, collected.warnings));
                    }
                    let f = std::fs::File::create(&out).map_err(|e| e.to_string())?;
                    podci_cache::archive::write_zip(&dir, &collected.files, f).map_err(|e| e.to_string())?;
                    Ok((collected.files.len(), collected.warnings))
                })
                .await
                .map_err(|e| StageError::system(e.to_string()))?
                .map_err(|e| StageError::system(format!("cannot archive artifacts: {e}")))?;
                lines.extend(built.1.into_iter().map(|w| format!("WARNING: {w}")));
                if built.0 == 0 {
                    lines.push("WARNING: no files to upload".into());
                    continue;
                }
                let opts = UploadOptions {
                    filename: "artifacts.zip".into(),
                    format: "zip".into(),
                    kind: "archive".into(),
                    expire_in: a.expire_in.clone(),
                };
                let r = self
                    .client
                    .upload_artifacts(payload.id, &payload.token, &zip, &opts)
                    .await;
                let _ = tokio::fs::remove_file(&zip).await;
                r.map_err(|e| StageError::system(e.to_string()))?;
                lines.push(format!("Uploading artifacts... {} file(s): 201 Created", built.0));
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
    fn credentials_leave_the_url() {
        let (u, c) = split_credentials("https://gitlab-ci-token:glcbt-secret@gitlab.example.com/g/p.git");
        assert_eq!(u, "https://gitlab.example.com/g/p.git");
        assert_eq!(c, Some(("gitlab-ci-token".into(), "glcbt-secret".into())));
        assert_eq!(split_credentials("file:///tmp/repo").1, None);
    }
}
