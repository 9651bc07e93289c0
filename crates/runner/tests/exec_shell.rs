//! `podci exec` with the shell executor, end to end: a git repository with a pipeline,
//! the real `podci` binary, real bash processes, a real cache directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Project {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Project {
    /// A git repository holding `.gitlab-ci.yml` (and `files`), committed on `main`.
    fn new(ci: &str, files: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitlab-ci.yml"), ci).unwrap();
        for (name, content) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=Tester", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join(".gitignore"), ".podci/logs/\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "first commit"]);
        Project { dir, state }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file outside every working copy where jobs can leave evidence.
    fn mark(&self, name: &str) -> PathBuf {
        self.state.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_podci"));
        c.arg("exec")
            .arg("-C")
            .arg(self.path())
            .arg("--plain")
            .arg("--cache-dir")
            .arg(self.state.path().join("cache"))
            .arg("--work-dir")
            .arg(self.state.path().join("work"))
            .arg("--variable")
            .arg(format!("MARK_DIR={}", self.state.path().display()))
            .args(args)
            .env("XDG_CONFIG_HOME", self.state.path().join("config"))
            .stdin(Stdio::null());
        c
    }

    fn exec(&self, args: &[&str]) -> (Output, String) {
        let out = self.command(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn pos(v: &[String], s: &str) -> usize {
    v.iter()
        .position(|l| l == s)
        .unwrap_or_else(|| panic!("{s:?} not in {v:?}"))
}

#[test]
fn stages_run_in_order_and_needs_skip_ahead() {
    let p = Project::new(
        r#"
stages: [build, test, deploy]
build:
  stage: build
  script: [echo "start build" >> $MARK_DIR/order, sleep 0.3, echo "end build" >> $MARK_DIR/order]
slow-test:
  stage: test
  script: [echo "start slow-test" >> $MARK_DIR/order, sleep 2, echo "end slow-test" >> $MARK_DIR/order]
fast-test:
  stage: test
  script: [echo "start fast-test" >> $MARK_DIR/order]
deploy-early:
  stage: deploy
  needs: [build]
  script: [echo "start deploy-early" >> $MARK_DIR/order]
deploy:
  stage: deploy
  script: [echo "start deploy" >> $MARK_DIR/order]
"#,
        &[],
    );
    let (out, text) = p.exec(&["-j", "4"]);
    assert!(out.status.success(), "{text}");
    let order = lines(&p.mark("order"));
    let end_build = pos(&order, "end build");
    for j in ["slow-test", "fast-test", "deploy-early", "deploy"] {
        assert!(
            pos(&order, &format!("start {j}")) > end_build,
            "{j} before build ended: {order:?}"
        );
    }
    // needs: the deploy job that needs only build does not wait for the test stage.
    assert!(
        pos(&order, "start deploy-early") < pos(&order, "end slow-test"),
        "{order:?}"
    );
    // stage order: the plain deploy job waits for the whole test stage.
    assert!(
        pos(&order, "start deploy") > pos(&order, "end slow-test"),
        "{order:?}"
    );
    assert!(text.contains("pipeline #1: success"), "{text}");
    // Full logs per job.
    let log = std::fs::read_to_string(p.path().join(".podci/logs/1/build.log")).unwrap();
    assert!(log.contains("$ echo \"start build\""), "{log}");
}

#[test]
fn failure_allow_failure_on_failure_and_always() {
    let p = Project::new(
        r#"
stages: [test, deploy, cleanup]
allowed:
  stage: test
  script: [exit 3]
  allow_failure: true
broken:
  stage: test
  script: [echo about to fail, exit 7]
deploy:
  stage: deploy
  script: [touch $MARK_DIR/deployed]
notify:
  stage: cleanup
  when: on_failure
  script: [touch $MARK_DIR/notified]
tidy:
  stage: cleanup
  when: always
  script: [touch $MARK_DIR/tidied]
"#,
        &[],
    );
    let (out, text) = p.exec(&[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!p.mark("deployed").exists(), "deploy ran after a failure: {text}");
    assert!(p.mark("notified").exists(), "on_failure job did not run: {text}");
    assert!(p.mark("tidied").exists(), "always job did not run: {text}");
    assert!(
        text.contains("[broken] failed: exit code 7 (script_failure)"),
        "{text}"
    );
    assert!(text.contains("failed (allowed)"), "{text}");
    assert!(text.contains("pipeline #1: failed"), "{text}");

    // Only the allowed failure: the pipeline succeeds with warnings and exits 0.
    let (out, text) = p.exec(&["allowed", "deploy"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("success with warnings"), "{text}");
}

#[test]
fn retry_gives_a_second_attempt() {
    let p = Project::new(
        r#"
flaky:
  script:
    - n=$(cat $MARK_DIR/count 2>/dev/null || echo 0); echo $((n+1)) > $MARK_DIR/count
    - test "$n" -ge 1
  retry: 1
"#,
        &[],
    );
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&p.mark("count")), vec!["2"]);
    assert!(text.contains("retrying, attempt 2"), "{text}");
    let log = std::fs::read_to_string(p.path().join(".podci/logs/1/flaky.log")).unwrap();
    assert!(log.contains("=== attempt 2 ==="), "{log}");
}

#[test]
fn timeout_fails_the_job_and_runs_after_script() {
    let p = Project::new(
        r#"
slow:
  timeout: 2s
  script: [sleep 60]
  after_script: [echo "after:$CI_JOB_STATUS" > $MARK_DIR/after]
"#,
        &[],
    );
    let t = Instant::now();
    let (out, text) = p.exec(&[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "timeout not enforced: {text}"
    );
    assert!(text.contains("job_execution_timeout"), "{text}");
    assert_eq!(lines(&p.mark("after")), vec!["after:failed"]);
}

#[test]
fn artifacts_and_dotenv_pass_between_jobs() {
    let p = Project::new(
        r#"
stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p out && echo built-bits > out/bin.txt
    - echo "VERSION=1.2.3" > build.env
  artifacts:
    paths: [out/]
    reports: {dotenv: build.env}
test:
  stage: test
  script:
    - cat out/bin.txt > $MARK_DIR/got
    - echo "$VERSION" >> $MARK_DIR/got
    - test -f src.txt
    - test "$CI_PROJECT_DIR" = "$(pwd)"
"#,
        &[("src.txt", "source\n")],
    );
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&p.mark("got")), vec!["built-bits", "1.2.3"]);
}

#[test]
fn a_project_in_a_subdirectory_gets_its_own_files() {
    let p = Project::new(
        "root:\n  script: [exit 1]\n",
        &[
            (
                "app/.gitlab-ci.yml",
                "check:\n  script: [test -f lib/code.txt, test ! -e app, touch $MARK_DIR/ok]\n",
            ),
            ("app/lib/code.txt", "code\n"),
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["exec", "--plain", "--variable"])
        .arg(format!("MARK_DIR={}", p.state.path().display()))
        .arg("-C")
        .arg(p.path().join("app"))
        .arg("--cache-dir")
        .arg(p.state.path().join("cache"))
        .arg("--work-dir")
        .arg(p.state.path().join("work"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(p.mark("ok").exists(), "{text}");
}

#[test]
fn with_dirty_adds_uncommitted_changes() {
    let p = Project::new(
        "see:\n  script: [cat tracked.txt > $MARK_DIR/seen, ls > $MARK_DIR/ls]\n",
        &[("tracked.txt", "committed\n"), ("gone.txt", "x\n")],
    );
    std::fs::write(p.path().join("tracked.txt"), "edited\n").unwrap();
    std::fs::write(p.path().join("new.txt"), "new\n").unwrap();
    std::fs::remove_file(p.path().join("gone.txt")).unwrap();
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&p.mark("seen")), vec!["committed"]);
    assert!(lines(&p.mark("ls")).contains(&"gone.txt".to_string()));
    let (out, text) = p.exec(&["--with-dirty"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&p.mark("seen")), vec!["edited"]);
    let ls = lines(&p.mark("ls"));
    assert!(
        ls.contains(&"new.txt".to_string()) && !ls.contains(&"gone.txt".to_string()),
        "{ls:?}"
    );
}

#[test]
fn cache_is_reused_by_the_next_run() {
    let p = Project::new(
        r#"
deps:
  cache: {key: deps, paths: [vendor/]}
  script:
    - if [ -f vendor/stamp ]; then echo HIT >> $MARK_DIR/hits; else echo MISS >> $MARK_DIR/hits; mkdir -p vendor; echo x > vendor/stamp; fi
"#,
        &[],
    );
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&p.mark("hits")), vec!["MISS", "HIT"]);
    // The user's checkout never gets the cached files.
    assert!(!p.path().join("vendor").exists());
}

#[test]
fn masked_variables_never_reach_output_or_logs() {
    let secret = "hunter2-very-secret-value";
    let p = Project::new(
        r#"
show:
  script:
    - echo "token is $DEPLOY_TOKEN"
    - echo "cli is $CLI_SECRET"
    - echo "plain is $PLAIN"
"#,
        &[(
            ".podci/variables.yml",
            &format!("DEPLOY_TOKEN: {{value: {secret}, masked: true}}\nPLAIN: visible-value\n"),
        )],
    );
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("token is [MASKED]"), "{text}");
    assert!(text.contains("plain is visible-value"), "{text}");
    let log = std::fs::read_to_string(p.path().join(".podci/logs/1/show.log")).unwrap();
    assert!(!log.contains(secret) && log.contains("[MASKED]"), "{log}");
}

#[test]
fn variable_option_wins_over_the_file() {
    let p = Project::new(
        "show:\n  script: [echo \"$WHO\" > $MARK_DIR/who]\n",
        &[(".podci/variables.yml", "WHO: file\n")],
    );
    let (out, text) = p.exec(&["--variable", "WHO=option"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&p.mark("who")), vec!["option"]);
}

fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn sigint_cancels_runs_after_script_and_leaves_nothing_running() {
    let p = Project::new(
        r#"
stages: [one, two]
long:
  stage: one
  script: [touch $MARK_DIR/started, sleep 313.25 & sleep 313.5]
  after_script: [echo "after:$CI_JOB_STATUS" > $MARK_DIR/after]
never:
  stage: two
  script: [touch $MARK_DIR/never]
"#,
        &[],
    );
    let mut child = p
        .command(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !p.mark("started").exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc_kill(pid, 2) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "podci did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(lines(&p.mark("after")), vec!["after:canceled"]);
    assert!(!p.mark("never").exists());
    assert_eq!(processes_with("313.25"), Vec::<String>::new());
    assert_eq!(processes_with("313.5"), Vec::<String>::new());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn named_jobs_needs_manual_and_dry_run() {
    let p = Project::new(
        r#"
stages: [build, test, deploy]
build:
  stage: build
  script: [touch $MARK_DIR/build]
test:
  stage: test
  needs: [build]
  script: [touch $MARK_DIR/test]
other:
  stage: test
  script: [touch $MARK_DIR/other]
deploy:
  stage: deploy
  when: manual
  script: [touch $MARK_DIR/deploy]
"#,
        &[],
    );
    let (out, text) = p.exec(&["--dry-run"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("step 1:\n  build: stage build"), "{text}");
    assert!(text.contains("not run: deploy: manual"), "{text}");
    assert!(!p.mark("build").exists(), "dry run ran a job");

    let (out, text) = p.exec(&["test", "--needs"]);
    assert!(out.status.success(), "{text}");
    assert!(p.mark("build").exists() && p.mark("test").exists());
    assert!(!p.mark("other").exists() && !p.mark("deploy").exists(), "{text}");

    // The manual job is skipped in a full run, runs when named.
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    assert!(!p.mark("deploy").exists(), "{text}");
    let (out, text) = p.exec(&["deploy"]);
    assert!(out.status.success(), "{text}");
    assert!(p.mark("deploy").exists(), "{text}");

    let (out, text) = p.exec(&["--list"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("deploy") && text.contains("manual"), "{text}");
    let (out, text) = p.exec(&["nope"]);
    assert!(!out.status.success());
    assert!(text.contains("no job \"nope\""), "{text}");
}

#[test]
fn matrix_jobs_run_each_instance() {
    let p = Project::new(
        r#"
test:
  parallel:
    matrix:
      - FLAVOR: [a, b]
  script: [touch $MARK_DIR/flavor-$FLAVOR]
shard:
  parallel: 2
  script: [touch $MARK_DIR/shard-$CI_NODE_INDEX]
"#,
        &[],
    );
    let (out, text) = p.exec(&[]);
    assert!(out.status.success(), "{text}");
    for f in ["flavor-a", "flavor-b", "shard-1", "shard-2"] {
        assert!(p.mark(f).exists(), "{f}: {text}");
    }
}
