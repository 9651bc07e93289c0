//! `podci register`: add a runner to config.toml, as `gitlab-runner register
//! --non-interactive` does. A `glrt-` runner authentication token (created in GitLab's
//! UI) is checked with `POST /runners/verify`; any other token is a legacy registration
//! token exchanged for a runner token with `POST /runners`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use toml::{Table, Value};

use crate::config::{Document, ExecutorKind};
use crate::gitlab::{Client, short_token};
use crate::metrics::Metrics;

#[derive(clap::Args)]
pub struct Args {
    /// config.toml to add the runner to (created when missing).
    #[arg(short, long, env = "CONFIG_FILE", default_value_os_t = crate::cmd_run::default_config())]
    config: PathBuf,
    /// GitLab instance URL.
    #[arg(short = 'u', long, env = "CI_SERVER_URL")]
    url: String,
    /// Runner authentication token (`glrt-...`) or legacy registration token. Read from
    /// the environment rather than the command line, where other users can see it.
    #[arg(
        short = 't',
        long = "token",
        alias = "registration-token",
        env = "REGISTRATION_TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// Executor: shell or kubernetes.
    #[arg(long, env = "RUNNER_EXECUTOR", default_value = "shell")]
    executor: String,
    /// Runner name (description).
    #[arg(long, env = "RUNNER_NAME", default_value = "podci")]
    name: String,
    /// Tags (comma-separated; legacy registration only).
    #[arg(long, env = "RUNNER_TAG_LIST", default_value = "")]
    tag_list: String,
    /// Run jobs without tags (legacy registration only).
    #[arg(long, env = "REGISTER_RUN_UNTAGGED")]
    run_untagged: bool,
    /// Lock the runner to its project (legacy registration only).
    #[arg(long, env = "REGISTER_LOCKED", default_value_t = true, action = clap::ArgAction::Set)]
    locked: bool,
    /// Accepted for compatibility: podci never asks questions.
    #[arg(short = 'n', long)]
    non_interactive: bool,
    /// `limit` of the new entry.
    #[arg(long, env = "RUNNER_LIMIT", default_value_t = 0)]
    limit: i64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args.non_interactive;
    let executor = ExecutorKind::parse(&args.executor)
        .with_context(|| format!("--executor {}: use shell or kubernetes", args.executor))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let system_id = crate::cmd_run::system_id(&args.config)?;
    let client = Client::new(&args.url, "register", Arc::new(Metrics::default()))?;
    let (id, token, expires) = rt.block_on(async {
        if args.token.starts_with("glrt-") {
            client.verify(&args.token, &system_id).await?;
            Ok::<_, crate::gitlab::ApiError>((0, args.token.clone(), None))
        } else {
            let tags: Vec<String> = args
                .tag_list
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            let r = client
                .register(&args.token, &args.name, &tags, args.run_untagged, args.locked)
                .await?;
            Ok((r.id, r.token, r.token_expires_at))
        }
    })?;
    let mut doc = Document::open(&args.config)?;
    let mut t = Table::new();
    t.insert("name".into(), Value::String(args.name.clone()));
    t.insert("url".into(), Value::String(args.url.clone()));
    if id > 0 {
        t.insert("id".into(), Value::Integer(id as i64));
    }
    t.insert("token".into(), Value::String(token.clone()));
    if let Some(e) = expires {
        t.insert("token_expires_at".into(), Value::String(e));
    }
    t.insert("executor".into(), Value::String(executor.as_str().into()));
    if args.limit > 0 {
        t.insert("limit".into(), Value::Integer(args.limit));
    }
    if executor == ExecutorKind::Kubernetes {
        t.insert("kubernetes".into(), Value::Table(Table::new()));
    }
    doc.add_runner(t);
    doc.save()?;
    println!(
        "Runner registered successfully: {} ({}) in {}",
        args.name,
        short_token(&token),
        args.config.display()
    );
    Ok(ExitCode::SUCCESS)
}
