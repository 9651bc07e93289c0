//! Where a runner's job caches live: config.toml's `[runners.cache]` (`Type = "s3"` or
//! `"local"`) or `cache_dir`, turned into a podci-cache [`Cache`] for one project.
//!
//! The same [`CacheSettings`] serve the shell executor (the runner process talks to the
//! store itself) and the Kubernetes helper (`podci helper cache-pull/cache-push`), which
//! receives them as JSON in one variable of the per-job Secret because they may carry
//! the S3 `SecretKey`.
//!
//! Object names follow GitLab Runner (`cache/cache.go`, `generateObjectName`):
//! `[Path/][runner/<token8>/]project/<project id>/<key>`, the `runner/<token8>` part
//! dropped when `Shared = true`. On S3 the object at that name is the cache archive
//! itself, a zip as GitLab Runner writes it (its `cache.zip`, without that file name), so
//! a bucket shared with GitLab Runner keeps working both ways; podci also reads a
//! tar+zstd archive there. A local store (`Type = "local"` or `cache_dir`) is namespaced
//! the same way but holds podci's content-addressed layout (tar+zstd blobs and key
//! pointers), not GitLab Runner's `<key>/cache.zip` files.

use podci_cache::{Cache, Layout, S3Config, Store};
use serde::{Deserialize, Serialize};

use crate::config::RunnerConfig;

/// Why a cache store cannot be opened. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum JobCacheError {
    /// podci-cache refused the settings (a bad bucket name or endpoint, say).
    #[error("cache store {location}: {message}; check [runners.cache] in config.toml")]
    Open {
        /// `s3://bucket/prefix` or the directory.
        location: String,
        /// What was wrong.
        message: String,
    },
    /// The settings the helper got are not JSON of [`CacheSettings`].
    #[error("the cache settings passed to the helper are unreadable: {0}")]
    Settings(String),
}

/// Where caches are kept.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backend {
    /// A directory (a PVC in a Pod): `Type = "local"` with `Path`, or `cache_dir`.
    Local {
        /// The directory.
        dir: String,
    },
    /// `Type = "s3"`.
    S3 {
        /// `ServerAddress`: `host[:port]`; empty for AWS.
        server_address: String,
        /// `AccessKey`; empty: the AWS environment variables, else instance credentials.
        access_key: String,
        /// `SecretKey`.
        secret_key: String,
        /// `BucketName`.
        bucket: String,
        /// `BucketLocation`: the region.
        region: String,
        /// `Insecure`: plain HTTP.
        insecure: bool,
    },
}

/// A runner's cache settings, enough to open the store of any project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSettings {
    /// The store.
    pub backend: Backend,
    /// `Path`: a prefix of every object name (S3 only; a local store's `Path` is its
    /// directory).
    pub path: String,
    /// `Shared`: no per-runner namespace.
    pub shared: bool,
    /// The runner's short token (GitLab Runner's `ShortDescription`): never the token.
    pub runner: String,
}

impl std::fmt::Debug for Backend {
    /// Everything but the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
            Backend::S3 {
                server_address,
                access_key,
                bucket,
                region,
                insecure,
                ..
            } => f
                .debug_struct("S3")
                .field("server_address", server_address)
                .field("access_key", access_key)
                .field("secret_key", &"[MASKED]")
                .field("bucket", bucket)
                .field("region", region)
                .field("insecure", insecure)
                .finish(),
        }
    }
}

/// Whether `host` is AWS itself (virtual-hosted buckets, the region's endpoint) rather
/// than an S3-compatible server such as MinIO (path-style at that address).
fn is_aws(host: &str) -> bool {
    let host = host.split(':').next().unwrap_or(host);
    host.is_empty() || host == "amazonaws.com" || host.ends_with(".amazonaws.com")
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.to_owned()).filter(|s| !s.is_empty())
}

impl CacheSettings {
    /// The cache settings of `runner`: `[runners.cache]` with `Type = "s3"`, or with
    /// `Type = "local"` and a `Path`; else `cache_dir`; `None` without either (no cache).
    pub fn of_runner(runner: &RunnerConfig) -> Option<CacheSettings> {
        let runner_id = crate::gitlab::short_token(&runner.token);
        let cache = runner.cache.as_ref();
        let (shared, path) = cache.map_or((false, String::new()), |c| (c.shared, c.path.clone()));
        let backend = match cache {
            Some(c) if c.kind == "s3" => {
                let s3 = c.s3.clone().unwrap_or_default();
                Backend::S3 {
                    server_address: s3.server_address,
                    access_key: s3.access_key,
                    secret_key: s3.secret_key,
                    bucket: s3.bucket_name,
                    region: s3.bucket_location,
                    insecure: s3.insecure,
                }
            }
            Some(c) if c.kind == "local" && !c.path.is_empty() => Backend::Local { dir: c.path.clone() },
            _ => Backend::Local {
                dir: runner.cache_dir.clone().filter(|d| !d.is_empty())?,
            },
        };
        let path = match backend {
            Backend::S3 { .. } => path,
            Backend::Local { .. } => String::new(),
        };
        Some(CacheSettings {
            backend,
            path,
            shared,
            runner: runner_id,
        })
    }

    /// The namespace of a project's caches, as GitLab Runner names it:
    /// `[Path/][runner/<token8>/]project/<id>` (no leading or trailing `/`).
    pub fn namespace(&self, project_id: u64) -> String {
        let mut parts: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        if !self.shared {
            parts.push("runner");
            parts.push(&self.runner);
        }
        let id = project_id.to_string();
        parts.push("project");
        parts.push(&id);
        parts.join("/")
    }

    /// Where the store is, for messages (no credentials).
    pub fn describe(&self, project_id: u64) -> String {
        match &self.backend {
            Backend::Local { dir } => format!("{}/{}", dir.trim_end_matches('/'), self.namespace(project_id)),
            Backend::S3 { bucket, .. } => format!("s3://{bucket}/{}", self.namespace(project_id)),
        }
    }

    /// The S3 connection, with credentials from config.toml, else from the standard AWS
    /// variables of this process (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), else none (object_store then asks the instance metadata
    /// service, as GitLab Runner's IAM authentication does).
    fn s3_config(&self, project_id: u64) -> Option<S3Config> {
        let Backend::S3 {
            server_address,
            access_key,
            secret_key,
            bucket,
            region,
            insecure,
        } = &self.backend
        else {
            return None;
        };
        let scheme = if *insecure { "http" } else { "https" };
        let aws = is_aws(server_address);
        let (access_key_id, secret_access_key, session_token) =
            if access_key.is_empty() && secret_key.is_empty() {
                (
                    std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty()),
                    std::env::var("AWS_SECRET_ACCESS_KEY")
                        .ok()
                        .filter(|v| !v.is_empty()),
                    std::env::var("AWS_SESSION_TOKEN").ok().filter(|v| !v.is_empty()),
                )
            } else {
                (non_empty(access_key), non_empty(secret_key), None)
            };
        Some(S3Config {
            bucket: bucket.clone(),
            prefix: self.namespace(project_id),
            // AWS: object_store builds the region's endpoint itself.
            endpoint: (!aws).then(|| format!("{scheme}://{server_address}")),
            region: if region.is_empty() {
                "us-east-1".into()
            } else {
                region.clone()
            },
            access_key_id,
            secret_access_key,
            session_token,
            // GitLab Runner's "auto" bucket lookup: DNS style on AWS, path style elsewhere.
            virtual_host_style: aws,
        })
    }

    /// The cache of one project. S3 uses GitLab Runner's objects (zip archives named by
    /// key); a directory uses podci's content-addressed layout.
    pub fn open(&self, project_id: u64) -> Result<Cache, JobCacheError> {
        let err = |e: podci_cache::Error| JobCacheError::Open {
            location: self.describe(project_id),
            message: e.to_string(),
        };
        match &self.backend {
            Backend::Local { dir } => {
                let root = std::path::Path::new(dir).join(self.namespace(project_id));
                Ok(Cache::new(Store::dir(root).map_err(err)?))
            }
            Backend::S3 {
                access_key,
                secret_key,
                ..
            } => {
                if access_key.is_empty() != secret_key.is_empty() {
                    return Err(JobCacheError::Open {
                        location: self.describe(project_id),
                        message: "AccessKey and SecretKey must be given together (or both left empty for the AWS environment or instance credentials)".into(),
                    });
                }
                let cfg = self.s3_config(project_id).ok_or_else(|| JobCacheError::Open {
                    location: self.describe(project_id),
                    message: "not an S3 store".into(),
                })?;
                let store = Store::s3(&cfg).map_err(err)?;
                Ok(Cache::new(store).with_layout(Layout::GitlabRunner))
            }
        }
    }

    /// The settings as the helper's secret variable holds them.
    pub fn to_json(&self) -> String {
        // A struct of strings and bools always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The settings from the helper's secret variable.
    pub fn from_json(json: &str) -> Result<CacheSettings, JobCacheError> {
        serde_json::from_str(json).map_err(|e| JobCacheError::Settings(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheConfig, S3Config as ConfS3};
    use proptest::prelude::*;

    fn runner(cache: Option<CacheConfig>, cache_dir: Option<&str>) -> RunnerConfig {
        RunnerConfig {
            token: "glrt-t1_abcdefghijklmnop".into(),
            cache,
            cache_dir: cache_dir.map(str::to_owned),
            ..RunnerConfig::default()
        }
    }

    fn s3(path: &str, shared: bool) -> CacheConfig {
        CacheConfig {
            kind: "s3".into(),
            path: path.into(),
            shared,
            s3: Some(ConfS3 {
                server_address: "minio.example.com:9000".into(),
                access_key: "AKIA".into(),
                secret_key: "very-secret-key".into(),
                bucket_name: "runner-cache".into(),
                bucket_location: "eu-west-1".into(),
                insecure: true,
                authentication_type: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespaces_follow_gitlab_runner() {
        let s = CacheSettings::of_runner(&runner(Some(s3("", false)), None)).expect("s3");
        assert_eq!(s.namespace(42), "runner/abcdefgh/project/42");
        let s = CacheSettings::of_runner(&runner(Some(s3("/ci/cache/", false)), None)).expect("s3");
        assert_eq!(s.namespace(7), "ci/cache/runner/abcdefgh/project/7");
        let s = CacheSettings::of_runner(&runner(Some(s3("ci", true)), None)).expect("s3");
        assert_eq!(s.namespace(7), "ci/project/7");
        assert_eq!(s.describe(7), "s3://runner-cache/ci/project/7");
    }

    #[test]
    fn local_store_and_cache_dir() {
        let local = CacheConfig {
            kind: "local".into(),
            path: "/mnt/pvc".into(),
            ..Default::default()
        };
        let s = CacheSettings::of_runner(&runner(Some(local), Some("/other"))).expect("local");
        assert_eq!(
            s.backend,
            Backend::Local {
                dir: "/mnt/pvc".into()
            }
        );
        assert_eq!(s.describe(3), "/mnt/pvc/runner/abcdefgh/project/3");
        let s = CacheSettings::of_runner(&runner(None, Some("/cache"))).expect("cache_dir");
        assert_eq!(s.backend, Backend::Local { dir: "/cache".into() });
        assert!(CacheSettings::of_runner(&runner(None, None)).is_none());
        assert!(CacheSettings::of_runner(&runner(None, Some(""))).is_none());
    }

    #[test]
    fn insecure_picks_the_scheme_and_aws_is_virtual_hosted() {
        let mut s = CacheSettings::of_runner(&runner(Some(s3("", false)), None)).expect("s3");
        let c = s.s3_config(1).expect("s3");
        assert_eq!(c.endpoint.as_deref(), Some("http://minio.example.com:9000"));
        assert_eq!(c.region, "eu-west-1");
        assert!(!c.virtual_host_style);
        assert_eq!(c.secret_access_key.as_deref(), Some("very-secret-key"));
        if let Backend::S3 {
            insecure,
            server_address,
            ..
        } = &mut s.backend
        {
            *insecure = false;
            *server_address = "s3.amazonaws.com".into();
        }
        let c = s.s3_config(1).expect("s3");
        assert_eq!(c.endpoint, None);
        assert!(c.virtual_host_style);
        if let Backend::S3 {
            insecure,
            server_address,
            ..
        } = &mut s.backend
        {
            *insecure = false;
            *server_address = "storage.example.com".into();
        }
        let c = s.s3_config(1).expect("s3");
        assert_eq!(c.endpoint.as_deref(), Some("https://storage.example.com"));
    }

    #[test]
    fn half_credentials_are_refused_without_naming_the_secret() {
        let mut c = s3("", false);
        if let Some(s) = c.s3.as_mut() {
            s.access_key.clear();
        }
        let s = CacheSettings::of_runner(&runner(Some(c), None)).expect("s3");
        let e = s.open(1).expect_err("half credentials").to_string();
        assert!(e.contains("AccessKey and SecretKey"), "{e}");
        assert!(!e.contains("very-secret-key"), "{e}");
    }

    #[test]
    fn debug_and_errors_hide_the_secret_key() {
        let s = CacheSettings::of_runner(&runner(Some(s3("p", false)), None)).expect("s3");
        let d = format!("{s:?}");
        assert!(!d.contains("very-secret-key") && d.contains("[MASKED]"), "{d}");
        let back = CacheSettings::from_json(&s.to_json()).expect("round trip");
        assert_eq!(back, s);
        let e = CacheSettings::from_json("{\"backend\": 1}")
            .expect_err("bad json")
            .to_string();
        assert!(e.contains("unreadable"), "{e}");
    }

    proptest! {
        /// Whatever `Path` holds, the namespace has no empty segment and ends in the
        /// project, and `Shared` only drops the runner part.
        #[test]
        fn namespace_is_clean(path in "[a-d/]{0,20}", id in 0u64..1_000_000, shared: bool) {
            let s = CacheSettings::of_runner(&runner(Some(s3(&path, shared)), None)).expect("s3");
            let ns = s.namespace(id);
            prop_assert!(!ns.split('/').any(str::is_empty), "{}", ns);
            let suffix = format!("project/{id}");
            prop_assert!(ns.ends_with(&suffix));
            prop_assert_eq!(ns.contains("runner/abcdefgh/"), !shared);
        }

        /// The helper's JSON is read back as written, for any strings.
        #[test]
        fn settings_round_trip(dir in ".{0,30}", path in ".{0,30}", shared: bool) {
            let s = CacheSettings { backend: Backend::Local { dir }, path, shared, runner: "r".into() };
            prop_assert_eq!(CacheSettings::from_json(&s.to_json()).expect("json"), s);
        }
    }
}
