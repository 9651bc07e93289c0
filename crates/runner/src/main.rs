//! The `podci` binary: composes the podci crates behind one CLI.
//!
//! Each subcommand lives in its own `cmd_*.rs` module with an `Args` struct (clap) and a
//! `run(args) -> anyhow::Result<ExitCode>` function; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd_artifacts;
mod cmd_cache;

#[derive(Parser)]
#[command(
    name = "podci",
    version,
    about = "GitLab-CI-compatible runner: jobs as Kubernetes Pods, or locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Restore, save, list and prune job caches (directory/PVC or S3).
    Cache(cmd_cache::Args),
    /// Upload and download job artifacts.
    Artifacts(cmd_artifacts::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Cache(args) => cmd_cache::run(args),
        Command::Artifacts(args) => cmd_artifacts::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("podci: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
