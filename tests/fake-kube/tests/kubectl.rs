//! kubectl against the fake server with a kubeconfig the test writes: `get pods`,
//! `logs -f`, and `exec -i` (kubectl 1.30+ speaks WebSocket v5 to servers that offer it).
//! `create` runs with `--validate=false`: the fake serves no OpenAPI documents.

use podci_fake_kube::{FakeKube, Options};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// kubectl, or None (a loud skip) when it is missing outside CI; in CI a missing
/// kubectl fails the test.
fn kubectl() -> Option<String> {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("kubectl".into());
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("kubectl is not installed (CI is set): .ci/setup.d/30-fake-kube.sh installs it");
    }
    eprintln!("SKIPPING kubectl tests: kubectl is not installed");
    None
}

struct Kube {
    bin: String,
    cfg: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Kube {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.cfg)
            .args(args)
            .env("HOME", self._dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(s) = stdin {
            let mut w = child.stdin.take().expect("stdin");
            w.write_all(s.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("kubectl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

async fn setup(fake: &FakeKube) -> Option<Kube> {
    let bin = kubectl()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&cfg, "ci-jobs").expect("write kubeconfig");
    Some(Kube { bin, cfg, _dir: dir })
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kc-1","labels":{"app":"podci"}},
  "spec":{"restartPolicy":"Never","containers":[
    {"name":"build","image":"debian:bookworm","command":["sh","-c","for i in 1 2 3; do echo line $i; sleep 0.3; done"]},
    {"name":"helper","image":"busybox","command":["sleep","3600"]}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_logs_exec() {
    // HTTPS: kubectl does not send a bearer token over plain HTTP.
    let fake = FakeKube::start(Options {
        tls: true,
        ..Default::default()
    })
    .await
    .expect("start");
    let Some(k) = setup(&fake).await else { return };
    let k = std::sync::Arc::new(k);

    let k2 = k.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || k2.run(&["create", "--validate=false", "-f", "-"], Some(POD)))
            .await
            .unwrap();
    assert_eq!(code, 0, "kubectl create: {out}{err}");
    assert!(out.contains("pod/kc-1 created"), "{out}");

    // Wait until build runs, then follow its log to the end.
    let mut running = false;
    for _ in 0..100 {
        let p = fake.control().get("pods", "ci-jobs", "kc-1").unwrap();
        if p["status"]["containerStatuses"][0]["state"]
            .get("running")
            .is_some()
        {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running);
    let k2 = k.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || k2.run(&["logs", "-f", "kc-1", "-c", "build"], None))
            .await
            .unwrap();
    assert_eq!(code, 0, "kubectl logs -f: {err}");
    assert_eq!(out, "line 1\nline 2\nline 3\n");

    // The kubelet reports the exit a status-sync period after the log ends.
    for _ in 0..100 {
        let p = fake.control().get("pods", "ci-jobs", "kc-1").unwrap();
        if p["status"]["containerStatuses"][0]["state"]
            .get("terminated")
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k2 = k.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || k2.run(&["get", "pods"], None))
        .await
        .unwrap();
    assert_eq!(code, 0, "kubectl get pods: {err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("kc-1"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..4], ["kc-1", "1/2", "Running", "0"], "{out}");

    let k2 = k.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        k2.run(
            &[
                "exec",
                "-i",
                "kc-1",
                "-c",
                "helper",
                "--",
                "sh",
                "-c",
                "cat; echo bye",
            ],
            Some("through stdin\n"),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "kubectl exec -i: {err}");
    assert_eq!(out, "through stdin\nbye\n");

    let k2 = k.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        k2.run(
            &["exec", "kc-1", "-c", "helper", "--", "sh", "-c", "exit 3"],
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 3, "kubectl exec passes the exit code: {err}");

    let k2 = k.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        k2.run(&["delete", "pod", "kc-1", "--grace-period=0", "--force"], None)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "kubectl delete: {out}{err}");
    assert!(fake.control().get("pods", "ci-jobs", "kc-1").is_none());
}
