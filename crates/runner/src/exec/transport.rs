//! The local implementations of the executor's pluggable stages: sources from the
//! pipeline's snapshot, caches in a podci-cache directory store, artifacts in a
//! per-pipeline directory store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;
use podci_cache::{ArtifactSpec, Artifacts, Cache, PushResult, Selection};
use podci_model::payload::JobPayload;
use podci_model::schedule::FailureReason;

use crate::executor::{ArtifactTransport, CacheTransport, JobDirs, Sources, StageError};

/// Copies the pipeline's snapshot into each job's project directory.
pub struct SnapshotSources {
    /// The snapshot (see [`super::workcopy::snapshot`]).
    pub snapshot: PathBuf,
}

impl Sources for SnapshotSources {
    fn prepare<'a>(
        &'a self,
        _payload: &'a JobPayload,
        dirs: &'a JobDirs,
        trace: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<(), StageError>> {
        async move {
            let (from, to) = (self.snapshot.clone(), dirs.project.clone());
            let res =
                tokio::task::spawn_blocking(move || super::workcopy::copy_tree(&from, &to, false)).await;
            match res {
                Ok(Ok(())) => {
                    trace(&format!("Working copy in {}", dirs.project.display()));
                    Ok(())
                }
                Ok(Err(e)) => Err(StageError::system(format!(
                    "cannot copy the sources into {}: {e}",
                    dirs.project.display()
                ))),
                Err(e) => Err(StageError::system(format!("copy task failed: {e}"))),
            }
        }
        .boxed()
    }
}

/// Caches in a podci-cache store.
pub struct StoreCache {
    /// The cache.
    pub cache: Cache,
}

impl CacheTransport for StoreCache {
    fn restore<'a>(&'a self, keys: &'a [String], project_dir: &'a Path) -> BoxFuture<'a, String> {
        async move {
            let report = self.cache.pull(keys, project_dir).await;
            match report.hit {
                Some(k) => format!(
                    "Successfully extracted cache {k} ({} files)",
                    report.stats.entries
                ),
                // GitLab Runner's words when the store failed, as opposed to a plain miss.
                None if report.failed => format!(
                    "WARNING: Failed to extract cache ({})",
                    report.warnings.join("; ")
                ),
                None => format!("WARNING: no cache restored ({})", report.warnings.join("; ")),
            }
        }
        .boxed()
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        cache: &'a podci_model::payload::Cache,
        project_dir: &'a Path,
    ) -> BoxFuture<'a, String> {
        async move {
            let sel = Selection {
                paths: cache.paths.clone(),
                exclude: Vec::new(),
                untracked: cache.untracked,
            };
            match self.cache.push(key, &sel, project_dir).await {
                Ok(rep) => {
                    let mut line = match rep.result {
                        PushResult::NothingToCache => {
                            format!("WARNING: nothing to cache for {key}: no path matched")
                        }
                        PushResult::Unchanged { .. } => format!("Cache {key} is up to date"),
                        PushResult::Stored { size, .. } => format!("Created cache {key} ({size} bytes)"),
                    };
                    for w in rep.warnings {
                        line.push_str(&format!("\nWARNING: {w}"));
                    }
                    line
                }
                Err(e) => format!("WARNING: Failed to create cache {key}: {e}"),
            }
        }
        .boxed()
    }
}

/// Artifacts in a podci-cache store, keyed by job id (one store per pipeline).
pub struct StoreArtifacts {
    /// The artifact store.
    pub artifacts: Artifacts,
}

/// The payload's `artifacts` entries as one podci-cache spec: the `archive` entry's
/// paths, and every report type's paths.
pub fn artifact_spec(payload: &JobPayload) -> ArtifactSpec {
    let mut spec = ArtifactSpec {
        name: "artifacts".into(),
        ..ArtifactSpec::default()
    };
    let mut reports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &payload.artifacts {
        if a.artifact_type == "archive" || a.artifact_type.is_empty() {
            spec.name = a.name.clone().unwrap_or_else(|| "artifacts".into());
            spec.paths = a.paths.clone();
            spec.exclude = a.exclude.clone();
            spec.untracked = a.untracked;
            spec.when = a.when.parse().unwrap_or_default();
            spec.expire_in = a.expire_in.clone();
        } else {
            reports
                .entry(a.artifact_type.clone())
                .or_default()
                .extend(a.paths.iter().cloned());
        }
    }
    spec.reports = reports;
    spec
}

impl ArtifactTransport for StoreArtifacts {
    fn download<'a>(
        &'a self,
        payload: &'a JobPayload,
        project_dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StageError>> {
        async move {
            let ids: Vec<u64> = payload
                .dependencies
                .iter()
                .filter(|d| d.artifacts_file.is_some())
                .map(|d| d.id)
                .collect();
            self.artifacts
                .download(&ids, project_dir)
                .await
                .map_err(|e| StageError {
                    reason: FailureReason::MissingDependencyFailure,
                    message: format!("cannot download artifacts: {e}"),
                })
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
            let spec = artifact_spec(payload);
            match self
                .artifacts
                .upload(payload.id, &spec, project_dir, succeeded)
                .await
            {
                Ok(None) => Ok(vec![
                    "Not uploading artifacts: `when` does not match the job status".into(),
                ]),
                Ok(Some((m, warnings))) => {
                    let mut lines: Vec<String> =
                        warnings.into_iter().map(|w| format!("WARNING: {w}")).collect();
                    lines.push(format!(
                        "Uploaded artifacts: archive {}, {} report file(s), {} dotenv variable(s)",
                        if m.archive.is_some() { "stored" } else { "empty" },
                        m.reports.len(),
                        m.dotenv.len()
                    ));
                    Ok(lines)
                }
                Err(e) => Err(StageError::system(format!("cannot upload artifacts: {e}"))),
            }
        }
        .boxed()
    }
}
