//! GitLab-compatible CI caches and artifacts for podci.
//!
//! This crate owns everything between "these files, under this key" and "bytes in an
//! object store": GitLab's cache key rules ([`key`]), its path globbing ([`paths`]),
//! archive formats — a streaming multi-threaded tar + zstd and GitLab Runner's
//! `cache.zip` — with safe extraction ([`archive`]), a content-addressed store on a
//! directory (a PVC) or S3 ([`store`]), cache push/pull/prune ([`cache`]) and job
//! artifacts with `reports:dotenv` ([`artifacts`]). It knows nothing of YAML or
//! Kubernetes: callers hand it already-evaluated specs.
//!
//! ```no_run
//! # async fn demo() -> podci_cache::Result<()> {
//! use podci_cache::{Cache, Selection, Store};
//! let cache = Cache::new(Store::dir("/cache")?);
//! let sel = Selection { paths: vec![".m2/repository".into()], ..Default::default() };
//! cache.push("maven-main", &sel, "/builds/app".as_ref()).await?;
//! let report = cache.pull(&["maven-main".into(), "maven".into()], "/builds/app".as_ref()).await;
//! assert_eq!(report.hit.as_deref(), Some("maven-main"));
//! # Ok(()) }
//! ```

pub mod archive;
pub mod artifacts;
pub mod cache;
pub mod error;
mod file_pool;
pub mod key;
pub mod paths;
pub mod quick;
pub mod store;

pub use archive::{Format, Stats, WriteOptions};
pub use artifacts::{ArtifactManifest, ArtifactSpec, Artifacts};
pub use cache::{Cache, Layout, Pointer, PruneReport, PullReport, PushReport, PushResult, Selection};
pub use error::{Error, Result};
pub use key::{CacheSpec, JobContext, Policy, When};
pub use store::{S3Config, Store};
