//! `artifacts:reports` on Kubernetes: the helper container's `podci helper
//! artifacts-upload` step sends the archive and each report as its own upload, and the
//! dotenv variables GitLab (the fake) parsed reach the next stage's Pod. Fake GitLab and
//! fake Kubernetes run in this process; `podci run` is the real binary.

mod common;
use common::git_repo;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podci_fake_gitlab::{FakeGitlab, Options, Status};

const TOKEN: &str = "glrt-t1_fake-runner-token";

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
        "CI runs as root with util-linux and git: the Kubernetes reports test must run"
    );
    eprintln!("SKIPPING podci run reports on Kubernetes: needs root, unshare and git");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_uploads_reports_and_dotenv_reaches_the_next_pod() {
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
    let ci = r#"stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p out
    - echo "hello from the build pod" > out/greeting.txt
    - printf 'VERSION=4.5.6\n' > build.env
    - echo '<testsuites><testsuite name="k8s" tests="1"/></testsuites>' > report.xml
  artifacts:
    paths: [out/]
    expire_in: 2 days
    reports:
      dotenv: build.env
      junit: report.xml
test:
  stage: test
  script:
    - echo "VERSION is $VERSION"
    - cat out/greeting.txt
"#;
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
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(podci)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--max-jobs=2")
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
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "podci run failed: {stderr}");
    let jobs = gitlab.jobs();
    let trace = |i: usize| String::from_utf8_lossy(&jobs[i].trace).into_owned();
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.status, Status::Success, "{}:\n{}\n{stderr}", j.name, trace(i));
    }
    let t0 = trace(0);
    let ups: Vec<(&str, &str, Option<&str>)> = jobs[0]
        .uploads
        .iter()
        .map(|u| {
            (
                u.artifact_type.as_str(),
                u.artifact_format.as_str(),
                u.expire_in.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        ups,
        [
            ("archive", "zip", Some("2 days")),
            ("dotenv", "gzip", Some("2 days")),
            ("junit", "gzip", Some("2 days")),
        ],
        "{t0}"
    );
    assert!(
        t0.contains("Uploading artifacts as \"junit\" to coordinator... 201 Created"),
        "{t0}"
    );
    assert_eq!(jobs[0].dotenv, [("VERSION".to_string(), "4.5.6".to_string())]);
    let t1 = trace(1);
    assert!(t1.contains("\nVERSION is 4.5.6\n"), "{t1}");
    assert!(t1.contains("\nhello from the build pod\n"), "{t1}");
}
