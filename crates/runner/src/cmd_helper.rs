//! `podci helper get-sources|artifacts-download|artifacts-upload|cache-pull|cache-push`:
//! what GitLab Runner's helper image does inside a job Pod (`gitlab-runner-helper
//! artifacts-uploader/artifacts-downloader/cache-extractor/cache-archiver` and the git
//! checkout), run by podci-k8s as helper steps in the helper container.
//!
//! Everything comes from the environment, so that nothing secret is in an argument list:
//! [`ENV_JOB`] holds the part of the job payload these commands read ([`helper_payload`]:
//! JSON, with the job token; the runner puts it in the per-job Secret under the key
//! `podci-helper.PODCI_HELPER_JOB`), [`ENV_CACHE`] the runner's cache settings (a directory
//! such as a mounted PVC, or S3 with its keys; also in the Secret), [`ENV_URL`] the GitLab
//! URL and [`ENV_PROJECT_DIR`] the project directory (plain Pod env). The work is
//! the same code the shell executor uses: `executors::GitSources`, `GitlabArtifacts`, and
//! podci-cache through `exec::transport::StoreCache`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use podci_model::payload::JobPayload;

use crate::executor::{ArtifactTransport, CacheTransport, JobDirs, Sources};

/// The job payload as [`helper_payload`] trims it (JSON), a secret: it carries the job token.
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

/// Prefixes of GitLab's predefined and settings variables that helper commands may read
/// (git settings, cache and artifact settings, feature flags, `CI_*` names in keys).
const HELPER_VARIABLE_PREFIXES: &[&str] = &["CI_", "GITLAB_", "GIT_", "CACHE_", "ARTIFACT_", "FF_"];

/// The part of `payload` that `podci helper` reads, for the job Secret ([`ENV_JOB`]):
/// the Secret then holds what the helper needs and no more.
///
/// Kept: `id` and `token` (artifact upload), `job_info` (the job name in cache keys),
/// `git_info` (the fetch, its token in the URL), `allow_git_fetch`, `dependencies` (ids
/// and tokens of the artifact downloads), `artifacts`, `cache`, `runner_info`,
/// `features`, and the variables a helper can use: public ones named with
/// [`HELPER_VARIABLE_PREFIXES`], and every variable that a cache or artifact setting
/// names (`$NAME`, `${NAME}`; podci-cache expands one level, as GitLab Runner does).
/// Dropped: `steps` (the job's scripts), `image`, `services`, registry `credentials`,
/// `run`, and every other variable (a deploy password the script uses, say).
pub fn helper_payload(payload: &JobPayload) -> JobPayload {
    use std::collections::BTreeSet;
    // Names mentioned in `text`, as podci-cache's expansion would look them up.
    fn names_in(text: &str, into: &mut BTreeSet<String>) {
        let seen = std::cell::RefCell::new(Vec::new());
        podci_cache::key::expand_variables(text, |name| {
            seen.borrow_mut().push(name.to_string());
            None
        });
        into.extend(seen.into_inner());
    }
    let mut wanted = BTreeSet::new();
    for c in &payload.cache {
        names_in(&c.key, &mut wanted);
        c.fallback_keys.iter().for_each(|k| names_in(k, &mut wanted));
        c.paths.iter().for_each(|p| names_in(p, &mut wanted));
    }
    for a in &payload.artifacts {
        if let Some(n) = &a.name {
            names_in(n, &mut wanted);
        }
        a.paths
            .iter()
            .chain(&a.exclude)
            .for_each(|p| names_in(p, &mut wanted));
    }
    for v in &payload.variables {
        if v.public && HELPER_VARIABLE_PREFIXES.iter().any(|p| v.key.starts_with(p)) {
            wanted.insert(v.key.clone());
        }
    }
    JobPayload {
        id: payload.id,
        token: payload.token.clone(),
        allow_git_fetch: payload.allow_git_fetch,
        job_info: payload.job_info.clone(),
        git_info: payload.git_info.clone(),
        runner_info: payload.runner_info.clone(),
        variables: payload
            .variables
            .iter()
            .filter(|v| wanted.contains(&v.key))
            .cloned()
            .collect(),
        artifacts: payload.artifacts.clone(),
        cache: payload.cache.clone(),
        dependencies: payload.dependencies.clone(),
        features: payload.features.clone(),
        ..Default::default()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use podci_model::payload::{Cache, Credential, Image, JobVariable, Step};

    fn var(key: &str, value: &str, public: bool) -> JobVariable {
        JobVariable {
            key: key.into(),
            value: value.into(),
            public,
            ..Default::default()
        }
    }

    fn job() -> JobPayload {
        let mut p = JobPayload {
            id: 7,
            token: "glcbt-token-123".into(),
            ..Default::default()
        };
        p.job_info.name = "package".into();
        p.git_info.repo_url = "https://gitlab-ci-token:glcbt-token-123@gitlab.example/g/p.git".into();
        p.git_info.reference = "main".into();
        p.git_info.sha = "0123456789abcdef".into();
        p.steps = vec![Step {
            name: "script".into(),
            script: vec!["echo SCRIPT-ONLY-TEXT".into()],
            ..Default::default()
        }];
        p.image = Some(Image {
            name: "maven:3-image-only".into(),
            ..Default::default()
        });
        p.credentials = vec![Credential {
            kind: "registry".into(),
            url: "registry.example.com".into(),
            username: "deployer".into(),
            password: "registry-pass-999".into(),
        }];
        p.variables = vec![
            var("CI_COMMIT_REF_SLUG", "main", true),
            var("GIT_DEPTH", "5", true),
            var("DEPLOY_PASSWORD", "hunter2-deploy", false),
            var("UNRELATED_PUBLIC", "public-but-unused", true),
            // A secret variable the cache key names: the helper needs it.
            var("CACHE_FLAVOR", "temurin-jdk", false),
        ];
        p.cache = vec![Cache {
            key: "maven-$CACHE_FLAVOR-$CI_COMMIT_REF_SLUG".into(),
            fallback_keys: vec!["maven-default".into()],
            paths: vec![".m2/".into()],
            policy: "pull-push".into(),
            when: "on_success".into(),
            untracked: false,
        }];
        p
    }

    #[test]
    fn helper_payload_holds_what_helper_commands_read_and_no_scripts_or_unrelated_secrets() {
        let p = job();
        let h = helper_payload(&p);
        let json = serde_json::to_string(&h).expect("json");
        for absent in [
            "SCRIPT-ONLY-TEXT",
            "hunter2-deploy",
            "DEPLOY_PASSWORD",
            "registry-pass-999",
            "maven:3-image-only",
            "public-but-unused",
        ] {
            assert!(!json.contains(absent), "{absent} in {json}");
        }
        // What get-sources and artifacts need, unchanged.
        assert_eq!((h.id, h.token.as_str()), (7, "glcbt-token-123"));
        assert_eq!(h.git_info, p.git_info);
        assert_eq!(h.cache, p.cache);
        // The cache key the helper computes is the one the full payload gives.
        let full = crate::executor::cache_keys(&p, &p.cache[0]).expect("keys");
        let trimmed = crate::executor::cache_keys(&h, &h.cache[0]).expect("keys");
        assert_eq!(trimmed, full);
        assert!(full[0].contains("temurin-jdk-main"), "{full:?}");
        // It reads back as the helper parses it.
        let back: JobPayload = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, h);
        let kept: Vec<&str> = h.variables.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(kept, ["CI_COMMIT_REF_SLUG", "GIT_DEPTH", "CACHE_FLAVOR"]);
    }
}
