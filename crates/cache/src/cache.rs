//! Cache push, pull, listing and pruning on top of a [`Store`].
//!
//! A push first compares the tree's stat fingerprint (see [`crate::quick`]: git's
//! index fields, with its racy-clean rule) with the one recorded for the key, and stops
//! there when nothing changed, so re-saving an unchanged cache costs one parallel
//! directory walk. Otherwise it writes the archive once into a spool file while hashing
//! it, stores it under its digest unless an identical object already exists, and then
//! atomically repoints the key.
//!
//! A pull tries the key and each fallback key in order. A missing key, a missing object,
//! a truncated or corrupt archive, or an unsafe entry is a warning and a miss for that
//! key: the job goes on, and the project directory is untouched (see
//! [`crate::archive::extract_atomically`]).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{self, Format, Stats, WriteOptions};
use crate::error::{Error, Result, io};
use crate::paths::{Entry, PathSet};
use crate::store::{Store, hash_file, now_secs};

/// How keys map to objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Content-addressed: `keys/<key>.json` -> `blobs/blake3/<hex>`.
    #[default]
    Podci,
    /// GitLab Runner's own objects, for buckets and cache volumes it already fills:
    /// the archive itself at `<key>` under the store prefix (S3, where the prefix is
    /// `[Path/]runner/<token>/project/<id>`) or at `<key>/cache.zip` (directory).
    GitlabRunner,
}

/// What to archive, relative to the project directory.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub untracked: bool,
}

/// The record a key points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub key: String,
    /// `blake3:<hex>` of the archive object.
    pub digest: String,
    pub size: u64,
    pub format: Format,
    /// Seconds since the epoch when the key was last written.
    pub created: u64,
    /// Quick-check fingerprint of the archived tree, see [`fingerprint`].
    pub fingerprint: String,
    pub entries: u64,
    pub content_bytes: u64,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// No path matched: nothing was stored (GitLab Runner does the same).
    NothingToCache,
    /// The tree matches the key's fingerprint: nothing was archived or uploaded.
    Unchanged { digest: String },
    /// A new archive was written; `uploaded` is false when an identical object existed.
    Stored {
        digest: String,
        size: u64,
        uploaded: bool,
        stats: Stats,
    },
}

/// The outcome of [`Cache::push`].
#[derive(Debug, Clone)]
pub struct PushReport {
    pub key: String,
    pub result: PushResult,
    /// Paths that matched nothing or pointed outside the project.
    pub warnings: Vec<String>,
}

/// The outcome of [`Cache::pull`].
#[derive(Debug, Clone, Default)]
pub struct PullReport {
    /// The key that was restored, if any.
    pub hit: Option<String>,
    pub stats: Stats,
    /// Why keys were skipped: missing, corrupt, unsafe. For the job log.
    pub warnings: Vec<String>,
    /// Whether some key failed for a reason other than not being stored (the store
    /// could not be reached, the archive was damaged): GitLab Runner reports that as
    /// "Failed to extract cache" rather than as a plain miss.
    pub failed: bool,
}

/// One key in [`Cache::list`].
pub type KeyInfo = Pointer;

/// Caches in a store.
#[derive(Debug, Clone)]
pub struct Cache {
    store: Store,
    layout: Layout,
    format: Format,
    write: WriteOptions,
}

/// Encode a key as one object name: `/` and other unsafe bytes become `=XX` (a byte
/// object_store and S3 leave alone).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.len() > 200 || out.starts_with('.') {
        // Long names exceed file-name limits; hash them (the pointer keeps the key).
        return format!("={}", hex::encode(Sha256::digest(key.as_bytes())));
    }
    out
}

fn pointer_path(key: &str) -> String {
    format!("keys/{}.json", encode_key(key))
}

/// `blobs/<algorithm>/<hex>` for `<algorithm>:<hex>` (BLAKE3: hashing must not slow a
/// push down, and it runs at several GB/s where SHA-256 manages about one).
/// A digest that is not `blake3:` + 64 hex digits (a damaged pointer) maps to a path
/// that never exists, so it reads as a missing object instead of escaping `blobs/`.
pub fn blob_path(digest: &str) -> String {
    match digest.split_once(':') {
        Some(("blake3", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("blobs/blake3/{hex}")
        }
        _ => "blobs/invalid-digest".to_owned(),
    }
}

/// The quick-check fingerprint of collected entries (see [`crate::quick`]);
/// `walk_start` is when collecting began.
pub fn fingerprint(root: &Path, entries: &[Entry], format: Format, walk_start: SystemTime) -> String {
    crate::quick::fingerprint(root, entries, format, walk_start)
}

impl Cache {
    /// Caches in `store`, written in podci's layout as tar + zstd.
    pub fn new(store: Store) -> Self {
        Cache {
            store,
            layout: Layout::Podci,
            format: Format::TarZstd,
            write: WriteOptions::default(),
        }
    }

    /// Use GitLab Runner's object layout (and, by default there, its zip format).
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        if layout == Layout::GitlabRunner {
            self.format = Format::Zip;
        }
        self
    }

    /// The archive format pushes write (pulls detect the format themselves).
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    pub fn with_write_options(mut self, write: WriteOptions) -> Self {
        self.write = write;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn gitlab_object(&self, key: &str) -> String {
        if self.store.is_dir() {
            format!("{key}/cache.zip")
        } else {
            key.to_owned()
        }
    }

    /// Archive `sel` from `project_dir` and store it under `key`.
    pub async fn push(&self, key: &str, sel: &Selection, project_dir: &Path) -> Result<PushReport> {
        let key = crate::key::sanitize_key(key)?;
        let format = self.format;
        let set = PathSet::with_untracked(&sel.paths, &sel.exclude, sel.untracked, project_dir)?;
        let set = std::sync::Arc::new(set);
        // An unchanged tree is detected before anything else is read: one walk that
        // compares stat records with the fingerprint stored in the key's pointer.
        if self.layout == Layout::Podci
            && let Some(old) = self.read_pointer(&key).await.ok().flatten()
            && crate::quick::is_trusted(&old.fingerprint)
        {
            let (dir, set2) = (project_dir.to_path_buf(), std::sync::Arc::clone(&set));
            let quick = tokio::task::spawn_blocking(move || {
                crate::quick::quick_fingerprint(&dir, &set2, format, SystemTime::now())
            })
            .await
            .ok()
            .flatten();
            if let Some(q) = quick
                && q.entries > 0
                && q.fingerprint == old.fingerprint
                && self.store.exists(&blob_path(&old.digest)).await.unwrap_or(false)
            {
                return Ok(PushReport {
                    key,
                    result: PushResult::Unchanged { digest: old.digest },
                    warnings: q.warnings,
                });
            }
        }
        let dir = project_dir.to_path_buf();
        let collected = tokio::task::spawn_blocking(move || {
            let walk_start = SystemTime::now();
            let c = set.collect(&dir)?;
            let fp = fingerprint(&dir, &c.files, format, walk_start);
            Ok::<_, Error>((c, fp))
        })
        .await
        .map_err(|e| Error::Config(format!("collect task failed: {e}")))??;
        let (collected, fp) = collected;
        let warnings = collected.warnings;
        if collected.files.is_empty() {
            return Ok(PushReport {
                key,
                result: PushResult::NothingToCache,
                warnings,
            });
        }
        // Globs and `untracked` have no quick walk: compare the collected entries.
        if self.layout == Layout::Podci
            && crate::quick::is_trusted(&fp)
            && let Some(old) = self.read_pointer(&key).await.ok().flatten()
            && old.fingerprint == fp
            && self.store.exists(&blob_path(&old.digest)).await.unwrap_or(false)
        {
            return Ok(PushReport {
                key,
                result: PushResult::Unchanged { digest: old.digest },
                warnings,
            });
        }

        let mut spool = self.store.spool()?;
        let file = spool
            .file()?
            .try_clone()
            .map_err(io("open", spool.path().to_path_buf()))?;
        let dir = project_dir.to_path_buf();
        let (write, spool_path) = (self.write, spool.path().to_path_buf());
        let durable = self.store.durable();
        // GitLab Runner's layout has no digest to check on pull: keep zstd's checksum there.
        let frame_checksum = self.layout == Layout::GitlabRunner;
        let entries = collected.files;
        let (digest, stats) = tokio::task::spawn_blocking(move || -> Result<(String, Stats)> {
            match format {
                Format::TarZstd => {
                    let out = archive::ThreadedHashWriter::new(file, durable);
                    let (out, stats) =
                        archive::write_tar_zst_checked(&dir, &entries, out, write, frame_checksum)?;
                    let (digest, _) = out.finish().map_err(io("write", &spool_path))?;
                    Ok((digest, stats))
                }
                Format::Zip => {
                    let (mut out, stats) =
                        archive::write_zip(&dir, &entries, BufWriter::with_capacity(1 << 20, file))?;
                    out.flush().map_err(io("write", &spool_path))?;
                    drop(out);
                    let (digest, _) = hash_file(&spool_path)?;
                    Ok((digest, stats))
                }
            }
        })
        .await
        .map_err(|e| Error::Config(format!("archive task failed: {e}")))??;

        if self.layout == Layout::GitlabRunner {
            let size = self.store.commit(spool, &self.gitlab_object(&key)).await?;
            return Ok(PushReport {
                key,
                result: PushResult::Stored {
                    digest,
                    size,
                    uploaded: true,
                    stats,
                },
                warnings,
            });
        }
        let blob = blob_path(&digest);
        let (size, uploaded) = if self.store.exists(&blob).await? {
            (
                std::fs::metadata(spool.path()).map(|m| m.len()).unwrap_or(0),
                false,
            )
        } else {
            (self.store.commit(spool, &blob).await?, true)
        };
        let pointer = Pointer {
            key: key.clone(),
            digest: digest.clone(),
            size,
            format,
            created: now_secs(),
            fingerprint: fp,
            entries: stats.entries,
            content_bytes: stats.content_bytes,
        };
        let json = serde_json::to_vec_pretty(&pointer).map_err(|e| Error::Metadata {
            path: pointer_path(&key),
            source: e,
        })?;
        self.store.put_small(&pointer_path(&key), json).await?;
        Ok(PushReport {
            key,
            result: PushResult::Stored {
                digest,
                size,
                uploaded,
                stats,
            },
            warnings,
        })
    }

    async fn read_pointer(&self, key: &str) -> Result<Option<Pointer>> {
        let path = pointer_path(key);
        let Some(data) = self.store.get_small(&path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::Metadata { path, source: e })
    }

    /// Restore the first of `keys` that has a usable cache into `project_dir`.
    pub async fn pull(&self, keys: &[String], project_dir: &Path) -> PullReport {
        let mut report = PullReport::default();
        for raw in keys {
            let key = match crate::key::sanitize_key(raw) {
                Ok(k) => k,
                Err(e) => {
                    report.failed = true;
                    report.warnings.push(e.to_string());
                    continue;
                }
            };
            match self.pull_one(&key, project_dir).await {
                Ok(Some(stats)) => {
                    report.hit = Some(key);
                    report.stats = stats;
                    return report;
                }
                Ok(None) => report
                    .warnings
                    .push(format!("cache key {key:?}: no cache stored")),
                Err(e) => {
                    report.failed = true;
                    report
                        .warnings
                        .push(format!("cache key {key:?}: {e}; treated as a miss"));
                }
            }
        }
        report
    }

    async fn pull_one(&self, key: &str, project_dir: &Path) -> Result<Option<Stats>> {
        let (object, expected) = match self.layout {
            Layout::Podci => {
                let Some(p) = self.read_pointer(key).await? else {
                    return Ok(None);
                };
                (blob_path(&p.digest), Some(p.digest))
            }
            Layout::GitlabRunner => (self.gitlab_object(key), None),
        };
        let Some(fetched) = self.store.fetch(&object).await? else {
            return match expected {
                Some(d) => Err(Error::Corrupt(format!(
                    "object {d} is missing from {}",
                    self.store.describe()
                ))),
                None => Ok(None),
            };
        };
        let path = fetched.path().to_path_buf();
        let dir = project_dir.to_path_buf();
        let stats = tokio::task::spawn_blocking(move || extract_file(&path, &dir, expected.as_deref()))
            .await
            .map_err(|e| Error::Config(format!("extract task failed: {e}")))??;
        drop(fetched);
        Ok(Some(stats))
    }

    /// Every key in the store (podci layout), sorted.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for obj in self.store.list("keys").await? {
            let Some(data) = self.store.get_small(&obj.path).await? else {
                continue;
            };
            match serde_json::from_slice::<Pointer>(&data) {
                Ok(p) => out.push(p),
                Err(e) => tracing::warn!("skipping unreadable pointer {}: {e}", obj.path),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Delete keys written more than `older_than_secs` ago, expired artifacts, objects no
    /// key or artifact points to (once they are older than `grace_secs`, so a push that
    /// has stored its archive but not yet its pointer keeps it), and stale temp files.
    pub async fn prune(&self, older_than_secs: u64, grace_secs: u64) -> Result<PruneReport> {
        let now = now_secs();
        let mut rep = PruneReport::default();
        let mut live = std::collections::HashSet::new();
        for p in self.list().await? {
            if now.saturating_sub(p.created) >= older_than_secs {
                self.store.delete(&pointer_path(&p.key)).await?;
                rep.keys_deleted.push(p.key);
            } else {
                live.insert(p.digest);
            }
        }
        for m in crate::artifacts::list_manifests(&self.store).await? {
            if m.expires_at.is_some_and(|t| t <= now) {
                self.store
                    .delete(&crate::artifacts::manifest_path(m.job_id))
                    .await?;
                rep.artifacts_deleted.push(m.job_id);
            } else {
                live.extend(m.digests());
            }
        }
        for obj in self.store.list("blobs").await? {
            let digest = obj
                .path
                .strip_prefix("blobs/")
                .unwrap_or(&obj.path)
                .replacen('/', ":", 1);
            if !live.contains(&digest) && now.saturating_sub(obj.modified) >= grace_secs {
                self.store.delete(&obj.path).await?;
                rep.blobs_deleted += 1;
                rep.bytes_freed += obj.size;
            }
        }
        rep.temp_files_deleted = self.store.sweep_temp(grace_secs.max(3600))?;
        Ok(rep)
    }
}

/// What [`Cache::prune`] removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub keys_deleted: Vec<String>,
    pub artifacts_deleted: Vec<u64>,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub temp_files_deleted: usize,
}

/// Extract an archive file of either format (detected from its first bytes) into
/// `project_dir`, atomically, checking its digest when one is given.
pub fn extract_file(path: &Path, project_dir: &Path, expected: Option<&str>) -> Result<Stats> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(io("open", path))?;
        f.read_exact(&mut magic)
            .map_err(|_| Error::Corrupt(format!("{} is too short to be an archive", path.display())))?;
    }
    let pb: PathBuf = path.to_path_buf();
    match magic {
        [0x28, 0xb5, 0x2f, 0xfd] => archive::extract_atomically(project_dir, |staging| {
            archive::extract_tar_zst(archive::open_buffered(&pb)?, staging, expected)
        }),
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => {
            if let Some(want) = expected {
                let (got, _) = hash_file(path)?;
                if got != want {
                    return Err(Error::Corrupt(format!(
                        "digest {got} does not match the stored {want}"
                    )));
                }
            }
            archive::extract_atomically(project_dir, |staging| {
                archive::extract_zip(std::fs::File::open(&pb).map_err(io("open", &pb))?, staging)
            })
        }
        _ => Err(Error::Corrupt(format!(
            "{} is neither a zstd stream nor a zip file",
            path.display()
        ))),
    }
}
