//! `podci cache pull|push|ls|prune`: the helper's cache role inside a job Pod, and
//! store maintenance. The work is done by podci-cache; this module parses flags and
//! reports progress (a spinner on a terminal, plain lines otherwise).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use podci_cache::{Cache, Format, Layout, Policy, PushResult, Selection, Store, When, WriteOptions};

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: CacheCommand,
}

/// Where the cache lives and how it is laid out.
#[derive(ClapArgs, Clone)]
pub struct StoreArgs {
    /// A directory (e.g. a mounted PVC) or s3://BUCKET/PREFIX?endpoint=URL&region=R&style=path|virtual.
    /// S3 credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "PODCI_CACHE_STORE")]
    pub store: String,
    /// podci: content-addressed (default). gitlab: GitLab Runner's objects
    /// (`<key>/cache.zip` in a directory, `<prefix>/<key>` in S3, with the prefix in --store).
    #[arg(long, value_enum, default_value = "podci", env = "PODCI_CACHE_LAYOUT")]
    pub layout: LayoutArg,
    /// Do not fsync archives in a directory store. They still appear atomically and are
    /// verified on pull; a crash can only turn a recent cache into a miss.
    #[arg(long, env = "PODCI_CACHE_NO_FSYNC")]
    pub no_fsync: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    Podci,
    Gitlab,
}

impl StoreArgs {
    pub fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::from_url(&self.store)
            .with_context(|| format!("opening cache store {}", self.store))?
            .with_fsync(!self.no_fsync))
    }
    fn cache(&self) -> anyhow::Result<Cache> {
        let layout = match self.layout {
            LayoutArg::Podci => Layout::Podci,
            LayoutArg::Gitlab => Layout::GitlabRunner,
        };
        Ok(Cache::new(self.store()?).with_layout(layout))
    }
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Restore the first key (then each --fallback-key) that has a cache. A miss is a
    /// warning, not a failure.
    Pull {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        key: String,
        #[arg(long = "fallback-key")]
        fallback_keys: Vec<String>,
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
        #[arg(long, default_value = "pull-push")]
        policy: Policy,
    },
    /// Archive --path patterns and store them under --key.
    Push {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        key: String,
        /// GitLab glob patterns relative to the project directory.
        #[arg(long = "path")]
        paths: Vec<String>,
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        /// Also cache files git does not track.
        #[arg(long)]
        untracked: bool,
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
        #[arg(long, default_value = "pull-push")]
        policy: Policy,
        #[arg(long, default_value = "on_success")]
        when: When,
        /// The job's result, matched against --when.
        #[arg(long, value_enum, default_value = "success")]
        job_status: JobStatus,
        /// Archive format (pull detects it): tar-zstd or zip (GitLab Runner's).
        #[arg(long)]
        format: Option<Format>,
        /// 1 is fast and loses little on already-compressed content (jars); 3+ for source trees.
        #[arg(long, default_value_t = 1)]
        zstd_level: i32,
        /// Compression threads; 0 = one per CPU.
        #[arg(long, default_value_t = 0)]
        threads: u32,
    },
    /// List keys with their archive digest, size and age.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete keys older than --older-than, expired artifacts, unreferenced archives.
    Prune {
        #[command(flatten)]
        store: StoreArgs,
        /// e.g. `7d`, `2 weeks`, `36h`.
        #[arg(long)]
        older_than: String,
        /// Unreferenced archives younger than this are kept (a push may be writing its key).
        #[arg(long, default_value = "10m")]
        grace: String,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum JobStatus {
    Success,
    Failed,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A spinner on a terminal; nothing otherwise (the final line says it all).
pub(crate) struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub(crate) fn start(msg: String) -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(msg);
        pb.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(pb))
    }
    pub(crate) fn finish(self) {
        if let Some(pb) = self.0 {
            pb.finish_and_clear();
        }
    }
}

pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub(crate) fn duration_secs(text: &str) -> anyhow::Result<u64> {
    podci_cache::artifacts::parse_expire_in(text)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("{text:?}: give a duration, not `never`"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match args.command {
        CacheCommand::Pull {
            store,
            key,
            fallback_keys,
            project_dir,
            policy,
        } => {
            if !policy.pulls() {
                eprintln!("Not restoring cache: policy is push");
                return Ok(ExitCode::SUCCESS);
            }
            let cache = store.cache()?;
            let mut keys = vec![key];
            keys.extend(fallback_keys);
            let t = Instant::now();
            let p = Progress::start(format!(
                "Restoring cache {} from {}",
                keys[0],
                cache.store().describe()
            ));
            let rep = rt.block_on(cache.pull(&keys, &project_dir));
            p.finish();
            for w in &rep.warnings {
                eprintln!("WARNING: {w}");
            }
            match rep.hit {
                Some(k) => eprintln!(
                    "Restored cache {k:?}: {} entries, {} in {:.2}s",
                    rep.stats.entries,
                    human(rep.stats.content_bytes),
                    t.elapsed().as_secs_f64()
                ),
                None => eprintln!("No cache restored (cache miss)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Push {
            store,
            key,
            paths,
            exclude,
            untracked,
            project_dir,
            policy,
            when,
            job_status,
            format,
            zstd_level,
            threads,
        } => {
            if !policy.pushes() {
                eprintln!("Not saving cache: policy is pull");
                return Ok(ExitCode::SUCCESS);
            }
            if !when.matches(job_status == JobStatus::Success) {
                eprintln!("Not saving cache: `when` does not match the job status");
                return Ok(ExitCode::SUCCESS);
            }
            let mut cache = store
                .cache()?
                .with_write_options(WriteOptions { zstd_level, threads });
            if let Some(f) = format {
                cache = cache.with_format(f);
            }
            let sel = Selection {
                paths,
                exclude,
                untracked,
            };
            let t = Instant::now();
            let p = Progress::start(format!("Saving cache {key} to {}", cache.store().describe()));
            let rep = rt.block_on(cache.push(&key, &sel, &project_dir));
            p.finish();
            let rep = rep.with_context(|| format!("saving cache {key:?}"))?;
            for w in &rep.warnings {
                eprintln!("WARNING: {w}");
            }
            let secs = t.elapsed().as_secs_f64();
            match rep.result {
                PushResult::NothingToCache => {
                    eprintln!("No files to cache for {:?}; nothing saved", rep.key)
                }
                PushResult::Unchanged { digest } => eprintln!(
                    "Cache {:?} is unchanged ({digest}); nothing uploaded ({secs:.2}s)",
                    rep.key
                ),
                PushResult::Stored {
                    digest,
                    size,
                    uploaded,
                    stats,
                } => eprintln!(
                    "Saved cache {:?}: {} entries, {} -> {} archive {digest} ({}) in {secs:.2}s",
                    rep.key,
                    stats.entries,
                    human(stats.content_bytes),
                    human(size),
                    if uploaded { "uploaded" } else { "already stored" }
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Ls { store } => {
            let cache = store.cache()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for k in rt.block_on(cache.list())? {
                let age = now.saturating_sub(k.created);
                println!(
                    "{}\t{}\t{}\t{}\t{}h{}m ago",
                    k.key,
                    k.digest,
                    human(k.size),
                    k.entries,
                    age / 3600,
                    (age % 3600) / 60
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Prune {
            store,
            older_than,
            grace,
        } => {
            let cache = store.cache()?;
            let rep = rt.block_on(cache.prune(duration_secs(&older_than)?, duration_secs(&grace)?))?;
            for k in &rep.keys_deleted {
                println!("deleted key {k}");
            }
            for j in &rep.artifacts_deleted {
                println!("deleted expired artifacts of job {j}");
            }
            println!(
                "pruned {} keys, {} artifact sets, {} objects ({}), {} stale temp files",
                rep.keys_deleted.len(),
                rep.artifacts_deleted.len(),
                rep.blobs_deleted,
                human(rep.bytes_freed),
                rep.temp_files_deleted
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
