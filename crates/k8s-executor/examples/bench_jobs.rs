//! Benchmark driver for `bench/k8s.sh`: N one-step jobs through the executor against the
//! fake API server, one after another. Prints API requests per job and the time podci
//! adds per job beyond the job's own process time.
//!
//! The fake kubelet's simulated delays (scheduling, container creation, status sync) are
//! set to zero so that what remains is podci, the API round trips and process start-up;
//! the job's own time is the same step script run the Pod's way without Kubernetes (an
//! already running shell starts `sh -s` with it), and own time, the fake cluster's Pod
//! floor and the job are measured in turn for every job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

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
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "ci-jobs");

    // The job's own process time: the same rendered step run by sh, no Kubernetes.
    let dir = tempfile::tempdir()?;
    let script = render_step(
        &payload(0),
        &payload(0).steps[0],
        &ScriptOptions {
            shell: Shell::Detect,
            nonce: "benchnonce123".into(),
            start_time: 0,
            build_dir: dir.path().display().to_string(),
            tmp_dir: dir.path().join("tmp").display().to_string(),
            job_status: None,
        },
    )?;

    // An observer outside the executor: when each Pod's build and helper containers were
    // first seen running, to split "the cluster started the Pod" from "podci reacted".
    let running_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let observer = {
        let pods = pods.clone();
        let running_at = running_at.clone();
        tokio::spawn(async move {
            let Ok(w) = pods.watch(&kube::api::WatchParams::default(), "0").await else {
                return;
            };
            let mut w = std::pin::pin!(w);
            while let Some(ev) = futures::StreamExt::next(&mut w).await {
                if let Ok(kube::api::WatchEvent::Added(p) | kube::api::WatchEvent::Modified(p)) = ev
                    && both_running(&p)
                    && let Some(name) = p.metadata.name.clone()
                {
                    let now = Instant::now();
                    if let Ok(mut m) = running_at.lock() {
                        m.entry(name).or_insert(now);
                    }
                }
            }
        })
    };

    let mut own_shell = OwnShell::start(dir.path())?;
    let load_before = loadavg();
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures = 0;
    let mut requests = 0usize;
    // Own time, floor and job are measured in turn for every job, so that a change in
    // the machine's load during the run weighs on all three alike.
    for id in 1..=jobs {
        let own = own_shell.time(&script)?;
        let floor = floor_pod(&ex, &pods, id).await?;
        let p = payload(id);
        let mut trace = Vec::new();
        let before = fake.control().request_count();
        let start = Instant::now();
        // A hung job is reported with its trace instead of stalling the whole run.
        let job = Job::new(&p);
        let run = ex.run(&job, &mut trace, CancellationToken::new());
        let Ok(outcome) = tokio::time::timeout(Duration::from_secs(60), run).await else {
            failures += 1;
            eprintln!("job {id}: did not finish within 60 s");
            continue;
        };
        let end = Instant::now();
        requests += fake.control().request_count() - before;
        if outcome != Outcome::Success || !String::from_utf8_lossy(&trace).contains("hello\n") {
            failures += 1;
            eprintln!("job {id}: {outcome:?}\n{}", String::from_utf8_lossy(&trace));
        }
        samples.push(Sample {
            start,
            end,
            own,
            floor,
        });
    }
    let load_after = loadavg();
    observer.abort();
    let n = samples.len().max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let wall: Vec<f64> = samples.iter().map(|s| ms(s.end - s.start)).collect();
    let own: Vec<f64> = samples.iter().map(|s| ms(s.own)).collect();
    let floor: Vec<f64> = samples.iter().map(|s| ms(s.floor)).collect();
    let added: Vec<f64> = wall.iter().zip(&own).map(|(w, o)| w - o).collect();
    let share: Vec<f64> = added.iter().zip(&floor).map(|(a, f)| a - f).collect();
    let req_per_job = requests as f64 / n;
    let added_mean = mean(&added);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("jobs:                      {jobs} ({failures} failed)");
    println!(
        "load average (1 min):      {load_before} before, {load_after} after (2 cores; others' builds inflate every time below)"
    );
    println!(
        "API requests per job:      {req_per_job:.1} (target <= 12: {})",
        verdict(req_per_job <= 12.0)
    );
    println!("                           mean      median");
    for (label, v) in [
        ("wall time per job:       ", &wall),
        ("job's own process time:  ", &own),
        ("podci added per job:     ", &added),
        ("fake cluster Pod floor:  ", &floor),
        ("podci's own share:       ", &share),
    ] {
        println!("{label}  {:7.1} ms {:7.1} ms", mean(v), median(v));
    }
    println!(
        "target: added < 50 ms per job (mean): {} ({added_mean:.1} ms; median {:.1} ms)",
        verdict(added_mean < 50.0),
        median(&added)
    );
    println!("  added = wall - own: the job's whole cost beyond its script, fake cluster included");
    println!("  floor = the same Pod created, watched to running and deleted by the bench, no executor");
    println!("  share = added - floor: what podci itself adds on top of the cluster's Pod start and stop");
    println!(
        "GitLab Runner lower bound: 3000 ms per job from poll_interval = 3 s alone (not run: no GitLab Runner here)"
    );
    println!(
        "ratio (GitLab Runner poll floor / podci added): {:.0}x",
        3000.0 / added_mean.max(0.001)
    );
    // Where a job's time goes: the observer's running instant and the instants the fake
    // server received each request.
    let timed = fake.control().requests_timed();
    let running = running_at.lock().map(|m| m.clone()).unwrap_or_default();
    let mut phases = [0f64; 5];
    let mut counted = 0u32;
    for s in &samples {
        let mine: Vec<&(Instant, String)> = timed
            .iter()
            .filter(|(at, _)| *at >= s.start && *at <= s.end)
            .collect();
        let first = |pred: &dyn Fn(&str) -> bool| mine.iter().find(|(_, r)| pred(r)).copied();
        let (Some((create, _)), Some((stream, path)), Some((delete, _))) = (
            first(&|r| r.starts_with("POST ") && r.split('?').next().is_some_and(|p| p.ends_with("/pods"))),
            first(&|r| r.contains("/exec?") || r.contains("/attach?")),
            first(&|r| r.starts_with("DELETE ") && r.contains("/pods/")),
        ) else {
            continue;
        };
        let name = path
            .split("/pods/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let Some(run_at) = running.get(name).copied() else {
            continue;
        };
        phases[0] += ms(*create - s.start);
        phases[1] += ms(run_at.saturating_duration_since(*create));
        phases[2] += ms(stream.saturating_duration_since(run_at));
        phases[3] += ms(delete.saturating_duration_since(*stream));
        phases[4] += ms(s.end.saturating_duration_since(*delete));
        counted += 1;
    }
    if counted > 0 {
        let avg = |x: f64| x / counted as f64;
        println!(
            "breakdown per job, mean of {counted} (fake server request arrivals; running as seen by an observer watch):"
        );
        println!(
            "  podci before the Pod create:             {:6.1} ms",
            avg(phases[0])
        );
        println!(
            "  Pod create -> containers running:        {:6.1} ms (fake kubelet: two container starts, status)",
            avg(phases[1])
        );
        println!(
            "  running -> first exec/attach arrives:    {:6.1} ms (watch event to podci, podci reacting, new connection)",
            avg(phases[2])
        );
        println!(
            "  first exec/attach -> Pod delete:         {:6.1} ms (log tail + attach open, sh -s, the step, end marker)",
            avg(phases[3])
        );
        println!(
            "  Pod delete -> job returned:              {:6.1} ms (cleanup)",
            avg(phases[4])
        );
    }
    if failures > 0 {
        anyhow::bail!("{failures} jobs failed");
    }
    Ok(())
}

struct Sample {
    start: Instant,
    end: Instant,
    own: Duration,
    floor: Duration,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn both_running(p: &Pod) -> bool {
    let running = |n: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.name == n && c.state.as_ref().is_some_and(|s| s.running.is_some()))
            })
    };
    running("build") && running("helper")
}

/// The job's own process time, measured as the Pod runs the step but without
/// Kubernetes: a shell that is already running (the build container's `bash`) starts
/// `sh -s` with the step script as a here-document, its output appended to a log file.
/// Spawning `sh` straight from this (large) process each time would cost more than the
/// Pod's way and make podci's share look smaller than it is.
struct OwnShell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    log: std::path::PathBuf,
}

impl OwnShell {
    fn start(dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = std::process::Command::new("bash")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("bash gave no pipes");
        };
        Ok(OwnShell {
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
            log: dir.join("own.log"),
        })
    }

    fn time(&mut self, script: &str) -> anyhow::Result<Duration> {
        use std::io::{BufRead, Write};
        let text = format!(
            "sh -s >> '{}' 2>&1 <<'PODCI_OWN_EOF'\n{{\n{script}\n}}\nPODCI_OWN_EOF\necho own-done\n",
            self.log.display()
        );
        let t = Instant::now();
        self.stdin.write_all(text.as_bytes())?;
        self.stdin.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                anyhow::bail!("the shell ended");
            }
            if line.trim_end() == "own-done" {
                return Ok(t.elapsed());
            }
        }
    }
}

impl Drop for OwnShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake cluster's own floor: the Pod podci would create, created, followed by a
/// watch until build and helper run, deleted with grace 0; no executor involved.
async fn floor_pod(ex: &KubernetesExecutor, pods: &kube::Api<Pod>, id: u64) -> anyhow::Result<Duration> {
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
        if let Ok(kube::api::WatchEvent::Modified(p)) = ev
            && both_running(&p)
        {
            break;
        }
    }
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete(&jp.name, &dp).await?;
    Ok(t.elapsed())
}
