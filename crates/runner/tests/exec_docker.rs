//! `podci exec --executor docker` against a real Docker engine (Debian's docker.io),
//! started by the test on a private socket without networking (`--bridge=none`), with an
//! image imported from busybox-static (no registry is reachable here).
//!
//! Needs `dockerd`, `docker` and `/bin/busybox` (static): under CI a missing one fails the
//! test, elsewhere it is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "podci-test-busybox:1";

fn have(p: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {p}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn missing(what: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing; .ci/setup.d/50-exec.sh installs it");
    }
    eprintln!("SKIPPED: {what} is missing (install docker.io and busybox-static)");
    true
}

/// A dockerd on a private socket and data root; killed on drop.
struct Engine {
    child: Child,
    dir: tempfile::TempDir,
}

impl Engine {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn start() -> Engine {
        // Outside /tmp's overlay when possible: vfs copies are plain directories anyway.
        let dir = tempfile::Builder::new()
            .prefix("podci-dockerd")
            .tempdir_in("/var/tmp")
            .unwrap();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let d = dir.path();
        let child = Command::new("dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
            ])
            .arg(format!("--host=unix://{}", d.join("docker.sock").display()))
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let e = Engine { child, dir };
        let t = Instant::now();
        while !e
            .docker(&["version"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            let log = std::fs::read_to_string(e.dir.path().join("dockerd.log")).unwrap_or_default();
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        e
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// A busybox-static root file system imported as [`IMAGE`].
    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        let tar = self.dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let ok = self
            .docker(&["import", &tar.to_string_lossy(), IMAGE])
            .status()
            .unwrap()
            .success();
        assert!(ok, "docker import failed");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SIGTERM first: a SIGKILLed dockerd leaves its data-root and container mounts
        // behind, and the TempDir then cannot be removed ("Device or resource busy").
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever is still mounted under the engine's directory, deepest first.
        let root = self.dir.path().to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(root.as_str()))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        // vfs layers are plain directories; the TempDir removes them.
    }
}

fn project(ci: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), ci).unwrap();
    let ok = Command::new("sh")
        .arg("-c")
        .arg("git init -q -b main && git add . && git -c user.name=t -c user.email=t@e commit -qm init")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    dir
}

fn exec(engine: &Engine, dir: &Path, state: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["exec", "--plain", "--executor", "docker"])
        .arg("-C")
        .arg(dir)
        .arg("--cache-dir")
        .arg(state.join("cache"))
        .arg("--work-dir")
        .arg(state.join("work"))
        .env("DOCKER_HOST", format!("unix://{}", engine.socket().display()))
        .env("PODCI_DOCKER_NETWORK", "none")
        .env("XDG_CONFIG_HOME", state.join("config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn docker_jobs_run_in_the_image_and_missing_images_fail_clearly() {
    for p in ["dockerd", "docker", "tar"] {
        if !have(p) && missing(p) {
            return;
        }
    }
    if !Path::new("/bin/busybox").exists() && missing("/bin/busybox (busybox-static)") {
        return;
    }
    let engine = Engine::start();
    engine.import_busybox();
    let state = tempfile::tempdir().unwrap();

    let dir = project(&format!(
        r#"
stages: [build, test]
build:
  stage: build
  image: {IMAGE}
  variables: {{SECRET_LOOKING: plain}}
  script:
    - mkdir -p out && echo "from $(busybox | head -1 | cut -d' ' -f1)" > out/who.txt
    - test ! -e /usr/bin/apt-get
  artifacts:
    paths: [out/]
test:
  stage: test
  image: {IMAGE}
  script:
    - cat out/who.txt
    - exit 3
  after_script:
    - echo "after:$CI_JOB_STATUS"
"#
    ));
    let (ok, text) = exec(&engine, dir.path(), state.path());
    assert!(!ok, "{text}");
    assert!(text.contains("[build] succeeded"), "{text}");
    assert!(
        text.contains("[test] from BusyBox"),
        "artifact not passed into the container: {text}"
    );
    assert!(
        text.contains("[test] failed: exit code 3 (script_failure)"),
        "{text}"
    );
    assert!(text.contains("[test] after:failed"), "{text}");

    // A service shares the job's network namespace: reachable on localhost and by its
    // aliases (`alias` and the name derived from the image), removed after the job.
    let dir = project(&format!(
        r#"
svc:
  image: {IMAGE}
  services:
    - name: {IMAGE}
      alias: web
      command: ["sh", "-c", "mkdir -p /www && echo hello-from-service > /www/index.html && exec httpd -f -p 8080 -h /www"]
  script:
    - grep -w web /etc/hosts
    - for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.5; done
    - wget -qO- http://web:8080/ | sed 's/^/by-alias:/'
"#
    ));
    let (ok, text) = exec(&engine, dir.path(), state.path());
    assert!(ok, "{text}");
    assert!(text.contains("[svc] hello-from-service"), "{text}");
    assert!(text.contains("[svc] by-alias:hello-from-service"), "{text}");
    assert!(!text.contains("services are not started"), "{text}");
    let ps = engine
        .docker(&["ps", "-aq"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "",
        "service left behind"
    );

    // A timeout kills the container; no container is left behind.
    let dir = project(&format!(
        "slow:\n  image: {IMAGE}\n  timeout: 3s\n  script: [sleep 120]\n  after_script: [echo after:$CI_JOB_STATUS]\n"
    ));
    let t = Instant::now();
    let (ok, text) = exec(&engine, dir.path(), state.path());
    assert!(!ok, "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "timeout not enforced: {text}"
    );
    assert!(text.contains("job_execution_timeout"), "{text}");
    assert!(text.contains("[slow] after:failed"), "{text}");
    let ps = engine
        .docker(&["ps", "-aq"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(ps.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "",
        "containers left behind"
    );

    let dir = project("pull:\n  image: podci-no-such-image:1\n  script: [echo never]\n");
    let t = Instant::now();
    let (ok, text) = exec(&engine, dir.path(), state.path());
    assert!(!ok, "{text}");
    assert!(t.elapsed() < Duration::from_secs(120), "image pull hung: {text}");
    assert!(
        text.contains("failed to pull image podci-no-such-image:1"),
        "{text}"
    );
    assert!(text.contains("image_pull_failure"), "{text}");
    assert!(!text.contains("[pull] never"), "{text}");
}
