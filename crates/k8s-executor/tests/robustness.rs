//! Robustness of the parts of the lifecycle that start processes through `pods/exec`,
//! against the project's fake Kubernetes API server (tests/fake-kube):
//! - the exec strategy with a build shell that exits without reading its stdin, and with
//!   a step script larger than any pipe or stream buffer on the way;
//! - helper steps whose connection is cut mid-step (every byte once, the exit code still
//!   known);
//! - the job future is `Send`, so a runner can spawn it on a multi-thread runtime.
//!
//! Containers get their own root (`container_roots`: root, unshare, overlayfs), so that
//! the Pod's volumes appear at `/builds`, `/scripts-*`, `/logs-*` as in a real Pod.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use podci_fake_kube::{FakeKube, Options};
use podci_k8s::executor::{ExecutorOptions, FailureReason, Job, KubernetesExecutor, Outcome, TraceSink};
use podci_k8s::{HelperStep, HelperWhen, KubernetesConfig, Strategy};
use podci_model::payload::{JobPayload, JobVariable, Step};
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
    eprintln!(
        "SKIPPING executor robustness test: needs root and unshare for the fake server's container roots"
    );
    false
}

async fn start(opts: Options) -> FakeKube {
    // RUST_LOG=podci_k8s=debug shows retries and reconnects.
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

async fn executor(fake: &FakeKube, strategy: Strategy) -> KubernetesExecutor {
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig("ci-jobs")).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let mut config = KubernetesConfig::from_toml_str(
        "namespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n",
    )
    .expect("config");
    config.strategy = strategy;
    let mut o = ExecutorOptions::new("glrt1234abcdef");
    o.retry_base = Duration::from_millis(50);
    KubernetesExecutor::new(client, config, o)
}

fn payload(id: u64, script: Vec<String>) -> JobPayload {
    let mut p = JobPayload {
        id,
        token: "glcbt-job-token-secret".into(),
        ..Default::default()
    };
    p.job_info.name = "robust".into();
    p.job_info.project_id = 9;
    p.job_info.project_name = "demo".into();
    p.runner_info.timeout = 600;
    p.variables = vec![JobVariable {
        key: "CI_JOB_ID".into(),
        value: id.to_string(),
        public: true,
        ..Default::default()
    }];
    p.steps = vec![Step {
        name: "script".into(),
        script,
        timeout: 600,
        when: "on_success".into(),
        allow_failure: false,
    }];
    p
}

/// Runs a job with a hard limit, so that a hang fails with the trace so far instead of
/// hanging the test run.
async fn run_job(ex: &KubernetesExecutor, job: &Job<'_>, limit: Duration) -> (Outcome, String) {
    run_job_into(ex, job, limit, Shared::default()).await
}

async fn run_job_into(
    ex: &KubernetesExecutor,
    job: &Job<'_>,
    limit: Duration,
    mut sink: Shared,
) -> (Outcome, String) {
    let probe = sink.clone();
    match tokio::time::timeout(limit, ex.run(job, &mut sink, CancellationToken::new())).await {
        Ok(o) => (o, probe.text()),
        Err(_) => panic!(
            "job {} hung: not finished within {limit:?}; trace so far:\n{}",
            job.payload.id,
            probe.text()
        ),
    }
}

/// A directory holding an `sh` that exits at once when run without arguments (as the
/// exec strategy runs it, to read the launcher from stdin) and is the real shell
/// otherwise (`sh -c ...` of the log reader and helper steps). It stands for a build
/// image whose shell ends before it reads its stdin.
fn early_exit_sh() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("early-exit-sh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let sh = dir.join("sh");
    std::fs::write(&sh, "#!/bin/sh\n[ $# -eq 0 ] && exit 0\nexec /bin/sh \"$@\"\n").expect("write sh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Script lines that add up to well over the 64 KiB of a pipe and kube's 1 KiB stdin
/// buffer: `n` numbered lines of 200 characters.
fn big_script(n: usize) -> Vec<String> {
    let mut lines: Vec<String> = (1..=n)
        .map(|i| format!(": filler {i} {}", "x".repeat(200)))
        .collect();
    lines.push(format!("echo big script done after {n} lines"));
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_strategy_shell_exiting_at_once_fails_the_job_instead_of_hanging() {
    if !can_run() {
        return;
    }
    let fake = start(Options {
        path_prepend: vec![early_exit_sh()],
        ..Default::default()
    })
    .await;
    let ex = executor(&fake, Strategy::Exec).await;
    // ~260 KB of launcher: far more than the stream buffers, so a write that nobody
    // reads blocks unless the executor notices the shell is gone.
    let p = payload(21, big_script(1200));
    let (outcome, trace) = run_job(&ex, &Job::new(&p), Duration::from_secs(90)).await;
    match &outcome {
        Outcome::Failed { reason, message, .. } => {
            assert_eq!(*reason, FailureReason::RunnerSystemFailure, "{trace}");
            assert!(
                message.contains("ended") && message.contains("before"),
                "the message says the shell ended before it started the step: {message}"
            );
        }
        other => panic!("expected a runner_system_failure, got {other:?}\n{trace}"),
    }
    assert!(!trace.contains("big script done"), "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_strategy_runs_a_script_larger_than_every_buffer() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let ex = executor(&fake, Strategy::Exec).await;
    let mut script = big_script(1200);
    // Output while the launcher is still being written would stall a start that does
    // not read; and a second step after the big one.
    script.insert(
        0,
        "i=1; while [ $i -le 300 ]; do echo \"out $i $(printf '%0100d' $i)\"; i=$((i+1)); done".into(),
    );
    let mut p = payload(22, script);
    p.steps.push(Step {
        name: "after_script".into(),
        script: vec!["echo after $CI_JOB_STATUS".into()],
        timeout: 600,
        when: "always".into(),
        allow_failure: false,
    });
    let (outcome, trace) = run_job(&ex, &Job::new(&p), Duration::from_secs(90)).await;
    assert_eq!(outcome, Outcome::Success, "{trace}");
    let lines: Vec<&str> = trace.lines().filter(|l| l.starts_with("out ")).collect();
    let expected: Vec<String> = (1..=300).map(|i| format!("out {i} {i:0100}")).collect();
    assert_eq!(lines, expected, "every output line exactly once, in order");
    assert!(trace.contains("big script done after 1200 lines\n"), "{trace}");
    assert!(trace.contains("after success\n"), "{trace}");
}

fn helper(name: &str, script: &str, failure: Option<FailureReason>) -> HelperStep {
    HelperStep {
        name: name.into(),
        title: format!("Helper step {name}"),
        script: script.into(),
        when: HelperWhen::Always,
        failure,
    }
}

/// Cuts every open stream (exec, attach, log, watch) each time the trace shows the next
/// of `marks`: a connection lost in the middle of a step. Returns how many cuts it made.
fn cut_when_seen(
    control: podci_fake_kube::Control,
    sink: Shared,
    marks: &'static [&'static str],
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut cuts = 0;
        for _ in 0..3000 {
            let Some(mark) = marks.get(cuts) else { break };
            if sink.text().contains(mark) {
                control.drop_streams();
                cuts += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cuts
    })
}

/// 40 numbered lines over ~2 s from a helper step, then `exit $code`.
fn counting_helper(prefix: &str, code: i32) -> String {
    format!(
        "i=1; while [ $i -le 40 ]; do echo \"{prefix} $i $(printf '%0150d' $i)\"; sleep 0.05; i=$((i+1)); done; exit {code}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_steps_survive_cut_streams_without_losing_or_repeating_a_byte() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let ex = executor(&fake, Strategy::Attach).await;
    let p = payload(23, vec!["echo build step ran".into()]);
    let mut job = Job::new(&p);
    job.before_steps = vec![helper(
        "get_sources",
        &counting_helper("src", 0),
        Some(FailureReason::RunnerSystemFailure),
    )];
    job.after_steps = vec![helper(
        "upload",
        &counting_helper("up", 0),
        Some(FailureReason::RunnerSystemFailure),
    )];
    let sink = Shared::default();
    let cutter = cut_when_seen(fake.control(), sink.clone(), &["src 5 ", "src 20 ", "up 10 "]);
    let (outcome, trace) = run_job_into(&ex, &job, Duration::from_secs(90), sink).await;
    let cuts = cutter.await.expect("cutter");
    assert_eq!(cuts, 3, "the streams were cut mid-step\n{trace}");
    assert_eq!(outcome, Outcome::Success, "{trace}");
    for prefix in ["src", "up"] {
        let lines: Vec<&str> = trace
            .lines()
            .filter(|l| l.starts_with(&format!("{prefix} ")))
            .collect();
        let expected: Vec<String> = (1..=40).map(|i| format!("{prefix} {i} {i:0150}")).collect();
        assert_eq!(
            lines, expected,
            "{prefix}: every line exactly once, in order\n{trace}"
        );
    }
    assert!(trace.contains("build step ran\n"), "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_step_exit_code_is_known_after_a_cut_stream() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let ex = executor(&fake, Strategy::Attach).await;
    let p = payload(24, vec!["echo must not run".into()]);
    let mut job = Job::new(&p);
    job.before_steps = vec![helper(
        "download",
        &counting_helper("dl", 3),
        Some(FailureReason::RunnerSystemFailure),
    )];
    let sink = Shared::default();
    let cutter = cut_when_seen(fake.control(), sink.clone(), &["dl 10 "]);
    let (outcome, trace) = run_job_into(&ex, &job, Duration::from_secs(90), sink).await;
    assert_eq!(
        cutter.await.expect("cutter"),
        1,
        "the stream was cut mid-step\n{trace}"
    );
    match &outcome {
        Outcome::Failed { reason, message, .. } => {
            assert_eq!(*reason, FailureReason::RunnerSystemFailure, "{trace}");
            assert!(
                message.contains("download") && message.contains("exit code 3"),
                "the step's own exit code, not a lost stream: {message}\n{trace}"
            );
        }
        other => panic!("{other:?}\n{trace}"),
    }
    let lines: Vec<&str> = trace.lines().filter(|l| l.starts_with("dl ")).collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("dl {i} {i:0150}")).collect();
    assert_eq!(lines, expected, "every line exactly once, in order\n{trace}");
    assert!(!trace.contains("must not run"), "{trace}");
}

/// The job future holds nothing `!Send` across an await: a runner can `tokio::spawn` it.
#[test]
fn job_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    async fn check(ex: KubernetesExecutor, p: JobPayload) {
        let job = Job::new(&p);
        let mut sink = Shared::default();
        let fut = ex.run(&job, &mut sink, CancellationToken::new());
        assert_send(&fut);
        fut.await;
    }
    // Never run: the assertion is the compilation of `check`.
    let _ = check;
}

/// Spawned on a multi-thread runtime (what `Send` is for), a job runs as it does inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_when_spawned_on_a_multi_thread_runtime() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let ex = executor(&fake, Strategy::Attach).await;
    let p = payload(25, vec!["echo spawned job ran".into()]);
    let task = tokio::spawn(async move {
        let mut sink = Shared::default();
        let job = Job::new(&p);
        let outcome = ex.run(&job, &mut sink, CancellationToken::new()).await;
        (outcome, sink.text())
    });
    let (outcome, trace) = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the spawned job ends within a minute")
        .expect("the task does not panic");
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(trace.contains("spawned job ran\n"), "{trace}");
}

/// The `pods/exec` requests that sent stdin (the launchers).
fn stdin_execs(fake: &FakeKube) -> usize {
    fake.control()
        .requests()
        .iter()
        .filter(|r| r.contains("/exec?") && r.contains("stdin=true"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_strategy_launcher_cut_mid_write_is_sent_again_and_runs_once() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let ex = executor(&fake, Strategy::Exec).await;
    let mut script = big_script(600);
    script.insert(
        0,
        "i=1; while [ $i -le 50 ]; do echo \"once $i\"; i=$((i+1)); done".into(),
    );
    let p = payload(26, script);
    // The first launcher's connection drops after 4 KiB of its ~130 KB.
    fake.control().cut_next_exec_stdin(4096);
    let (outcome, trace) = run_job(&ex, &Job::new(&p), Duration::from_secs(90)).await;
    assert_eq!(outcome, Outcome::Success, "{trace}");
    let lines: Vec<&str> = trace.lines().filter(|l| l.starts_with("once ")).collect();
    let expected: Vec<String> = (1..=50).map(|i| format!("once {i}")).collect();
    assert_eq!(lines, expected, "the step ran exactly once\n{trace}");
    assert!(
        stdin_execs(&fake) >= 2,
        "the launcher was sent again: {:#?}",
        fake.control().requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_launcher_cut_after_it_arrived_does_not_run_the_step_twice() {
    if !can_run() {
        return;
    }
    let fake = start(Options::default()).await;
    let ex = executor(&fake, Strategy::Attach).await;
    let p = payload(27, vec!["echo build ran".into()]);
    let mut job = Job::new(&p);
    job.before_steps = vec![helper(
        "get_sources",
        "echo \"fetch run $$\" >> /builds/fetch-runs; cat /builds/fetch-runs | wc -l | sed 's/^ */runs: /'",
        Some(FailureReason::RunnerSystemFailure),
    )];
    // The helper launcher's first frame reaches the shell, then the connection drops
    // before the shell's confirmation comes back.
    fake.control().cut_next_exec_stdin(1);
    let (outcome, trace) = run_job(&ex, &job, Duration::from_secs(90)).await;
    assert_eq!(outcome, Outcome::Success, "{trace}");
    assert!(trace.contains("\nruns: 1\n"), "the helper step ran once\n{trace}");
    assert_eq!(trace.matches("runs: ").count(), 1, "{trace}");
    assert!(trace.contains("build ran\n"), "{trace}");
    assert!(
        stdin_execs(&fake) >= 2,
        "the launcher was sent again: {:#?}",
        fake.control().requests()
    );
}
