//! Helper steps against the fake Kubernetes API server (tests/fake-kube): caller-given
//! scripts in the helper container before and after the build steps, their output in
//! the trace, `when` on_success/on_failure/always, failures mapped to the step's reason
//! or kept as warnings, and secrets reaching the helper through the job Secret only.
//!
//! Containers get their own root (`container_roots`: root, unshare, overlayfs), so that
//! `/builds` is the Pod's volume shared by the helper and build containers.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use podci_fake_kube::{FakeKube, Options};
use podci_k8s::executor::{ExecutorOptions, FailureReason, Job, KubernetesExecutor, Outcome};
use podci_k8s::{HelperEnv, HelperStep, HelperWhen, KubernetesConfig};
use podci_model::payload::{JobPayload, JobVariable, Step};
use tokio_util::sync::CancellationToken;

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
    eprintln!("SKIPPING helper step test: needs root and unshare for the fake server's container roots");
    false
}

async fn executor() -> (FakeKube, KubernetesExecutor) {
    let fake = FakeKube::start(Options {
        container_roots: true,
        ..Default::default()
    })
    .await
    .expect("fake server starts");
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig("ci-jobs")).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let config = KubernetesConfig::from_toml_str(
        "namespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n",
    )
    .expect("config");
    let mut o = ExecutorOptions::new("glrt1234abcdef");
    o.retry_base = Duration::from_millis(50);
    (fake, KubernetesExecutor::new(client, config, o))
}

fn payload(script: &[&str]) -> JobPayload {
    let mut p = JobPayload {
        id: 41,
        token: "glcbt-job-token-secret".into(),
        ..Default::default()
    };
    p.job_info.name = "helper".into();
    p.job_info.project_id = 9;
    p.job_info.project_name = "demo".into();
    p.runner_info.timeout = 600;
    p.variables = vec![JobVariable {
        key: "CI_PROJECT_DIR".into(),
        value: "/builds/demo".into(),
        public: true,
        ..Default::default()
    }];
    p.steps = vec![Step {
        name: "script".into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        timeout: 600,
        when: "on_success".into(),
        allow_failure: false,
    }];
    p
}

fn helper(name: &str, script: &str, when: HelperWhen, failure: Option<FailureReason>) -> HelperStep {
    HelperStep {
        name: name.into(),
        title: format!("Helper step {name}"),
        script: script.into(),
        when,
        failure,
    }
}

async fn run(ex: &KubernetesExecutor, job: &Job<'_>) -> (Outcome, String) {
    let mut trace = Vec::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        ex.run(job, &mut trace, CancellationToken::new()),
    )
    .await
    .expect("job ends within a minute");
    (outcome, String::from_utf8_lossy(&trace).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_steps_prepare_and_finish_the_job() {
    if !can_run() {
        return;
    }
    let (_fake, ex) = executor().await;
    let p = payload(&[
        "cat /builds/demo/source.txt",
        "echo result > /builds/demo/out.txt",
    ]);
    let mut job = Job::new(&p);
    job.helper_env = vec![
        HelperEnv::public("DEMO_DIR", "/builds/demo"),
        HelperEnv::secret("DEMO_TOKEN", "tok-very-secret-1234"),
    ];
    job.before_steps = vec![helper(
        "get_sources",
        // The secret is in the helper's environment, not in this script.
        "mkdir -p \"$DEMO_DIR\" && echo \"fetched with ${#DEMO_TOKEN}-char token\" > \"$DEMO_DIR/source.txt\" && echo sources ready",
        HelperWhen::Always,
        Some(FailureReason::RunnerSystemFailure),
    )];
    job.after_steps = vec![
        helper(
            "upload",
            "echo \"uploading $(cat \"$DEMO_DIR/out.txt\")\"; echo oops >&2",
            HelperWhen::OnSuccess,
            Some(FailureReason::RunnerSystemFailure),
        ),
        helper(
            "on_failure_only",
            "echo must not run",
            HelperWhen::OnFailure,
            None,
        ),
        helper("always", "echo always runs", HelperWhen::Always, None),
    ];
    let (outcome, trace) = run(&ex, &job).await;
    assert_eq!(outcome, Outcome::Success, "{trace}");
    let order = [
        "Helper step get_sources\x1b[0;m\nsources ready\n",
        "\nfetched with 20-char token\n",
        "Helper step upload\x1b[0;m\nuploading result\noops\n",
        "Helper step always\x1b[0;m\nalways runs\n",
    ];
    let mut at = 0;
    for part in order {
        let Some(i) = trace[at..].find(part) else {
            panic!("{part:?} missing after byte {at}:\n{trace}");
        };
        at += i + part.len();
    }
    assert!(!trace.contains("must not run"), "{trace}");
    assert!(!trace.contains("Helper step on_failure_only"), "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_helper_steps_map_to_their_reason_or_warn() {
    if !can_run() {
        return;
    }
    let (_fake, ex) = executor().await;
    // A before-step failure ends the job with its reason; the script never runs.
    let p = payload(&["echo script ran"]);
    let mut job = Job::new(&p);
    job.before_steps = vec![helper(
        "download",
        "echo cannot download; exit 3",
        HelperWhen::Always,
        Some(FailureReason::RunnerSystemFailure),
    )];
    let (outcome, trace) = run(&ex, &job).await;
    match &outcome {
        Outcome::Failed { reason, message, .. } => {
            assert_eq!(*reason, FailureReason::RunnerSystemFailure, "{trace}");
            assert!(
                message.contains("download") && message.contains("exit code 3"),
                "{message}"
            );
        }
        other => panic!("{other:?}\n{trace}"),
    }
    assert!(trace.contains("cannot download\n"), "{trace}");
    assert!(!trace.contains("script ran"), "{trace}");

    // A failed script: on_failure steps run, on_success ones do not; a step without a
    // reason only warns, and the outcome stays the script's.
    let p = payload(&["exit 4"]);
    let mut job = Job::new(&p);
    job.before_steps = vec![helper("cache", "echo no cache; exit 1", HelperWhen::Always, None)];
    job.after_steps = vec![
        helper("upload_ok", "echo success upload", HelperWhen::OnSuccess, None),
        helper(
            "upload_failed",
            "echo failure upload",
            HelperWhen::OnFailure,
            None,
        ),
    ];
    let (outcome, trace) = run(&ex, &job).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                reason: FailureReason::ScriptFailure,
                exit_code: Some(4),
                ..
            }
        ),
        "{outcome:?}\n{trace}"
    );
    assert!(
        trace.contains("WARNING: the helper step cache failed with exit code 1"),
        "{trace}"
    );
    assert!(trace.contains("failure upload\n"), "{trace}");
    assert!(!trace.contains("success upload"), "{trace}");
}

#[test]
fn helper_secrets_go_through_the_job_secret() {
    let p = payload(&["true"]);
    let config =
        KubernetesConfig::from_toml_str("namespace = \"ci-jobs\"\nimage = \"alpine:3\"\n").expect("config");
    let params = podci_k8s::PodParams {
        runner_short_token: "glrt1234".into(),
        concurrent_id: 0,
        suffix: "abc".into(),
        now_unix: 1_700_000_000,
        job_url: String::new(),
    };
    let mut jp = podci_k8s::build_pod(&config, &p, &params).expect("pod");
    assert!(jp.secret.is_none(), "no secret variables in this job");
    podci_k8s::helper::add_helper_env(
        &mut jp,
        &[
            HelperEnv::secret("PAYLOAD", "{\"token\":\"glcbt-job-token-secret\"}"),
            HelperEnv::public("URL", "http://gitlab.example"),
        ],
    );
    let pod = serde_json::to_string(&jp.pod).expect("json");
    assert!(!pod.contains("glcbt-job-token-secret"), "{pod}");
    let secret = jp.secret.as_ref().expect("a Secret for the helper");
    let data = secret.data.as_ref().expect("data");
    assert_eq!(
        data.get("podci-helper.PAYLOAD").map(|b| b.0.clone()),
        Some(b"{\"token\":\"glcbt-job-token-secret\"}".to_vec())
    );
    let spec = jp.pod.spec.as_ref().expect("spec");
    let helper = spec
        .containers
        .iter()
        .find(|c| c.name == "helper")
        .expect("helper");
    let env = helper.env.as_ref().expect("env");
    let payload = env.iter().find(|e| e.name == "PAYLOAD").expect("PAYLOAD");
    let key_ref = payload
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!(Some(key_ref.name.as_str()), secret.metadata.name.as_deref());
    assert!(
        env.iter()
            .any(|e| e.name == "URL" && e.value.as_deref() == Some("http://gitlab.example"))
    );
    // The build container does not get the helper's variables.
    let build = spec.containers.iter().find(|c| c.name == "build").expect("build");
    assert!(!build.env.iter().flatten().any(|e| e.name == "PAYLOAD"));
}
