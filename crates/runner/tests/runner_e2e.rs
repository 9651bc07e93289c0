//! `podci run` end to end: the fake GitLab server (in this process) hands out jobs of a
//! real pipeline; the real `podci` binary takes them, clones the repository, runs them
//! with the shell executor (real bash), streams traces, moves artifacts through GitLab's
//! artifacts API, and reports final states with checksums.

mod common;
use common::git_repo;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podci_fake_gitlab::{FakeGitlab, Options, Status};

const TOKEN: &str = "glrt-t1_fake-runner-token";

fn write_config(path: &Path, url: &str, builds: &Path, concurrent: usize, extra: &str) {
    std::fs::write(
        path,
        format!(
            "concurrent = {concurrent}\ncheck_interval = 1\n{extra}\n[[runners]]\nname = \"e2e\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nexecutor = \"shell\"\nbuilds_dir = \"{}\"\n",
            builds.display()
        ),
    )
    .unwrap();
}

/// Runs `podci run` until it has taken `jobs` jobs and finished them.
fn podci_run(config: &Path, jobs: usize) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["run", "--config"])
        .arg(config)
        .arg(format!("--max-jobs={jobs}"))
        .env("PODCI_TRACE_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stage_pipeline_succeeds_with_masked_traces_and_artifacts() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let ci = r#"stages: [package, image, deploy]
variables:
  IMAGE: registry.example.com/app
package:
  stage: package
  script:
    - mkdir -p target
    - cp pom.xml target/app.jar
    - echo "built $(wc -c < target/app.jar) bytes with key $DEPLOY_PASSWORD"
  artifacts:
    paths: [target/]
container-image:
  stage: image
  script:
    - test -f target/app.jar
    - echo "$IMAGE:$CI_COMMIT_SHORT_SHA" > image.txt
    - echo "image from $(cat target/app.jar)"
  artifacts:
    paths: [image.txt]
deploy:
  stage: deploy
  script:
    - 'sed -i "s|image: .*|image: $(cat image.txt)|" deployment.yaml'
    - cat deployment.yaml
"#;
    git_repo(
        repo.path(),
        &[
            (".gitlab-ci.yml", ci),
            ("pom.xml", "maven-project"),
            ("deployment.yaml", "kind: Deployment\nimage: old\n"),
        ],
    );
    fake.create_pipeline(
        ci,
        Some(repo.path()),
        &[("DEPLOY_PASSWORD", "hunter2-very-secret", true)],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_config(&config, fake.url(), &dir.path().join("builds"), 2, "");
    let out = tokio::task::spawn_blocking(move || podci_run(&config, 3))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podci run failed: {stderr}");
    let jobs = fake.jobs();
    let trace = |i: usize| String::from_utf8_lossy(&jobs[i].trace).into_owned();
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.status, Status::Success, "{}:\n{}", j.name, trace(i));
        assert_eq!(j.final_recorded, 1);
        assert_eq!(j.checksum.as_deref(), Some(j.trace_checksum().as_str()));
    }
    // What the job printed, with the masked value replaced.
    assert!(
        trace(0).contains("\nbuilt 13 bytes with key [MASKED]\n"),
        "{}",
        trace(0)
    );
    assert!(!trace(0).contains("hunter2"));
    // Artifacts of `package` reached `image`, and `image`'s reached `deploy`.
    assert!(jobs[0].artifacts.is_some() && jobs[1].artifacts.is_some());
    assert!(trace(1).contains("\nimage from maven-project\n"), "{}", trace(1));
    let sha = &jobs[2].payload.git_info.sha[..8];
    assert!(
        trace(2).contains(&format!(
            "\nkind: Deployment\nimage: registry.example.com/app:{sha}\n"
        )),
        "{}",
        trace(2)
    );
    assert!(!stderr.contains("hunter2") && !stderr.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_reports_exit_code_and_skips_later_stages() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    let ci = "stages: [a, b]\nbroken:\n  stage: a\n  script: [echo about to fail, exit 7]\nlater:\n  stage: b\n  script: [echo never]\n";
    fake.create_pipeline(ci, None, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_config(&config, fake.url(), &dir.path().join("builds"), 1, "");
    let out = tokio::task::spawn_blocking(move || podci_run(&config, 1))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = fake.jobs();
    let t = String::from_utf8_lossy(&jobs[0].trace).into_owned();
    assert_eq!(jobs[0].status, Status::Failed, "{t}");
    assert_eq!(jobs[0].exit_code, Some(7), "{t}");
    assert_eq!(jobs[0].failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(jobs[1].status, Status::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_sighup_reload() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    fake.create_pipeline("one:\n  script: [echo one]\n", None, &[])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let builds = dir.path().join("builds");
    // A token GitLab rejects: no job is taken until the file is fixed and reloaded.
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\nlisten_address = \"127.0.0.1:0\"\n[[runners]]\nname = \"r\"\nurl = \"{}\"\ntoken = \"glrt-wrong\"\nexecutor = \"shell\"\nbuilds_dir = \"{}\"\n",
            fake.url(),
            builds.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["run", "--config"])
        .arg(&config)
        .env("PODCI_TRACE_INTERVAL_MS", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("/health").await, "OK\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = get("/metrics").await;
    assert!(m.contains("gitlab_runner_api_request_statuses_total{runner=\"wrong\",endpoint=\"request_job\",status=\"403\"}"), "{m}");
    assert!(m.contains("gitlab_runner_concurrent 1"), "{m}");
    assert_eq!(fake.jobs()[0].status, Status::Pending);
    // Fix the token and send SIGHUP.
    let fixed = std::fs::read_to_string(&config)
        .unwrap()
        .replace("glrt-wrong", TOKEN);
    std::fs::write(&config, fixed).unwrap();
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert!(
        fake.wait_all_final(Duration::from_secs(30)).await,
        "no job after reload"
    );
    assert_eq!(
        fake.jobs()[0].status,
        Status::Success,
        "{}",
        String::from_utf8_lossy(&fake.jobs()[0].trace)
    );
    let m = get("/metrics").await;
    assert!(
        m.contains("gitlab_runner_jobs_total{runner=\"fake-run\"} 1"),
        "{m}"
    );
    // SIGTERM: stops requesting, no job runs, exits 0.
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "podci run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `[runners.cache]` with `Type = "local"`: the shell executor saves the job's cache in
/// that directory and a later pipeline's job restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runner_cache_carries_between_pipelines() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    let ci = "deps:\n  cache:\n    key: deps-$CI_COMMIT_REF_SLUG\n    paths: [deps/]\n  script:\n    - 'if [ -f deps/x ]; then echo \"cache hit $(cat deps/x)\"; else echo cache miss; mkdir -p deps; echo v1 > deps/x; fi'\n";
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache-store");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[[runners]]\nname = \"e2e\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nexecutor = \"shell\"\nbuilds_dir = \"{}\"\n[runners.cache]\nType = \"local\"\nPath = \"{}\"\n",
            fake.url(),
            dir.path().join("builds").display(),
            store.display()
        ),
    )
    .unwrap();
    for _ in 0..2 {
        fake.create_pipeline(ci, None, &[]).unwrap();
        let c = config.clone();
        let out = tokio::task::spawn_blocking(move || podci_run(&c, 1))
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let jobs = fake.jobs();
    let trace = |i: usize| String::from_utf8_lossy(&jobs[i].trace).into_owned();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.status == Status::Success));
    assert!(trace(0).contains("\ncache miss\n"), "{}", trace(0));
    assert!(trace(1).contains("\ncache hit v1\n"), "{}", trace(1));
    assert!(
        std::fs::read_dir(&store).unwrap().next().is_some(),
        "nothing in the store"
    );
}
