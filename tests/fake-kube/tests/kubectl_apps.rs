//! kubectl's own view of the fake's apps/v1 side: `kubectl apply --server-side` (discovery,
//! server-side apply), `kubectl rollout status` judging the Deployment and StatefulSet
//! status the fake controllers write, a no-op re-apply, and a crash-looping rollout that
//! `rollout status` reports as exceeding its progress deadline.

use podci_fake_kube::{FakeKube, Options};
use std::process::{Command, Stdio};

fn kubectl_found() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
            panic!("kubectl is not installed (CI is set): .ci/setup.d/30-fake-kube.sh installs it");
        }
        eprintln!("SKIPPING kubectl apps tests: kubectl is not installed");
    }
    found
}

async fn kubectl(
    cfg: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(cfg)
        .args(args)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(mut w) = child.stdin.take() {
            let _ = w.write_all(stdin.as_bytes());
        }
        let out = child.wait_with_output().expect("kubectl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: web:1, command: [sleep, "300"]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: db:1, command: [sleep, "300"]}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_and_judges_rollouts() {
    if !kubectl_found() {
        return;
    }
    let fake = FakeKube::start(Options {
        tls: true, // kubectl sends bearer tokens over HTTPS only
        ..Options::default()
    })
    .await
    .expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&cfg, "default").expect("kubeconfig");
    let home = dir.path();

    let (code, out, err) = kubectl(
        &cfg,
        home,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        WEB,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "deployment.apps/web serverside-applied\nstatefulset.apps/db serverside-applied\n"
    );
    let web = fake
        .control()
        .get("deployments", "default", "web")
        .expect("stored");
    assert_eq!(web["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(web["spec"]["strategy"]["type"], "RollingUpdate");

    for target in ["deployment/web", "statefulset/db"] {
        let (code, out, err) = kubectl(&cfg, home, &["rollout", "status", target, "--timeout=30s"], "").await;
        assert_eq!(code, 0, "{target}: {out}{err}");
        let last = out.lines().last().unwrap_or("");
        let want = if target == "deployment/web" {
            "deployment \"web\" successfully rolled out"
        } else {
            "partitioned roll out complete: 2 new pods have been updated..."
        };
        assert!(
            last == want || last.starts_with("statefulset rolling update complete 2 pods at revision db-"),
            "{target}: {out}"
        );
    }

    // Re-applying the same objects writes nothing (the rollout is over: no status writes).
    let web = fake
        .control()
        .get("deployments", "default", "web")
        .expect("stored");
    let (code, _, err) = kubectl(
        &cfg,
        home,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        WEB,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let web2 = fake
        .control()
        .get("deployments", "default", "web")
        .expect("stored");
    assert_eq!(
        web2["metadata"]["resourceVersion"],
        web["metadata"]["resourceVersion"]
    );

    // A crashing revision with a 1 s deadline: kubectl sees ProgressDeadlineExceeded.
    let broken = WEB
        .replace(
            "command: [sleep, \"300\"]}]\n---",
            "command: [sh, -c, 'exit 1']}]\n---",
        )
        .replace(
            "replicas: 2\n  selector: {matchLabels: {app: web}}",
            "replicas: 2\n  progressDeadlineSeconds: 1\n  selector: {matchLabels: {app: web}}",
        );
    assert_ne!(broken, WEB);
    let (code, _, err) = kubectl(
        &cfg,
        home,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        &broken,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kubectl(
        &cfg,
        home,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        "",
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("deployment \"web\" exceeded its progress deadline"),
        "{out}{err}"
    );
}
