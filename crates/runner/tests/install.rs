//! Running podci inside Kubernetes (deploy/): the Helm chart's values schema
//! (check-jsonschema), the plain manifests (`kubectl kustomize` + kubernetes-validate,
//! the ConfigMap's config.toml through the real entrypoint and podci's config loader),
//! the chart's templates against its values, and podci's own image built by
//! deploy/image/build.sh, pushed to a real docker-registry and run from its layers.
//!
//! External programs (check-jsonschema, kubectl, kubernetes-validate, docker-registry,
//! busybox-static) come from .ci/setup.d/55-install.sh and 50-k8s.sh / 40-registry.sh:
//! missing ones fail under CI and skip loudly elsewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/podci")
}

fn manifests() -> PathBuf {
    repo().join("deploy/manifests")
}

/// Whether `bin` is on PATH; under CI a missing one fails the test.
fn require(bin: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false"),
            "{bin} is required in CI (see .ci/setup.d/55-install.sh)"
        );
        eprintln!("!!!!! SKIPPING: {bin} not installed (run .ci/setup.d/55-install.sh) !!!!!");
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn yaml_docs(src: &str, what: &str) -> Vec<Value> {
    podci_model::yaml::load_documents(src, 0, Default::default())
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .iter()
        .map(|n| n.to_json())
        .filter(|v| !v.is_null())
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// --- the chart's values schema ----------------------------------------------------------

/// Helm validates the user's values merged over values.yaml; so does this.
fn merged(overrides: &[(&str, Value)], removals: &[&str]) -> Value {
    let mut v = yaml_docs(&read(&chart().join("values.yaml")), "values.yaml")
        .pop()
        .expect("values.yaml has a document");
    for (pointer, value) in overrides {
        let (parent, key) = pointer.rsplit_once('/').expect("a /pointer");
        let target = if parent.is_empty() {
            &mut v
        } else {
            v.pointer_mut(parent)
                .unwrap_or_else(|| panic!("{parent} exists in values.yaml"))
        };
        target
            .as_object_mut()
            .unwrap_or_else(|| panic!("{parent} is a mapping"))
            .insert(key.to_string(), value.clone());
    }
    for pointer in removals {
        let (parent, key) = pointer.rsplit_once('/').expect("a /pointer");
        let target = if parent.is_empty() {
            &mut v
        } else {
            v.pointer_mut(parent).expect("parent")
        };
        target.as_object_mut().expect("mapping").remove(key);
    }
    v
}

fn check_values(file: &Path) -> Output {
    run(Command::new("check-jsonschema")
        .arg("--schemafile")
        .arg(chart().join("values.schema.json"))
        .arg(file))
}

#[test]
fn chart_values_schema_accepts_good_values_and_refuses_bad_ones() {
    if !require("check-jsonschema") {
        return;
    }
    let out = check_values(&chart().join("values.yaml"));
    assert!(out.status.success(), "values.yaml itself: {}", text(&out));

    let dir = tempfile::tempdir().expect("tempdir");
    // The article's installation, as GitLab Runner chart values.
    let good = [
        (
            "article values",
            merged(
                &[
                    ("/gitlabUrl", json!("https://gitlab.example.com/")),
                    ("/runnerRegistrationToken", json!("GR1348941abcDEF")),
                    ("/concurrent", json!(10)),
                    ("/checkInterval", json!(30)),
                    ("/rbac", json!({"create": true})),
                    ("/serviceAccount/name", json!("gitlab")),
                    ("/nodeSelector", json!({"kubernetes.io/os": "linux"})),
                    (
                        "/tolerations",
                        json!([{"key": "ci", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]),
                    ),
                    (
                        "/resources",
                        json!({"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}),
                    ),
                ],
                &[],
            ),
        ),
        (
            "ServiceMonitor on, an existing Secret",
            merged(
                &[
                    ("/metrics/serviceMonitor/enabled", json!(true)),
                    ("/metrics/serviceMonitor/labels", json!({"release": "prometheus"})),
                    ("/runners/secret", json!("my-runner-secret")),
                    ("/runners/cache/pvc/storageClassName", json!("nfs")),
                ],
                &[],
            ),
        ),
    ];
    for (name, v) in &good {
        let f = dir.path().join("good.yaml");
        std::fs::write(&f, serde_json::to_vec_pretty(v).expect("json")).expect("write");
        let out = check_values(&f);
        assert!(out.status.success(), "{name} must be accepted: {}", text(&out));
    }

    // Each must be refused, and the message must point at the offending key.
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "concurrent as a string",
            merged(&[("/concurrent", json!("ten"))], &[]),
            "concurrent",
        ),
        (
            "checkInterval negative",
            merged(&[("/checkInterval", json!(-1))], &[]),
            "checkInterval",
        ),
        (
            "rbac.create as a string",
            merged(&[("/rbac/create", json!("yes"))], &[]),
            "create",
        ),
        (
            "unknown top-level key (typo)",
            merged(&[("/concurent", json!(4))], &[]),
            "concurent",
        ),
        (
            "unknown key in rbac",
            merged(&[("/rbac/clusterWideAccess", json!(true))], &[]),
            "clusterWideAccess",
        ),
        (
            "unknown key in metrics.serviceMonitor",
            merged(&[("/metrics/serviceMonitor/scrapeEvery", json!("5s"))], &[]),
            "scrapeEvery",
        ),
        (
            "metrics.port out of range",
            merged(&[("/metrics/port", json!(70000))], &[]),
            "70000",
        ),
        (
            "gitlabUrl without scheme",
            merged(&[("/gitlabUrl", json!("gitlab.example.com"))], &[]),
            "gitlabUrl",
        ),
        (
            "imagePullPolicy not an enum value",
            merged(&[("/imagePullPolicy", json!("Sometimes"))], &[]),
            "Sometimes",
        ),
        (
            "nodeSelector value not a string",
            merged(&[("/nodeSelector", json!({"gpu": true}))], &[]),
            "gpu",
        ),
        (
            "tolerations not a list",
            merged(&[("/tolerations", json!({"key": "ci"}))], &[]),
            "tolerations",
        ),
        (
            "a token with a newline",
            merged(&[("/runnerToken", json!("glrt-abc\ninjected = true"))], &[]),
            "runnerToken",
        ),
        (
            "runners.config missing",
            merged(&[], &["/runners/config"]),
            "config",
        ),
        (
            "resources with an unknown key",
            merged(&[("/resources/request", json!({"cpu": "1"}))], &[]),
            "request",
        ),
        (
            "terminationGracePeriodSeconds as a duration string",
            merged(&[("/terminationGracePeriodSeconds", json!("1h"))], &[]),
            "terminationGracePeriodSeconds",
        ),
    ];
    for (name, v, needle) in &bad {
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, serde_json::to_vec_pretty(v).expect("json")).expect("write");
        let out = check_values(&f);
        let t = text(&out);
        assert!(!out.status.success(), "{name} must be refused: {t}");
        assert!(t.contains(needle), "{name}: the message names {needle:?}: {t}");
    }
}

// --- the chart's templates ----------------------------------------------------------------

/// Every `.Values.a.b` a template reads exists in values.yaml (no helm binary can be
/// installed here to render the chart; this catches misspelt value paths).
#[test]
fn chart_templates_read_only_values_that_exist() {
    let values = yaml_docs(&read(&chart().join("values.yaml")), "values.yaml")
        .pop()
        .expect("values");
    let dir = chart().join("templates");
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("templates") {
        let path = entry.expect("entry").path();
        let src = read(&path);
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".Values.") {
            rest = &rest[i + ".Values.".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(rest.len());
            let path_str = rest[..end].trim_end_matches('.');
            let pointer = format!("/{}", path_str.replace('.', "/"));
            if values.pointer(&pointer).is_none() {
                missing.push(format!("{}: .Values.{path_str}", path.display()));
            }
            seen.insert(path_str.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "templates read values that values.yaml lacks: {missing:#?}"
    );
    // Every block action (if/with/range/define) has its end, in every template.
    for entry in std::fs::read_dir(&dir).expect("templates") {
        let path = entry.expect("entry").path();
        let src = read(&path);
        let mut depth = 0i32;
        for action in src.split("{{").skip(1) {
            let body = action.split("}}").next().unwrap_or("");
            let word = body
                .trim_start_matches('-')
                .trim_start()
                .split(|c: char| c.is_whitespace() || c == '-')
                .next()
                .unwrap_or("");
            match word {
                "if" | "with" | "range" | "define" | "block" => depth += 1,
                "end" => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "{}: an end without its block", path.display());
        }
        assert_eq!(depth, 0, "{}: a block without its end", path.display());
    }
    // The GitLab Runner chart names the issue asks for are read by the templates.
    for want in [
        "gitlabUrl",
        "runnerToken",
        "runnerRegistrationToken",
        "concurrent",
        "checkInterval",
        "rbac.create",
        "serviceAccount.create",
        "runners.config",
        "runners.secret",
        "runners.cache.pvc.enabled",
        "metrics.enabled",
        "metrics.serviceMonitor.enabled",
        "resources",
        "nodeSelector",
        "tolerations",
        "securityContext",
        "podSecurityContext",
        "terminationGracePeriodSeconds",
    ] {
        assert!(seen.contains(want), "a template reads .Values.{want}: {seen:?}");
    }
    // One entrypoint for both installations.
    assert_eq!(
        read(&chart().join("files/entrypoint.sh")),
        read(&manifests().join("entrypoint.sh")),
        "the chart's files/entrypoint.sh and deploy/manifests/entrypoint.sh are the same"
    );
}

// --- the plain manifests ------------------------------------------------------------------

fn kustomize() -> Option<Vec<Value>> {
    if !require("kubectl") {
        return None;
    }
    let out = run(Command::new("kubectl").arg("kustomize").arg(manifests()));
    assert!(out.status.success(), "kubectl kustomize: {}", text(&out));
    Some(yaml_docs(
        &String::from_utf8_lossy(&out.stdout),
        "kustomize output",
    ))
}

fn kubernetes_validate(dir: &Path, obj: &Value) -> Output {
    let f = dir.join("object.json");
    std::fs::write(&f, serde_json::to_vec_pretty(obj).expect("json")).expect("write");
    run(Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0"])
        .arg(&f))
}

#[test]
fn manifests_render_and_every_object_validates() {
    let Some(objects) = kustomize() else { return };
    if !require("kubernetes-validate") {
        return;
    }
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    let want: BTreeSet<String> = [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, want, "the installation's objects");
    let dir = tempfile::tempdir().expect("tempdir");
    for o in &objects {
        let out = kubernetes_validate(dir.path(), o);
        assert!(
            out.status.success(),
            "{} {}: {}",
            o["kind"],
            o["metadata"]["name"],
            text(&out)
        );
        assert!(
            !o["kind"].as_str().unwrap_or("").starts_with("Cluster"),
            "nothing cluster-wide: {o}"
        );
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "podci", "{o}");
        }
    }
    // The validator does refuse a broken object (so the loop above means something).
    let mut broken = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment")
        .clone();
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    let out = kubernetes_validate(dir.path(), &broken);
    assert!(
        !out.status.success(),
        "a misspelt field is refused: {}",
        text(&out)
    );

    // The pieces fit together: the Deployment runs as the bound ServiceAccount, mounts
    // the generated ConfigMap and the Secret, and the Service selects its Pods.
    let by_kind = |k: &str| objects.iter().find(|o| o["kind"] == k).expect(k);
    let dep = by_kind("Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"],
        by_kind("ServiceAccount")["metadata"]["name"]
    );
    let rb = by_kind("RoleBinding");
    assert_eq!(rb["subjects"][0]["name"], pod["serviceAccountName"]);
    assert_eq!(rb["roleRef"]["kind"], "Role");
    assert_eq!(rb["roleRef"]["name"], by_kind("Role")["metadata"]["name"]);
    let volumes = pod["volumes"].as_array().expect("volumes");
    let cm_name = by_kind("ConfigMap")["metadata"]["name"].clone();
    assert!(
        volumes.iter().any(|v| v["configMap"]["name"] == cm_name),
        "the Deployment mounts {cm_name}: {volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "podci-runner")
    );
    let tpl_labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in by_kind("Service")["spec"]["selector"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(&tpl_labels[k], v, "the Service selects the runner Pods");
    }
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(0) >= 30);
    assert!(
        !c.to_string().contains("runner-token\""),
        "the token is mounted as a file, not put in env: {c}"
    );
    // The cache PVC is the one runner.toml mounts into job Pods.
    let pvc = by_kind("PersistentVolumeClaim")["metadata"]["name"]
        .as_str()
        .expect("name");
    let runner_toml = by_kind("ConfigMap")["data"]["runner.toml"]
        .as_str()
        .expect("runner.toml");
    assert!(
        runner_toml.contains(&format!("name = \"{pvc}\"")),
        "{runner_toml}"
    );
}

/// Writes the ConfigMap's files and a Secret holding `token`, runs the real entrypoint
/// with `args` (a podci subcommand) and returns its output and the config it composed.
fn run_entrypoint(
    cm: &Value,
    secret_key: &str,
    token: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cm_dir = dir.path().join("configmaps");
    let sec_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&cm_dir).expect("mkdir");
    std::fs::create_dir_all(&sec_dir).expect("mkdir");
    for (k, v) in cm["data"].as_object().expect("ConfigMap data") {
        std::fs::write(cm_dir.join(k), v.as_str().expect("string data")).expect("write");
    }
    std::fs::write(sec_dir.join(secret_key), format!("{token}\n")).expect("write");
    let podci = PathBuf::from(env!("CARGO_BIN_EXE_podci"));
    let path = format!(
        "{}:{}",
        podci.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cfg = dir.path().join("home/.podci/config.toml");
    let out = run(Command::new("sh")
        .arg(cm_dir.join("entrypoint.sh"))
        .args(args)
        .env("PATH", path)
        .env("PODCI_CONFIGMAP_DIR", &cm_dir)
        .env("PODCI_SECRET_DIR", &sec_dir)
        .env("CONFIG_FILE", &cfg)
        .env("HOME", dir.path().join("home"))
        .envs(env.iter().copied()));
    (out, std::fs::read_to_string(&cfg).ok())
}

#[test]
fn manifests_config_toml_loads_with_podcis_config_loader() {
    let Some(objects) = kustomize() else { return };
    let cm = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("ConfigMap");
    let token = "glrt-t0kenFromTheSecret_123";
    let (out, cfg) = run_entrypoint(cm, "runner-token", token, &["list"], &[]);
    let t = text(&out);
    assert!(out.status.success(), "entrypoint + podci list: {t}");
    assert!(t.contains("Executor=kubernetes"), "{t}");
    assert!(t.contains("URL=https://gitlab.example.com/"), "{t}");
    assert!(
        !t.contains("warning"),
        "no unknown keys in the composed config.toml: {t}"
    );
    assert!(!t.contains(token), "the full token is never printed: {t}");
    let cfg = cfg.expect("the entrypoint wrote config.toml");
    let loaded = podci::config::Config::parse(&cfg, "config.toml").expect("podci's loader accepts it");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    assert_eq!(c.concurrent, 10);
    assert_eq!(c.check_interval, 30);
    assert_eq!(c.listen_address.as_deref(), Some("0.0.0.0:9252"));
    assert_eq!(c.runners.len(), 1);
    let r = &c.runners[0];
    assert_eq!(r.token, token, "the token from the Secret");
    assert_eq!(r.executor, podci::config::ExecutorKind::Kubernetes);
    let k = r.kubernetes.as_ref().expect("[runners.kubernetes]");
    assert_eq!(k.get("namespace").and_then(|v| v.as_str()), Some("podci"));

    // A token that could break out of its TOML string is refused, not written.
    let (out, cfg) = run_entrypoint(cm, "runner-token", "glrt-x\"\nexecutor = \"shell", &["list"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(cfg.is_none(), "no config.toml written: {cfg:?}");
    assert!(text(&out).contains("holds characters"), "{}", text(&out));
    // No token at all: the message says which Secret keys are read.
    let (out, _) = run_entrypoint(cm, "unrelated-key", "x", &["list"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("runner-token"), "{}", text(&out));
}

/// A legacy registration token in the Secret: the entrypoint registers (against the fake
/// GitLab server), reads the issued runner token back and runs with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_registers_with_a_legacy_registration_token() {
    let Some(objects) = tokio::task::spawn_blocking(kustomize).await.expect("join") else {
        return;
    };
    let fake = podci_fake_gitlab::FakeGitlab::start(podci_fake_gitlab::Options::default())
        .await
        .expect("fake GitLab");
    let url = fake.url().to_string();
    let cm = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("ConfigMap")
        .clone();
    let (out, cfg) = tokio::task::spawn_blocking(move || {
        run_entrypoint(
            &cm,
            "runner-registration-token",
            "GR1348941-registration",
            &["list"],
            &[
                ("CI_SERVER_URL", url.as_str()),
                ("RUNNER_NAME", "podci-in-cluster"),
            ],
        )
    })
    .await
    .expect("join");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("Runner registered successfully: podci-in-cluster"),
        "{t}"
    );
    let issued = fake
        .runner_tokens()
        .into_iter()
        .find(|t| t.contains("registered"))
        .expect("the fake issued a runner token");
    assert!(!t.contains(&issued), "the issued token is never printed: {t}");
    let cfg = cfg.expect("config.toml written");
    let loaded = podci::config::Config::parse(&cfg, "config.toml").expect("loads");
    assert_eq!(
        loaded.config.runners.len(),
        1,
        "one runner, not the scratch entry too"
    );
    assert_eq!(loaded.config.runners[0].token, issued);
    assert!(
        !cfg.contains("GR1348941"),
        "the registration token is not kept: {cfg}"
    );
}

// --- podci's own image --------------------------------------------------------------------

struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's docker-registry on a free port on 127.0.0.1.
fn registry() -> Option<Registry> {
    if !require("docker-registry") {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cfg = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("c.yml"), cfg).expect("write");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("c.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry starts");
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(Registry {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    })
}

fn podci(args: &[&str], docker_config: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DOCKER_AUTH_CONFIG"))
}

#[test]
fn image_builds_pushes_and_runs_from_its_layers() {
    let Some(reg) = registry() else { return };
    if !require("busybox") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = tempfile::tempdir().expect("tempdir");
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).expect("mkdir");
    let image = format!("{}/podci/podci:test", reg.host);
    let out = run(Command::new("bash")
        .arg(repo().join("deploy/image/build.sh"))
        .arg(&image)
        .env("PODCI_BIN", env!("CARGO_BIN_EXE_podci"))
        .env("DOCKER_CONFIG", &docker_config)
        .env_remove("SOURCE_DATE_EPOCH"));
    assert!(out.status.success(), "build.sh: {}", text(&out));

    let out = podci(&["image", "inspect", &image], &docker_config);
    assert!(out.status.success(), "inspect: {}", text(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let s = info.to_string();
    assert!(
        s.contains("\"/usr/bin/podci\""),
        "entrypoint /usr/bin/podci: {info:#}"
    );
    assert!(s.contains("65532"), "runs as the podci user: {info:#}");
    assert!(s.contains("9252/tcp"), "exposes the metrics port: {info:#}");

    // Pull it into an OCI layout and unpack the layers in order into a root.
    let layout = dir.path().join("layout");
    let out = podci(
        &["image", "copy", &image, &format!("oci:{}:test", layout.display())],
        &docker_config,
    );
    assert!(out.status.success(), "copy: {}", text(&out));
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir");
    let index: Value = serde_json::from_str(&read(&layout.join("index.json"))).expect("index.json");
    let blob = |digest: &str| layout.join("blobs").join(digest.replacen(':', "/", 1));
    let mdigest = index["manifests"][0]["digest"].as_str().expect("manifest digest");
    let manifest: Value = serde_json::from_str(&read(&blob(mdigest))).expect("manifest");
    let config: Value = serde_json::from_str(&read(&blob(
        manifest["config"]["digest"].as_str().expect("config digest"),
    )))
    .expect("config");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/bin/podci"]),
        "{config:#}"
    );
    assert_eq!(config["config"]["Cmd"], json!(["run"]), "{config:#}");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "base + podci: {manifest:#}");
    for l in layers {
        let out = run(Command::new("tar")
            .arg("-xf")
            .arg(blob(l["digest"].as_str().expect("digest")))
            .arg("-C")
            .arg(&rootfs));
        assert!(out.status.success(), "unpack {l}: {}", text(&out));
    }
    let bin = rootfs.join("usr/bin/podci");
    assert!(bin.is_file(), "the binary is in the layers");
    assert_eq!(
        std::fs::read(&bin).expect("read").len(),
        std::fs::read(env!("CARGO_BIN_EXE_podci")).expect("read").len(),
        "the packaged binary is the one built"
    );
    assert!(rootfs.join("bin/sh").exists(), "a shell for the entrypoint");

    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: the image's podci must be run with chroot"
        );
        eprintln!("!!!!! SKIPPING the chroot run: needs root !!!!!");
        return;
    }
    // The image's own shell and libraries only: PATH as the image sets it (chroot itself
    // is found on the test's PATH, usually /usr/sbin).
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils) is installed");
    let out = run(Command::new(chroot)
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "podci --version"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin"));
    assert!(
        out.status.success(),
        "podci --version in the image: {}",
        text(&out)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("podci ") && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );

    // The Deployment's command in the image, as the podci user: the entrypoint needs only
    // the image's busybox applets. The ConfigMap, Secret and the home emptyDir are laid
    // out as the kubelet mounts them.
    let cm = rootfs.join("configmaps");
    let sec = rootfs.join("secrets");
    std::fs::create_dir_all(&cm).expect("mkdir");
    std::fs::create_dir_all(&sec).expect("mkdir");
    for f in ["config.toml", "runner.toml", "entrypoint.sh"] {
        std::fs::copy(manifests().join(f), cm.join(f)).expect("copy");
    }
    std::fs::write(sec.join("runner-token"), "glrt-inTheImage_0123\n").expect("write");
    let home = rootfs.join("home/podci");
    std::os::unix::fs::chown(&home, Some(65532), Some(65532)).expect("chown home");
    let out = run(Command::new(chroot)
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args(["/bin/sh", "/configmaps/entrypoint.sh", "list"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/home/podci")
        .env("CONFIG_FILE", "/home/podci/.podci/config.toml"));
    let t = text(&out);
    assert!(out.status.success(), "the entrypoint in the image: {t}");
    assert!(t.contains("Executor=kubernetes"), "{t}");
    let written = home.join(".podci/config.toml");
    let meta = std::fs::metadata(&written).expect("config.toml written in the image's home");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.uid(), 65532, "written as the podci user");
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "config.toml holds the token: 0600"
    );
}
