//! `podci helper get-sources|artifacts-download|artifacts-upload|cache-pull|cache-push`:
//! what GitLab Runner's helper image does inside a job Pod (`gitlab-runner-helper
//! artifacts-uploader/artifacts-downloader/cache-extractor/cache-archiver` and the git
//! checkout), run by podci-k8s as helper steps in the helper container.
//!
//! Everything comes from the environment, so that nothing secret is in an argument list:
//! [`ENV_JOB`] holds the job payload as GitLab sent it (JSON, with the job token; the
//! runner puts it in the per-job Secret), [`ENV_URL`] the GitLab URL, [`ENV_CACHE`]
//! the runner's cache settings (a directory such as a mounted PVC, or S3 with its keys;
//! also a secret). The work is
//! the same code the shell executor uses: `executors::GitSources`, `GitlabArtifacts`, and
//! podci-cache through `exec::transport::StoreCache`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use podci_model::payload::JobPayload;

use crate::executor::{ArtifactTransport, CacheTransport, JobDirs, Sources};

/// The job payload (JSON), a secret: it carries the job token.
pub const ENV_JOB: &str = "PODCI_HELPER_JOB";
/// GitLab's URL (the instance, as in config.toml's `url`).
pub const ENV_URL: &str = "PODCI_HELPER_URL";
/// The project directory (`CI_PROJECT_DIR`) in the Pod.
pub const ENV_PROJECT_DIR: &str = "PODCI_HELPER_PROJECT_DIR";
/// The runner's cache settings (JSON of [`crate::job_cache::CacheSettings`]), a secret:
/// it may carry the S3 `SecretKey`. podci puts it in the per-job Secret.
pub const ENV_CACHE: &str = "PODCI_HELPER_CACHE";
/// A cache store given by hand (a directory or an `s3://` URL, credentials from the AWS
/// variables), used when [`ENV_CACHE`] is unset; unset too means no cache.
pub const ENV_CACHE_STORE: &str = "PODCI_HELPER_CACHE_STORE";

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: HelperCommand,
}

/// How the job's script steps ended, for `when:` of artifacts and caches.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum JobResult {
    Success,
    Failed,
}

#[derive(Subcommand)]
enum HelperCommand {
    /// Fetch and check out the job's commit into the project directory.
    GetSources,
    /// Download and extract the artifacts of the jobs this one depends on.
    ArtifactsDownload,
    /// Archive the job's artifact paths and upload them to GitLab.
    ArtifactsUpload {
        #[arg(long, value_enum, default_value = "success")]
        job_status: JobResult,
    },
    /// Restore the job's caches (a miss is a warning).
    CachePull,
    /// Save the job's caches whose policy and `when` match.
    CachePush {
        #[arg(long, value_enum, default_value = "success")]
        job_status: JobResult,
    },
}

/// Why a helper step cannot start; each names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("{0} is not set: podci helper runs inside a job Pod that podci created")]
    Missing(&'static str),
    #[error("{ENV_JOB} does not hold a job payload: {0}")]
    BadPayload(String),
    #[error("cannot reach GitLab at {ENV_URL}: {0}")]
    Client(String),
}

fn env(name: &'static str) -> Result<String, HelperError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(HelperError::Missing(name))
}

struct Context_ {
    payload: JobPayload,
    dirs: JobDirs,
}

fn context() -> Result<Context_, HelperError> {
    let payload: JobPayload =
        serde_json::from_str(&env(ENV_JOB)?).map_err(|e| HelperError::BadPayload(e.to_string()))?;
    let project = PathBuf::from(env(ENV_PROJECT_DIR)?);
    let root = project.parent().unwrap_or(Path::new("/")).to_path_buf();
    let tmp = PathBuf::from(format!("{}.tmp", project.display()));
    Ok(Context_ {
        payload,
        dirs: JobDirs { root, project, tmp },
    })
}

fn client() -> Result<crate::gitlab::Client, HelperError> {
    crate::gitlab::Client::new(&env(ENV_URL)?, "helper", Arc::default())
        .map_err(|e| HelperError::Client(e.to_string()))
}

fn cache(project_id: u64) -> anyhow::Result<Option<crate::exec::transport::StoreCache>> {
    if let Some(json) = std::env::var(ENV_CACHE).ok().filter(|s| !s.is_empty()) {
        let settings = crate::job_cache::CacheSettings::from_json(&json)?;
        return Ok(Some(crate::exec::transport::StoreCache {
            cache: settings.open(project_id)?,
        }));
    }
    let Some(store) = std::env::var(ENV_CACHE_STORE).ok().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let store =
        podci_cache::Store::from_url(&store).with_context(|| format!("opening cache store {store}"))?;
    Ok(Some(crate::exec::transport::StoreCache {
        cache: podci_cache::Cache::new(store),
    }))
}

/// Runs a helper subcommand; exit 0 on success, 1 when the step failed (its message on
/// stdout, which podci-k8s puts in the trace).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = crate::cmd_cache::runtime()?;
    let ctx = context()?;
    let Context_ { payload, dirs } = ctx;
    let fail = |m: &str| {
        println!("\x1b[31;1mERROR: {m}\x1b[0;m");
        Ok(ExitCode::from(1))
    };
    match args.command {
        HelperCommand::GetSources => {
            std::fs::create_dir_all(&dirs.project)
                .with_context(|| format!("creating {}", dirs.project.display()))?;
            let mut print = |l: &str| println!("{l}");
            let r = rt.block_on(crate::executors::GitSources.prepare(&payload, &dirs, &mut print));
            if let Err(e) = r {
                return fail(&e.message);
            }
        }
        HelperCommand::ArtifactsDownload => {
            let arts = crate::executors::GitlabArtifacts { client: client()? };
            for d in payload.dependencies.iter().filter(|d| d.artifacts_file.is_some()) {
                println!("Downloading artifacts for {} ({})...", d.name, d.id);
            }
            std::fs::create_dir_all(&dirs.project)
                .with_context(|| format!("creating {}", dirs.project.display()))?;
            if let Err(e) = rt.block_on(arts.download(&payload, &dirs.project)) {
                return fail(&e.message);
            }
        }
        HelperCommand::ArtifactsUpload { job_status } => {
            let arts = crate::executors::GitlabArtifacts { client: client()? };
            match rt.block_on(arts.upload(&payload, &dirs.project, job_status == JobResult::Success)) {
                Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                Err(e) => {
                    // Lines of the uploads done before the failure, then the failure.
                    let mut lines: Vec<&str> = e.message.lines().collect();
                    let last = lines.pop().unwrap_or_default();
                    lines.iter().for_each(|l| println!("{l}"));
                    return fail(last);
                }
            }
        }
        HelperCommand::CachePull => {
            let cache = match cache(payload.job_info.project_id) {
                Ok(Some(cache)) => cache,
                Ok(None) => {
                    println!("No cache store configured (cache_dir or [runners.cache]): cache not restored");
                    return Ok(ExitCode::SUCCESS);
                }
                // A cache store that cannot be opened is a warning, as in GitLab Runner.
                Err(e) => {
                    println!("WARNING: Failed to extract cache: {e:#}");
                    return Ok(ExitCode::SUCCESS);
                }
            };
            for c in &payload.cache {
                let policy: podci_cache::Policy = c.policy.parse().unwrap_or_default();
                if !policy.pulls() {
                    continue;
                }
                match crate::executor::cache_keys(&payload, c) {
                    Ok(keys) => {
                        println!(
                            "Checking cache for {}...",
                            keys.first().map_or("", String::as_str)
                        );
                        println!("{}", rt.block_on(cache.restore(&keys, &dirs.project)));
                    }
                    Err(e) => println!("WARNING: cache not restored: {e}"),
                }
            }
        }
        HelperCommand::CachePush { job_status } => {
            let cache = match cache(payload.job_info.project_id) {
                Ok(Some(cache)) => cache,
                Ok(None) => {
                    println!("No cache store configured (cache_dir or [runners.cache]): cache not saved");
                    return Ok(ExitCode::SUCCESS);
                }
                // A cache store that cannot be opened is a warning, as in GitLab Runner.
                Err(e) => {
                    println!("WARNING: Failed to create cache: {e:#}");
                    return Ok(ExitCode::SUCCESS);
                }
            };
            for c in &payload.cache {
                let policy: podci_cache::Policy = c.policy.parse().unwrap_or_default();
                let when: podci_cache::When = c.when.parse().unwrap_or_default();
                if !policy.pushes() || !when.matches(job_status == JobResult::Success) {
                    continue;
                }
                match crate::executor::cache_keys(&payload, c) {
                    Ok(keys) => {
                        let Some(key) = keys.first() else { continue };
                        println!("Creating cache {key}...");
                        println!("{}", rt.block_on(cache.save(key, c, &dirs.project)));
                    }
                    Err(e) => println!("WARNING: cache not saved: {e}"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
