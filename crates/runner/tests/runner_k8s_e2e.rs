//! `podci run` on Kubernetes end to end: the fake GitLab server and the fake Kubernetes
//! API server (both in this process, on 127.0.0.1) and the real `podci` binary as a
//! subprocess, configured with `executor = "kubernetes"`. Each job becomes a Pod; its
//! helper container runs `podci helper ...` (the fake kubelet finds the binary through
//! `Options::path_prepend`, standing in for the helper image) to check out the commit,
//! restore and save caches and move artifacts through GitLab's artifacts API.
//!
//! The pipeline is our users' three stages (package, image, deploy) with shell commands
//! in place of Maven and the image build: a jar artifact produced and consumed, a masked
//! variable, the Maven cache on a PVC, and a GitLab `cache:` kept in a PVC-backed store.
//!
//! Containers get their own root (`container_roots`: root, unshare, overlayfs), so that
//! `/builds` and the PVC paths are the Pod's volumes as in a real cluster.

mod common;
use common::git_repo;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podci_fake_gitlab::{FakeGitlab, Options, Status};

const TOKEN: &str = "glrt-t1_fake-runner-token";
const SECRET: &str = "hunter2-signing-key-value";

/// Whether container roots work here; under CI they must.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = Command::new("unshare").arg("--version").output().is_ok();
    let git = Command::new("git").arg("--version").output().is_ok();
    if root && unshare && git {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root with util-linux and git: the Kubernetes e2e test must run"
    );
    eprintln!("SKIPPING podci run on Kubernetes e2e: needs root, unshare and git");
    false
}

fn pvc(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

const PIPELINE: &str = r#"stages: [package, image, deploy]
variables:
  APP_NAME: seed-app
  REGISTRY: registry.example.com/team
package:
  stage: package
  cache:
    key: maven-$CI_COMMIT_REF_SLUG
    paths: [.m2/]
  script:
    - mkdir -p target .m2
    - if [ -f /home/cache/maven/deps.txt ]; then echo "dependencies from the PVC"; else echo "downloading dependencies"; echo junit-5.10 > /home/cache/maven/deps.txt; fi
    - echo "$(cat pom.xml)-jar" > target/$APP_NAME.jar
    - echo "built target/$APP_NAME.jar signed with $SIGNING_KEY"
    - echo kept > .m2/marker
  artifacts:
    paths: [target/]
docker_build:
  stage: image
  script:
    - test -f target/$APP_NAME.jar
    - echo "$REGISTRY/$APP_NAME:$CI_COMMIT_SHORT_SHA" > image.txt
    - echo "image $(cat image.txt) from $(cat target/$APP_NAME.jar)"
  artifacts:
    paths: [image.txt]
deploy_k8s:
  stage: deploy
  script:
    - 'sed -i "s|image: .*|image: $(cat image.txt)|" deployment.yaml'
    - cat deployment.yaml
    - echo "slot $CI_CONCURRENT_ID"
"#;

/// Runs `podci run` until it has taken `jobs` jobs and finished them (killed after 150 s).
async fn podci_run(
    podci: &'static Path,
    config: &Path,
    kubeconfig: &Path,
    jobs: usize,
) -> std::process::Output {
    let (config, kubeconfig) = (config.to_path_buf(), kubeconfig.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(podci)
            .args(["run", "--config"])
            .arg(&config)
            .arg(format!("--max-jobs={jobs}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("PODCI_TRACE_INTERVAL_MS", "100")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podci starts");
        let deadline = Instant::now() + Duration::from_secs(150);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join")
}

/// Job Secrets (name -> key -> value) as they were while their jobs ran.
type SeenSecrets = std::sync::Arc<
    std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>>>,
>;

/// Records every podci job Secret while it exists (they are deleted with their Pods).
async fn spy_job_secrets(kube: &podci_fake_kube::FakeKube) -> (SeenSecrets, tokio::task::JoinHandle<()>) {
    let kc = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig("ci-jobs")).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, "ci-jobs");
    let seen = SeenSecrets::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let lp = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=podci");
        loop {
            if let Ok(list) = secrets.list(&lp).await {
                let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                for s in list.items {
                    let data = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    seen.insert(s.metadata.name.unwrap_or_default(), data);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (seen, task)
}

/// Each job Secret holds registry credentials, the job's secret variables (for the
/// build container) and the helper's one key, whose payload carries the job token but
/// neither the job's scripts nor secret variables that no helper command reads.
fn assert_job_secrets_hold_only_what_pods_need(
    (seen, task): (SeenSecrets, tokio::task::JoinHandle<()>),
    jobs: &[podci_fake_gitlab::JobRecord],
) {
    task.abort();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(seen.len() >= jobs.len(), "a Secret per job: {:?}", seen.keys());
    for (name, data) in &seen {
        let helper = data
            .get("podci-helper.PODCI_HELPER_JOB")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("{name}: no helper payload: {:?}", data.keys()));
        let job = jobs
            .iter()
            .find(|j| helper.contains(&j.payload.token))
            .unwrap_or_else(|| panic!("{name}: the helper payload carries its job's token"));
        for key in data.keys() {
            let allowed = key == ".dockerconfigjson"
                || key == "podci-helper.PODCI_HELPER_JOB"
                // The runner's cache settings (S3 keys) when the runner has a cache.
                || key == "podci-helper.PODCI_HELPER_CACHE"
                || job
                    .payload
                    .variables
                    .iter()
                    .any(|v| &v.key == key && (!v.public || v.file));
            assert!(allowed, "{name}: unexpected Secret key {key}");
        }
        let parsed: podci_model::payload::JobPayload =
            serde_json::from_str(&helper).expect("the helper payload parses");
        assert!(parsed.steps.is_empty(), "{name}: steps in the helper payload");
        for step in &job.payload.steps {
            for line in &step.script {
                let escaped = serde_json::to_string(line).expect("json");
                let escaped = escaped.trim_matches('"');
                assert!(
                    !helper.contains(escaped),
                    "{name}: the script line {line:?} is in the helper payload"
                );
            }
        }
        assert!(
            !helper.contains(SECRET),
            "{name}: SIGNING_KEY's value is in the helper payload"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stage_pipeline_on_kubernetes_with_masked_traces_and_artifacts() {
    if !can_run() {
        return;
    }
    let gitlab = FakeGitlab::start(Options::default())
        .await
        .expect("fake GitLab starts");
    let podci = Path::new(env!("CARGO_BIN_EXE_podci"));
    let kube = podci_fake_kube::FakeKube::start(podci_fake_kube::Options {
        container_roots: true,
        path_prepend: vec![podci.parent().expect("bin dir").to_path_buf()],
        ..Default::default()
    })
    .await
    .expect("fake Kubernetes starts");
    kube.control()
        .put_object("persistentvolumeclaims", "ci-jobs", pvc("maven-cache-0"));
    kube.control()
        .put_object("persistentvolumeclaims", "ci-jobs", pvc("podci-cache"));

    let repo = tempfile::tempdir().expect("tempdir");
    git_repo(
        repo.path(),
        &[
            (".gitlab-ci.yml", PIPELINE),
            ("pom.xml", "maven-project"),
            ("deployment.yaml", "kind: Deployment\nimage: old\n"),
        ],
    );
    gitlab
        .create_pipeline(PIPELINE, Some(repo.path()), &[("SIGNING_KEY", SECRET, true)])
        .expect("pipeline");

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "ci-jobs").expect("kubeconfig");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"concurrent = 1
check_interval = 1
[[runners]]
name = "k8s-e2e"
url = "{url}"
token = "{TOKEN}"
executor = "kubernetes"
cache_dir = "/cache"
pre_get_sources_script = "echo pre-get-sources in $PODCI_HELPER_PROJECT_DIR"
pre_build_script = "echo pre-build of $CI_JOB_NAME"
post_build_script = "echo post-build"
[runners.kubernetes]
namespace = "ci-jobs"
image = "debian:bookworm"
helper_image = "podci-helper:test"
[[runners.kubernetes.volumes.pvc]]
name = "maven-cache-$CI_CONCURRENT_ID"
mount_path = "/home/cache/maven"
[[runners.kubernetes.volumes.pvc]]
name = "podci-cache"
mount_path = "/cache"
"#,
            url = gitlab.url()
        ),
    )
    .expect("config");

    let spy = spy_job_secrets(&kube).await;
    let out = podci_run(podci, &config, &kubeconfig, 3).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "podci run failed: {stderr}");

    let jobs = gitlab.jobs();
    assert_eq!(jobs.len(), 3);
    assert_job_secrets_hold_only_what_pods_need(spy, &jobs);
    let trace = |i: usize| String::from_utf8_lossy(&jobs[i].trace).into_owned();
    if std::env::var_os("PODCI_E2E_SHOW").is_some() {
        (0..jobs.len()).for_each(|i| eprintln!("--- {}\n{}", jobs[i].name, trace(i)));
    }
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.status, Status::Success, "{}:\n{}\n{stderr}", j.name, trace(i));
        assert_eq!(j.final_recorded, 1);
        assert_eq!(j.checksum.as_deref(), Some(j.trace_checksum().as_str()));
        assert!(trace(i).contains("via podci-k8s"), "{}", trace(i));
        assert!(!trace(i).contains(SECRET), "{}", trace(i));
        assert!(
            !trace(i).contains(&j.payload.token),
            "job token in trace {}",
            trace(i)
        );
    }
    // What the jobs printed, in the trace as printed, with the masked value replaced.
    let t0 = trace(0);
    assert!(t0.contains("Getting source from Git repository"), "{t0}");
    assert!(t0.contains("\ndownloading dependencies\n"), "{t0}");
    // config.toml's scripts around the sources and the job's script.
    let pre_sources = t0
        .find("\npre-get-sources in /builds/")
        .expect("pre_get_sources_script ran");
    let fetch = t0.find("Fetching changes").expect("fetch");
    let pre_build = t0.find("\npre-build of package\n").expect("pre_build_script ran");
    let downloading = t0.find("\ndownloading dependencies\n").expect("script ran");
    let post_build = t0.find("\npost-build\n").expect("post_build_script ran");
    assert!(
        pre_sources < fetch && fetch < pre_build && pre_build < downloading && downloading < post_build,
        "{t0}"
    );
    assert!(
        t0.contains("\nbuilt target/seed-app.jar signed with [MASKED]\n"),
        "{t0}"
    );
    // The GitLab cache went to the PVC-backed store; the artifacts to GitLab.
    assert!(t0.contains("Created cache maven-main"), "{t0}");
    assert!(t0.contains("Uploading artifacts for successful job"), "{t0}");
    assert!(jobs[0].artifacts.is_some() && jobs[1].artifacts.is_some());
    assert!(jobs[2].artifacts.is_none());
    // Artifacts reached the later jobs.
    let sha = &jobs[1].payload.git_info.sha[..8];
    let t1 = trace(1);
    assert!(t1.contains("Downloading artifacts"), "{t1}");
    assert!(
        t1.contains(&format!(
            "\nimage registry.example.com/team/seed-app:{sha} from maven-project-jar\n"
        )),
        "{t1}"
    );
    let t2 = trace(2);
    assert!(
        t2.contains(&format!(
            "\nkind: Deployment\nimage: registry.example.com/team/seed-app:{sha}\n"
        )),
        "{t2}"
    );
    assert!(t2.contains("\nslot 0\n"), "{t2}");
    assert!(!stderr.contains(SECRET) && !stderr.contains(TOKEN), "{stderr}");

    // The same pipeline again: the Maven cache is on the PVC, the GitLab cache in the
    // PVC-backed store; both survive the Pods of the first run.
    gitlab
        .create_pipeline(PIPELINE, Some(repo.path()), &[("SIGNING_KEY", SECRET, true)])
        .expect("second pipeline");
    let out = podci_run(podci, &config, &kubeconfig, 3).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "second podci run failed: {stderr}");
    let jobs = gitlab.jobs();
    assert_eq!(jobs.len(), 6);
    let t3 = String::from_utf8_lossy(&jobs[3].trace).into_owned();
    assert_eq!(jobs[3].status, Status::Success, "{t3}");
    assert!(t3.contains("\ndependencies from the PVC\n"), "{t3}");
    assert!(t3.contains("Successfully extracted cache maven-main"), "{t3}");
    assert!(jobs[4..].iter().all(|j| j.status == Status::Success));
    // Every Pod and Secret was removed after its job.
    let kc = kube::config::Kubeconfig::from_yaml(&kube.kubeconfig("ci-jobs")).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), "ci-jobs");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, "ci-jobs");
    let lp = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=podci");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pods.list(&lp).await.expect("list pods").items.len();
        let s = secrets.list(&lp).await.expect("list secrets").items.len();
        if p == 0 && s == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{p} Pods and {s} Secrets left behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A failing job on Kubernetes: GitLab gets `script_failure` with the script's exit code,
/// `after_script` runs, `artifacts:when: on_failure` are uploaded, and the next stage is
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_on_kubernetes_reports_exit_code_and_uploads_failure_artifacts() {
    if !can_run() {
        return;
    }
    let gitlab = FakeGitlab::start(Options::default())
        .await
        .expect("fake GitLab starts");
    let podci = Path::new(env!("CARGO_BIN_EXE_podci"));
    let kube = podci_fake_kube::FakeKube::start(podci_fake_kube::Options {
        container_roots: true,
        path_prepend: vec![podci.parent().expect("bin dir").to_path_buf()],
        ..Default::default()
    })
    .await
    .expect("fake Kubernetes starts");
    let ci = "stages: [test, deploy]\ntests:\n  stage: test\n  script:\n    - echo report > report.txt\n    - echo about to fail\n    - exit 7\n  after_script:\n    - echo after $CI_JOB_STATUS\n  artifacts:\n    when: on_failure\n    paths: [report.txt]\nlater:\n  stage: deploy\n  script: [echo never]\n";
    let repo = tempfile::tempdir().expect("tempdir");
    git_repo(repo.path(), &[(".gitlab-ci.yml", ci)]);
    gitlab
        .create_pipeline(ci, Some(repo.path()), &[])
        .expect("pipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "ci-jobs").expect("kubeconfig");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[[runners]]\nname = \"k8s\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nnamespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n",
            gitlab.url()
        ),
    )
    .expect("config");
    let out = podci_run(podci, &config, &kubeconfig, 1).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = gitlab.jobs();
    let t = String::from_utf8_lossy(&jobs[0].trace).into_owned();
    assert_eq!(jobs[0].status, Status::Failed, "{t}");
    assert_eq!(jobs[0].exit_code, Some(7), "{t}");
    assert_eq!(jobs[0].failure_reason.as_deref(), Some("script_failure"), "{t}");
    assert!(
        t.contains("\nabout to fail\n") && t.contains("\nafter failed\n"),
        "{t}"
    );
    assert!(t.contains("Uploading artifacts for failed job"), "{t}");
    assert!(!t.contains("Uploading artifacts for successful job"), "{t}");
    assert!(jobs[0].artifacts.is_some(), "{t}");
    assert_eq!(jobs[1].status, Status::Skipped);
}

/// GitLab cancels a running Kubernetes job: the script stops, `after_script` runs with
/// `CI_JOB_STATUS=canceled`, the Pod goes away and GitLab records the job as canceled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_canceled_by_gitlab_stops_its_pod() {
    if !can_run() {
        return;
    }
    let gitlab = FakeGitlab::start(Options::default())
        .await
        .expect("fake GitLab starts");
    let podci = Path::new(env!("CARGO_BIN_EXE_podci"));
    let kube = podci_fake_kube::FakeKube::start(podci_fake_kube::Options {
        container_roots: true,
        path_prepend: vec![podci.parent().expect("bin dir").to_path_buf()],
        ..Default::default()
    })
    .await
    .expect("fake Kubernetes starts");
    let ci = "slow:\n  script:\n    - echo about to sleep\n    - sleep 120\n    - echo never printed\n  after_script:\n    - echo after $CI_JOB_STATUS\n";
    gitlab.create_pipeline(ci, None, &[]).expect("pipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "ci-jobs").expect("kubeconfig");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[[runners]]\nname = \"k8s\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nnamespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n",
            gitlab.url()
        ),
    )
    .expect("config");
    let run = tokio::spawn(async move { podci_run(podci, &config, &kubeconfig, 1).await });
    let started = Instant::now();
    loop {
        let jobs = gitlab.jobs();
        if jobs
            .first()
            .is_some_and(|j| String::from_utf8_lossy(&j.trace).contains("\nabout to sleep\n"))
        {
            gitlab.cancel(jobs[0].id);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = run.await.expect("join");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the cancel did not stop the job"
    );
    let jobs = gitlab.jobs();
    let t = String::from_utf8_lossy(&jobs[0].trace).into_owned();
    assert_eq!(jobs[0].status, Status::Canceled, "{t}");
    // GitLab Runner's final update after a graceful cancel.
    assert_eq!(jobs[0].final_state.as_deref(), Some("failed"), "{t}");
    assert_eq!(jobs[0].failure_reason.as_deref(), Some("job_canceled"), "{t}");
    assert!(t.contains("\nafter canceled\n"), "{t}");
    assert!(!t.contains("never printed"), "{t}");
}

/// Outside a job Pod, `podci helper` names the variable it misses instead of guessing.
#[test]
fn helper_outside_a_pod_names_the_missing_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["helper", "get-sources"])
        .env_remove("PODCI_HELPER_JOB")
        .output()
        .expect("podci runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PODCI_HELPER_JOB is not set"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["helper", "artifacts-download"])
        .env("PODCI_HELPER_JOB", "{not json")
        .env("PODCI_HELPER_PROJECT_DIR", "/tmp/x")
        .output()
        .expect("podci runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PODCI_HELPER_JOB does not hold a job payload"),
        "{err}"
    );
}
