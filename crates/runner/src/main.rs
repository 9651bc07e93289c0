//! The `podci` binary: composes the podci crates behind one CLI.
//!
//! Each subcommand lives in its own `cmd_*.rs` module with an `Args` struct (clap) and a
//! `run(args) -> anyhow::Result<ExitCode>` function in the `podci` library (src/lib.rs);
//! this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podci::*;

// podci builds and drops many small trees (YAML nodes, job maps); mimalloc is markedly
// faster than glibc malloc for that pattern (see bench/lint.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the pipeline here: jobs in order, with caches, artifacts and variables.
    Exec(cmd_exec::Args),
    /// Check a .gitlab-ci.yml as GitLab would; list its jobs or show the merged configuration.
    Lint(cmd_lint::Args),
    /// Build, copy, inspect images and log in to registries, without a container engine.
    Image(cmd_image::Args),
    /// Restore, save, list and prune job caches (directory/PVC or S3).
    Cache(cmd_cache::Args),
    /// Apply manifests with images set by container name and wait for the rollout.
    Deploy(cmd_deploy::Args),
    /// Upload and download job artifacts.
    Artifacts(cmd_artifacts::Args),
    /// Serve the browser pipeline previewer and a .gitlab-ci.yml on 127.0.0.1.
    Preview(cmd_preview::Args),
    /// Take jobs from GitLab and run them (GitLab Runner's `run`, same config.toml).
    Run(cmd_run::Args),
    /// Add a runner to config.toml with a runner or registration token.
    Register(cmd_register::Args),
    /// Check the runners in config.toml against GitLab.
    Verify(cmd_verify::VerifyArgs),
    /// Remove runners from GitLab and config.toml.
    Unregister(cmd_verify::UnregisterArgs),
    /// List the runners in config.toml.
    List(cmd_verify::ListArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Exec(args) => cmd_exec::run(args),
        Command::Lint(args) => cmd_lint::run(args),
        Command::Image(args) => cmd_image::run(args),
        Command::Cache(args) => cmd_cache::run(args),
        Command::Deploy(args) => cmd_deploy::run(args),
        Command::Artifacts(args) => cmd_artifacts::run(args),
        Command::Preview(args) => cmd_preview::run(args),
        Command::Run(args) => cmd_run::run(args),
        Command::Register(args) => cmd_register::run(args),
        Command::Verify(args) => cmd_verify::verify(args),
        Command::Unregister(args) => cmd_verify::unregister(args),
        Command::List(args) => cmd_verify::list(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("podci: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
