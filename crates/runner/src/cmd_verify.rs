//! `podci verify`, `podci unregister` and `podci list`: GitLab Runner's commands for the
//! runners in config.toml. `verify --delete` drops entries GitLab no longer knows.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, Document};
use crate::gitlab::{ApiError, Client, short_token};
use crate::metrics::Metrics;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// config.toml.
    #[arg(short, long, env = "CONFIG_FILE", default_value_os_t = crate::cmd_run::default_config())]
    config: PathBuf,
    /// Only the runner with this name.
    #[arg(short, long)]
    name: Option<String>,
    /// Remove runners GitLab rejects from config.toml.
    #[arg(long)]
    delete: bool,
}

#[derive(clap::Args)]
pub struct UnregisterArgs {
    /// config.toml.
    #[arg(short, long, env = "CONFIG_FILE", default_value_os_t = crate::cmd_run::default_config())]
    config: PathBuf,
    /// The runner with this name.
    #[arg(short, long)]
    name: Option<String>,
    /// The runner with this URL (with --token).
    #[arg(short, long)]
    url: Option<String>,
    /// The runner with this token (read it from the environment, not the command line).
    #[arg(short, long, env = "RUNNER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Every runner in the file.
    #[arg(long)]
    all_runners: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// config.toml.
    #[arg(short, long, env = "CONFIG_FILE", default_value_os_t = crate::cmd_run::default_config())]
    config: PathBuf,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(&args.config)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let system_id = crate::cmd_run::system_id(&args.config)?;
    let rt = runtime()?;
    let metrics = Arc::new(Metrics::default());
    let mut rejected = Vec::new();
    let mut failed = false;
    for r in loaded
        .config
        .runners
        .iter()
        .filter(|r| args.name.as_ref().is_none_or(|n| *n == r.name))
    {
        let client = Client::new(&r.url, &short_token(&r.token), metrics.clone())?;
        match rt.block_on(client.verify(&r.token, &system_id)) {
            Ok(()) => println!(
                "Verifying runner... is valid    runner={} name={}",
                short_token(&r.token),
                r.name
            ),
            Err(ApiError::Forbidden { .. }) => {
                println!(
                    "Verifying runner... is removed  runner={} name={}",
                    short_token(&r.token),
                    r.name
                );
                rejected.push(r.token.clone());
                failed = true;
            }
            Err(e) => {
                eprintln!(
                    "Verifying runner... failed     runner={}: {e}",
                    short_token(&r.token)
                );
                failed = true;
            }
        }
    }
    if args.delete && !rejected.is_empty() {
        let mut doc = Document::open(&args.config)?;
        let n = doc.remove_runners(|t| {
            t.get("token")
                .and_then(|v| v.as_str())
                .is_some_and(|tok| rejected.iter().any(|r| r == tok))
        });
        doc.save()?;
        println!("Removed {n} runner(s) from {}", args.config.display());
        failed = false;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn unregister(args: UnregisterArgs) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(&args.config)?;
    let chosen: Vec<_> = loaded
        .config
        .runners
        .iter()
        .filter(|r| {
            args.all_runners
                || args.name.as_ref().is_some_and(|n| *n == r.name)
                || (args.token.as_ref().is_some_and(|t| *t == r.token)
                    && args
                        .url
                        .as_ref()
                        .is_none_or(|u| u.trim_end_matches('/') == r.url.trim_end_matches('/')))
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        anyhow::bail!(
            "no runner in {} matches: give --name, --url with --token, or --all-runners",
            args.config.display()
        );
    }
    let rt = runtime()?;
    let metrics = Arc::new(Metrics::default());
    let mut removed = Vec::new();
    let mut failed = false;
    for r in &chosen {
        let client = Client::new(&r.url, &short_token(&r.token), metrics.clone())?;
        match rt.block_on(client.unregister(&r.token)) {
            // A runner GitLab already forgot is unregistered all the same.
            Ok(()) | Err(ApiError::Forbidden { .. }) => {
                println!(
                    "Unregistering runner from GitLab succeeded  runner={}",
                    short_token(&r.token)
                );
                removed.push(r.token.clone());
            }
            Err(e) => {
                eprintln!("Unregistering runner {} failed: {e}", short_token(&r.token));
                failed = true;
            }
        }
    }
    let mut doc = Document::open(&args.config)?;
    doc.remove_runners(|t| {
        t.get("token")
            .and_then(|v| v.as_str())
            .is_some_and(|tok| removed.iter().any(|r| r == tok))
    });
    doc.save()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(&args.config)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "Listing configured runners                          ConfigFile={}",
        args.config.display()
    );
    for r in &loaded.config.runners {
        println!(
            "{:<40} Executor={} Token={} URL={}",
            r.name,
            r.executor.as_str(),
            short_token(&r.token),
            r.url
        );
    }
    Ok(ExitCode::SUCCESS)
}
