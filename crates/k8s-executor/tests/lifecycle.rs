//! The executor against the project's fake Kubernetes API server (tests/fake-kube), which
//! follows recordings of a real one: success, script failure with after_script, image
//! pull failure, unschedulable Pods, 410 Gone, dropped streams, the exec strategy, a
//! service and a PVC-backed cache, cancel, timeout, transient API errors, the orphan
//! sweeper, and the number of API requests per job.
//!
//! Containers get their own root (`container_roots`: root, unshare, overlayfs) so that
//! the Pod's volumes appear at `/builds`, `/scripts-*`, `/logs-*` as in a real Pod.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use podci_fake_kube::{FakeKube, Options};
use podci_k8s::executor::{ExecutorOptions, FailureReason, Job, KubernetesExecutor, Outcome, TraceSink};
use podci_k8s::{KubernetesConfig, Strategy};
use podci_model::payload::{JobPayload, JobVariable, Service, Step};
use tokio_util::sync::CancellationToken;

/// A sink tests can read while the job runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl TraceSink for Shared {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Whether container roots work here; under CI they must.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok();
    if root && unshare {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root with util-linux: container roots must work"
    );
    eprintln!("SKIPPING executor test: needs root and unshare for the fake server's container roots");
    false
}

async fn start(opts: Options) -> FakeKube {
    // RUST_LOG=podci_k8s=debug shows retries, reconnects and watch restarts.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    FakeKube::start(Options {
        container_roots: true,
        ..opts
    })
    .await
    .expect("fake server starts")
}

async fn client(fake: &FakeKube) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig("ci-jobs")).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn config(extra: &str) -> KubernetesConfig {
    KubernetesConfig::from_toml_str(&format!(
        "namespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n{extra}"
    ))
    .expect("config")
}

fn executor(c: kube::Client, cfg: KubernetesConfig) -> KubernetesExecutor {
    let mut o = ExecutorOptions::new("glrt1234abcdef");
    o.retry_base = Duration::from_millis(50);
    KubernetesExecutor::new(c, cfg, o)
}

fn step(name: &str, script: &[&str]) -> Step {
    Step {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        timeout: 600,
        when: if name == "after_script" {
            "always".into()
        } else {
            "on_success".into()
        },
        allow_failure: false,
    }
}

fn job(id: u64, script: &[&str], after: &[&str]) -> JobPayload {
    let mut p = JobPayload {
        id,
        token: "glcbt-job-token-secret".into(),
        ..Default::default()
    };
    p.job_info.name = "test".into();
    p.job_info.project_id = 9;
    p.job_info.project_name = "demo".into();
    p.runner_info.timeout = 600;
    p.variables = vec![JobVariable {
        key: "CI_JOB_ID".into(),
        value: id.to_string(),
        public: true,
        ..Default::default()
    }];
    p.steps = vec![step("script", script)];
    if !after.is_empty() {
        p.steps.push(step("after_script", after));
    }
    p
}

/// Runs a job with a hard limit, so that a hang fails with the trace so far.
async fn run_job(
    ex: &KubernetesExecutor,
    p: &JobPayload,
    sink: &mut Shared,
    cancel: CancellationToken,
) -> Outcome {
    let probe = sink.clone();
    match tokio::time::timeout(Duration::from_secs(60), ex.run(&Job::new(p), sink, cancel)).await {
        Ok(o) => o,
        Err(_) => panic!(
            "job {} did not finish within 60 s; trace so far:\n{}",
            p.id,
            probe.text()
        ),
    }
}

async fn assert_cleaned_up(c: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "ci-jobs");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "ci-jobs");
    // Grace 0: the Pod is gone at once (the fake ends its processes first).
    for _ in 0..50 {
        let left = pods.list(&Default::default()).await.expect("list").items.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pods.list(&Default::default()).await.expect("list").items.len(),
        0,
        "no Pod left behind"
    );
    let ours: Vec<_> = secrets
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=podci"))
        .await
        .expect("list")
        .items;
    assert!(ours.is_empty(), "no Secret left behind: {ours:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_step_job_succeeds_with_few_api_requests() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let p = job(1, &["echo hello from $CI_JOB_ID", "printf 'no newline'"], &[]);
    fake.control().reset_requests();
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "trace:\n{trace}");
    assert!(trace.contains("hello from 1\n"), "{trace}");
    assert!(trace.contains("no newline"), "{trace}");
    assert!(
        !trace.contains("podci-step-end:"),
        "the end marker is removed from the trace: {trace}"
    );
    let requests = fake.control().requests();
    eprintln!(
        "API requests for one single-step job ({}):\n{}",
        requests.len(),
        requests.join("\n")
    );
    assert!(
        requests.len() <= 12,
        "at most 12 API requests per single-step job, got {}: {requests:#?}",
        requests.len()
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/ci-jobs/pods/runner")
                && !r.contains("/exec")
                && !r.contains("/attach")),
        "the Pod is followed by a watch, never polled: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("DELETE /api/v1/namespaces/ci-jobs/pods/")),
        "{requests:#?}"
    );
    // Grace 0 (in the DeleteOptions body): the Pod is gone at once, not after 30 s.
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_script_reports_exit_code_and_runs_after_script() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let mut p = job(
        2,
        &["echo before", "exit 3", "echo never"],
        &["echo after status=$CI_JOB_STATUS"],
    );
    p.variables.push(JobVariable {
        key: "DEPLOY_PASSWORD".into(),
        value: "hunter2-very-secret".into(),
        public: false,
        masked: true,
        ..Default::default()
    });
    p.steps[0].script.insert(0, "echo pw=$DEPLOY_PASSWORD".into());
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    match &outcome {
        Outcome::Failed {
            reason, exit_code, ..
        } => {
            assert_eq!(
                (*reason, *exit_code),
                (FailureReason::ScriptFailure, Some(3)),
                "{trace}"
            );
        }
        other => panic!("expected a script failure, got {other:?}\n{trace}"),
    }
    assert!(
        trace.contains("before\n") && !trace.contains("never\n"),
        "{trace}"
    );
    assert!(
        trace.contains("after status=failed"),
        "after_script runs after a failure: {trace}"
    );
    assert!(
        trace.contains("pw=[MASKED]") && !trace.contains("hunter2"),
        "masked: {trace}"
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_carries_the_registry_message() {
    if !can_run() {
        return;
    }
    let mut images = std::collections::BTreeMap::new();
    images.insert("debian:bookworm".to_string(), vec!["sh".to_string()]);
    images.insert("podci-helper:test".to_string(), vec!["sh".to_string()]);
    let fake = start(Options {
        images: Some(images),
        ..Default::default()
    })
    .await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let mut p = job(3, &["echo unreachable"], &[]);
    p.image = Some(podci_model::payload::Image {
        name: "127.0.0.1:5000/nope:latest".into(),
        ..Default::default()
    });
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    match &outcome {
        Outcome::Failed { reason, message, .. } => {
            assert_eq!(*reason, FailureReason::ImagePullFailure, "{trace}");
            assert!(
                message.contains("127.0.0.1:5000/nope:latest") && message.contains("ErrImagePull"),
                "{message}"
            );
            assert!(
                message.contains("failed to pull"),
                "the registry's message is quoted: {message}"
            );
        }
        other => panic!("expected image_pull_failure, got {other:?}\n{trace}"),
    }
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_fails_after_poll_timeout_quoting_events() {
    if !can_run() {
        return;
    }
    let fake = start(Options {
        unschedulable: true,
        ..Default::default()
    })
    .await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config("poll_timeout = 1"));
    let p = job(4, &["echo unreachable"], &[]);
    let t = Instant::now();
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    match &outcome {
        Outcome::Failed { reason, message, .. } => {
            assert_eq!(*reason, FailureReason::RunnerSystemFailure);
            assert!(message.contains("poll_timeout = 1s"), "{message}");
            assert!(
                message.contains("FailedScheduling") || message.contains("Unschedulable"),
                "events quoted: {message}"
            );
        }
        other => panic!("expected a start timeout, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "bounded by poll_timeout, took {:?}",
        t.elapsed()
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_410_gone_relists_and_continues() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let p = job(5, &["echo survived the 410"], &[]);
    fake.control().reset_requests();
    fake.control().expire_next_watch();
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(trace.contains("survived the 410\n"), "{trace}");
    let requests = fake.control().requests();
    let watches: Vec<_> = requests.iter().filter(|r| r.contains("watch=true")).collect();
    assert!(watches.len() >= 2, "watched again after the 410: {requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/ci-jobs/pods?") && !r.contains("watch=true")),
        "re-listed after the 410: {requests:#?}"
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_lose_and_repeat_no_byte() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    // 60 numbered lines over ~3 s, some long, while every stream is cut 4 times.
    let p = job(
        6,
        &[
            "i=1; while [ $i -le 60 ]; do echo \"line $i $(printf '%0200d' $i)\"; sleep 0.05; i=$((i+1)); done",
        ],
        &[],
    );
    let control = fake.control();
    let dropper = tokio::spawn(async move {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            control.drop_streams();
        }
    });
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let _ = dropper.await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    let lines: Vec<&str> = trace.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=60).map(|i| format!("line {i} {i:0200}")).collect();
    assert_eq!(lines, expected, "every line exactly once, in order");
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_strategy_runs_steps_and_reports_exit_codes() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let mut cfg = config("");
    cfg.strategy = Strategy::Exec;
    let ex = executor(c.clone(), cfg);
    let p = job(
        7,
        &["echo via exec", "exit 5"],
        &["echo after exec $CI_JOB_STATUS"],
    );
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                reason: FailureReason::ScriptFailure,
                exit_code: Some(5),
                ..
            }
        ),
        "{outcome:?}\n{trace}"
    );
    assert!(
        trace.contains("via exec\n") && trace.contains("after exec failed"),
        "{trace}"
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_container_and_pvc_backed_cache() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    fake.control().put_object(
        "persistentvolumeclaims",
        "ci-jobs",
        serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "maven-cache-0"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    let ex = executor(
        c.clone(),
        config(
            "[[volumes.pvc]]\nname = \"maven-cache-$CI_CONCURRENT_ID\"\nmount_path = \"/home/cache/maven\"\n",
        ),
    );
    // A service on the Pod's shared network (the fake's processes share the host's).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut p = job(
        8,
        &[
            "for i in $(seq 1 100); do python3 -c \"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$SVC_PORT/ready.txt').read().decode())\" 2>/dev/null && break; sleep 0.1; done",
            "mkdir -p /home/cache/maven/repo && echo artifact-1.0 > /home/cache/maven/repo/dep.jar",
        ],
        &[],
    );
    p.variables.push(JobVariable {
        key: "SVC_PORT".into(),
        value: port.to_string(),
        public: true,
        ..Default::default()
    });
    p.services = vec![Service {
        name: "python:3".into(),
        alias: Some("web".into()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        command: Some(vec![format!(
            "mkdir -p /srv && echo service-ready > /srv/ready.txt && cd /srv && exec python3 -m http.server {port} --bind 127.0.0.1"
        )]),
        ..Default::default()
    }];
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(
        trace.contains("service-ready"),
        "the build reached the service: {trace}"
    );
    // A second job in a new Pod finds what the first left in the PVC.
    let p2 = job(9, &["cat /home/cache/maven/repo/dep.jar"], &[]);
    let mut sink2 = Shared::default();
    let outcome = run_job(&ex, &p2, &mut sink2, CancellationToken::new()).await;
    let trace2 = sink2.text();
    assert_eq!(outcome, Outcome::Success, "{trace2}");
    assert!(
        trace2.contains("artifact-1.0\n"),
        "cache restored from the PVC: {trace2}"
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_script_runs_after_script_and_deletes() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let p = job(
        10,
        &["echo started", "sleep 60", "echo not reached"],
        &["echo after $CI_JOB_STATUS"],
    );
    let cancel = CancellationToken::new();
    let mut sink = Shared::default();
    let watcher = {
        let sink = sink.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while !sink.text().contains("started\n") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        })
    };
    let t = Instant::now();
    let outcome = run_job(&ex, &p, &mut sink, cancel).await;
    let _ = watcher.await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Canceled, "{trace}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the sleep was stopped: {:?}",
        t.elapsed()
    );
    assert!(
        trace.contains("after canceled"),
        "after_script ran with CI_JOB_STATUS=canceled: {trace}"
    );
    assert!(!trace.contains("not reached"), "{trace}");
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_is_job_execution_timeout() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let mut p = job(11, &["echo working", "sleep 60"], &[]);
    p.runner_info.timeout = 2;
    let t = Instant::now();
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                reason: FailureReason::JobExecutionTimeout,
                ..
            }
        ),
        "{outcome:?}\n{trace}"
    );
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_api_errors_are_retried() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let p = job(12, &["echo retried fine"], &[]);
    fake.control().reset_requests();
    fake.control().fail_next_requests(3, 503);
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(trace.contains("retried fine\n"), "{trace}");
    let requests = fake.control().requests();
    let posts = requests
        .iter()
        .filter(|r| r.starts_with("POST /api/v1/namespaces/ci-jobs/pods"))
        .count();
    assert_eq!(
        posts, 4,
        "the Pod create was retried through three 503s: {requests:#?}"
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_is_created_owned_by_the_pod_and_removed() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let mut p = job(
        13,
        &[
            "test \"$API_KEY\" = s3cr3t-value && echo key-ok",
            "cat \"$CREDS_FILE\"",
        ],
        &[],
    );
    p.variables.push(JobVariable {
        key: "API_KEY".into(),
        value: "s3cr3t-value".into(),
        public: false,
        ..Default::default()
    });
    p.variables.push(JobVariable {
        key: "CREDS_FILE".into(),
        value: "file-content-line\n".into(),
        public: false,
        file: true,
        ..Default::default()
    });
    p.credentials.push(podci_model::payload::Credential {
        kind: "registry".into(),
        url: "registry.example.com".into(),
        username: "gitlab-ci-token".into(),
        password: "glcbt-job-token-secret".into(),
    });
    let control = fake.control();
    let seen = Arc::new(Mutex::new(None::<serde_json::Value>));
    let spy = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let pods = control.requests();
                if let Some(name) = pods.iter().find_map(|r| {
                    r.strip_prefix("PATCH /api/v1/namespaces/ci-jobs/secrets/")
                        .map(|s| s.split('?').next().unwrap_or("").to_string())
                }) && let Some(s) = control.get("secrets", "ci-jobs", &name)
                {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    spy.abort();
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(
        trace.contains("key-ok\n") && trace.contains("file-content-line"),
        "{trace}"
    );
    let secret = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("the Secret existed during the job");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"], "Pod",
        "{secret}"
    );
    assert_cleaned_up(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_sweeper_removes_only_expired_objects() {
    let fake = FakeKube::start(Options::default()).await.expect("fake");
    let c = client(&fake).await;
    let cfg = config("");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "ci-jobs");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "ci-jobs");
    let mut names = Vec::new();
    for (i, now) in [(0u64, 1_000_000_000i64), (1, jiff::Timestamp::now().as_second())] {
        let mut p = job(100 + i, &["sleep 1"], &[]);
        p.variables.push(JobVariable {
            key: "SECRET".into(),
            value: "x".into(),
            public: false,
            ..Default::default()
        });
        let params = podci_k8s::PodParams {
            runner_short_token: "glrt1234".into(),
            concurrent_id: i as u32,
            suffix: format!("orphan{i}"),
            now_unix: now,
            job_url: String::new(),
        };
        let jp = podci_k8s::build_pod(&cfg, &p, &params).expect("pod");
        secrets
            .create(&Default::default(), jp.secret.as_ref().expect("secret"))
            .await
            .expect("secret");
        pods.create(&Default::default(), &jp.pod).await.expect("pod");
        names.push(jp.name);
    }
    // Another runner's expired Pod is not ours to remove.
    let mut other = job(200, &["sleep 1"], &[]);
    other.variables.clear();
    let jp = podci_k8s::build_pod(
        &cfg,
        &other,
        &podci_k8s::PodParams {
            runner_short_token: "otherrun".into(),
            concurrent_id: 0,
            suffix: "x1".into(),
            now_unix: 1_000_000_000,
            job_url: String::new(),
        },
    )
    .expect("pod");
    pods.create(&Default::default(), &jp.pod).await.expect("pod");
    let report = podci_k8s::sweep_orphans(c.clone(), "ci-jobs", "glrt1234", jiff::Timestamp::now())
        .await
        .expect("sweep");
    assert_eq!(report.pods, vec![names[0].clone()]);
    assert_eq!(report.secrets, vec![format!("{}-job", names[0])]);
    let left: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        left.contains(&names[1]) && left.contains(&jp.name) && !left.contains(&names[0]),
        "{left:?}"
    );
}

/// A script long enough that kube sends its launcher in several stdin frames (1 KiB each).
fn long_script(marker: &str) -> Vec<String> {
    let mut lines = vec![
        format!("echo {marker} >> /builds/runs.txt"),
        format!("echo {marker}"),
    ];
    for i in 0..40 {
        lines.push(format!("true {i} {}", "x".repeat(80)));
    }
    lines.push("echo runs=$(wc -l < /builds/runs.txt)".into());
    lines
}

/// The attach carrying a step's launcher drops at the worst moments: before anything
/// arrives, after the first frame (a half-read here-document in the shell), and after
/// everything arrived but before the shell's confirmation reached podci. Each time the
/// step must run exactly once: never lost (the job would hang), never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_attach_neither_loses_nor_repeats_the_step_start() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    for (case, id) in [
        ("nothing-arrives", 31u64),
        ("first-frame-only", 32),
        ("all-but-confirmation", 33),
    ] {
        match case {
            "nothing-arrives" => fake.control().cut_next_attach_stdin(0),
            "first-frame-only" => fake.control().cut_next_attach_stdin(1),
            _ => fake.control().cut_next_attach_output(),
        }
        let script = long_script(&format!("ran-{case}"));
        let refs: Vec<&str> = script.iter().map(String::as_str).collect();
        let p = job(id, &refs, &["echo after-ran"]);
        let mut sink = Shared::default();
        let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
        let trace = sink.text();
        assert_eq!(outcome, Outcome::Success, "{case}: {trace}");
        let marker = format!("\nran-{case}\n");
        assert_eq!(
            trace.matches(&marker).count(),
            1,
            "{case}: the step ran once: {trace}"
        );
        assert!(
            trace.contains("runs=1\n"),
            "{case}: one run in the build directory: {trace}"
        );
        assert_eq!(trace.matches("after-ran\n").count(), 1, "{case}: {trace}");
        let reqs = fake.control().requests();
        assert!(
            reqs.iter().filter(|r| r.contains("/attach?")).count() >= 2,
            "{case}: podci attached again after the cut: {reqs:#?}"
        );
        fake.control().reset_requests();
    }
    assert_cleaned_up(&c).await;
}

/// The first step starts only once the service's port accepts connections: the service
/// listens after a second, and the build connects at once without retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_waits_for_the_service_port() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let ex = executor(c.clone(), config(""));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut p = job(
        40,
        &[&format!(
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('connected-first-try')\""
        )],
        &[],
    );
    p.services = vec![Service {
        name: "python:3".into(),
        alias: Some("slow".into()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        command: Some(vec![format!(
            "sleep 1 && exec python3 -m http.server {port} --bind 127.0.0.1"
        )]),
        ports: vec![podci_model::payload::Port {
            number: port,
            protocol: None,
            name: None,
        }],
        ..Default::default()
    }];
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(
        trace.contains("Waiting for services to be up and running"),
        "{trace}"
    );
    assert!(trace.contains("connected-first-try"), "{trace}");
    assert!(!trace.contains("probably didn't start properly"), "{trace}");
    assert_cleaned_up(&c).await;
}

/// A service whose port never opens: after `services_timeout` GitLab's warning is in the
/// trace and the job goes on (GitLab Runner's health check does not fail the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_service_port_warns_after_the_timeout_as_gitlab_does() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let c = client(&fake).await;
    let mut o = ExecutorOptions::new("glrt1234abcdef");
    o.retry_base = Duration::from_millis(50);
    o.services_timeout = Duration::from_secs(2);
    let ex = KubernetesExecutor::new(c.clone(), config(""), o);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut p = job(41, &["echo build-ran"], &[]);
    p.services = vec![Service {
        name: "postgres:16".into(),
        alias: Some("db".into()),
        entrypoint: Some(vec!["sleep".into()]),
        command: Some(vec!["600".into()]),
        variables: vec![podci_model::payload::ServiceVariable {
            key: "HEALTHCHECK_TCP_PORT".into(),
            value: port.to_string(),
        }],
        ..Default::default()
    }];
    let started = Instant::now();
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(
        trace.contains("*** WARNING:\u{1b}[0;m Service db probably didn't start properly."),
        "{trace}"
    );
    assert!(
        trace.contains(&format!(
            "port {port} did not accept TCP connections within 2 seconds"
        )),
        "{trace}"
    );
    assert!(trace.contains("build-ran\n"), "{trace}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the timeout"
    );
    assert_cleaned_up(&c).await;
}
