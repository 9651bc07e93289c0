//! Benchmark driver for `bench/k8s.sh`: N one-step jobs through the executor against the
//! fake API server, one after another. Prints API requests per job and the time podci
//! adds per job beyond the job's own process time.
//!
//! The fake kubelet's simulated delays (scheduling, container creation, status sync) are
//! set to zero so that what remains is podci, the API round trips and process start-up;
//! the job's own time is measured by running the same step script with `sh` directly.

use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use podci_fake_kube::{FakeKube, Options, Timing};
use podci_k8s::KubernetesConfig;
use podci_k8s::executor::{ExecutorOptions, Job, KubernetesExecutor, Outcome};
use podci_model::payload::{JobPayload, Step};
use podci_model::script::{ScriptOptions, Shell, render_step};
use tokio_util::sync::CancellationToken;

fn payload(id: u64) -> JobPayload {
    let mut p = JobPayload {
        id,
        ..Default::default()
    };
    p.job_info.project_id = 1;
    p.job_info.project_name = "bench".into();
    p.runner_info.timeout = 600;
    p.steps = vec![Step {
        name: "script".into(),
        script: vec!["echo hello".into()],
        timeout: 600,
        when: "on_success".into(),
        allow_failure: false,
    }];
    p
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let jobs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let zero = Duration::ZERO;
    let fake = FakeKube::start(Options {
        container_roots: true,
        timing: Timing {
            schedule: zero,
            admit: zero,
            create: zero,
            status_sync: zero,
            pull_error: zero,
            pull_backoff: Duration::from_millis(100),
        },
        ..Default::default()
    })
    .await?;
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig("ci-jobs"))?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?;
    let cfg = KubernetesConfig::from_toml_str(
        "namespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"helper\"",
    )?;
    let ex = KubernetesExecutor::new(client.clone(), cfg, ExecutorOptions::new("benchrun"));

    // The job's own process time: the same rendered step run by sh, no Kubernetes.
    let dir = tempfile::tempdir()?;
    let script = render_step(
        &payload(0),
        &payload(0).steps[0],
        &ScriptOptions {
            shell: Shell::Sh,
            nonce: "benchnonce123".into(),
            start_time: 0,
            build_dir: dir.path().display().to_string(),
            tmp_dir: dir.path().join("tmp").display().to_string(),
            job_status: None,
        },
    )?;
    let mut own = Duration::ZERO;
    for _ in 0..jobs {
        let t = Instant::now();
        let mut child = std::process::Command::new("sh")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, script.as_bytes())?;
        }
        child.wait()?;
        own += t.elapsed();
    }

    // The fake cluster's own floor: create the same Pod, follow a watch until build and
    // helper run, delete it (grace 0); no podci executor involved.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), "ci-jobs");
    let mut floor = Duration::ZERO;
    for id in 0..jobs.min(20) {
        let params = podci_k8s::PodParams {
            runner_short_token: "floor".into(),
            concurrent_id: 0,
            suffix: format!("f{id}"),
            now_unix: 0,
            job_url: String::new(),
        };
        let jp = podci_k8s::build_pod(ex.config(), &payload(id), &params)?;
        let t = Instant::now();
        let created = pods.create(&Default::default(), &jp.pod).await?;
        let rv = created.metadata.resource_version.unwrap_or_default();
        let wp = kube::api::WatchParams::default().fields(&format!("metadata.name={}", jp.name));
        let mut w = std::pin::pin!(pods.watch(&wp, &rv).await?);
        while let Some(ev) = futures::StreamExt::next(&mut w).await {
            if let Ok(kube::api::WatchEvent::Modified(p)) = ev {
                let running = |n: &str| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.name == n && c.state.as_ref().is_some_and(|s| s.running.is_some()))
                        })
                };
                if running("build") && running("helper") {
                    break;
                }
            }
        }
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        pods.delete(&jp.name, &dp).await?;
        floor += t.elapsed();
    }
    let floor_per_job = floor / jobs.min(20) as u32;

    fake.control().reset_requests();
    let t = Instant::now();
    let mut failures = 0;
    let mut spans: Vec<(Instant, Instant)> = Vec::new();
    for id in 1..=jobs {
        let p = payload(id);
        let mut trace = Vec::new();
        let start = Instant::now();
        // A hung job is reported with its trace instead of stalling the whole run.
        let job = Job::new(&p);
        let run = ex.run(&job, &mut trace, CancellationToken::new());
        let Ok(outcome) = tokio::time::timeout(Duration::from_secs(60), run).await else {
            failures += 1;
            eprintln!("job {id}: did not finish within 60 s");
            continue;
        };
        spans.push((start, Instant::now()));
        if outcome != Outcome::Success || !String::from_utf8_lossy(&trace).contains("hello\n") {
            failures += 1;
            eprintln!("job {id}: {outcome:?}\n{}", String::from_utf8_lossy(&trace));
        }
    }
    let total = t.elapsed();
    let requests = fake.control().request_count();
    let per_job = total / jobs as u32;
    let own_per_job = own / jobs as u32;
    println!("jobs:                      {jobs} ({failures} failed)");
    println!("API requests per job:      {:.1}", requests as f64 / jobs as f64);
    println!("wall time per job:         {:.1} ms", per_job.as_secs_f64() * 1e3);
    println!(
        "job's own process time:    {:.1} ms",
        own_per_job.as_secs_f64() * 1e3
    );
    println!(
        "podci added per job:       {:.1} ms (wall - own; includes the fake cluster's Pod start and stop)",
        per_job.saturating_sub(own_per_job).as_secs_f64() * 1e3
    );
    println!(
        "fake cluster Pod floor:    {:.1} ms (create, watch to running, delete; no executor)",
        floor_per_job.as_secs_f64() * 1e3
    );
    println!(
        "podci's own share:         {:.1} ms (wall - own - floor)",
        per_job
            .saturating_sub(own_per_job)
            .saturating_sub(floor_per_job)
            .as_secs_f64()
            * 1e3
    );
    println!(
        "GitLab Runner lower bound: 3000 ms per job from poll_interval = 3 s alone (not run: no GitLab Runner here)"
    );
    println!(
        "ratio (GitLab Runner poll floor / podci added): {:.0}x",
        3000.0 / (per_job.saturating_sub(own_per_job).as_secs_f64() * 1e3).max(0.001)
    );
    // Where a job's time goes, from the instants the fake server received each request.
    let timed = fake.control().requests_timed();
    let mut phases = [Duration::ZERO; 4];
    let mut counted = 0u32;
    for (start, end) in &spans {
        let mine: Vec<&(Instant, String)> = timed.iter().filter(|(at, _)| at >= start && at <= end).collect();
        let first = |pred: &dyn Fn(&str) -> bool| mine.iter().find(|(_, r)| pred(r)).map(|(at, _)| *at);
        let (Some(create), Some(stream), Some(delete)) = (
            first(&|r| r.starts_with("POST ") && r.split('?').next().is_some_and(|p| p.ends_with("/pods"))),
            first(&|r| r.contains("/exec?") || r.contains("/attach?")),
            first(&|r| r.starts_with("DELETE ") && r.contains("/pods/")),
        ) else {
            continue;
        };
        phases[0] += create - *start;
        phases[1] += stream.saturating_duration_since(create);
        phases[2] += delete.saturating_duration_since(stream);
        phases[3] += end.saturating_duration_since(delete);
        counted += 1;
    }
    if counted > 0 {
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / counted as f64;
        println!("breakdown per job (from the fake server's request arrival times):");
        println!(
            "  podci before the Pod create:             {:.1} ms",
            ms(phases[0])
        );
        println!(
            "  Pod create -> first exec/attach:         {:.1} ms (fake kubelet start, watch, podci reacting)",
            ms(phases[1])
        );
        println!(
            "  first exec/attach -> Pod delete:         {:.1} ms (log tail + attach open, launcher, step, end marker)",
            ms(phases[2])
        );
        println!(
            "  Pod delete -> job returned:              {:.1} ms (cleanup)",
            ms(phases[3])
        );
    }
    if failures > 0 {
        anyhow::bail!("{failures} jobs failed");
    }
    Ok(())
}
