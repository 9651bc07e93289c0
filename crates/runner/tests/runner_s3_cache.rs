//! `[runners.cache]` with `Type = "s3"` end to end: the fake GitLab server (in this
//! process) hands out jobs, the real `podci run` runs them with the shell executor, and
//! the runner process keeps their caches in a real S3 server (moto, started per test on
//! 127.0.0.1). Checked: a cache saved by one job is restored by a later one; object names
//! are GitLab Runner's (`[Path/][runner/<token8>/]project/<id>/<key>`, `Shared` drops the
//! runner part) and hold zip archives, so that GitLab Runner and podci share a bucket;
//! store errors are GitLab Runner's warnings and do not fail jobs; the `SecretKey` never
//! reaches a trace or the runner's output, even at debug level.

#[path = "../../cache/tests/common/moto.rs"]
mod moto;

use std::path::Path;
use std::process::{Command, Stdio};

use moto::{Moto, moto, request};
use podci_fake_gitlab::{FakeGitlab, Options, Status};

const TOKEN: &str = "glrt-t1_fake-runner-token";
/// GitLab Runner's short token of [`TOKEN`]: the 8 characters after `glrt-t1_`.
const SHORT: &str = "fake-run";
const SECRET_KEY: &str = "s3-secret-9f4e2c7a1b-do-not-print";
const BUCKET: &str = "runner-cache";

/// config.toml for one shell runner whose cache is `cache` (TOML lines of
/// `[runners.cache]`, then `[runners.cache.s3]` lines).
fn write_config(dir: &Path, url: &str, cache: &str, s3: &str) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[[runners]]\nname = \"s3\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nexecutor = \"shell\"\nbuilds_dir = \"{}\"\n[runners.cache]\nType = \"s3\"\n{cache}\n[runners.cache.s3]\nAccessKey = \"podci-test-access\"\nSecretKey = \"{SECRET_KEY}\"\nBucketLocation = \"eu-central-1\"\n{s3}\n",
            dir.join("builds").display()
        ),
    )
    .expect("write config.toml");
    config
}

/// Runs `podci run` until it has taken `jobs` jobs and finished them; debug logging so
/// that a leaked secret would show.
fn podci_run(config: &Path, jobs: usize, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podci"));
    cmd.args(["run", "--config"])
        .arg(config)
        .arg(format!("--max-jobs={jobs}"))
        .env("PODCI_TRACE_INTERVAL_MS", "100")
        .env("RUST_LOG", "debug")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.output().expect("run podci")
}

async fn run(config: &Path, jobs: usize) -> std::process::Output {
    run_with(config, jobs, &[]).await
}

async fn run_with(config: &Path, jobs: usize, env: &[(&'static str, &'static str)]) -> std::process::Output {
    let c = config.to_path_buf();
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || podci_run(&c, jobs, &env))
        .await
        .expect("podci run task")
}

/// Neither the traces nor anything podci printed holds the secret key.
fn assert_no_secret(fake: &FakeGitlab, out: &std::process::Output) {
    for j in fake.jobs() {
        let t = String::from_utf8_lossy(&j.trace);
        assert!(
            !t.contains(SECRET_KEY),
            "secret key in the trace of {}:\n{t}",
            j.name
        );
    }
    for stream in [&out.stdout, &out.stderr] {
        let s = String::from_utf8_lossy(stream);
        assert!(!s.contains(SECRET_KEY), "secret key in podci's output:\n{s}");
    }
}

fn trace(fake: &FakeGitlab, i: usize) -> String {
    String::from_utf8_lossy(&fake.jobs()[i].trace).into_owned()
}

fn object(m: &Moto, name: &str) -> String {
    let (status, body) = request(m.port, "GET", &format!("/{BUCKET}/{name}"), b"");
    assert_eq!(status, 200, "GET {name}");
    body
}

/// Job 1 saves the cache, job 2 (a later stage, `policy: pull`) restores it; the object
/// is `Path/runner/<token8>/project/<id>/<key>` and a zip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_cache_moves_to_a_later_stage_under_gitlab_runner_names() {
    let Some(m) = moto(BUCKET) else { return };
    let fake = FakeGitlab::start(Options::default()).await.expect("fake gitlab");
    let ci = r#"stages: [build, test]
build:
  stage: build
  cache:
    key: maven-deps
    paths: [deps/]
  script:
    - mkdir -p deps/org
    - echo v1 > deps/org/lib.jar
test:
  stage: test
  cache:
    key: maven-deps
    paths: [deps/]
    policy: pull
  script:
    - echo "restored $(cat deps/org/lib.jar)"
"#;
    fake.create_pipeline(ci, None, &[]).expect("pipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        fake.url(),
        "Path = \"ci/cache\"\nShared = false",
        &format!(
            "ServerAddress = \"{}\"\nBucketName = \"{BUCKET}\"\nInsecure = true",
            m.address()
        ),
    );
    let out = run(&config, 2).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = fake.jobs();
    assert_eq!(jobs.len(), 2);
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.status, Status::Success, "{}", trace(&fake, i));
    }
    assert!(trace(&fake, 0).contains("Created cache"), "{}", trace(&fake, 0));
    let t1 = trace(&fake, 1);
    assert!(t1.contains("Successfully extracted cache"), "{t1}");
    assert!(t1.contains("\nrestored v1\n"), "{t1}");

    let project = jobs[0].payload.job_info.project_id;
    let key = &jobs[0].payload.cache[0].key;
    let name = format!("ci/cache/runner/{SHORT}/project/{project}/{key}");
    assert_eq!(m.keys(BUCKET), vec![name.clone()]);
    assert!(object(&m, &name).starts_with("PK\u{3}\u{4}"), "not a zip");
    assert_no_secret(&fake, &out);
}

/// `Shared = true`: `project/<id>/<key>` with no runner part; a zip that GitLab Runner
/// put there (made here by the `zip` tool) is restored, and a later pipeline restores
/// what podci saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_s3_cache_reads_gitlab_runner_zips_and_carries_between_pipelines() {
    let Some(m) = moto(BUCKET) else { return };
    if Command::new("zip").arg("-h").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "zip is required when CI is set");
        eprintln!("\n\n*** SKIPPED: zip is not installed ***\n");
        return;
    }
    let fake = FakeGitlab::start(Options::default()).await.expect("fake gitlab");
    let ci = "deps:\n  cache:\n    key: shared-deps\n    paths: [deps/]\n  script:\n    - 'echo \"found $(cat deps/x)\"; mkdir -p deps; echo podci > deps/x'\n";
    fake.create_pipeline(ci, None, &[]).expect("pipeline");
    let payload = fake.jobs()[0].payload.clone();
    let name = format!("project/{}/{}", payload.job_info.project_id, payload.cache[0].key);
    // What GitLab Runner's cache-archiver would have uploaded: a zip of deps/.
    let seed = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(seed.path().join("deps")).expect("mkdir");
    std::fs::write(seed.path().join("deps/x"), "gitlab-runner\n").expect("write");
    let ok = Command::new("zip")
        .args(["-q", "-r", "cache.zip", "deps"])
        .current_dir(seed.path())
        .status()
        .expect("zip")
        .success();
    assert!(ok, "zip failed");
    let zip = std::fs::read(seed.path().join("cache.zip")).expect("read zip");
    let (status, body) = request(m.port, "PUT", &format!("/{BUCKET}/{name}"), &zip);
    assert_eq!(status, 200, "{body}");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        fake.url(),
        "Shared = true",
        &format!(
            "ServerAddress = \"{}\"\nBucketName = \"{BUCKET}\"\nInsecure = true",
            m.address()
        ),
    );
    let out = run(&config, 1).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fake.create_pipeline(ci, None, &[]).expect("second pipeline");
    let out2 = run(&config, 1).await;
    assert!(out2.status.success(), "{}", String::from_utf8_lossy(&out2.stderr));

    let jobs = fake.jobs();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.status == Status::Success));
    assert!(
        trace(&fake, 0).contains("\nfound gitlab-runner\n"),
        "{}",
        trace(&fake, 0)
    );
    assert!(trace(&fake, 1).contains("\nfound podci\n"), "{}", trace(&fake, 1));
    assert_eq!(m.keys(BUCKET), vec![name.clone()]);
    // What podci saved is a zip GitLab Runner (and unzip) can read.
    let obj = object(&m, &name);
    assert!(obj.starts_with("PK\u{3}\u{4}"), "not a zip");
    assert_no_secret(&fake, &out);
    assert_no_secret(&fake, &out2);
}

/// A bucket that does not exist, and `Insecure = false` against a plain-HTTP server: the
/// jobs succeed with GitLab Runner's warnings, and no message names the secret key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_warnings_and_never_show_the_secret() {
    let Some(m) = moto(BUCKET) else { return };
    let ci = "deps:\n  cache:\n    key: k\n    paths: [deps/]\n  script:\n    - mkdir -p deps && echo x > deps/x\n";
    // S3 answers a GET from a missing bucket with 404, which reads as a miss; a TLS
    // handshake with a plain-HTTP server fails outright.
    for (s3, restore_fails) in [
        (
            format!(
                "ServerAddress = \"{}\"\nBucketName = \"no-such-bucket\"\nInsecure = true",
                m.address()
            ),
            false,
        ),
        (
            format!(
                "ServerAddress = \"{}\"\nBucketName = \"{BUCKET}\"\nInsecure = false",
                m.address()
            ),
            true,
        ),
    ] {
        let fake = FakeGitlab::start(Options::default()).await.expect("fake gitlab");
        fake.create_pipeline(ci, None, &[]).expect("pipeline");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), fake.url(), "", &s3);
        let out = run(&config, 1).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t = trace(&fake, 0);
        assert_eq!(fake.jobs()[0].status, Status::Success, "{t}");
        if restore_fails {
            assert!(t.contains("WARNING: Failed to extract cache"), "{t}");
        } else {
            assert!(t.contains("WARNING: no cache restored"), "{t}");
        }
        assert!(t.contains("WARNING: Failed to create cache"), "{t}");
        assert_no_secret(&fake, &out);
    }
    assert!(m.keys(BUCKET).is_empty(), "nothing may be stored");
}

/// `AccessKey`/`SecretKey` left empty: the standard AWS variables of the runner process
/// are the credentials (moto does not check them, but without any object_store would go
/// to the instance metadata service instead and the save would fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_keys_use_the_aws_environment() {
    let Some(m) = moto(BUCKET) else { return };
    let fake = FakeGitlab::start(Options::default()).await.expect("fake gitlab");
    let ci = "deps:\n  cache:\n    key: env-creds\n    paths: [deps/]\n  script:\n    - mkdir -p deps && echo x > deps/x\n";
    fake.create_pipeline(ci, None, &[]).expect("pipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        fake.url(),
        "Shared = true",
        &format!(
            "ServerAddress = \"{}\"\nBucketName = \"{BUCKET}\"\nInsecure = true",
            m.address()
        ),
    );
    let text = std::fs::read_to_string(&config).expect("read config");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("AccessKey") && !l.starts_with("SecretKey"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, text).expect("write config");
    let out = run_with(
        &config,
        1,
        &[
            ("AWS_ACCESS_KEY_ID", "env-access"),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = trace(&fake, 0);
    assert!(t.contains("Created cache"), "{t}");
    let job = &fake.jobs()[0].payload;
    assert_eq!(
        m.keys(BUCKET),
        vec![format!(
            "project/{}/{}",
            job.job_info.project_id, job.cache[0].key
        )]
    );
    assert_no_secret(&fake, &out);
}

/// Whether the Kubernetes e2e can run here (root, `unshare`, as the fake kubelet's
/// container roots need); under CI it must.
fn can_run_pods() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && Command::new("unshare").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root with util-linux: the Kubernetes S3 cache test must run"
    );
    eprintln!("\n\n*** SKIPPED: the Kubernetes S3 cache test needs root and unshare ***\n");
    false
}

/// The kubernetes executor: the helper container (`podci helper cache-pull/cache-push`)
/// reaches S3 with settings that came through the per-job Secret: the cache moves from
/// job 1 to job 2 under GitLab Runner's name, and the secret key is in no Pod spec,
/// trace or output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_helper_uses_s3_with_keys_from_the_job_secret() {
    if !can_run_pods() {
        return;
    }
    let Some(m) = moto(BUCKET) else { return };
    let fake = FakeGitlab::start(Options::default()).await.expect("fake gitlab");
    let podci = Path::new(env!("CARGO_BIN_EXE_podci"));
    let kube = podci_fake_kube::FakeKube::start(podci_fake_kube::Options {
        container_roots: true,
        path_prepend: vec![podci.parent().expect("bin dir").to_path_buf()],
        ..Default::default()
    })
    .await
    .expect("fake Kubernetes starts");
    let ci = r#"stages: [build, test]
build:
  stage: build
  cache:
    key: pod-deps
    paths: [deps/]
  script:
    - mkdir -p deps && echo from-pod > deps/x
test:
  stage: test
  cache:
    key: pod-deps
    paths: [deps/]
    policy: pull
  script:
    - echo "restored $(cat deps/x)"
"#;
    fake.create_pipeline(ci, None, &[]).expect("pipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "ci-jobs").expect("kubeconfig");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[[runners]]\nname = \"k8s\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nnamespace = \"ci-jobs\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n[runners.cache]\nType = \"s3\"\nPath = \"k8s\"\n[runners.cache.s3]\nServerAddress = \"{}\"\nAccessKey = \"podci-test-access\"\nSecretKey = \"{SECRET_KEY}\"\nBucketName = \"{BUCKET}\"\nInsecure = true\n",
            fake.url(),
            m.address()
        ),
    )
    .expect("config");

    // Snapshot the Pods (named in the API requests) and their job Secrets
    // (`<pod>-job`) while the jobs run: both are deleted afterwards.
    let control = kube.control();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<String, serde_json::Value>::new());
    let poll = async {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for r in control.requests() {
                let Some(rest) = r.split("/namespaces/ci-jobs/pods/").nth(1) else {
                    continue;
                };
                let pod = rest.split(['/', '?', ' ']).next().unwrap_or_default().to_owned();
                let mut seen = seen.lock().expect("seen");
                for (res, name) in [("pods", pod.clone()), ("secrets", format!("{pod}-job"))] {
                    if let Some(obj) = control.get(res, "ci-jobs", &name) {
                        seen.insert(format!("{res}/{name}"), obj);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let job = async {
        let out = run_k8s(&config, &kubeconfig, 2).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    };
    let (out, ()) = tokio::join!(job, poll);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = fake.jobs();
    assert_eq!(jobs.len(), 2);
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.status, Status::Success, "{}", trace(&fake, i));
    }
    assert!(trace(&fake, 0).contains("Created cache"), "{}", trace(&fake, 0));
    let t1 = trace(&fake, 1);
    assert!(t1.contains("Successfully extracted cache"), "{t1}");
    assert!(t1.contains("\nrestored from-pod\n"), "{t1}");
    let name = format!(
        "k8s/runner/{SHORT}/project/{}/{}",
        jobs[0].payload.job_info.project_id, jobs[0].payload.cache[0].key
    );
    assert_eq!(m.keys(BUCKET), vec![name]);
    assert_no_secret(&fake, &out);

    // The helper got the settings through a secretKeyRef, never as plain env.
    let seen = seen.into_inner().expect("seen");
    let pods: Vec<_> = seen.iter().filter(|(k, _)| k.starts_with("pods/")).collect();
    assert!(!pods.is_empty(), "no Pod seen");
    for (name, p) in &pods {
        let spec = p.to_string();
        assert!(!spec.contains(SECRET_KEY), "secret key in Pod {name}: {spec}");
        let helper = p["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "helper"))
            .expect("helper container");
        let env = helper["env"].as_array().cloned().unwrap_or_default();
        let cache = env
            .iter()
            .find(|e| e["name"] == "PODCI_HELPER_CACHE")
            .expect("PODCI_HELPER_CACHE in the helper's env");
        assert!(cache.get("value").is_none(), "{cache}");
        assert!(cache["valueFrom"]["secretKeyRef"]["name"].is_string(), "{cache}");
    }
    assert!(
        seen.iter()
            .any(|(k, s)| k.starts_with("secrets/")
                && s["data"].get("podci-helper.PODCI_HELPER_CACHE").is_some()),
        "no job Secret carried the cache settings: {:?}",
        seen.keys().collect::<Vec<_>>()
    );
}

/// Runs `podci run` against the fake Kubernetes API until it finished `jobs` jobs.
async fn run_k8s(config: &Path, kubeconfig: &Path, jobs: usize) -> std::process::Output {
    let (config, kubeconfig) = (config.to_path_buf(), kubeconfig.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podci"))
            .args(["run", "--config"])
            .arg(&config)
            .arg(format!("--max-jobs={jobs}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("PODCI_TRACE_INTERVAL_MS", "100")
            .env("RUST_LOG", "debug")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podci starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join")
}
