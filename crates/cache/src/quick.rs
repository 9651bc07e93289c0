//! The quick check that lets a push skip archiving a tree that has not changed since the
//! key was last written, and the fingerprint it compares.
//!
//! A fingerprint hashes every entry's path and `lstat` record (type and mode, uid, gid,
//! size, mtime and ctime to the nanosecond, inode and device) and each symlink's target,
//! sorted by path — the fields git's index compares. Any write, chmod, `touch`, rename,
//! replacement, added or removed entry changes it. As in git's racy-clean handling, a
//! fingerprint is only trusted when no entry was modified within [`RACY_MARGIN`] of the
//! walk that took it: a file written again within the same timestamp tick would otherwise
//! look unchanged. An untrusted fingerprint is stored as `racy:…` and never matches, so
//! the next push archives again (and content addressing still skips the upload).
//!
//! [`quick_fingerprint`] computes the same value as [`fingerprint`] over
//! [`crate::paths::PathSet::collect`]'s entries, without building them: a walk with
//! `openat`/`getdents64`/`fstatat` on every CPU, because an unchanged push costs exactly
//! one walk of the tree.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::GlobSet;

use crate::archive::Format;
use crate::paths::{Entry, PathSet};

/// Entries modified this close to (or after) the start of the walk make a fingerprint
/// untrusted. Two seconds covers filesystems with 1- and 2-second timestamps (ext3,
/// FAT) and coarse-clock lag on the nanosecond ones.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

const TRUSTED: &str = "stat:";
const RACY: &str = "racy:";

/// The `lstat` fields a fingerprint covers, the same whether they come from
/// [`std::fs::Metadata`] or a raw `fstatat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatRec {
    /// Full `st_mode`: file type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl StatRec {
    fn from_meta(m: &std::fs::Metadata) -> Self {
        StatRec {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // field widths differ by target
    fn from_stat(st: &libc::stat) -> Self {
        StatRec {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

/// Sums per-entry digests: the fingerprint is a hash of that sum and the entry count,
/// so it does not depend on the order entries are found in and the parallel walk needs
/// neither to keep nor to sort them. The sum is taken lane-wise over four u64 lanes;
/// entries are unique paths, so nothing cancels out.
#[derive(Debug, Clone, Copy)]
struct Acc {
    sum: [u64; 4],
    count: u64,
    racy: bool,
    /// Seconds and nanoseconds from which on a timestamp counts as racy.
    racy_from: (i64, i64),
}

impl Acc {
    fn new(walk_start: SystemTime) -> Self {
        let since = walk_start
            .checked_sub(RACY_MARGIN)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Acc {
            sum: [0; 4],
            count: 0,
            racy: false,
            racy_from: (
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                i64::from(since.subsec_nanos()),
            ),
        }
    }

    /// Add one entry; `scratch` is a reusable buffer for its record.
    fn add(&mut self, scratch: &mut Vec<u8>, rel: &str, st: &StatRec, link: &[u8]) {
        if st.mtime >= self.racy_from || st.ctime >= self.racy_from {
            self.racy = true;
        }
        let b = scratch;
        b.clear();
        b.extend_from_slice(&(rel.len() as u64).to_le_bytes());
        b.extend_from_slice(rel.as_bytes());
        b.extend_from_slice(&st.mode.to_le_bytes());
        b.extend_from_slice(&st.uid.to_le_bytes());
        b.extend_from_slice(&st.gid.to_le_bytes());
        b.extend_from_slice(&st.size.to_le_bytes());
        for t in [st.mtime.0, st.mtime.1, st.ctime.0, st.ctime.1] {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(&st.ino.to_le_bytes());
        b.extend_from_slice(&st.dev.to_le_bytes());
        b.extend_from_slice(&(link.len() as u64).to_le_bytes());
        b.extend_from_slice(link);
        let h = blake3::hash(b);
        for (lane, chunk) in self.sum.iter_mut().zip(h.as_bytes().chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            *lane = lane.wrapping_add(u64::from_le_bytes(w));
        }
        self.count += 1;
    }

    fn merge(&mut self, other: &Acc) {
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            *a = a.wrapping_add(b);
        }
        self.count += other.count;
        self.racy |= other.racy;
    }

    fn finish(&self, format: Format) -> String {
        let mut h = blake3::Hasher::new();
        h.update(format!("podci-fingerprint-v2 {format:?}\n").as_bytes());
        h.update(&self.count.to_le_bytes());
        for lane in self.sum {
            h.update(&lane.to_le_bytes());
        }
        let hex = h.finalize().to_hex();
        if self.racy {
            format!("{RACY}{hex}")
        } else {
            format!("{TRUSTED}{hex}")
        }
    }
}

/// Whether a stored fingerprint can prove a tree unchanged (it is not racy, and was
/// written by this version).
pub fn is_trusted(fingerprint: &str) -> bool {
    fingerprint.starts_with(TRUSTED)
}

/// The fingerprint of collected `entries` under `root`; `walk_start` is when
/// collecting began, for the racy check.
pub fn fingerprint(root: &Path, entries: &[Entry], format: Format, walk_start: SystemTime) -> String {
    let mut acc = Acc::new(walk_start);
    let mut scratch = Vec::with_capacity(256);
    for e in entries {
        let st = StatRec::from_meta(&e.meta);
        let link = if st.is_symlink() {
            std::fs::read_link(root.join(&e.rel))
                .map(|p| p.into_os_string().into_vec())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        acc.add(&mut scratch, &e.rel, &st, &link);
    }
    acc.finish(format)
}

/// What [`quick_fingerprint`] returns when it can walk the selection itself.
#[derive(Debug)]
pub struct Quick {
    pub fingerprint: String,
    pub entries: u64,
    /// The same warnings [`crate::paths::PathSet::collect`] gives.
    pub warnings: Vec<String>,
}

/// The fingerprint [`fingerprint`] would compute over `set.collect(project_dir)`, with
/// the same warnings, from a walk of its own.
///
/// `None` when the set has globs or `untracked` (their matching needs the full
/// collection), when one path lies inside another (collecting merges them), or when the
/// walk hit anything unexpected (an unreadable directory, an entry that vanished
/// mid-walk): the caller then takes the full path, which reports such problems properly.
pub fn quick_fingerprint(
    project_dir: &Path,
    set: &PathSet,
    format: Format,
    walk_start: SystemTime,
) -> Option<Quick> {
    let (roots, exclude) = set.literal_plan()?;
    quick_walk(project_dir, &roots, exclude, format, walk_start)
}

/// Whether collecting `a` and `b` could yield the same entry.
fn overlaps(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        outer.is_empty() || inner == outer || inner.strip_prefix(outer).is_some_and(|r| r.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// [`quick_fingerprint`] for `roots` (literal paths relative to `project_dir`, each
/// taken with everything under it; `Err` holds a pattern outside the project, reported
/// as a warning) minus entries matching `exclude`.
fn quick_walk(
    project_dir: &Path,
    roots: &[Result<&str, &str>],
    exclude: &GlobSet,
    format: Format,
    walk_start: SystemTime,
) -> Option<Quick> {
    let literal: Vec<&str> = roots.iter().filter_map(|r| r.ok()).collect();
    for (i, a) in literal.iter().enumerate() {
        if literal[i + 1..].iter().any(|b| overlaps(a, b)) {
            return None;
        }
    }
    let base = open_dir(libc::AT_FDCWD, &cpath(project_dir.as_os_str())?, false)?;
    let base = Arc::new(base);
    let mut warnings = Vec::new();
    let mut acc = Acc::new(walk_start);
    let mut scratch = Vec::with_capacity(256);
    let mut jobs = Vec::new();
    for root in roots {
        let rel = match root {
            Err(raw) => {
                warnings.push(format!(
                    "{raw}: path is not a subpath of the project directory {}; skipped",
                    project_dir.display()
                ));
                continue;
            }
            Ok(rel) => *rel,
        };
        let name = if rel.is_empty() { "." } else { rel };
        let cname = cpath(OsStr::new(name))?;
        let st = match stat_at(base.as_raw_fd(), &cname) {
            Ok(st) => st,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(format!("{rel}: no matching files"));
                continue;
            }
            Err(_) => return None,
        };
        if !rel.is_empty() && (exclude.is_empty() || !exclude.is_match(rel)) {
            let link = if st.is_symlink() {
                read_link_at(base.as_raw_fd(), &cname)?
            } else {
                Vec::new()
            };
            acc.add(&mut scratch, rel, &st, &link);
        }
        if st.is_dir() {
            jobs.push(Job {
                parent: Arc::clone(&base),
                name: cname,
                rel: rel.to_owned(),
                record: false,
            });
        }
    }
    acc.merge(&walk(jobs, exclude, acc)?);
    Some(Quick {
        fingerprint: acc.finish(format),
        entries: acc.count,
        warnings,
    })
}

/// A directory to list: opened relative to its parent's descriptor, which the `Arc`
/// keeps open until every child is opened (so open descriptors stay few).
struct Job {
    parent: Arc<OwnedFd>,
    name: CString,
    rel: String,
    /// Whether the directory's own entry is still to be added (found by its type in
    /// the parent's listing and not stat'ed yet: `fstat` on the opened descriptor
    /// saves the second name lookup a `fstatat` would cost).
    record: bool,
}

/// Work shared between walkers. Each walker keeps its own stack of directories and
/// hands half of it over only when another walker is idle, so a walk of thousands of
/// directories takes the lock and wakes threads a handful of times, not per directory.
struct Queue {
    jobs: Vec<Job>,
    /// Walkers not waiting for work; the walk is over when none are and `jobs` is empty.
    busy: usize,
    done: bool,
    failed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    cv: Condvar,
    /// Walkers waiting for work, readable without the lock.
    idle: AtomicUsize,
}

/// Walker threads: `PODCI_WALK_THREADS`, else two per CPU up to 16. A warm walk is
/// kernel CPU time (name lookups, directory reads), so one per CPU would do on an idle
/// machine; the second per CPU keeps stats in flight while others wait for the disk or
/// a network volume (a cold PVC), and for a CPU on a busy node.
fn walk_threads() -> usize {
    if let Some(n) = std::env::var("PODCI_WALK_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n.min(64);
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cpus * 2).clamp(2, 16)
}

/// List every job's directory tree on [`walk_threads`] threads; the returned sum
/// covers every entry below the jobs' directories (not the directories themselves).
/// `template` carries the racy threshold.
fn walk(jobs: Vec<Job>, exclude: &GlobSet, template: Acc) -> Option<Acc> {
    let mut total = Acc {
        sum: [0; 4],
        count: 0,
        racy: false,
        ..template
    };
    if jobs.is_empty() {
        return Some(total);
    }
    let threads = walk_threads();
    let shared = Shared {
        queue: Mutex::new(Queue {
            jobs,
            busy: threads,
            done: false,
            failed: false,
        }),
        cv: Condvar::new(),
        idle: AtomicUsize::new(0),
    };
    let parts: Vec<Option<Acc>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| walker(&shared, exclude, total)))
            .collect();
        handles.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    for p in parts {
        total.merge(&p?);
    }
    Some(total)
}

fn walker(shared: &Shared, exclude: &GlobSet, template: Acc) -> Option<Acc> {
    let mut acc = template;
    let mut local: Vec<Job> = Vec::new();
    let mut scratch = Vec::with_capacity(256);
    let mut rel = String::with_capacity(256);
    // getdents64 buffer; u64 elements keep the records 8-byte aligned.
    let mut buf = vec![0u64; 4 * 1024];
    let fail = || {
        if let Ok(mut q) = shared.queue.lock() {
            q.failed = true;
        }
        shared.cv.notify_all();
        None
    };
    loop {
        let job = match local.pop() {
            Some(j) => j,
            None => {
                let mut q = shared.queue.lock().ok()?;
                loop {
                    if q.failed {
                        return None;
                    }
                    if let Some(j) = q.jobs.pop() {
                        break j;
                    }
                    q.busy -= 1;
                    if q.busy == 0 {
                        q.done = true;
                        shared.cv.notify_all();
                        return Some(acc);
                    }
                    shared.idle.fetch_add(1, Ordering::SeqCst);
                    q = shared.cv.wait(q).ok()?;
                    shared.idle.fetch_sub(1, Ordering::SeqCst);
                    if q.done {
                        return Some(acc);
                    }
                    q.busy += 1;
                }
            }
        };
        let ctx = DirCtx {
            exclude,
            buf: &mut buf,
            scratch: &mut scratch,
            rel: &mut rel,
        };
        if list_dir(job, ctx, &mut acc, &mut local).is_none() {
            return fail();
        }
        if local.len() > 1 && shared.idle.load(Ordering::SeqCst) > 0 {
            let Ok(mut q) = shared.queue.lock() else {
                return fail();
            };
            // The oldest jobs are the shallowest: the biggest subtrees to give away.
            let give = local.len() / 2;
            q.jobs.extend(local.drain(..give));
            drop(q);
            shared.cv.notify_all();
        }
    }
}

/// Buffers a walker reuses for every directory.
struct DirCtx<'a> {
    exclude: &'a GlobSet,
    buf: &'a mut [u64],
    scratch: &'a mut Vec<u8>,
    rel: &'a mut String,
}

/// Add every entry of one directory to `acc`; push its subdirectories onto `found`.
fn list_dir(job: Job, ctx: DirCtx<'_>, acc: &mut Acc, found: &mut Vec<Job>) -> Option<()> {
    let fd = open_dir(job.parent.as_raw_fd(), &job.name, true)?;
    drop(job.parent);
    if job.record {
        let st = fstat(fd.as_raw_fd())?;
        if ctx.exclude.is_empty() || !ctx.exclude.is_match(job.rel.as_str()) {
            acc.add(ctx.scratch, &job.rel, &st, &[]);
        }
    }
    let fd = Arc::new(fd);
    let bytes_len = ctx.buf.len() * 8;
    loop {
        // SAFETY: the buffer is valid for `bytes_len` bytes and the fd is open.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                ctx.buf.as_mut_ptr().cast::<libc::c_void>(),
                bytes_len,
            )
        };
        if n < 0 {
            return None;
        }
        if n == 0 {
            return Some(());
        }
        // SAFETY: reinterpreting initialised u64s as bytes; `n` <= the buffer's size.
        let bytes = unsafe { std::slice::from_raw_parts(ctx.buf.as_ptr().cast::<u8>(), n as usize) };
        let mut off = 0usize;
        while off + 19 < bytes.len() {
            let reclen = usize::from(u16::from_ne_bytes([bytes[off + 16], bytes[off + 17]]));
            if reclen < 20 || off + reclen > bytes.len() {
                return None;
            }
            let d_type = bytes[off + 18];
            let name = CStr::from_bytes_until_nul(&bytes[off + 19..off + reclen]).ok()?;
            off += reclen;
            let nb = name.to_bytes();
            if nb == b"." || nb == b".." {
                continue;
            }
            // The full path skips names that are not UTF-8 too (with a warning).
            let Ok(name_str) = std::str::from_utf8(nb) else {
                continue;
            };
            let rel = &mut *ctx.rel;
            rel.clear();
            if !job.rel.is_empty() {
                rel.push_str(&job.rel);
                rel.push('/');
            }
            rel.push_str(name_str);
            if d_type == libc::DT_DIR {
                found.push(Job {
                    parent: Arc::clone(&fd),
                    name: name.to_owned(),
                    rel: rel.clone(),
                    record: true,
                });
                continue;
            }
            let st = stat_at(fd.as_raw_fd(), name).ok()?;
            if ctx.exclude.is_empty() || !ctx.exclude.is_match(rel.as_str()) {
                if st.is_symlink() {
                    let link = read_link_at(fd.as_raw_fd(), name)?;
                    acc.add(ctx.scratch, rel, &st, &link);
                } else {
                    acc.add(ctx.scratch, rel, &st, &[]);
                }
            }
            if st.is_dir() {
                found.push(Job {
                    parent: Arc::clone(&fd),
                    name: name.to_owned(),
                    rel: rel.clone(),
                    record: false,
                });
            }
        }
    }
}

fn cpath(s: &OsStr) -> Option<CString> {
    CString::new(s.as_bytes()).ok()
}

fn open_dir(parent: RawFd, name: &CStr, nofollow: bool) -> Option<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: `name` is NUL-terminated; the returned fd is owned by the OwnedFd.
    let fd = unsafe { libc::openat(parent, name.as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat_at(dir: RawFd, name: &CStr) -> std::io::Result<StatRec> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and `st` is a valid out-pointer.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(StatRec::from_stat(&st))
}

fn fstat(fd: RawFd) -> Option<StatRec> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer and `fd` is open.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(StatRec::from_stat(&st))
}

fn read_link_at(dir: RawFd, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `name` is NUL-terminated and `buf` is valid for its length.
        let n = unsafe {
            libc::readlinkat(
                dir,
                name.as_ptr(),
                buf.as_mut_ptr().cast::<libc::c_char>(),
                buf.len(),
            )
        };
        if n < 0 {
            return None;
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Some(buf);
        }
        if buf.len() >= 1 << 16 {
            return None;
        }
        buf.resize(buf.len() * 4, 0);
    }
}
