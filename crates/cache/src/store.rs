//! Where archives live: a directory (a PVC is a directory) or an S3 bucket.
//!
//! The store is content-addressed. An archive is stored once as `blobs/blake3/<hex>`;
//! small JSON documents point at it (`keys/<key>.json` for caches,
//! `artifacts/<job>.json` for artifacts). An unchanged archive is therefore never
//! uploaded twice, and two keys with the same content share one object.
//!
//! Every object becomes visible in one atomic step: a directory store writes a temp file
//! under `tmp/`, fsyncs it and renames it into place (then fsyncs the directory); S3 makes
//! an object visible only when its PUT or multipart upload completes. A reader therefore
//! never sees a torn archive, an interrupted upload leaves no visible object, and two
//! writers of one key leave whichever pointer was renamed last, complete.
//!
//! The directory backend uses `std::fs` directly rather than object_store's
//! `LocalFileSystem` because the latter does not fsync; S3 goes through object_store.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
};

use crate::error::{Error, Result, io};

/// Multipart part size for S3 uploads (S3's minimum is 5 MiB).
const PART_SIZE: usize = 16 << 20;
/// Archives at least this large go up as multipart uploads.
const MULTIPART_THRESHOLD: u64 = 32 << 20;

/// An object store holding caches and artifacts.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Where S3 uploads and downloads are spooled.
    spool_dir: PathBuf,
    /// fsync objects before they become visible (directory stores).
    durable: bool,
}

#[derive(Debug, Clone)]
enum Backend {
    Dir(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        label: String,
    },
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Path relative to the store root (`keys/...`, `blobs/...`).
    pub path: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub modified: u64,
}

/// S3 connection settings. Credentials are never logged or put in error messages.
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`).
    pub prefix: String,
    /// `http://127.0.0.1:9000` for MinIO/moto; empty for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Virtual-host style (`bucket.host`) instead of path style (`host/bucket`).
    pub virtual_host_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("virtual_host_style", &self.virtual_host_style)
            .finish_non_exhaustive()
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique_name(suffix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}{suffix}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn octet_stream() -> Attributes {
    // moto stores a body it takes for a form as 0 bytes; say what it is.
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, "application/octet-stream".into());
    a
}

/// A file being written before it becomes an object; removed on drop unless committed.
pub struct Spool {
    path: PathBuf,
    file: Option<File>,
    keep: bool,
}

impl Spool {
    /// The open file to write into.
    pub fn file(&mut self) -> Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| Error::Config("spool file already closed".into()))
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A downloaded or local object to read from. Temp copies are removed on drop.
pub struct Fetched {
    path: PathBuf,
    temp: bool,
}

impl Fetched {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if self.temp {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Store {
    /// A store in a local directory (created if missing).
    pub fn dir(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["tmp", "blobs/blake3", "keys", "artifacts"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io("create store directory", &p))?;
        }
        let spool_dir = root.join("tmp");
        Ok(Store {
            backend: Backend::Dir(root),
            spool_dir,
            durable: true,
        })
    }

    /// A store in an S3 bucket, through object_store.
    pub fn s3(cfg: &S3Config) -> Result<Self> {
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            })
            .with_virtual_hosted_style_request(cfg.virtual_host_style);
        if let Some(ep) = &cfg.endpoint {
            b = b.with_endpoint(ep).with_allow_http(ep.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        if let Some(tok) = &cfg.session_token {
            b = b.with_token(tok);
        }
        let s3 = b
            .build()
            .map_err(|e| Error::Config(format!("S3 bucket {}: {e}", cfg.bucket)))?;
        Ok(Self::object(
            Arc::new(s3),
            &cfg.prefix,
            format!("s3://{}/{}", cfg.bucket, cfg.prefix),
        ))
    }

    /// Any object_store implementation, under `prefix`.
    pub fn object(store: Arc<dyn ObjectStore>, prefix: &str, label: String) -> Self {
        Store {
            backend: Backend::Object {
                store,
                prefix: prefix.trim_matches('/').to_owned(),
                label,
            },
            spool_dir: std::env::temp_dir(),
            durable: false,
        }
    }

    /// Turn fsync off for a directory store. Objects still appear atomically (rename),
    /// and a pull verifies every archive's digest, so after a crash an archive whose
    /// data did not reach the disk reads as a cache miss rather than a broken tree;
    /// what is lost is only the cache itself.
    pub fn with_fsync(mut self, on: bool) -> Self {
        if matches!(self.backend, Backend::Dir(_)) {
            self.durable = on;
        }
        self
    }

    /// Whether objects are fsynced before they become visible.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Spool S3 transfers through `dir` instead of the system temp directory.
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        if matches!(self.backend, Backend::Object { .. }) {
            self.spool_dir = dir.into();
        }
        self
    }

    /// Parse `file:///path`, a plain path, or
    /// `s3://bucket/prefix?endpoint=http://host:port&region=r&style=path|virtual`.
    /// S3 credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`, never from the URL.
    pub fn from_url(url: &str) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (bucket, prefix) = loc.split_once('/').unwrap_or((loc, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!(
                    "{url}: no bucket name; use s3://BUCKET/PREFIX"
                )));
            }
            let mut cfg = S3Config {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
                secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
                region: std::env::var("AWS_REGION").unwrap_or_default(),
                ..Default::default()
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "endpoint" => cfg.endpoint = Some(v.to_owned()),
                    "region" => cfg.region = v.to_owned(),
                    "style" => match v {
                        "path" => cfg.virtual_host_style = false,
                        "virtual" => cfg.virtual_host_style = true,
                        _ => return Err(Error::Config(format!("style={v}: use path or virtual"))),
                    },
                    other => {
                        return Err(Error::Config(format!(
                            "unknown S3 URL option {other:?}; use endpoint, region or style"
                        )));
                    }
                }
            }
            return Self::s3(&cfg);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(Error::Config(
                "empty store location; give a directory or s3://BUCKET/PREFIX".into(),
            ));
        }
        Self::dir(path)
    }

    /// Whether this is a directory store (GitLab Runner's layout differs between the two).
    pub fn is_dir(&self) -> bool {
        matches!(self.backend, Backend::Dir(_))
    }

    /// Where this store is, for messages.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(root) => root.display().to_string(),
            Backend::Object { label, .. } => label.clone(),
        }
    }

    fn obj_path(prefix: &str, rel: &str) -> ObjPath {
        if prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{prefix}/{rel}"))
        }
    }

    /// Start writing an object: a temp file in the store (directory) or the spool dir.
    pub fn spool(&self) -> Result<Spool> {
        fs::create_dir_all(&self.spool_dir).map_err(io("create spool directory", &self.spool_dir))?;
        let path = self.spool_dir.join(unique_name(".part"));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create", &path))?;
        Ok(Spool {
            path,
            file: Some(file),
            keep: false,
        })
    }

    /// Make a spooled file the object at `rel`, replacing any. Returns the size.
    pub async fn commit(&self, mut spool: Spool, rel: &str) -> Result<u64> {
        let file = spool
            .file
            .take()
            .ok_or_else(|| Error::Config("spool file already committed".into()))?;
        let size = file.metadata().map_err(io("stat", &spool.path))?.len();
        match &self.backend {
            Backend::Dir(root) => {
                let dst = root.join(rel);
                let src = spool.path.clone();
                let durable = self.durable;
                tokio::task::spawn_blocking(move || -> Result<()> {
                    if durable {
                        file.sync_all().map_err(io("fsync", &src))?;
                    }
                    drop(file);
                    let parent = dst.parent().unwrap_or(Path::new("/")).to_path_buf();
                    fs::create_dir_all(&parent).map_err(io("create directory", &parent))?;
                    fs::rename(&src, &dst).map_err(io("rename into place", &dst))?;
                    if durable { fsync_dir(&parent) } else { Ok(()) }
                })
                .await
                .map_err(|e| Error::Config(format!("commit task failed: {e}")))??;
                spool.keep = true;
            }
            Backend::Object { store, prefix, .. } => {
                drop(file);
                let location = Self::obj_path(prefix, rel);
                if size < MULTIPART_THRESHOLD {
                    let data = tokio::fs::read(&spool.path)
                        .await
                        .map_err(io("read", &spool.path))?;
                    let opts = PutOptions {
                        attributes: octet_stream(),
                        ..Default::default()
                    };
                    store.put_opts(&location, PutPayload::from(data), opts).await?;
                } else {
                    let opts = PutMultipartOptions {
                        attributes: octet_stream(),
                        ..Default::default()
                    };
                    let upload = store.put_multipart_opts(&location, opts).await?;
                    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    let mut f = tokio::fs::File::open(&spool.path)
                        .await
                        .map_err(io("open", &spool.path))?;
                    let mut buf = vec![0u8; PART_SIZE];
                    loop {
                        use tokio::io::AsyncReadExt;
                        let n = f.read(&mut buf).await.map_err(io("read", &spool.path))?;
                        if n == 0 {
                            break;
                        }
                        w.wait_for_capacity(4).await?;
                        w.write(&buf[..n]);
                    }
                    // An upload abandoned before here (error, kill) never becomes visible.
                    w.finish().await?;
                }
            }
        }
        Ok(size)
    }

    /// Whether an object exists.
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        match &self.backend {
            Backend::Dir(root) => Ok(root.join(rel).is_file()),
            Backend::Object { store, prefix, .. } => match store.head(&Self::obj_path(prefix, rel)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Write a small object atomically.
    pub async fn put_small(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        let mut spool = self.spool()?;
        spool
            .file()?
            .write_all(&data)
            .map_err(io("write", spool.path.clone()))?;
        self.commit(spool, rel).await.map(|_| ())
    }

    /// Read a small object; `None` when it does not exist.
    pub async fn get_small(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Dir(root) => {
                let p = root.join(rel);
                match fs::read(&p) {
                    Ok(d) => Ok(Some(d)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io("read", p)(e)),
                }
            }
            Backend::Object { store, prefix, .. } => match store.get(&Self::obj_path(prefix, rel)).await {
                Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A local file with the object's content; `None` when it does not exist. A
    /// directory store hands out the object itself (it is never modified in place).
    pub async fn fetch(&self, rel: &str) -> Result<Option<Fetched>> {
        match &self.backend {
            Backend::Dir(root) => {
                let p = root.join(rel);
                Ok(p.is_file().then_some(Fetched { path: p, temp: false }))
            }
            Backend::Object { store, prefix, .. } => {
                let r = match store.get(&Self::obj_path(prefix, rel)).await {
                    Ok(r) => r,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                fs::create_dir_all(&self.spool_dir).map_err(io("create spool directory", &self.spool_dir))?;
                let path = self.spool_dir.join(unique_name(".download"));
                let fetched = Fetched {
                    path: path.clone(),
                    temp: true,
                };
                let mut f = tokio::fs::File::create(&path)
                    .await
                    .map_err(io("create", &path))?;
                let mut stream = r.into_stream();
                while let Some(chunk) = stream.next().await {
                    use tokio::io::AsyncWriteExt;
                    f.write_all(&chunk?).await.map_err(io("write", &path))?;
                }
                use tokio::io::AsyncWriteExt;
                f.flush().await.map_err(io("write", &path))?;
                Ok(Some(fetched))
            }
        }
    }

    /// Delete an object; a missing one is not an error.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match &self.backend {
            Backend::Dir(root) => match fs::remove_file(root.join(rel)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("delete", root.join(rel))(e)),
            },
            Backend::Object { store, prefix, .. } => match store.delete(&Self::obj_path(prefix, rel)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Every object under `dir` (recursive), sorted by path.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        match &self.backend {
            Backend::Dir(root) => {
                let base = root.join(dir);
                if !base.exists() {
                    return Ok(out);
                }
                for item in walkdir::WalkDir::new(&base) {
                    let item = item.map_err(|e| Error::Io {
                        op: "list",
                        path: base.clone(),
                        source: e.into(),
                    })?;
                    if !item.file_type().is_file() {
                        continue;
                    }
                    let Ok(rel) = item.path().strip_prefix(root) else {
                        continue;
                    };
                    let meta = item.metadata().map_err(|e| Error::Io {
                        op: "stat",
                        path: item.path().into(),
                        source: e.into(),
                    })?;
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    out.push(Listed {
                        path: rel.to_string_lossy().into_owned(),
                        size: meta.len(),
                        modified,
                    });
                }
            }
            Backend::Object { store, prefix, .. } => {
                let p = Self::obj_path(prefix, dir);
                let mut s = store.list(Some(&p));
                while let Some(m) = s.next().await {
                    let m = m?;
                    let full = m.location.to_string();
                    let rel = if prefix.is_empty() {
                        full
                    } else {
                        full.strip_prefix(&format!("{prefix}/"))
                            .unwrap_or(&full)
                            .to_owned()
                    };
                    out.push(Listed {
                        path: rel,
                        size: m.size,
                        modified: u64::try_from(m.last_modified.timestamp()).unwrap_or(0),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Remove spool files older than `max_age_secs` left by killed uploads (directory
    /// stores only; S3 discards abandoned multipart uploads by lifecycle rules).
    pub fn sweep_temp(&self, max_age_secs: u64) -> Result<usize> {
        let Backend::Dir(root) = &self.backend else {
            return Ok(0);
        };
        let tmp = root.join("tmp");
        let mut n = 0;
        let now = now_secs();
        for item in fs::read_dir(&tmp).map_err(io("read directory", &tmp))? {
            let item = item.map_err(io("read directory", &tmp))?;
            let age = item
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| now.saturating_sub(d.as_secs()))
                .unwrap_or(0);
            if age >= max_age_secs && fs::remove_file(item.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Read all of `r` into `w` while hashing: used to digest a finished zip.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).map_err(io("open", path))?;
    let mut r = crate::archive::HashingReader::new(std::io::BufReader::with_capacity(1 << 20, f));
    let mut sink = [0u8; 1 << 16];
    while r.read(&mut sink).map_err(io("read", path))? > 0 {}
    r.finish().map_err(io("read", path))
}
