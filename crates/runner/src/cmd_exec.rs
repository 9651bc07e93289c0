//! `podci exec`: run a `.gitlab-ci.yml` pipeline on this machine. Parses flags; the
//! work is in [`crate::exec`] (orchestration) and [`crate::executor`] (running jobs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::exec::{ExecutorKind, Options};

/// Options of `podci exec`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Jobs to run (instance or job names); all jobs when none is given. Named manual
    /// jobs run.
    pub jobs: Vec<String>,
    /// Run in DIR (the project directory), as `git -C`.
    #[arg(short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The pipeline file (default `.gitlab-ci.yml`; podci's embedded hello pipeline when
    /// there is none).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Also run the jobs the named jobs need (transitively).
    #[arg(long)]
    pub needs: bool,
    /// Run manual jobs too.
    #[arg(long)]
    pub manual: bool,
    /// A pipeline variable KEY=VALUE (repeatable); wins over the variables files.
    #[arg(long = "variable", short = 'v', value_name = "KEY=VALUE")]
    pub variables: Vec<String>,
    /// Pretend to be on this branch.
    #[arg(long, conflicts_with = "tag")]
    pub branch: Option<String>,
    /// Pretend to be on this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// `CI_PIPELINE_SOURCE`.
    #[arg(long, default_value = "push")]
    pub source: String,
    /// Compute changed files (`rules:changes`) against this ref (default: the default branch).
    #[arg(long, value_name = "REF")]
    pub compare_to: Option<String>,
    /// Jobs at once (default: number of CPUs).
    #[arg(long, short = 'j')]
    pub concurrency: Option<usize>,
    /// Include uncommitted changes in the jobs' working copies.
    #[arg(long)]
    pub with_dirty: bool,
    /// Cache store directory (default: under the user's cache directory).
    #[arg(long, value_name = "DIR", env = "PODCI_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where working copies and artifacts of a run go (default: under the user's cache directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the jobs' working copies after the run.
    #[arg(long)]
    pub keep: bool,
    /// shell (local processes) or docker (the job's image through the Docker engine).
    #[arg(long, value_enum, default_value = "shell")]
    pub executor: ExecutorKind,
    /// List the jobs (as `podci lint --list`) and exit.
    #[arg(long, conflicts_with_all = ["preview", "dry_run"])]
    pub list: bool,
    /// Print the merged configuration (as `podci lint --preview`) and exit.
    #[arg(long, conflicts_with = "dry_run")]
    pub preview: bool,
    /// Print the plan (jobs in order, images, caches, artifacts) without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Plain output even on a terminal.
    #[arg(long)]
    pub plain: bool,
    #[command(flatten)]
    pub includes: crate::cmd_lint::IncludeArgs,
}

/// Runs `podci exec`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.dir {
        std::env::set_current_dir(dir).with_context(|| format!("cannot change to {}", dir.display()))?;
    }
    if args.list || args.preview {
        return crate::cmd_lint::run(crate::cmd_lint::Args {
            file: args.file,
            list: args.list,
            preview: args.preview,
            json: false,
            includes: args.includes,
        });
    }
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let project = std::env::current_dir().context("cannot read the current directory")?;
    crate::exec::run(Options {
        project,
        file: args.file,
        variables: args.variables,
        branch: args.branch,
        tag: args.tag,
        source: args.source,
        compare_to: args.compare_to,
        jobs: args.jobs,
        needs: args.needs,
        manual: args.manual,
        concurrency,
        with_dirty: args.with_dirty,
        cache_dir: args.cache_dir,
        work_dir: args.work_dir,
        keep: args.keep,
        executor: args.executor,
        dry_run: args.dry_run,
        live: args.plain.then_some(false),
        includes: args.includes,
    })
}
