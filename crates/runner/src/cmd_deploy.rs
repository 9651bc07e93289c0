//! `podci deploy`: apply manifests with images set by container name, server-side apply,
//! and wait for the rollout (the library is `crate::deploy`; this module parses flags,
//! prints progress lines and maps outcomes to exit codes: 0 deployed, 1 the rollout
//! failed or timed out, 2 anything that stopped the deploy before or while applying).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::deploy::{self, DeployEvent, DeployOptions};

/// Options of `podci deploy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest file, directory of manifests, or kustomization directory; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Set the image of every container and init container named NAME (no text
    /// substitution); repeatable. A NAME that matches no container is an error.
    #[arg(long = "image", value_name = "NAME=REF", value_parser = parse_image)]
    pub images: Vec<(String, String)>,
    /// Namespace for namespaced objects (default: the object's own, else the
    /// kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Wait until Deployments, StatefulSets and DaemonSets have rolled out.
    #[arg(long)]
    pub wait: bool,
    /// Bound for --wait: 90s, 5m, 1h30m, or seconds.
    #[arg(long, default_value = "5m", value_parser = parse_go_duration)]
    pub timeout: Duration,
    /// Change nothing: print the objects and a diff against the cluster (server-side
    /// dry run). Without any cluster configured, print the objects only.
    #[arg(long)]
    pub dry_run: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Log lines to show of each failing container.
    #[arg(long, default_value_t = 20)]
    pub log_lines: usize,
}

fn parse_image(s: &str) -> Result<(String, String), String> {
    deploy::parse_image_arg(s).map_err(|e| e.to_string())
}

/// Go's duration syntax as kubectl accepts it (`90s`, `5m`, `1h30m`, `500ms`), or a
/// plain number of seconds.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let bad = || format!("{s:?} is not a duration: use 90s, 5m, 1h30m or a number of seconds");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

impl Args {
    fn options(&self) -> DeployOptions {
        DeployOptions {
            paths: self.paths.clone(),
            images: self.images.clone(),
            namespace: self.namespace.clone(),
            wait: self.wait,
            timeout: self.timeout,
            dry_run: self.dry_run,
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            log_lines: self.log_lines,
            ..DeployOptions::default()
        }
    }
}

/// One progress line per event, flushed at once (CI logs show them as they happen).
fn print_event(ev: DeployEvent) {
    let line = match ev {
        DeployEvent::Read { source, objects } => format!("read {objects} object(s) from {source}"),
        DeployEvent::Applied(o) => o.to_string(),
        DeployEvent::Progress { workload, message } => format!("{workload}: {message}"),
        DeployEvent::RolledOut { workload } => format!("{workload}: rolled out"),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = args.options();
    if opts.dry_run && !deploy::cluster_configured(&opts) {
        // No cluster at all (a laptop, `podci exec`): show what would be applied.
        let manifests = deploy::render(&opts)?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "dry run without a cluster (no --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster account): {} object(s), no diff",
            manifests.len()
        )?;
        for m in &manifests {
            writeln!(out, "---\n{}", deploy::to_yaml(&m.object).trim_end())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let client = deploy::client(&opts).await?;
        deploy::deploy(client, &opts, &mut print_event).await
    });
    match result {
        Ok(r) => {
            if opts.dry_run {
                let mut out = std::io::stdout().lock();
                write!(out, "{}", r.rendered)?;
                if r.diff.is_empty() {
                    writeln!(out, "# no changes against the cluster")?;
                } else {
                    write!(out, "{}", r.diff)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.rollout_failure().is_some() => {
            eprintln!("podci: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1m0.5s"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_go_duration("5 minutes").is_err());
        assert!(parse_go_duration("m").is_err());
        assert!(parse_go_duration("").is_err());
    }

    proptest! {
        #[test]
        fn durations_never_panic(s in "\\PC{0,16}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn composed_durations(h in 0u64..100, m in 0u64..60, sec in 0u64..60) {
            let text = format!("{h}h{m}m{sec}s");
            prop_assert_eq!(parse_go_duration(&text), Ok(Duration::from_secs(h * 3600 + m * 60 + sec)));
        }
    }
}
