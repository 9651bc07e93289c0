//! The `podci` library: everything behind the `podci` binary, so that the Python bindings
//! and other Rust programs can run pipelines, take runner jobs and deploy without a
//! subprocess.
//!
//! Each `cmd_*` module is one subcommand (clap `Args` + `run`); `exec` runs a pipeline
//! locally, `executor`/`executors` run one job (shell, docker, kubernetes), `gitlab` speaks
//! GitLab's runner API, `manager` schedules runner jobs.

pub mod cmd_artifacts;
pub mod cmd_cache;
pub mod cmd_deploy;
pub mod cmd_exec;
pub mod cmd_helper;
pub mod cmd_image;
pub mod cmd_lint;
pub mod cmd_preview;
pub mod cmd_register;
pub mod cmd_run;
pub mod cmd_verify;
pub mod config;
pub mod deploy;
pub mod exec;
pub mod executor;
pub mod executors;
pub mod files;
pub mod gitlab;
pub mod idle;
pub mod job_cache;
pub mod manager;
pub mod metrics;
