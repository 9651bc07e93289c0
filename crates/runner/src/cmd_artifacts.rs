//! `podci artifacts upload|download`: the helper's artifact role inside a job Pod.
//! Upload archives a job's artifact paths and reports; download restores the
//! artifacts of the jobs it depends on and writes their `reports:dotenv` variables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use podci_cache::{ArtifactSpec, Artifacts, When};

use crate::cmd_cache::{JobStatus, Progress, StoreArgs, human, runtime};

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: ArtifactsCommand,
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// Store a job's artifacts.
    Upload {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        job_id: u64,
        #[arg(long, default_value = "artifacts")]
        name: String,
        #[arg(long = "path")]
        paths: Vec<String>,
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        #[arg(long)]
        untracked: bool,
        #[arg(long, default_value = "on_success")]
        when: When,
        #[arg(long, value_enum, default_value = "success")]
        job_status: JobStatus,
        /// GitLab duration (`1 week`, `30 days`, `never`).
        #[arg(long)]
        expire_in: Option<String>,
        /// A report file: TYPE=PATH (e.g. dotenv=build.env, junit=report.xml). Repeatable.
        #[arg(long = "report")]
        reports: Vec<String>,
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// Restore the artifacts of the given jobs (in order) and print/write dotenv variables.
    Download {
        #[command(flatten)]
        store: StoreArgs,
        /// A job this one depends on. Repeatable; later jobs' files and variables win.
        #[arg(long = "job-id", required = true)]
        job_ids: Vec<u64>,
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
        /// Write the dotenv variables here as KEY=VALUE lines (default: stdout).
        #[arg(long)]
        dotenv_out: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match args.command {
        ArtifactsCommand::Upload {
            store,
            job_id,
            name,
            paths,
            exclude,
            untracked,
            when,
            job_status,
            expire_in,
            reports,
            project_dir,
        } => {
            let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in reports {
                let (ty, path) = r
                    .split_once('=')
                    .with_context(|| format!("--report {r:?}: use TYPE=PATH"))?;
                by_type.entry(ty.to_owned()).or_default().push(path.to_owned());
            }
            let spec = ArtifactSpec {
                name,
                paths,
                exclude,
                untracked,
                when,
                expire_in,
                reports: by_type,
            };
            let arts = Artifacts::new(store.store()?);
            let t = Instant::now();
            let p = Progress::start(format!("Uploading artifacts of job {job_id}"));
            let res = rt.block_on(arts.upload(job_id, &spec, &project_dir, job_status == JobStatus::Success));
            p.finish();
            match res.with_context(|| format!("uploading artifacts of job {job_id}"))? {
                None => eprintln!("Not uploading artifacts: `when` does not match the job status"),
                Some((m, warnings)) => {
                    for w in warnings {
                        eprintln!("WARNING: {w}");
                    }
                    eprintln!(
                        "Uploaded artifacts of job {job_id}: archive {}, {} report file(s), {} dotenv variable(s), expires {} ({:.2}s)",
                        m.archive.as_deref().unwrap_or("none"),
                        m.reports.len(),
                        m.dotenv.len(),
                        m.expire_in.as_deref().unwrap_or("never"),
                        t.elapsed().as_secs_f64()
                    );
                    let total: u64 = m.reports.iter().map(|r| r.size).sum();
                    if total > 0 {
                        eprintln!("  reports: {}", human(total));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ArtifactsCommand::Download {
            store,
            job_ids,
            project_dir,
            dotenv_out,
        } => {
            let arts = Artifacts::new(store.store()?);
            let p = Progress::start(format!("Downloading artifacts of {} job(s)", job_ids.len()));
            let vars = rt.block_on(arts.download(&job_ids, &project_dir));
            p.finish();
            let vars = vars.context("downloading artifacts")?;
            let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            match dotenv_out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
                }
                None => print!("{text}"),
            }
            eprintln!(
                "Downloaded artifacts of job(s) {job_ids:?}; {} dotenv variable(s)",
                vars.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
