//! `fake-gitlab`: serve the fake GitLab runner API by hand (benchmarks, manual runs).
//! Creates one pipeline from a `.gitlab-ci.yml` (or N generated one-line jobs), prints
//! its URL, and serves until interrupted. State is readable under `/_fake/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use podci_fake_gitlab::{FakeGitlab, Options};

#[derive(Parser)]
#[command(about = "A fake GitLab runner API for podci's tests")]
struct Args {
    /// The pipeline's .gitlab-ci.yml.
    #[arg(long)]
    ci_file: Option<PathBuf>,
    /// A git repository the jobs clone (served as a file:// URL).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Instead of --ci-file: N one-line jobs in one stage.
    #[arg(long)]
    jobs: Option<usize>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// A runner token valid from the start.
    #[arg(long, default_value = "glrt-t1_fake-runner-token")]
    runner_token: String,
    /// Fraction of API calls that fail in injected ways.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Seed for the fault RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the URL to this file once serving (for scripts).
    #[arg(long)]
    url_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let opts = Options {
            runner_tokens: vec![args.runner_token.clone()],
            fault_rate: args.fault_rate,
            seed: args.seed,
            ack_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        let fake = FakeGitlab::start_on(&args.listen, opts).await?;
        let yaml = match (&args.ci_file, args.jobs) {
            (Some(p), _) => Some(std::fs::read_to_string(p)?),
            (None, Some(0)) | (None, None) => None,
            (None, Some(n)) => Some(
                (0..n)
                    .map(|i| format!("job{i}:\n  script: echo job {i}\n"))
                    .collect::<String>(),
            ),
        };
        if let Some(y) = yaml {
            fake.create_pipeline(&y, args.repo.as_deref(), &[])?;
        }
        println!("fake-gitlab serving at {}", fake.url());
        if let Some(p) = &args.url_file {
            std::fs::write(p, fake.url())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    })
}
