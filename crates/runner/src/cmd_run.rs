//! `podci run`: take jobs from GitLab as GitLab Runner's `run` does, with the same
//! `config.toml`.
//!
//! Owns the process around the `Manager`: logging, the
//! `/metrics` + `/health` server, signals (SIGTERM/SIGINT: stop requesting, finish jobs
//! within `shutdown_timeout`, then abort them; a second SIGINT/SIGTERM aborts at once;
//! SIGQUIT: stop requesting and let jobs finish; SIGHUP: reload), and reloading the
//! file when it changes on disk.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::manager::{Manager, Stop};
use crate::metrics::Metrics;

#[derive(clap::Args)]
pub struct Args {
    /// config.toml (GitLab Runner's format).
    #[arg(short, long, env = "CONFIG_FILE", default_value_os_t = default_config())]
    pub config: PathBuf,
    /// Serve /metrics and /health here (overrides listen_address).
    #[arg(long)]
    listen_address: Option<String>,
    /// Stop after taking this many jobs and finishing them (tests, benchmarks).
    #[arg(long, hide = true, default_value_t = 0)]
    max_jobs: usize,
    /// Trace patch interval in milliseconds until GitLab sets one (tests).
    #[arg(long, hide = true, env = "PODCI_TRACE_INTERVAL_MS")]
    trace_interval_ms: Option<u64>,
}

/// GitLab Runner's default: `/etc/gitlab-runner/config.toml` for root, else
/// `~/.gitlab-runner/config.toml`.
pub fn default_config() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return PathBuf::from("/etc/gitlab-runner/config.toml");
    }
    match std::env::var_os("HOME") {
        Some(h) => Path::new(&h).join(".gitlab-runner/config.toml"),
        None => PathBuf::from("config.toml"),
    }
}

/// The id of this runner manager (`.runner_system_id` next to config.toml, created once,
/// GitLab Runner's `s_` + 12 hex digits).
pub fn system_id(config: &Path) -> anyhow::Result<String> {
    let path = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".runner_system_id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom for a system id")?;
    let id = format!("s_{}", hex::encode(bytes));
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

fn load(path: &Path) -> anyhow::Result<Config> {
    let loaded = Config::load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.config)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(&args.config)?;
    init_logging(
        loaded.config.log_level.as_deref(),
        loaded.config.log_format.as_deref(),
    );
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let config = loaded.config;
    if config.runners.is_empty() {
        anyhow::bail!(
            "{}: no [[runners]]: run `podci register` first",
            args.config.display()
        );
    }
    let system_id = system_id(&args.config)?;
    // Before the runtime starts, so that no thread faults in a huge page (see crate::idle).
    if let Err(e) = crate::idle::disable_transparent_huge_pages() {
        tracing::debug!("transparent huge pages stay on: {e}");
    }
    // Blocking threads (file I/O, archives) exit 1 s after their last task rather than
    // tokio's 10 s: an idle runner should give their stacks back promptly. Each worker
    // returns its own freed allocator pages when it parks after an idle release.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_secs(1))
        .on_thread_park(crate::idle::on_worker_park)
        .enable_all()
        .build()?;
    rt.block_on(serve(args, config, system_id))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(level: Option<&str>, format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match level.unwrap_or("info") {
            "fatal" | "panic" => "error",
            l => l,
        })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == Some("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn serve(args: Args, config: Config, system_id: String) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let stop = Stop::default();
    let server_stop = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args
        .listen_address
        .as_deref()
        .or(config.listen_address.as_deref())
    {
        let local = crate::metrics::serve(addr, metrics.clone(), server_stop.clone())
            .await
            .with_context(|| format!("listen_address {addr}"))?;
        tracing::info!("metrics and health at http://{local}/metrics");
        println!("listening on {local}");
    }
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let shutdown_timeout = Duration::from_secs(config.shutdown_timeout);
    // Signals and file changes.
    {
        let stop = stop.clone();
        let path = args.config.clone();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            let mut seen = mtime(&path);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let reload = tokio::select! {
                    _ = term.recv() => { graceful(&stop, shutdown_timeout); false }
                    _ = int.recv() => { graceful(&stop, shutdown_timeout); false }
                    _ = quit.recv() => {
                        tracing::info!("SIGQUIT: no new jobs; running jobs finish");
                        stop.requests.cancel();
                        false
                    }
                    _ = hup.recv() => true,
                    _ = tick.tick() => {
                        let now = mtime(&path);
                        let changed = now != seen;
                        seen = now;
                        changed
                    }
                };
                if reload {
                    match load(&path) {
                        Ok(c) => {
                            tracing::info!("{}: reloading", path.display());
                            let _ = reload_tx.send(c).await;
                        }
                        Err(e) => tracing::error!("configuration not reloaded, keeping the old one: {e:#}"),
                    }
                }
            }
        });
    }
    let interval = args
        .trace_interval_ms
        .map(Duration::from_millis)
        .unwrap_or(crate::gitlab::trace::DEFAULT_INTERVAL);
    // Once no job has run for a while, give the memory the jobs freed back to the OS.
    {
        let metrics = metrics.clone();
        let stop = server_stop.clone();
        let quiet = crate::idle::DEFAULT_QUIET;
        tokio::spawn(async move { crate::idle::watch(quiet, move || metrics.jobs_activity(), stop).await });
    }
    let manager = Manager::new(metrics, crate::executors::factory(), system_id)
        .trace_interval(interval)
        .max_jobs(args.max_jobs);
    let result = manager.run(config, reload_rx, stop).await;
    server_stop.cancel();
    result
}

/// SIGTERM/SIGINT: the first stops requests and arms the shutdown timeout; the second
/// aborts running jobs.
fn graceful(stop: &Stop, timeout: Duration) {
    if stop.requests.is_cancelled() {
        tracing::warn!("second signal: aborting running jobs");
        stop.jobs.cancel();
        return;
    }
    tracing::info!("stopping: no new jobs; running jobs get {}s", timeout.as_secs());
    stop.requests.cancel();
    let jobs = stop.jobs.clone();
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        jobs.cancel();
    });
}
