//! Archive formats: podci's native tar + zstd stream and GitLab Runner's `cache.zip`, both
//! written from a collected file list and extracted safely.
//!
//! Extraction never touches the target directory until the whole archive has been read
//! and checked: entries go into a staging directory next to the files they will replace,
//! and only a complete, verified archive is moved into place (renames, so the move costs
//! almost nothing). Entry names that are absolute, contain `..`, pass through a symlink,
//! or symlinks whose target leaves the tree are refused with [`Error::UnsafeEntry`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::SystemTime;

use filetime::FileTime;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io};
use crate::file_pool::{CHUNK as POOL_CHUNK, FilePool, Finish};
use crate::paths::{Entry, EntryKind};

/// The archive formats podci reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// tar stream compressed with multi-threaded zstd; podci's default.
    #[default]
    TarZstd,
    /// GitLab Runner's `cache.zip` (deflate, with unix modes, symlinks and times).
    Zip,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tar-zstd" | "tarzstd" | "tar.zst" => Ok(Format::TarZstd),
            "zip" => Ok(Format::Zip),
            other => Err(format!("unknown archive format {other:?}; use tar-zstd or zip")),
        }
    }
}

/// Counts reported after writing or extracting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Files, directories and symlinks.
    pub entries: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
}

/// Knobs for writing archives.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// zstd level. podci defaults to 1: caches are dominated by already-compressed
    /// jars and tarballs, where level 1 is about 3x faster than zstd 1.5.7's level 3
    /// for archives about 0.3% larger (measured by bench/cache.sh).
    pub zstd_level: i32,
    /// zstd worker threads; 0 means one per CPU.
    pub threads: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            zstd_level: 1,
            threads: 0,
        }
    }
}

fn worker_threads(requested: u32) -> u32 {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn mtime_secs(meta: &fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

/// Write `entries` (from [`crate::paths::PathSet::collect`]) as a tar + zstd stream
/// whose frame carries zstd's own content checksum.
pub fn write_tar_zst<W: Write>(
    root: &Path,
    entries: &[Entry],
    out: W,
    opts: WriteOptions,
) -> Result<(W, Stats)> {
    write_tar_zst_checked(root, entries, out, opts, true)
}

/// [`write_tar_zst`], with zstd's frame checksum optional. Archives stored under their
/// BLAKE3 digest leave it out: every pull verifies the digest of the whole stream
/// anyway, and the checksum costs a pass over every byte on both push and pull (7% of
/// a push's CPU time in a profile). Readers accept both.
pub(crate) fn write_tar_zst_checked<W: Write>(
    root: &Path,
    entries: &[Entry],
    out: W,
    opts: WriteOptions,
    frame_checksum: bool,
) -> Result<(W, Stats)> {
    let zerr = |e: io::Error| Error::Io {
        op: "compress",
        path: root.to_path_buf(),
        source: e,
    };
    let mut enc = zstd::stream::write::Encoder::new(out, opts.zstd_level).map_err(zerr)?;
    enc.multithread(worker_threads(opts.threads)).map_err(zerr)?;
    // The output stays byte-identical for identical input either way, so content
    // addressing dedupes.
    enc.include_checksum(frame_checksum).map_err(zerr)?;
    // Batch tar's small header and 8 KiB content writes into large zstd inputs.
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, enc));
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut stats = Stats::default();
    for e in entries {
        let full = root.join(&e.rel);
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.meta.mode() & 0o7777);
        h.set_uid(u64::from(e.meta.uid()));
        h.set_gid(u64::from(e.meta.gid()));
        h.set_mtime(mtime_secs(&e.meta));
        let werr = |err: io::Error| Error::Io {
            op: "archive",
            path: full.clone(),
            source: err,
        };
        match e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", e.rel), io::empty())
                    .map_err(werr)?;
            }
            EntryKind::Symlink => {
                let target = fs::read_link(&full).map_err(io("read link", &full))?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &e.rel, &target).map_err(werr)?;
            }
            EntryKind::File => {
                let f = File::open(&full).map_err(io("open", &full))?;
                // The header's size is the one collected; the content is cut or
                // zero-filled to it, so a file changing meanwhile cannot break the stream.
                let len = e.meta.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                tar.append_data(&mut h, &e.rel, io::empty()).map_err(werr)?;
                // Copy straight into the BufWriter: `io::copy` then reads up to its whole
                // megabyte per syscall, where tar's own copy goes 8 KiB at a time.
                let w = tar.get_mut();
                let copied = io::copy(&mut (&f).take(len), w).map_err(werr)?;
                if copied < len {
                    tracing::warn!("{} shrank while being archived; zero-filled", full.display());
                    io::copy(&mut io::repeat(0).take(len - copied), w).map_err(werr)?;
                }
                let pad = (512 - len % 512) % 512;
                w.write_all(&[0u8; 512][..pad as usize]).map_err(werr)?;
                stats.content_bytes += len;
            }
        }
        stats.entries += 1;
    }
    let enc = tar
        .into_inner()
        .map_err(zerr)?
        .into_inner()
        .map_err(|e| zerr(e.into_error()))?;
    let out = enc.finish().map_err(zerr)?;
    Ok((out, stats))
}

const ZIP_EXT_TIMESTAMP: u16 = 0x5455;
const ZIP_UNIX_UIDGID: u16 = 0x7875;

/// Write `entries` as a zip in GitLab Runner's layout: directories end in `/`, files
/// are deflated, symlinks are stored entries holding their target, and every entry
/// carries the extended-timestamp (0x5455) and unix uid/gid (0x7875) extra fields.
pub fn write_zip<W: Write + Seek>(root: &Path, entries: &[Entry], out: W) -> Result<(W, Stats)> {
    use zip::write::FullFileOptions;
    let zerr = |e: zip::result::ZipError| Error::Io {
        op: "write zip",
        path: root.to_path_buf(),
        source: io::Error::other(e),
    };
    let mut zw = zip::ZipWriter::new(out);
    let mut stats = Stats::default();
    for e in entries {
        let full = root.join(&e.rel);
        let mtime = mtime_secs(&e.meta);
        let mut opts = FullFileOptions::default()
            .unix_permissions(e.meta.mode() & 0o7777)
            .last_modified_time(dos_time(mtime))
            .large_file(e.meta.len() >= u32::MAX as u64);
        let mut ts = vec![1u8];
        ts.extend_from_slice(&(u32::try_from(mtime).unwrap_or(u32::MAX)).to_le_bytes());
        opts.add_extra_field(ZIP_EXT_TIMESTAMP, ts, false).map_err(zerr)?;
        let mut ux = vec![1u8, 4];
        ux.extend_from_slice(&e.meta.uid().to_le_bytes());
        ux.push(4);
        ux.extend_from_slice(&e.meta.gid().to_le_bytes());
        opts.add_extra_field(ZIP_UNIX_UIDGID, ux, false).map_err(zerr)?;
        match e.kind {
            EntryKind::Dir => zw.add_directory(format!("{}/", e.rel), opts).map_err(zerr)?,
            EntryKind::Symlink => {
                let target = fs::read_link(&full).map_err(io("read link", &full))?;
                let target = target.to_str().ok_or_else(|| Error::UnsafeEntry {
                    entry: e.rel.clone(),
                    reason: "symlink target is not UTF-8".into(),
                })?;
                zw.add_symlink(&e.rel, target, opts).map_err(zerr)?;
            }
            EntryKind::File => {
                let opts = opts.compression_method(zip::CompressionMethod::Deflated);
                zw.start_file(&e.rel, opts).map_err(zerr)?;
                let mut f = File::open(&full).map_err(io("open", &full))?;
                stats.content_bytes += io::copy(&mut f, &mut zw).map_err(io("archive", &full))?;
            }
        }
        stats.entries += 1;
    }
    let out = zw.finish().map_err(zerr)?;
    Ok((out, stats))
}

/// Unix seconds -> zip's DOS date/time (UTC; DOS time has 2-second resolution).
fn dos_time(secs: u64) -> zip::DateTime {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(1980, 2107) as u16;
    zip::DateTime::from_date_and_time(
        y,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        ((rem % 3600) / 60) as u8,
        (rem % 60) as u8,
    )
    .unwrap_or_default()
}

fn unix_from_dos(dt: &zip::DateTime) -> u64 {
    let days = days_from_civil(i64::from(dt.year()), u32::from(dt.month()), u32::from(dt.day()));
    let secs =
        days * 86400 + i64::from(dt.hour()) * 3600 + i64::from(dt.minute()) * 60 + i64::from(dt.second());
    u64::try_from(secs).unwrap_or(0)
}

// Howard Hinnant's civil-calendar algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks entry names and symlink targets while an archive is extracted into `root`.
struct Guard {
    root: PathBuf,
    made_dirs: HashSet<PathBuf>,
    /// Symlinks are created after every other entry, so nothing is written through one.
    links: Vec<(String, PathBuf, Option<u64>)>,
    link_names: HashSet<String>,
    dir_times: Vec<(PathBuf, u64)>,
    stats: Stats,
    /// One copy buffer for every file: allocating per file costs an mmap each.
    buf: Vec<u8>,
}

impl Guard {
    fn new(root: &Path) -> Self {
        Guard {
            root: root.to_path_buf(),
            made_dirs: HashSet::new(),
            links: Vec::new(),
            link_names: HashSet::new(),
            dir_times: Vec::new(),
            stats: Stats::default(),
            buf: vec![0u8; 256 * 1024],
        }
    }

    /// Clean an entry name into a relative path; `None` for the archive root itself.
    fn check(&self, name: &str) -> Result<Option<String>> {
        let refuse = |reason: &str| {
            Err(Error::UnsafeEntry {
                entry: name.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if name.starts_with('/') {
            return refuse("absolute path");
        }
        let mut parts = Vec::new();
        for seg in name.split('/') {
            match seg {
                "" | "." => {}
                ".." => return refuse("path contains `..`"),
                s if s.contains('\0') => return refuse("path contains a NUL byte"),
                s => parts.push(s),
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(parts.join("/")))
    }

    fn parent_dirs(&mut self, rel: &str) -> Result<PathBuf> {
        let full = self.root.join(rel);
        if let Some(parent) = full.parent()
            && !self.made_dirs.contains(parent)
        {
            fs::create_dir_all(parent).map_err(io("create directory", parent))?;
            let mut p = parent.to_path_buf();
            while p.starts_with(&self.root) && self.made_dirs.insert(p.clone()) {
                if !p.pop() {
                    break;
                }
            }
        }
        Ok(full)
    }

    fn dir(&mut self, rel: &str, mode: Option<u32>, mtime: Option<u64>) -> Result<()> {
        let full = self.parent_dirs(rel)?;
        match fs::create_dir(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && full.is_dir() => {}
            Err(e) => return Err(io("create directory", &full)(e)),
        }
        if let Some(mode) = mode {
            // Keep directories writable for the rest of the extraction; GNU tar does too.
            fs::set_permissions(&full, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
                .map_err(io("chmod", &full))?;
        }
        if let Some(t) = mtime {
            self.dir_times.push((full.clone(), t));
        }
        self.made_dirs.insert(full);
        self.stats.entries += 1;
        Ok(())
    }

    fn file(
        &mut self,
        rel: &str,
        mode: Option<u32>,
        mtime: Option<u64>,
        content: &mut dyn Read,
    ) -> Result<()> {
        let full = self.parent_dirs(rel)?;
        let mut f = File::create(&full).map_err(io("create", &full))?;
        let n = copy_big(content, &mut f, &mut self.buf).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                Error::Corrupt(format!("reading {rel}: {e}"))
            }
            _ => Error::Io {
                op: "write",
                path: full.clone(),
                source: e,
            },
        })?;
        if let Some(mode) = mode {
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io("chmod", &full))?;
        }
        if let Some(t) = mtime {
            filetime::set_file_handle_times(&f, None, Some(FileTime::from_unix_time(t as i64, 0)))
                .map_err(io("set mtime", &full))?;
        }
        self.stats.entries += 1;
        self.stats.content_bytes += n;
        Ok(())
    }

    /// Read a file's content from the archive and hand it to the pool to write.
    fn pooled_file(
        &mut self,
        pool: &FilePool,
        rel: &str,
        finish: Finish,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        let full = self.parent_dirs(rel)?;
        let read = |e: io::Error| Error::Corrupt(format!("reading {rel}: {e}"));
        if size <= POOL_CHUNK as u64 {
            let mut data = pool.buffer();
            data.resize(size as usize, 0);
            content.read_exact(&mut data).map_err(read)?;
            pool.whole(full, finish, data)?;
        } else {
            let file = pool.open(full, finish)?;
            let mut offset = 0u64;
            while offset < size {
                let n = (size - offset).min(POOL_CHUNK as u64) as usize;
                let mut data = pool.buffer();
                data.resize(n, 0);
                content.read_exact(&mut data).map_err(read)?;
                pool.chunk(&file, offset, data)?;
                offset += n as u64;
            }
        }
        self.stats.entries += 1;
        self.stats.content_bytes += size;
        Ok(())
    }

    fn hardlink(&mut self, rel: &str, target: &str) -> Result<()> {
        let Some(t) = self.check(target)? else {
            return Err(Error::UnsafeEntry {
                entry: rel.into(),
                reason: "hard link to the archive root".into(),
            });
        };
        let src = self.root.join(&t);
        let full = self.parent_dirs(rel)?;
        fs::hard_link(&src, &full).map_err(|e| Error::UnsafeEntry {
            entry: rel.into(),
            reason: format!("hard link to {t:?} that is not an earlier file entry ({e})"),
        })?;
        self.stats.entries += 1;
        Ok(())
    }

    fn symlink(&mut self, rel: &str, target: PathBuf, mtime: Option<u64>) {
        self.link_names.insert(rel.to_owned());
        self.links.push((rel.to_owned(), target, mtime));
    }

    /// Create the deferred symlinks once every name in the archive is known, refusing
    /// any whose target leaves the tree, lexically or by climbing through another link.
    fn finish(mut self) -> Result<Stats> {
        for (rel, _, _) in &self.links {
            let mut prefix = String::new();
            for seg in rel.split('/') {
                if !prefix.is_empty() && self.link_names.contains(&prefix) {
                    return Err(Error::UnsafeEntry {
                        entry: rel.clone(),
                        reason: format!("path passes through symlink {prefix:?}"),
                    });
                }
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(seg);
            }
        }
        for (rel, target, _) in &self.links {
            check_link_target(rel, target, &self.link_names)?;
        }
        let links = std::mem::take(&mut self.links);
        for (rel, target, mtime) in links {
            let full = self.parent_dirs(&rel)?;
            if fs::symlink_metadata(&full).is_ok() {
                return Err(Error::UnsafeEntry {
                    entry: rel,
                    reason: "symlink name is also a file or directory in the archive".into(),
                });
            }
            std::os::unix::fs::symlink(&target, &full).map_err(io("create symlink", &full))?;
            if let Some(t) = mtime {
                let ft = FileTime::from_unix_time(t as i64, 0);
                filetime::set_symlink_file_times(&full, ft, ft).map_err(io("set mtime", &full))?;
            }
            self.stats.entries += 1;
        }
        // Children change their directory's mtime, so directory times go last, deepest first.
        for (dir, t) in self.dir_times.iter().rev() {
            let ft = FileTime::from_unix_time(*t as i64, 0);
            filetime::set_file_mtime(dir, ft).map_err(io("set mtime", dir))?;
        }
        Ok(self.stats)
    }
}

fn check_link_target(rel: &str, target: &Path, links: &HashSet<String>) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::UnsafeEntry {
            entry: rel.to_owned(),
            reason,
        })
    };
    let Some(t) = target.to_str() else {
        return refuse("symlink target is not UTF-8".into());
    };
    if t.starts_with('/') {
        return refuse(format!(
            "symlink to absolute path {t:?} escapes the extraction directory"
        ));
    }
    let mut stack: Vec<&str> = rel.split('/').collect();
    stack.pop();
    for seg in t.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                let here = stack.join("/");
                if !here.is_empty() && links.contains(&here) {
                    return refuse(format!("symlink target {t:?} climbs out of another symlink"));
                }
                if stack.pop().is_none() {
                    return refuse(format!("symlink target {t:?} escapes the extraction directory"));
                }
            }
            s => stack.push(s),
        }
    }
    Ok(())
}

/// `io::copy` with a larger buffer: extraction is bound by syscalls per file.
fn copy_big(r: &mut dyn Read, w: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// A reader fed by the decompression thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Spent chunks go back to the producer, so no chunk is allocated twice.
    back: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.buf, chunk);
                    if spent.capacity() > 0 {
                        let _ = self.back.send(spent);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }
    /// Read the rest of the input (so the digest covers all of it) and return
    /// `blake3:<hex>` and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("blake3:{}", self.hasher.finalize().to_hex()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }
    /// The inner writer, `blake3:<hex>` and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("blake3:{}", self.hasher.finalize().to_hex()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for HashingWriter<W> {
    // Only used by the zip writer, whose output is hashed by re-reading the file.
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// A writer that hands 1 MiB chunks to its own thread, which hashes and writes them:
/// the thread producing the archive never waits for hashing or the disk.
pub struct ThreadedHashWriter {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    back: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    handle: Option<std::thread::JoinHandle<io::Result<(String, u64)>>>,
}

const CHUNK: usize = 1 << 20;

impl ThreadedHashWriter {
    /// Write into `file`. With `writeback` the kernel is asked to start writing back
    /// every few MiB as they are written, so the final fsync finds little left to do.
    pub fn new(mut file: File, writeback: bool) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
        let (back_tx, back) = mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || -> io::Result<(String, u64)> {
            use std::os::fd::AsRawFd;
            let mut hasher = blake3::Hasher::new();
            let mut count = 0u64;
            let mut flushed = 0u64;
            for mut chunk in rx {
                hasher.update(&chunk);
                file.write_all(&chunk)?;
                count += chunk.len() as u64;
                if writeback && count - flushed >= 8 << 20 {
                    // SAFETY: plain syscall on an fd we own; a failure only loses the hint.
                    unsafe {
                        libc::sync_file_range(
                            file.as_raw_fd(),
                            flushed as libc::off64_t,
                            (count - flushed) as libc::off64_t,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                    }
                    flushed = count;
                }
                chunk.clear();
                let _ = back_tx.send(chunk);
            }
            file.flush()?;
            Ok((format!("blake3:{}", hasher.finalize().to_hex()), count))
        });
        ThreadedHashWriter {
            tx: Some(tx),
            back,
            buf: Vec::with_capacity(CHUNK),
            handle: Some(handle),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let next = self.back.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        if tx.send(full).is_err() {
            // The writer thread stopped: its error is reported by finish().
            return Err(self.join_error());
        }
        Ok(())
    }

    fn join_error(&mut self) -> io::Error {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("archive writer thread stopped"),
        }
    }

    /// Flush everything and return `blake3:<hex>` and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("archive writer thread panicked")),
        }
    }
}

impl Write for ThreadedHashWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Extract a tar + zstd stream into `dir` (a fresh staging directory). Decompression
/// runs on its own thread so that it overlaps with writing files.
/// `expected` is the `blake3:<hex>` digest the input must have; checked at the end.
pub fn extract_tar_zst<R: Read + Send>(input: R, dir: &Path, expected: Option<&str>) -> Result<Stats> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let decoder = s.spawn(move || -> io::Result<(String, u64)> {
            let mut hashing = HashingReader::new(input);
            let result = (|| {
                let mut dec = zstd::stream::read::Decoder::new(&mut hashing)?;
                loop {
                    let mut chunk = back_rx.try_recv().unwrap_or_default();
                    chunk.resize(1 << 20, 0);
                    let mut filled = 0;
                    while filled < chunk.len() {
                        match dec.read(&mut chunk[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    if filled == 0 {
                        return Ok(());
                    }
                    chunk.truncate(filled);
                    if tx.send(Ok(chunk)).is_err() {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = result {
                let _ = tx.send(Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())));
                return Err(e);
            }
            drop(tx);
            hashing.finish()
        });
        let reader = ChannelReader {
            rx,
            back: back_tx,
            buf: Vec::new(),
            pos: 0,
        };
        let extracted = extract_tar(reader, dir);
        let decoded = decoder
            .join()
            .map_err(|_| Error::Corrupt("decompression thread panicked".into()))?;
        let stats = extracted?;
        let (digest, _) = decoded.map_err(|e| Error::Corrupt(format!("zstd stream: {e}")))?;
        if let Some(want) = expected
            && want != digest
        {
            return Err(Error::Corrupt(format!(
                "digest {digest} does not match the stored {want}"
            )));
        }
        Ok(stats)
    })
}

fn extract_tar<R: Read>(reader: R, dir: &Path) -> Result<Stats> {
    let mut ar = tar::Archive::new(reader);
    let mut guard = Guard::new(dir);
    let pool = FilePool::new(extract_threads())?;
    // Names already handed to the pool: a name that comes again must wait until the
    // earlier write has landed, so the last entry wins as with a serial extraction.
    let mut written: HashSet<String> = HashSet::new();
    let corrupt = |e: io::Error| Error::Corrupt(format!("tar stream: {e}"));
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Some(rel) = guard.check(&name)? else {
            continue;
        };
        let h = entry.header();
        let mode = h.mode().ok();
        let mtime = h.mtime().ok();
        match h.entry_type() {
            tar::EntryType::Directory => guard.dir(&rel, mode, mtime)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if written.contains(&rel) {
                    pool.drain()?;
                } else {
                    written.insert(rel.clone());
                }
                let size = entry.size();
                guard.pooled_file(&pool, &rel, Finish { mode, mtime }, size, &mut entry)?
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| Error::Corrupt(format!("symlink {rel} has no target")))?
                    .into_owned();
                guard.symlink(&rel, target, mtime);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                // The target must be on disk before it can be linked.
                pool.drain()?;
                guard.hardlink(&rel, &target)?;
            }
            other => tracing::warn!("skipping archive entry {rel}: unsupported type {other:?}"),
        }
    }
    pool.finish()?;
    guard.finish()
}

/// Threads writing restored files: `PODCI_EXTRACT_THREADS`, else two per CPU up to
/// four (they spend most of their time in the kernel, so more than one per CPU helps).
fn extract_threads() -> usize {
    if let Some(n) = std::env::var("PODCI_EXTRACT_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n.min(64);
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cpus * 2).clamp(2, 4)
}

/// Extract a zip (GitLab Runner's `cache.zip`, or one made by `zip -r -y`) into `dir`.
pub fn extract_zip<R: Read + Seek>(input: R, dir: &Path) -> Result<Stats> {
    let corrupt = |e: zip::result::ZipError| Error::Corrupt(format!("zip: {e}"));
    let mut ar = zip::ZipArchive::new(input).map_err(corrupt)?;
    let mut guard = Guard::new(dir);
    for i in 0..ar.len() {
        let mut f = ar.by_index(i).map_err(corrupt)?;
        let name = String::from_utf8_lossy(f.name_raw()).into_owned();
        let Some(rel) = guard.check(&name)? else {
            continue;
        };
        let mode = f.unix_mode();
        let mut mtime = f.last_modified().map(|d| unix_from_dos(&d));
        for field in f.extra_data_fields() {
            if let zip::extra_fields::ExtraField::ExtendedTimestamp(ts) = field
                && let Some(t) = ts.mod_time()
            {
                mtime = Some(u64::from(t));
            }
        }
        if f.is_dir() {
            guard.dir(&rel, mode, mtime)?;
        } else if f.is_symlink() {
            let mut target = String::new();
            f.read_to_string(&mut target)
                .map_err(|e| Error::Corrupt(format!("zip symlink {rel}: {e}")))?;
            guard.symlink(&rel, PathBuf::from(target), mtime);
        } else {
            guard.file(&rel, mode, mtime, &mut f)?;
        }
    }
    guard.finish()
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// Prefix of staging directories; [`extract_atomically`] removes stale ones.
pub const STAGING_PREFIX: &str = ".podci-staging-";

/// Run `extract` into a fresh staging directory inside `target`, then move the result
/// into `target`. On any error the staging directory is removed and `target` is as it
/// was: a failed restore never leaves a half-extracted tree.
pub fn extract_atomically<T>(target: &Path, extract: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    fs::create_dir_all(target).map_err(io("create directory", target))?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!(
        "{STAGING_PREFIX}{}-{}-{nanos}",
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let staging = target.join(name);
    fs::create_dir(&staging).map_err(io("create staging directory", &staging))?;
    let result = extract(&staging).and_then(|v| merge(&staging, target).map(|()| v));
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Move everything from `src` into `dst`: new names are renamed whole, existing
/// directories are merged, anything else is replaced (a symlink in `dst` is replaced,
/// never followed).
fn merge(src: &Path, dst: &Path) -> Result<()> {
    for item in fs::read_dir(src).map_err(io("read directory", src))? {
        let item = item.map_err(io("read directory", src))?;
        let from = item.path();
        let to = dst.join(item.file_name());
        let from_is_dir = item.file_type().map_err(io("stat", &from))?.is_dir();
        match fs::symlink_metadata(&to) {
            Err(_) => fs::rename(&from, &to).map_err(io("move into place", &to))?,
            Ok(m) if m.is_dir() && from_is_dir => {
                merge(&from, &to)?;
                let meta = fs::metadata(&from).map_err(io("stat", &from))?;
                fs::set_permissions(&to, meta.permissions()).map_err(io("chmod", &to))?;
                filetime::set_file_mtime(&to, FileTime::from_last_modification_time(&meta))
                    .map_err(io("set mtime", &to))?;
            }
            Ok(m) => {
                if m.is_dir() {
                    fs::remove_dir_all(&to).map_err(io("replace directory", &to))?;
                } else if from_is_dir {
                    fs::remove_file(&to).map_err(io("replace file", &to))?;
                }
                fs::rename(&from, &to).map_err(io("move into place", &to))?;
            }
        }
    }
    Ok(())
}

/// Open a file for reading with a large buffer.
pub(crate) fn open_buffered(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).map_err(io("open", path))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for secs in [0u64, 315_532_800, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let days = (secs / 86400) as i64;
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{secs}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        let dt = dos_time(1_700_000_000);
        assert_eq!(unix_from_dos(&dt), 1_700_000_000);
    }

    #[test]
    fn link_targets() {
        let none = HashSet::new();
        assert!(check_link_target("a/b", Path::new("../c"), &none).is_ok());
        assert!(check_link_target("a/b", Path::new("../../c"), &none).is_err());
        assert!(check_link_target("a", Path::new("/etc"), &none).is_err());
        let links: HashSet<String> = ["s/l1".to_owned()].into();
        assert!(check_link_target("s/l2", Path::new("l1/../x"), &links).is_err());
        assert!(check_link_target("s/l2", Path::new("l1/x"), &links).is_ok());
    }
}
