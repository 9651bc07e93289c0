//! Writing extracted files on a small pool of threads.
//!
//! Restoring a cache is bound by syscalls: every file costs a create, writes, a chmod,
//! a time update and a close, and copying its bytes into the page cache. One thread
//! doing all of that while another decompresses leaves the archive reader waiting, so
//! extraction hands each file to this pool: files that fit one chunk travel whole (the
//! worker creates, writes and finishes them), bigger ones travel as positioned chunks
//! (`pwrite`) that any worker may write, and whichever worker drops the last chunk
//! finishes the file (mode and mtime go on after the last byte). The queue is bounded,
//! so at most `QUEUE` chunks of at most [`CHUNK`] bytes are held at once.
//!
//! The caller keeps everything that depends on order: it creates directories before
//! sending the files inside them, and calls [`FilePool::drain`] before an entry that
//! needs earlier files on disk (a hard link, a name written twice).

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use filetime::FileTime;

use crate::error::{Error, Result, io as io_err};

/// Largest piece of file content in one job.
pub(crate) const CHUNK: usize = 1 << 20;
/// Jobs waiting for a worker; bounds memory at about `QUEUE * CHUNK`.
const QUEUE: usize = 48;

/// Mode and mtime to set on a file once all of its content is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finish {
    pub mode: Option<u32>,
    pub mtime: Option<u64>,
}

/// A file being written in chunks; finished when the last holder drops it.
pub(crate) struct OpenFile {
    file: File,
    path: PathBuf,
    finish: Finish,
    shared: Arc<Shared>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Err(e) = finish_file(&self.file, &self.path, self.finish) {
            self.shared.fail(e);
        }
    }
}

enum Job {
    Whole {
        path: PathBuf,
        finish: Finish,
        data: Vec<u8>,
    },
    Chunk {
        file: Arc<OpenFile>,
        offset: u64,
        data: Vec<u8>,
    },
}

#[derive(Default)]
struct Shared {
    /// The first error any worker hit; later work is skipped.
    error: Mutex<Option<Error>>,
    /// Set with the first error and never cleared, so workers stop after it was taken.
    failed: AtomicBool,
    /// Jobs sent and not yet finished, for [`FilePool::drain`].
    pending: Mutex<usize>,
    idle: Condvar,
}

impl Shared {
    fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.error.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
    }
    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
    fn done_one(&self) {
        if let Ok(mut n) = self.pending.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.idle.notify_all();
            }
        }
    }
}

fn finish_file(f: &File, path: &std::path::Path, fin: Finish) -> Result<()> {
    if let Some(mode) = fin.mode {
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err("chmod", path))?;
    }
    if let Some(t) = fin.mtime {
        filetime::set_file_handle_times(f, None, Some(FileTime::from_unix_time(t as i64, 0)))
            .map_err(io_err("set mtime", path))?;
    }
    Ok(())
}

/// Create (or truncate) `path` for writing. Files start owner-writable whatever their
/// final mode: the final chmod comes after the content.
pub(crate) fn create(path: &std::path::Path) -> Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))
}

/// Largest single write. Linux (6.x, ext4/xfs) sizes page-cache folios by the write:
/// a 1 MiB `pwrite` asks for high-order pages, and on a machine whose memory is
/// fragmented (any busy one) each such allocation runs direct compaction; a profile of
/// a restore showed 20% of its time there. Writes this small take order-2 folios at most.
fn write_slice() -> usize {
    static SLICE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SLICE.get_or_init(|| {
        std::env::var("PODCI_WRITE_SLICE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n >= 4096)
            .unwrap_or(16 << 10)
    })
}

/// `pwrite` all of `data` at `offset`, at most [`write_slice`] bytes per call.
pub(crate) fn write_at(f: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let slice = write_slice();
    let mut done = 0usize;
    while done < data.len() {
        let end = (done + slice).min(data.len());
        f.write_all_at(&data[done..end], offset + done as u64)?;
        done = end;
    }
    Ok(())
}

/// Do one job; its buffer is handed back for reuse.
fn run(job: Job, skip: bool, back: &mpsc::Sender<Vec<u8>>) -> Result<()> {
    let (result, data) = match job {
        Job::Whole { path, finish, data } => {
            let r = if skip {
                Ok(())
            } else {
                create(&path).and_then(|f| {
                    write_at(&f, &data, 0).map_err(io_err("write", &path))?;
                    finish_file(&f, &path, finish)
                })
            };
            (r, data)
        }
        Job::Chunk { file, offset, data } => {
            let r = if skip {
                Ok(())
            } else {
                write_at(&file.file, &data, offset).map_err(io_err("write", &file.path))
            };
            // The file handle goes first: the last chunk's drop finishes the file.
            drop(file);
            (r, data)
        }
    };
    let _ = back.send(data);
    result
}

/// A pool of threads writing files; see the module docs.
pub(crate) struct FilePool {
    tx: Option<mpsc::SyncSender<Job>>,
    /// Buffers the workers are done with; reusing them avoids a fresh mmap and page
    /// faults for every megabyte.
    spent: mpsc::Receiver<Vec<u8>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl FilePool {
    /// Start `threads` workers (at least one).
    pub(crate) fn new(threads: usize) -> Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared::default());
        let (back, spent) = mpsc::channel::<Vec<u8>>();
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let back = back.clone();
            let shared = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name(format!("podci-extract-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take a job, never while writing.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if let Err(e) = run(job, shared.failed(), &back) {
                            shared.fail(e);
                        }
                        // `job` (and with it a chunk's file handle) is gone by now, so a
                        // drained pool has also finished every file.
                        shared.done_one();
                    }
                })
                .map_err(|e| Error::Io {
                    op: "start extraction thread",
                    path: PathBuf::new(),
                    source: e,
                })?;
            workers.push(h);
        }
        Ok(FilePool {
            tx: Some(tx),
            spent,
            workers,
            shared,
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.check()?;
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Config("extraction pool already closed".into()))?;
        if let Ok(mut n) = self.shared.pending.lock() {
            *n += 1;
        }
        if tx.send(job).is_err() {
            self.shared.done_one();
            return Err(self
                .take_error()
                .unwrap_or_else(|| Error::Config("extraction threads stopped unexpectedly".into())));
        }
        Ok(())
    }

    /// An empty buffer with room for [`CHUNK`] bytes.
    pub(crate) fn buffer(&self) -> Vec<u8> {
        match self.spent.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(CHUNK),
        }
    }

    /// Write a whole file of at most [`CHUNK`] bytes.
    pub(crate) fn whole(&self, path: PathBuf, finish: Finish, data: Vec<u8>) -> Result<()> {
        self.send(Job::Whole { path, finish, data })
    }

    /// Open a file that will be written in chunks.
    pub(crate) fn open(&self, path: PathBuf, finish: Finish) -> Result<Arc<OpenFile>> {
        let file = create(&path)?;
        Ok(Arc::new(OpenFile {
            file,
            path,
            finish,
            shared: Arc::clone(&self.shared),
        }))
    }

    /// Write `data` at `offset` of an opened file.
    pub(crate) fn chunk(&self, file: &Arc<OpenFile>, offset: u64, data: Vec<u8>) -> Result<()> {
        self.send(Job::Chunk {
            file: Arc::clone(file),
            offset,
            data,
        })
    }

    /// Wait until every job sent so far is written and its file finished.
    pub(crate) fn drain(&self) -> Result<()> {
        if let Ok(mut n) = self.shared.pending.lock() {
            while *n > 0 {
                n = match self.shared.idle.wait(n) {
                    Ok(n) => n,
                    Err(_) => break,
                };
            }
        }
        self.check()
    }

    /// The first worker error so far, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.shared.error.lock().ok().and_then(|mut s| s.take())
    }

    /// Stop the workers after they finish the queue; the first error, if any.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.tx = None;
        for h in self.workers.drain(..) {
            if h.join().is_err() {
                return Err(Error::Config("an extraction thread panicked".into()));
            }
        }
        self.check()
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        // On an early return the queue is closed and the workers are joined, so no
        // thread writes into a staging directory that is being removed.
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
