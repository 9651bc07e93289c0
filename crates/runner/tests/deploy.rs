//! `podci deploy` against the fake Kubernetes API server (tests/fake-kube), in-process:
//! images set by container name, server-side apply, rollouts that succeed, crash, cannot
//! pull their image, or run out of time, dry-run diffs, kustomizations, and the CLI's
//! output and exit codes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use podci::deploy::{self, Action, DeployError, DeployEvent, DeployOptions, DeployResult};
use podci_fake_kube::{FakeKube, Options};
use serde_json::Value;

struct Env {
    fake: FakeKube,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn start(opts: Options) -> Env {
    let fake = FakeKube::start(opts).await.expect("fake-kube starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, "default").expect("kubeconfig");
    Env {
        fake,
        dir,
        kubeconfig,
    }
}

impl Env {
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    fn options(&self, paths: Vec<PathBuf>) -> DeployOptions {
        DeployOptions {
            paths,
            kubeconfig: Some(self.kubeconfig.clone()),
            timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            ..DeployOptions::default()
        }
    }

    async fn deploy(&self, opts: &DeployOptions) -> (Result<DeployResult, DeployError>, Vec<DeployEvent>) {
        let client = deploy::client(opts).await.expect("client");
        let mut events = Vec::new();
        let r = deploy::deploy(client, opts, &mut |e| events.push(e)).await;
        (r, events)
    }

    fn get(&self, resource: &str, ns: &str, name: &str) -> Value {
        self.fake
            .control()
            .get(resource, ns, name)
            .unwrap_or_else(|| panic!("{resource} {ns}/{name} exists"))
    }
}

fn deployment(name: &str, command: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: 2
{extra_spec}  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: placeholder
        command: ["sh", "-c", {command:?}]
      - name: sidecar
        image: busybox:1.36
        command: ["sleep", "300"]
"#
    )
}

const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: production\n";

fn template_images(d: &Value) -> Vec<(String, String)> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_with_images_by_container_name_and_waits() {
    let env = start(Options::default()).await;
    env.write("k8s/10-config.yaml", CONFIGMAP);
    env.write(
        "k8s/20-web.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
            deployment("web", "echo serving; exec sleep 300", "")
        ),
    );
    env.write(
        "k8s/30-db.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  replicas: 2\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: db, image: postgres:16, command: [sleep, '300']}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: app, image: agent:1, command: [sleep, '300']}]\n",
    );
    // Not a manifest: directories take *.yaml, *.yml and *.json only.
    env.write("k8s/README.md", "# not read\n");
    let mut opts = env.options(vec![env.dir.path().join("k8s")]);
    opts.images = vec![("app".into(), "registry.example.com/web:2.0".into())];
    opts.wait = true;
    let (r, events) = env.deploy(&opts).await;
    let r = r.expect("deploy succeeds");

    let summary: Vec<String> = r.objects.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        summary,
        [
            "configmap/web-config in default created",
            "deployment/web in default created",
            "service/web in default created",
            "statefulset/db in default created",
            "daemonset/agent in default created",
        ]
    );
    let done: Vec<(String, bool)> = r
        .rollouts
        .iter()
        .map(|s| (format!("{}/{}", s.kind, s.name), s.done))
        .collect();
    assert_eq!(
        done,
        [
            ("Deployment/web".to_string(), true),
            ("StatefulSet/db".to_string(), true),
            ("DaemonSet/agent".to_string(), true)
        ]
    );
    assert_eq!(
        r.rollouts[0].message,
        "deployment \"web\" successfully rolled out"
    );
    assert!(
        events.iter().any(|e| matches!(e, DeployEvent::Progress { message, .. } if message.starts_with("Waiting for deployment \"web\" rollout to finish"))),
        "progress lines while waiting: {events:?}"
    );

    // Only the containers named `app` got the image, in both workloads.
    let web = env.get("deployments", "default", "web");
    assert_eq!(
        template_images(&web),
        [
            ("app".into(), "registry.example.com/web:2.0".into()),
            ("sidecar".into(), "busybox:1.36".into())
        ]
    );
    let agent = env.get("daemonsets", "default", "agent");
    assert_eq!(
        template_images(&agent),
        [("app".into(), "registry.example.com/web:2.0".into())]
    );
    assert_eq!(web["metadata"]["managedFields"][0]["manager"], "podci");
    assert_eq!(web["metadata"]["managedFields"][0]["operation"], "Apply");
    assert_eq!(web["status"]["availableReplicas"], 2);
    // The Pods that run carry the new image.
    let client = deploy::client(&opts).await.expect("client");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "default");
    let web_pods = pods
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    assert_eq!(web_pods.items.len(), 2);
    for p in &web_pods.items {
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.example.com/web:2.0")
        );
    }
    let requests = env.fake.control().requests();
    assert!(
        requests.iter().any(
            |r| r.starts_with("PATCH /apis/apps/v1/namespaces/default/deployments/web?")
                && r.contains("fieldManager=podci")
                && r.contains("force=true")
        ),
        "server-side apply: {requests:?}"
    );

    // The same deploy again changes nothing: every object keeps its resourceVersion.
    let mut again = opts.clone();
    again.wait = false;
    let (r2, _) = env.deploy(&again).await;
    let actions: Vec<Action> = r2
        .expect("second deploy")
        .objects
        .iter()
        .map(|o| o.action)
        .collect();
    assert_eq!(actions, [Action::Unchanged; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_rollout_fails_with_events_and_log_lines() {
    let env = start(Options::default()).await;
    let f = env.write(
        "web.yaml",
        &deployment(
            "web",
            "exec >&2; echo starting web; echo 'fatal: DATABASE_URL is not set'; exit 3",
            "",
        ),
    );
    let mut opts = env.options(vec![f]);
    opts.images = vec![("app".into(), "registry.example.com/web:2.0".into())];
    opts.wait = true;
    let (r, _) = env.deploy(&opts).await;
    let err = r.expect_err("a crashing container fails the rollout");
    let DeployError::RolloutFailed(f) = &err else {
        panic!("expected RolloutFailed, got {err}");
    };
    assert_eq!(f.workload, "deployment/web");
    assert!(
        f.reason.contains("exited with code 3") || f.reason.contains("CrashLoopBackOff"),
        "{}",
        f.reason
    );
    assert!(!f.pods.is_empty());
    let pod = &f.pods[0];
    assert!(pod.name.starts_with("web-"), "{}", pod.name);
    assert!(
        pod.events.iter().any(|e| e.contains("Scheduled")),
        "events: {:?}",
        pod.events
    );
    let app_logs = pod
        .logs
        .iter()
        .find(|(c, _)| c == "app")
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    assert_eq!(app_logs, ["starting web", "fatal: DATABASE_URL is not set"]);
    let text = err.to_string();
    assert!(text.contains("| fatal: DATABASE_URL is not set"), "{text}");
    assert!(text.contains("events:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_fails_with_the_pull_events() {
    let mut images = BTreeMap::new();
    images.insert("busybox:1.36".to_string(), vec!["sh".to_string()]);
    let env = start(Options {
        images: Some(images),
        ..Options::default()
    })
    .await;
    let f = env.write("web.yaml", &deployment("web", "sleep 300", ""));
    let mut opts = env.options(vec![f]);
    opts.images = vec![("app".into(), "registry.example.com/missing:1".into())];
    opts.wait = true;
    let (r, _) = env.deploy(&opts).await;
    let err = r.expect_err("an image that cannot be pulled fails the rollout");
    let f = err.rollout_failure().expect("a rollout failure");
    assert!(
        f.reason.contains("ErrImagePull") || f.reason.contains("ImagePullBackOff"),
        "{}",
        f.reason
    );
    let events = &f.pods[0].events;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning Failed:") && e.contains("registry.example.com/missing:1")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_progress_deadline() {
    let env = start(Options {
        unschedulable: true,
        ..Options::default()
    })
    .await;
    let f = env.write("web.yaml", &deployment("web", "sleep 300", ""));
    let mut opts = env.options(vec![f]);
    opts.wait = true;
    opts.timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let (r, _) = env.deploy(&opts).await;
    let err = r.expect_err("pods that are never scheduled time out");
    let DeployError::Timeout { timeout, failure } = &err else {
        panic!("expected Timeout, got {err}");
    };
    assert_eq!(*timeout, Duration::from_secs(2));
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        failure.reason,
        "Waiting for deployment \"web\" rollout to finish: 0 of 2 updated replicas are available..."
    );
    assert_eq!(failure.pods.len(), 2);
    assert!(
        failure.pods[0].reason.starts_with("not scheduled"),
        "{:?}",
        failure.pods[0]
    );
    assert!(
        failure.pods[0]
            .events
            .iter()
            .any(|e| e.contains("FailedScheduling")),
        "{:?}",
        failure.pods[0].events
    );

    // With a 1 s progress deadline the Deployment itself reports the failure first.
    let f = env.write(
        "api.yaml",
        &deployment("api", "sleep 300", "  progressDeadlineSeconds: 1\n"),
    );
    let mut opts = env.options(vec![f]);
    opts.wait = true;
    opts.timeout = Duration::from_secs(20);
    let (r, _) = env.deploy(&opts).await;
    let err = r.expect_err("progress deadline");
    let DeployError::RolloutFailed(f) = &err else {
        panic!("expected RolloutFailed, got {err}");
    };
    assert_eq!(f.reason, "deployment \"api\" exceeded its progress deadline");
    let api = env.get("deployments", "default", "api");
    let cond = api["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "ProgressDeadlineExceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_diffs_against_the_live_objects_and_changes_nothing() {
    let env = start(Options::default()).await;
    let cm = env.write("cm.yaml", CONFIGMAP);
    let web = env.write("web.yaml", &deployment("web", "sleep 300", ""));
    let mut opts = env.options(vec![cm.clone(), web.clone()]);
    opts.images = vec![("app".into(), "registry.example.com/web:1".into())];
    env.deploy(&opts).await.0.expect("first deploy");
    let before = env.get("deployments", "default", "web");

    env.write("cm.yaml", &CONFIGMAP.replace("production", "staging"));
    env.write(
        "new.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {k: v}\n",
    );
    let mut dry = env.options(vec![cm, web, env.dir.path().join("new.yaml")]);
    dry.images = vec![("app".into(), "registry.example.com/web:2".into())];
    dry.dry_run = true;
    dry.wait = true; // ignored in a dry run
    let r = env.deploy(&dry).await.0.expect("dry run");
    let actions: Vec<(String, Action)> = r.objects.iter().map(|o| (o.name.clone(), o.action)).collect();
    assert_eq!(
        actions,
        [
            ("web-config".to_string(), Action::WouldConfigure),
            ("web".to_string(), Action::WouldConfigure),
            ("token".to_string(), Action::WouldCreate)
        ]
    );
    assert!(r.rollouts.is_empty());
    assert!(
        r.diff
            .contains("--- live/ConfigMap/default/web-config\n+++ podci/ConfigMap/default/web-config\n"),
        "{}",
        r.diff
    );
    assert!(
        r.diff.contains("\n-  mode: production\n+  mode: staging\n"),
        "{}",
        r.diff
    );
    assert!(
        r.diff.contains(
            "\n-        image: registry.example.com/web:1\n+        image: registry.example.com/web:2\n"
        ),
        "{}",
        r.diff
    );
    assert!(r.diff.contains("+++ podci/Secret/default/token\n"), "{}", r.diff);
    assert!(
        r.rendered.contains("image: registry.example.com/web:2"),
        "{}",
        r.rendered
    );
    assert!(
        env.fake
            .control()
            .requests()
            .iter()
            .any(|q| q.contains("dryRun=All"))
    );

    // Nothing changed on the server.
    assert_eq!(env.get("deployments", "default", "web"), before);
    assert_eq!(
        env.get("configmaps", "default", "web-config")["data"]["mode"],
        "production"
    );
    assert!(env.fake.control().get("secrets", "default", "token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_matching_no_container_is_an_error_before_any_request() {
    let env = start(Options::default()).await;
    let f = env.write("web.yaml", &deployment("web", "sleep 300", ""));
    let mut opts = env.options(vec![f]);
    opts.images = vec![("ap".into(), "registry.example.com/web:2".into())];
    let (r, _) = env.deploy(&opts).await;
    let err = r.expect_err("typo in --image");
    assert!(matches!(err, DeployError::ImageUnmatched { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "--image ap=registry.example.com/web:2: no container or init container named \"ap\" in any workload (containers: app, sidecar)"
    );
    assert_eq!(
        env.fake.control().request_count(),
        0,
        "{:?}",
        env.fake.control().requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind_is_a_clear_error() {
    let env = start(Options::default()).await;
    let f = env.write(
        "x.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    );
    let (r, _) = env.deploy(&env.options(vec![f])).await;
    let err = r.expect_err("no such kind");
    assert_eq!(
        err.to_string(),
        "example.com/v1 Widget is not served by this cluster (check apiVersion/kind, or install its CRD first)"
    );
}

fn kubectl_available() -> bool {
    let ok = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is required under CI (see .ci/setup.d/30-fake-kube.sh)"
        );
        eprintln!("SKIPPED: kubectl is not installed; the kustomization test needs `kubectl kustomize`");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomization_directory() {
    if !kubectl_available() {
        return;
    }
    let env = start(Options {
        namespaces: vec!["default".into(), "shop".into()],
        ..Options::default()
    })
    .await;
    env.write("base/web.yaml", &deployment("web", "sleep 300", ""));
    env.write("base/kustomization.yaml", "resources: [web.yaml]\n");
    env.write(
        "overlay/kustomization.yaml",
        "resources: [../base]\nnamespace: shop\nnamePrefix: prod-\nlabels:\n- pairs: {team: shop}\nimages:\n- name: busybox\n  newTag: '1.37'\n",
    );
    let mut opts = env.options(vec![env.dir.path().join("overlay")]);
    opts.images = vec![("app".into(), "registry.example.com/web:3".into())];
    opts.wait = true;
    let (r, events) = env.deploy(&opts).await;
    let r = r.expect("kustomized deploy");
    assert_eq!(r.objects.len(), 1);
    assert_eq!(r.objects[0].to_string(), "deployment/prod-web in shop created");
    assert!(r.rollouts[0].done);
    assert!(
        events.iter().any(|e| matches!(e, DeployEvent::Read { source, objects: 1 } if source.ends_with("overlay (kustomize)"))),
        "{events:?}"
    );
    let d = env.get("deployments", "shop", "prod-web");
    assert_eq!(d["metadata"]["labels"]["team"], "shop");
    assert_eq!(
        template_images(&d),
        [
            ("app".into(), "registry.example.com/web:3".into()),
            ("sidecar".into(), "busybox:1.37".into())
        ]
    );
}

fn podci() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_podci"))
}

async fn run_cli(env: &Env, args: &[&str]) -> std::process::Output {
    let mut cmd = podci();
    cmd.arg("deploy")
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args);
    cmd.env_remove("KUBECONFIG");
    tokio::task::spawn_blocking(move || cmd.output().expect("podci runs"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_progress_and_exit_codes() {
    let env = start(Options::default()).await;
    let f = env.write("web.yaml", &deployment("web", "sleep 300", ""));
    let path = f.to_string_lossy().to_string();
    let out = run_cli(
        &env,
        &[
            "-f",
            &path,
            "--image",
            "app=registry.example.com/web:1",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deployment/web in default created\n"), "{stdout}");
    assert!(
        stdout.contains("deployment/web: deployment \"web\" successfully rolled out\n"),
        "{stdout}"
    );
    assert!(stdout.contains("deployment/web: rolled out\n"), "{stdout}");

    let out = run_cli(
        &env,
        &[
            "-f",
            &path,
            "--image",
            "app=registry.example.com/web:2",
            "--dry-run",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains(
            "-        image: registry.example.com/web:1\n+        image: registry.example.com/web:2\n"
        ),
        "{stdout}"
    );

    let bad = env.write("bad.yaml", &deployment("bad", "echo boom >&2; exit 1", ""));
    let out = run_cli(
        &env,
        &["-f", &bad.to_string_lossy(), "--wait", "--timeout", "30s"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("podci: rollout failed: deployment/bad in default"),
        "{stderr}"
    );
    assert!(stderr.contains("| boom"), "{stderr}");

    let out = run_cli(&env, &["-f", &path, "--image", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAME=IMAGE"));
}

#[test]
fn dry_run_without_a_cluster_prints_the_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, deployment("web", "sleep 300", "")).expect("write");
    let out = podci()
        .args(["deploy", "-f"])
        .arg(&f)
        .args(["--image", "app=registry.example.com/web:9", "--dry-run"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", dir.path())
        .output()
        .expect("podci runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("dry run without a cluster"), "{stdout}");
    assert!(
        stdout.contains("    - name: app\n        image: registry.example.com/web:9\n"),
        "{stdout}"
    );
}

/// examples/seed end to end: `podci exec` runs package -> image -> deploy; without a
/// cluster the deploy job is a dry run, with KUBECONFIG set it deploys to the fake
/// cluster and waits for the rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_pipeline_dry_run_then_deploy() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let sha = std::process::Command::new("git")
        .args(["rev-parse", "--short=8", "HEAD"])
        .current_dir(&seed)
        .output()
        .expect("git runs");
    let sha = String::from_utf8_lossy(&sha.stdout).trim().to_string();
    let image = format!("registry.example.com/team/seed-app:{sha}");
    let mut images = BTreeMap::new();
    // The fake node "pulls" the pipeline's image; its entrypoint serves until stopped.
    images.insert(image.clone(), vec!["sleep".to_string(), "300".to_string()]);
    let env = start(Options {
        images: Some(images),
        ..Options::default()
    })
    .await;
    let home = tempfile::tempdir().expect("home");
    let exec = |kubeconfig: Option<PathBuf>| {
        let mut cmd = podci();
        cmd.arg("exec")
            .arg("-C")
            .arg(&seed)
            // No PODCI variable: the shell executor appends the running podci's directory
            // to the job's PATH, so the job's plain `podci deploy` finds it.
            .args(["deploy", "--needs"])
            .env("HOME", home.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG");
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        async move {
            tokio::task::spawn_blocking(move || cmd.output().expect("podci exec runs"))
                .await
                .expect("join")
        }
    };

    let out = exec(None).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("[deploy] no cluster configured: dry run"), "{text}");
    assert!(
        text.contains(&format!("[deploy]         image: {image}\n")),
        "{text}"
    );
    assert_eq!(env.fake.control().request_count(), 0);

    let out = exec(Some(env.kubeconfig.clone())).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("[deploy] deployment/seed-app in default created"),
        "{text}"
    );
    assert!(
        text.contains("[deploy] deployment/seed-app: deployment \"seed-app\" successfully rolled out"),
        "{text}"
    );
    let d = env.get("deployments", "default", "seed-app");
    assert_eq!(template_images(&d), [("app".to_string(), image.clone())]);
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert!(
        env.fake
            .control()
            .get("services", "default", "seed-app")
            .is_some()
    );
}

/// A fixed revision rolls out although the Pods of the broken one before it still crash:
/// only the new ReplicaSet's Pods can fail a rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_rolls_out_over_a_crashing_revision() {
    let env = start(Options::default()).await;
    let f = env.write("web.yaml", &deployment("web", "echo broken >&2; exit 1", ""));
    let mut opts = env.options(vec![f.clone()]);
    opts.images = vec![("app".into(), "registry.example.com/web:1".into())];
    opts.wait = true;
    let err = env.deploy(&opts).await.0.expect_err("revision 1 crashes");
    assert!(err.rollout_failure().is_some(), "{err}");

    env.write("web.yaml", &deployment("web", "exec sleep 300", ""));
    opts.images = vec![("app".into(), "registry.example.com/web:2".into())];
    let r = env.deploy(&opts).await.0.expect("revision 2 rolls out");
    assert_eq!(r.objects[0].action, Action::Configured);
    assert!(r.rollouts[0].done, "{:?}", r.rollouts);
    let d = env.get("deployments", "default", "web");
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["status"]["updatedReplicas"], 2);
    assert_eq!(d["status"]["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_object_shows_the_servers_message() {
    let env = start(Options::default()).await;
    let f = env.write(
        "web.yaml",
        &deployment("web", "sleep 300", "").replace("matchLabels: {app: web}", "matchLabels: {app: other}"),
    );
    let (r, _) = env.deploy(&env.options(vec![f])).await;
    let err = r.expect_err("selector does not match the template");
    assert_eq!(
        err.to_string(),
        "Deployment/web: the API server refused it: Deployment \"web\" is invalid: spec.template.metadata.labels: Invalid value: \"app:web\": `selector` does not match template `labels` (422 Invalid)"
    );
}
