//! The shell executor: each step script runs in a local `bash` (or `sh`) process.
//!
//! The script goes into a file only the user can read in the job's tmp directory,
//! removed after the step (it holds variable values, so never into an argument list).
//! The shell starts in its own process group, so a terminal's Ctrl-C does not reach the
//! job directly: podci decides, sends `TERM` to the whole group on a
//! cancel or timeout, `KILL` after a grace period, and `KILL`s whatever is left in the
//! group once the step's shell has exited, so no job process outlives its step.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use podci_model::payload::JobPayload;
use podci_model::script::Shell;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::{Executor, JobDirs, Session, StageError, StepEnd, StepRun};

/// How long a canceled or timed-out step gets between `TERM` and `KILL`.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long output is still read after the step's shell exited (a process that left the
/// group may hold the pipe open; its output after this is dropped).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs steps in local shell processes.
#[derive(Debug, Clone)]
pub struct ShellExecutor {
    program: PathBuf,
    shell: Shell,
}

impl ShellExecutor {
    /// bash when it is on `PATH` (as GitLab Runner's shell executor prefers), else `sh`.
    pub fn detect() -> ShellExecutor {
        match find_in_path("bash") {
            Some(program) => ShellExecutor {
                program,
                shell: Shell::Bash,
            },
            None => ShellExecutor {
                program: find_in_path("sh").unwrap_or_else(|| PathBuf::from("/bin/sh")),
                shell: Shell::Sh,
            },
        }
    }

    /// A specific shell program; `bash` gets `pipefail`, anything else the POSIX script.
    pub fn with_program(program: impl Into<PathBuf>) -> ShellExecutor {
        let program = program.into();
        let bash = program.file_name().is_some_and(|n| n == "bash");
        ShellExecutor {
            program,
            shell: if bash { Shell::Bash } else { Shell::Sh },
        }
    }
}

/// The `PATH` jobs get: the caller's, with the directory of the running `podci` appended
/// when it is not there already, so that a job's `podci deploy` or `podci image append`
/// finds the podci that runs it (as GitLab Runner's shell jobs find `gitlab-runner` for
/// their artifacts) without shadowing a `podci` the user put on `PATH` first. `None`
/// when nothing changes (podci is on `PATH`, or the process is not podci itself, such as
/// Python with the podci module).
fn job_path() -> Option<&'static std::ffi::OsString> {
    static PATH: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        if exe.file_name()? != "podci" {
            return None;
        }
        let dir = exe.parent()?.to_path_buf();
        let current = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&current).collect();
        if dirs.iter().any(|d| d == &dir) {
            return None;
        }
        dirs.push(dir);
        std::env::join_paths(dirs).ok()
    })
    .as_ref()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Executor for ShellExecutor {
    fn name(&self) -> &str {
        "shell"
    }

    fn shell(&self) -> Shell {
        self.shell
    }

    fn prepare<'a, 'p>(
        &'a self,
        _payload: &'p JobPayload,
        _dirs: &'p JobDirs,
    ) -> BoxFuture<'p, Result<Box<dyn Session + 'a>, StageError>>
    where
        'a: 'p,
    {
        async move { Ok(Box::new(ShellSession { exec: self }) as Box<dyn Session + 'a>) }.boxed()
    }
}

struct ShellSession<'e> {
    exec: &'e ShellExecutor,
}

/// A pipe whose write end is both stdout and stderr, so the trace keeps their order.
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid two-element array; pipe2 fills it on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Process groups of the steps running now, so that a caller can stop everything at once
/// ([`kill_all`]) when waiting for `after_script` is not wanted (a second Ctrl-C).
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// `KILL`s every step process group this executor has running.
pub fn kill_all() {
    if let Ok(groups) = RUNNING.lock() {
        for &g in groups.iter() {
            kill_group(g, libc::SIGKILL);
        }
    }
}

/// Keeps a group in [`RUNNING`] while it lives.
struct Registered(u32);

impl Registered {
    fn new(pgid: u32) -> Registered {
        if let Ok(mut g) = RUNNING.lock() {
            g.push(pgid);
        }
        Registered(pgid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut g) = RUNNING.lock() {
            g.retain(|&p| p != self.0);
        }
    }
}

/// Sends `sig` to every process of group `pgid`; a group that is gone is fine.
pub(crate) fn kill_group(pgid: u32, sig: i32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill has no memory effects; a negative pid addresses the process group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

impl Session for ShellSession<'_> {
    fn run_step<'a>(
        &'a mut self,
        step: StepRun<'a>,
        output: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<StepEnd, StageError>> {
        async move { run(self.exec, step, output).await }.boxed()
    }

    fn cleanup(self: Box<Self>) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}

async fn run(
    exec: &ShellExecutor,
    step: StepRun<'_>,
    output: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<StepEnd, StageError> {
    // A private file, not stdin: bash reads a script on a pipe one byte at a time (so as
    // not to consume input meant for the commands), which costs milliseconds per step.
    let script_file = step
        .dirs
        .tmp
        .join(format!(".podci-step-{}.sh", super::random_hex(6)));
    write_private(&script_file, step.script.as_bytes())
        .map_err(|e| StageError::system(format!("cannot write the step script: {e}")))?;
    let res = run_file(exec, &step, &script_file, output).await;
    let _ = std::fs::remove_file(&script_file);
    res
}

/// Creates `path` readable by its owner only and writes `data`.
pub(crate) fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

async fn run_file(
    exec: &ShellExecutor,
    step: &StepRun<'_>,
    script_file: &std::path::Path,
    output: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<StepEnd, StageError> {
    let spawn_err = |e: std::io::Error| {
        StageError::system(format!("cannot start the shell {}: {e}", exec.program.display()))
    };
    let (rd, wr) = output_pipe().map_err(spawn_err)?;
    let wr2 = wr.try_clone().map_err(spawn_err)?;
    let mut cmd = tokio::process::Command::new(&exec.program);
    cmd.arg(script_file)
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr2))
        .current_dir(&step.dirs.root)
        .process_group(0);
    if let Some(path) = job_path() {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // Our copies of the write end must go, or the pipe never reports EOF.
    drop(cmd);
    let pgid = child.id().unwrap_or(0);
    let _registered = Registered::new(pgid);
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(rd)
        .map_err(|e| StageError::system(format!("cannot read the job's output: {e}")))?;

    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut timeout_at = step.timeout.map_or(far, |t| Instant::now() + t);
    let mut kill_at = far;
    let mut drain_until = far;
    let mut killed: Option<StepEnd> = None;
    let mut exit: Option<i32> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = reader.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    if exit.is_some() { break; }
                    // Output closed while the shell still runs: wait for it alone.
                    let status = wait_bounded(&mut child, pgid, &step.cancel, timeout_at, &mut killed).await;
                    exit = Some(status);
                    break;
                }
                Ok(n) => output(&buf[..n]),
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.map(code_of).unwrap_or(-1));
                kill_group(pgid, libc::SIGKILL);
                drain_until = Instant::now() + DRAIN_AFTER_EXIT;
            }
            _ = step.cancel.cancelled(), if killed.is_none() && exit.is_none() => {
                killed = Some(StepEnd::Killed);
                kill_group(pgid, libc::SIGTERM);
                kill_at = Instant::now() + KILL_GRACE;
            }
            _ = tokio::time::sleep_until(timeout_at), if killed.is_none() && exit.is_none() => {
                killed = Some(StepEnd::TimedOut);
                kill_group(pgid, libc::SIGTERM);
                kill_at = Instant::now() + KILL_GRACE;
                timeout_at = far;
            }
            _ = tokio::time::sleep_until(kill_at) => {
                kill_group(pgid, libc::SIGKILL);
                kill_at = far;
            }
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    kill_group(pgid, libc::SIGKILL);
    match (killed, exit) {
        (Some(k), _) => Ok(k),
        (None, Some(code)) => Ok(StepEnd::Exited(code)),
        (None, None) => Ok(StepEnd::Exited(-1)),
    }
}

/// Waits for the shell after its output closed, still honoring cancel and timeout.
async fn wait_bounded(
    child: &mut tokio::process::Child,
    pgid: u32,
    cancel: &tokio_util::sync::CancellationToken,
    timeout_at: Instant,
    killed: &mut Option<StepEnd>,
) -> i32 {
    tokio::select! {
        s = child.wait() => s.map(code_of).unwrap_or(-1),
        _ = cancel.cancelled() => {
            *killed = Some(StepEnd::Killed);
            kill_group(pgid, libc::SIGKILL);
            child.wait().await.map(code_of).unwrap_or(-1)
        }
        _ = tokio::time::sleep_until(timeout_at) => {
            *killed = Some(StepEnd::TimedOut);
            kill_group(pgid, libc::SIGKILL);
            child.wait().await.map(code_of).unwrap_or(-1)
        }
    }
}

/// The shell's exit code; a signal death counts as 128 + signal, as shells report it.
fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}
