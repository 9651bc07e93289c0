//! `artifacts:reports` through `podci run`: the fake GitLab server hands out a pipeline
//! whose first job writes an archive, a `reports:dotenv` file and a JUnit report; the real
//! `podci` binary (shell executor) uploads each as its own `POST /jobs/:id/artifacts`
//! with GitLab's `artifact_type`/`artifact_format`/`expire_in`; GitLab (the fake) parses
//! the dotenv file and puts its variables into the payload of the job that depends on it.

mod common;
use common::git_repo;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use podci_fake_gitlab::{FakeGitlab, Options, Status};

const TOKEN: &str = "glrt-t1_fake-runner-token";

/// Runs `podci run` (shell executor) until it has finished `jobs` jobs.
fn podci_run(url: &str, dir: &Path, jobs: usize) -> std::process::Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[[runners]]\nname = \"reports\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nexecutor = \"shell\"\nbuilds_dir = \"{}\"\n",
            dir.join("builds").display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["run", "--config"])
        .arg(&config)
        .arg(format!("--max-jobs={jobs}"))
        .env("PODCI_TRACE_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn gunzip_members(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(data);
        let mut body = Vec::new();
        d.read_to_end(&mut body).unwrap();
        let name = d
            .header()
            .and_then(|h| h.filename())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        out.push((name, body));
        data = d.into_inner();
    }
    out
}

const JUNIT: &str =
    r#"<testsuites><testsuite name="unit" tests="1"><testcase name="ok"/></testsuite></testsuites>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_uploaded_by_type_and_dotenv_reaches_the_next_stage() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let ci = format!(
        r#"stages: [build, test]
variables:
  VERSION: from-yaml
build:
  stage: build
  script:
    - mkdir -p out
    - echo "hello from build" > out/greeting.txt
    - printf 'VERSION=1.2.3\nGREETING = two words \n' > build.env
    - echo '{JUNIT}' > report.xml
  artifacts:
    paths: [out/]
    expire_in: 1 week
    reports:
      dotenv: build.env
      junit: report.xml
test:
  stage: test
  script:
    - echo "VERSION is $VERSION"
    - echo "GREETING is [$GREETING]"
    - cat out/greeting.txt
"#
    );
    git_repo(repo.path(), &[(".gitlab-ci.yml", &ci)]);
    fake.create_pipeline(&ci, Some(repo.path()), &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let url = fake.url().to_string();
    let out = tokio::task::spawn_blocking(move || podci_run(&url, &d, 2))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podci run failed: {stderr}");
    let jobs = fake.jobs();
    let trace = |i: usize| String::from_utf8_lossy(&jobs[i].trace).into_owned();
    if std::env::var_os("PODCI_E2E_SHOW").is_some() {
        (0..jobs.len()).for_each(|i| eprintln!("--- {}\n{}", jobs[i].name, trace(i)));
    }
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(j.status, Status::Success, "{}:\n{}", j.name, trace(i));
        assert_eq!(j.checksum.as_deref(), Some(j.trace_checksum().as_str()));
    }
    // One upload per entry, each in GitLab's format for its type, with expire_in.
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
            ("archive", "zip", Some("1 week")),
            ("dotenv", "gzip", Some("1 week")),
            ("junit", "gzip", Some("1 week")),
        ],
        "{}",
        trace(0)
    );
    let t0 = trace(0);
    for kind in ["archive", "dotenv", "junit"] {
        assert!(
            t0.contains(&format!(
                "Uploading artifacts as \"{kind}\" to coordinator... 201 Created"
            )),
            "{t0}"
        );
    }
    assert!(
        t0.contains("out/: found 2 matching artifact files and directories"),
        "{t0}"
    );
    // The JUnit report went as one gzip member named after the file.
    let junit = jobs[0]
        .uploads
        .iter()
        .find(|u| u.artifact_type == "junit")
        .unwrap();
    let members = gunzip_members(&junit.data);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].0, "report.xml");
    assert_eq!(String::from_utf8_lossy(&members[0].1), format!("{JUNIT}\n"));
    assert!(junit.filename.ends_with(".gz"), "{}", junit.filename);
    // GitLab parsed the dotenv report.
    assert_eq!(
        jobs[0].dotenv,
        [
            ("VERSION".to_string(), "1.2.3".to_string()),
            ("GREETING".to_string(), "two words".to_string())
        ]
    );
    // The next stage sees the dotenv variables (over the YAML value) and the archive.
    let t1 = trace(1);
    assert!(t1.contains("\nVERSION is 1.2.3\n"), "{t1}");
    assert!(t1.contains("\nGREETING is [two words]\n"), "{t1}");
    assert!(t1.contains("\nhello from build\n"), "{t1}");
    assert!(!stderr.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotenv_gitlab_refuses_fails_the_job_with_gitlabs_message() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    let ci = r#"stages: [build, test]
build:
  stage: build
  script:
    - echo kept > kept.txt
    - printf 'GOOD=1\nthis line has no equals sign\n' > build.env
  artifacts:
    paths: [kept.txt]
    reports:
      dotenv: build.env
test:
  stage: test
  script: [echo never]
"#;
    fake.create_pipeline(ci, None, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let url = fake.url().to_string();
    let out = tokio::task::spawn_blocking(move || podci_run(&url, &d, 1))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = fake.jobs();
    let t = String::from_utf8_lossy(&jobs[0].trace).into_owned();
    if std::env::var_os("PODCI_E2E_SHOW").is_some() {
        eprintln!("--- {}\n{t}", jobs[0].name);
    }
    // The archive went up; GitLab's answer to the dotenv is in the trace, and fails the job.
    assert!(
        t.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{t}"
    );
    assert!(
        t.contains(
            "ERROR: Uploading artifacts as \"dotenv\" to coordinator... 400 Bad Request (Invalid Format)"
        ),
        "{t}"
    );
    assert_eq!(jobs[0].status, Status::Failed, "{t}");
    assert_eq!(
        jobs[0]
            .uploads
            .iter()
            .map(|u| u.artifact_type.as_str())
            .collect::<Vec<_>>(),
        ["archive"]
    );
    assert!(jobs[0].dotenv.is_empty());
    assert_eq!(jobs[1].status, Status::Skipped);
}
