//! Giving memory back to the OS while `podci run` has nothing to do.
//!
//! Owns: turning transparent huge pages off for the runner process, the decision "the
//! runner has been idle long enough" ([`IdleState`]), and releasing freed memory
//! ([`release_memory`], plus [`on_worker_park`] so that every tokio worker thread
//! releases its own allocator pages).
//!
//! Why (issue 9, measured with `bench/runner.sh` and `/proc/PID/smaps`): a runner sits
//! idle most of its life, and its resident memory after a burst of jobs is what a
//! Kubernetes memory request has to cover. Two things kept memory the jobs had freed:
//! - mimalloc advises its arena with `MADV_HUGEPAGE`, so touching one byte of a 2 MiB
//!   region made the kernel back all of it (`AnonHugePages` was 10 MiB of a 10 MiB
//!   arena before the first job, 18 MiB after 1,000 jobs with ~8 MiB in use).
//! - pages a worker thread freed stay with that thread's heap until it allocates again
//!   or collects; an idle runner allocates almost nothing, so nothing ever purged them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the runner must have had no running job, and started none, before freed
/// memory is given back. Long enough that a steady stream of jobs never pays for it
/// (a release makes the next allocations fault pages in again), short enough that a
/// drained queue shows up in `kubectl top` within seconds.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(2);

/// Asks the kernel not to back this process's memory with transparent huge pages.
///
/// A long-running, mostly idle daemon gains nothing from huge pages and pays up to 2 MiB
/// of resident memory for each sparsely used 2 MiB region. `PR_SET_THP_DISABLE` is
/// per process and also covers systems where THP is `always` (where turning off
/// mimalloc's own `madvise` would not be enough); it applies to page faults from now on,
/// so call it before the runtime starts.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Bumped for every release; each worker thread releases once per bump (see
/// [`on_worker_park`]).
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last [`EPOCH`] this thread released memory for.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// How many releases have been requested so far (for tests and metrics).
pub fn releases() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// Gives freed memory back to the OS: this thread's mimalloc pages and the purgeable
/// parts of mimalloc's arenas (process wide), and glibc's free heap tops (memory that C
/// libraries allocated with `malloc`). Other worker threads follow on their next park.
///
/// Costs a walk over this thread's heap pages; call it when idle, not per job.
pub fn release_memory() {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    SEEN.with(|s| s.set(epoch));
    release_this_thread();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it only returns free memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// For tokio's `on_thread_park`: when a release was requested since this worker thread
/// last released, release its own heap too. One atomic load when there is nothing to do.
///
/// mimalloc keeps free pages per thread and only that thread can collect them, so a
/// release on one worker leaves the other workers' pages resident until they run this.
pub fn on_worker_park() {
    let epoch = EPOCH.load(Ordering::Relaxed);
    if SEEN.with(|s| s.replace(epoch)) != epoch {
        release_this_thread();
    }
}

fn release_this_thread() {
    // SAFETY: mi_collect has no preconditions; with `force` it frees this thread's empty
    // pages and purges the arenas' free ranges. A thread that never allocated through
    // mimalloc (the library inside Python) returns at once.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Decides when the runner went idle: no job running and none started for `quiet`.
/// Fed with observations rather than reading a clock, so that tests need no sleeps.
#[derive(Debug, Clone)]
pub struct IdleState {
    quiet: Duration,
    started: u64,
    idle_since: Option<Instant>,
    released: bool,
}

impl IdleState {
    /// A fresh state: the first idle period after start counts too (start-up itself
    /// leaves freed memory behind: configuration parsing, TLS roots).
    pub fn new(quiet: Duration) -> IdleState {
        IdleState {
            quiet,
            started: 0,
            idle_since: None,
            released: false,
        }
    }

    /// One observation at `now`: `running` jobs, and `started` jobs in all since the
    /// runner started. True exactly once per idle period, when it has lasted `quiet`.
    pub fn observe(&mut self, running: u64, started: u64, now: Instant) -> bool {
        if running > 0 || started != self.started {
            self.started = started;
            self.idle_since = None;
            self.released = false;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        if !self.released && now.saturating_duration_since(since) >= self.quiet {
            self.released = true;
            return true;
        }
        false
    }
}

/// Watches `activity` (running jobs, jobs started so far) every `quiet / 2` and calls
/// [`release_memory`] once each time the runner has been idle for `quiet`, until
/// `stop` fires.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// let metrics = Arc::new(podci::metrics::Metrics::default());
/// let stop = tokio_util::sync::CancellationToken::new();
/// let activity = {
///     let metrics = metrics.clone();
///     move || metrics.jobs_activity()
/// };
/// tokio::spawn(podci::idle::watch(podci::idle::DEFAULT_QUIET, activity, stop.clone()));
/// # }
/// ```
pub async fn watch(
    quiet: Duration,
    activity: impl Fn() -> (u64, u64),
    stop: tokio_util::sync::CancellationToken,
) {
    let mut state = IdleState::new(quiet);
    let mut tick = tokio::time::interval((quiet / 2).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (running, started) = activity();
        if state.observe(running, started, Instant::now()) {
            release_memory();
            tracing::debug!("idle for {}s: freed memory returned to the OS", quiet.as_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_per_idle_period() {
        let quiet = Duration::from_secs(2);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = IdleState::new(quiet);
        // Idle from the start: released after `quiet`, then not again.
        assert!(!s.observe(0, 0, at(0)));
        assert!(!s.observe(0, 0, at(1)));
        assert!(s.observe(0, 0, at(2)));
        assert!(!s.observe(0, 0, at(3)));
        assert!(!s.observe(0, 0, at(30)));
        // A job runs: never while it runs, however long.
        assert!(!s.observe(1, 1, at(31)));
        assert!(!s.observe(1, 1, at(40)));
        // It ended; the quiet period counts from the first idle observation.
        assert!(!s.observe(0, 1, at(41)));
        assert!(!s.observe(0, 1, at(42)));
        assert!(s.observe(0, 1, at(43)));
        assert!(!s.observe(0, 1, at(44)));
        // A job that started and ended between two observations still resets the wait:
        // the quiet period starts at the next observation that sees no new job.
        assert!(!s.observe(0, 2, at(45)));
        assert!(!s.observe(0, 2, at(46)));
        assert!(!s.observe(0, 2, at(47)));
        assert!(s.observe(0, 2, at(48)));
    }

    #[test]
    fn a_release_reaches_another_thread_on_its_next_park() {
        release_memory();
        let requested = releases();
        // A worker that has not released since: its next park catches up with the epoch.
        let seen = std::thread::spawn(|| {
            on_worker_park();
            SEEN.with(|s| s.get())
        })
        .join()
        .unwrap_or_default();
        assert!(seen >= requested, "seen {seen}, requested {requested}");
    }
}
