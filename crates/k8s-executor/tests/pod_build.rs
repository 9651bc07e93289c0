//! Pod construction: the users' config.toml yields the Pod it describes, every generated
//! object validates against the Kubernetes 1.33 schema (`kubernetes-validate`, PyPI), and
//! snapshots pin the whole objects.

use podci_k8s::pod::{PodError, parse_quantity_milli};
use podci_k8s::{KubernetesConfig, PodParams, build_pod};
use podci_model::payload::{Credential, Image, JobPayload, JobVariable, Service, ServiceVariable, Step};

fn params() -> PodParams {
    PodParams {
        runner_short_token: "glrt1234".into(),
        concurrent_id: 3,
        suffix: "abc12345".into(),
        now_unix: 1_800_000_000,
        job_url: "https://gitlab.example.com/group/app/-/jobs/77".into(),
    }
}

fn var(key: &str, value: &str, public: bool) -> JobVariable {
    JobVariable {
        key: key.into(),
        value: value.into(),
        public,
        ..Default::default()
    }
}

fn payload() -> JobPayload {
    let mut p = JobPayload {
        id: 77,
        token: "glcbt-secret-job-token".into(),
        ..Default::default()
    };
    p.job_info.name = "build".into();
    p.job_info.stage = "build".into();
    p.job_info.project_id = 42;
    p.job_info.project_name = "app".into();
    p.git_info.sha = "0123456789abcdef".into();
    p.git_info.reference = "main".into();
    p.runner_info.timeout = 3600;
    p.image = Some(Image {
        name: "maven:3-eclipse-temurin-17".into(),
        ..Default::default()
    });
    p.variables = vec![
        var("CI_JOB_ID", "77", true),
        var("CI_PROJECT_DIR", "/builds/group/app", true),
        var("CI_JOB_TOKEN", "glcbt-secret-job-token", false),
        var("CI_REGISTRY_PASSWORD", "glcbt-secret-job-token", false),
        JobVariable {
            key: "KUBECONFIG_FILE".into(),
            value: "apiVersion: v1\n".into(),
            public: false,
            file: true,
            ..Default::default()
        },
    ];
    p.credentials = vec![Credential {
        kind: "registry".into(),
        url: "registry.example.com".into(),
        username: "gitlab-ci-token".into(),
        password: "glcbt-secret-job-token".into(),
    }];
    p.steps = vec![Step {
        name: "script".into(),
        script: vec!["mvn package".into()],
        timeout: 3600,
        when: "on_success".into(),
        allow_failure: false,
    }];
    p
}

fn article_config() -> KubernetesConfig {
    KubernetesConfig::from_runner_config_toml(include_str!("fixtures/article-config.toml"))
        .expect("article config parses")
}

/// Runs `kubernetes-validate --strict` on the object; fails under CI when it is missing.
fn validate(obj: &serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("object.json");
    std::fs::write(&path, serde_json::to_vec_pretty(obj).expect("json")).expect("write");
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0"])
        .arg(&path)
        .output();
    match out {
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "kubernetes-validate is missing under CI ({e}); .ci/setup.d/50-k8s.sh installs it"
            );
            eprintln!(
                "SKIPPING schema validation: kubernetes-validate not found ({e}); pip install kubernetes-validate"
            );
        }
        Ok(o) => assert!(
            o.status.success(),
            "kubernetes-validate rejected the object:\n{}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            serde_json::to_string_pretty(obj).unwrap_or_default()
        ),
    }
}

#[test]
fn article_config_yields_the_pod_it_describes() {
    let cfg = article_config();
    let jp = build_pod(&cfg, &payload(), &params()).expect("pod");
    assert_eq!(jp.namespace, "gitlab-runners");
    assert_eq!(jp.name, "runner-glrt1234-project-42-concurrent-3-abc12345");
    let spec = jp.pod.spec.as_ref().expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("gitlab"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.active_deadline_seconds, Some(3601));
    let build = &spec.containers[0];
    assert_eq!(build.name, "build");
    assert_eq!(build.image.as_deref(), Some("maven:3-eclipse-temurin-17"));
    let sc = build.security_context.as_ref().expect("security context");
    assert_eq!(
        sc.privileged,
        Some(true),
        "privileged = true reaches the build container"
    );
    let mounts = build.volume_mounts.as_ref().expect("mounts");
    let m = |name: &str| {
        mounts
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.mount_path.clone())
    };
    assert_eq!(m("gitlab-runner-pvc").as_deref(), Some("/home/cache/maven"));
    assert_eq!(m("docker").as_deref(), Some("/var/run/docker.sock"));
    let vols = spec.volumes.as_ref().expect("volumes");
    let pvc = vols
        .iter()
        .find(|v| v.name == "gitlab-runner-pvc")
        .expect("pvc volume");
    assert_eq!(
        pvc.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("gitlab-runner-pvc")
    );
    let hp = vols
        .iter()
        .find(|v| v.name == "docker")
        .expect("host_path volume");
    assert_eq!(
        hp.host_path.as_ref().map(|h| h.path.as_str()),
        Some("/var/run/docker.sock"),
        "host_path defaults to mount_path"
    );
    validate(&serde_json::to_value(&jp.pod).expect("json"));
    validate(&serde_json::to_value(jp.secret.as_ref().expect("secret")).expect("json"));
    insta::assert_json_snapshot!("article_pod", jp.pod);
    insta::assert_json_snapshot!("article_secret", jp.secret);
}

#[test]
fn secure_defaults_labels_and_secrets() {
    let cfg = KubernetesConfig::from_toml_str("namespace = \"ci\"").expect("config");
    let jp = build_pod(&cfg, &payload(), &params()).expect("pod");
    let spec = jp.pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "no service account token by default"
    );
    for c in &spec.containers {
        let sc = c.security_context.as_ref().expect("sc");
        assert_eq!(sc.privileged, Some(false), "{} is not privileged", c.name);
        let drop = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        assert!(drop.contains(&"NET_RAW".to_string()), "{} drops NET_RAW", c.name);
    }
    let labels = jp.pod.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "podci");
    assert_eq!(labels["project.runner.gitlab.com/id"], "42");
    assert!(labels.contains_key("job.runner.gitlab.com/pod"));
    let ann = jp.pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(ann["job.runner.gitlab.com/id"], "77");
    assert_eq!(ann["job.runner.gitlab.com/sha"], "0123456789abcdef");
    assert_eq!(
        ann["job.runner.gitlab.com/url"],
        "https://gitlab.example.com/group/app/-/jobs/77"
    );
    // Secrets: never a plain env value; the registry credentials are a dockerconfigjson.
    let env = spec.containers[0].env.as_ref().expect("env");
    for e in env {
        assert_ne!(
            e.value.as_deref(),
            Some("glcbt-secret-job-token"),
            "{} leaks a secret into the Pod spec",
            e.name
        );
    }
    let token = env
        .iter()
        .find(|e| e.name == "CI_JOB_TOKEN")
        .expect("CI_JOB_TOKEN");
    let r = token
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!(r.name, format!("{}-job", jp.name));
    let secret = jp.secret.as_ref().expect("secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    let dcj = &secret.data.as_ref().expect("data")[".dockerconfigjson"];
    let v: serde_json::Value = serde_json::from_slice(&dcj.0).expect("docker config json");
    assert_eq!(v["auths"]["registry.example.com"]["username"], "gitlab-ci-token");
    assert!(
        spec.image_pull_secrets
            .as_ref()
            .expect("pull secrets")
            .iter()
            .any(|s| s.name == format!("{}-job", jp.name))
    );
    // File variables are mounted from the Secret, not put in env as content.
    let file = env
        .iter()
        .find(|e| e.name == "KUBECONFIG_FILE")
        .expect("file var");
    assert_eq!(
        file.value.as_deref(),
        Some("/run/podci/variables/KUBECONFIG_FILE")
    );
    validate(&serde_json::to_value(&jp.pod).expect("json"));
    validate(&serde_json::to_value(secret).expect("json"));
}

#[test]
fn services_get_alias_names_commands_and_variables() {
    let cfg = KubernetesConfig::from_toml_str("namespace = \"ci\"\nservice_cpu_request = \"100m\"")
        .expect("config");
    let mut p = payload();
    p.credentials.clear();
    p.services = vec![
        Service {
            name: "postgres:16".into(),
            alias: Some("db".into()),
            command: Some(vec!["postgres".into(), "-c".into(), "fsync=off".into()]),
            variables: vec![ServiceVariable {
                key: "POSTGRES_PASSWORD".into(),
                value: "pw".into(),
            }],
            ports: vec![podci_model::payload::Port {
                number: 5432,
                ..Default::default()
            }],
            ..Default::default()
        },
        Service {
            name: "redis:7".into(),
            alias: Some("Not_A_DNS_Label".into()),
            entrypoint: Some(vec!["redis-server".into()]),
            ..Default::default()
        },
    ];
    let jp = build_pod(&cfg, &p, &params()).expect("pod");
    let spec = jp.pod.spec.as_ref().expect("spec");
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["build", "helper", "db", "svc-1"]);
    let db = &spec.containers[2];
    assert_eq!(db.command, None);
    assert_eq!(
        db.args.as_deref(),
        Some(&["postgres".to_string(), "-c".into(), "fsync=off".into()][..])
    );
    assert!(
        db.env
            .as_ref()
            .expect("env")
            .iter()
            .any(|e| e.name == "POSTGRES_PASSWORD")
    );
    assert!(
        !db.env
            .as_ref()
            .expect("env")
            .iter()
            .any(|e| e.name == "CI_JOB_TOKEN"),
        "secret variables stay out of services"
    );
    assert_eq!(
        spec.containers[3].command.as_deref(),
        Some(&["redis-server".to_string()][..])
    );
    assert_eq!(
        db.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["cpu"].0.clone()),
        Some("100m".into())
    );
    validate(&serde_json::to_value(&jp.pod).expect("json"));
    insta::assert_json_snapshot!("services_pod_containers", spec.containers[2..]);
}

#[test]
fn overwrites_within_maximums_and_regexes() {
    let cfg = KubernetesConfig::from_toml_str(
        r#"
namespace = "ci"
cpu_limit = "1"
cpu_limit_overwrite_max_allowed = "2"
memory_request = "1Gi"
memory_request_overwrite_max_allowed = "4Gi"
namespace_overwrite_allowed = "^ci-.*$"
service_account_overwrite_allowed = "^build-.*"
pod_annotations_overwrite_allowed = "^example\\.com/.*"
"#,
    )
    .expect("config");
    let mut p = payload();
    p.variables.push(var("KUBERNETES_CPU_LIMIT", "1500m", true));
    p.variables.push(var("KUBERNETES_MEMORY_REQUEST", "2Gi", true));
    p.variables
        .push(var("KUBERNETES_NAMESPACE_OVERWRITE", "ci-feature", true));
    p.variables
        .push(var("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "build-sa", true));
    p.variables.push(var(
        "KUBERNETES_POD_ANNOTATIONS_1",
        "example.com/team=payments",
        true,
    ));
    p.variables.push(var("KUBERNETES_HELPER_CPU_LIMIT", "3", true));
    let jp = build_pod(&cfg, &p, &params()).expect("pod");
    assert_eq!(jp.namespace, "ci-feature");
    let spec = jp.pod.spec.as_ref().expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("build-sa"));
    let res = spec.containers[0].resources.as_ref().expect("resources");
    assert_eq!(res.limits.as_ref().expect("limits")["cpu"].0, "1500m");
    assert_eq!(res.requests.as_ref().expect("requests")["memory"].0, "2Gi");
    assert_eq!(
        jp.pod.metadata.annotations.as_ref().expect("ann")["example.com/team"],
        "payments"
    );
    assert!(
        jp.warnings
            .iter()
            .any(|w| w.contains("KUBERNETES_HELPER_CPU_LIMIT")),
        "an overwrite without a maximum is ignored with a warning: {:?}",
        jp.warnings
    );

    let mut too_high = payload();
    too_high
        .variables
        .push(var("KUBERNETES_CPU_LIMIT", "2500m", true));
    let e = build_pod(&cfg, &too_high, &params()).expect_err("above max");
    assert!(matches!(e, PodError::OverwriteTooHigh { .. }), "{e}");
    assert!(e.to_string().contains("cpu_limit_overwrite_max_allowed"), "{e}");

    let mut bad_ns = payload();
    bad_ns
        .variables
        .push(var("KUBERNETES_NAMESPACE_OVERWRITE", "kube-system", true));
    let e = build_pod(&cfg, &bad_ns, &params()).expect_err("namespace not allowed");
    assert!(e.to_string().contains("namespace_overwrite_allowed"), "{e}");
}

#[test]
fn allowed_images_services_and_pull_policies() {
    let cfg = KubernetesConfig::from_toml_str(
        r#"
allowed_images = ["maven:*", "registry.example.com/**"]
allowed_services = ["postgres:*"]
pull_policy = ["if-not-present"]
allowed_pull_policies = ["if-not-present", "always"]
"#,
    )
    .expect("config");
    let p = payload();
    let jp = build_pod(&cfg, &p, &params()).expect("maven allowed");
    assert_eq!(
        jp.pod.spec.as_ref().expect("spec").containers[0]
            .image_pull_policy
            .as_deref(),
        Some("IfNotPresent")
    );
    let mut deep = payload();
    deep.image = Some(Image {
        name: "registry.example.com/group/app/builder:1".into(),
        pull_policy: Some(vec!["always".into()]),
        ..Default::default()
    });
    let jp = build_pod(&cfg, &deep, &params()).expect("** matches nested paths");
    assert_eq!(
        jp.pod.spec.as_ref().expect("spec").containers[0]
            .image_pull_policy
            .as_deref(),
        Some("Always")
    );

    let mut bad = payload();
    bad.image = Some(Image {
        name: "evil/miner:latest".into(),
        ..Default::default()
    });
    let e = build_pod(&cfg, &bad, &params()).expect_err("not allowed");
    assert!(matches!(e, PodError::ImageNotAllowed { .. }));
    assert!(
        e.to_string().contains("evil/miner:latest") && e.to_string().contains("allowed_images"),
        "{e}"
    );

    let mut svc = payload();
    svc.services = vec![Service {
        name: "mysql:8".into(),
        ..Default::default()
    }];
    let e = build_pod(&cfg, &svc, &params()).expect_err("service not allowed");
    assert!(e.to_string().contains("allowed_services"), "{e}");

    let mut never = payload();
    never.image = Some(Image {
        name: "maven:3".into(),
        pull_policy: Some(vec!["never".into()]),
        ..Default::default()
    });
    let e = build_pod(&cfg, &never, &params()).expect_err("policy not allowed");
    assert!(matches!(e, PodError::PullPolicyNotAllowed { .. }), "{e}");
}

#[test]
fn pvc_names_expand_ci_concurrent_id_and_full_config_validates() {
    let cfg = KubernetesConfig::from_toml_str(
        r#"
namespace = "ci"
image = "alpine:3"
cpu_request = "500m"
memory_limit = "2Gi"
helper_memory_limit = "256Mi"
node_selector = { "kubernetes.io/arch" = "amd64" }
node_tolerations = { "dedicated=ci" = "NoSchedule", "spot" = "" }
pod_labels = { team = "platform", job = "$CI_JOB_ID" }
pod_annotations = { "example.com/owner" = "ci" }
dns_policy = "cluster-first"
terminationGracePeriodSeconds = 10
cap_add = ["SYS_PTRACE"]
[pod_security_context]
run_as_user = 1000
fs_group = 1000
[build_container_security_context]
read_only_root_filesystem = false
[build_container_security_context.capabilities]
drop = ["ALL"]
[[host_aliases]]
ip = "10.0.0.5"
hostnames = ["git.internal"]
[[volumes.pvc]]
name = "cache-$CI_CONCURRENT_ID"
mount_path = "/cache"
[[volumes.config_map]]
name = "ca"
mount_path = "/etc/ssl/custom"
read_only = true
[[volumes.secret]]
name = "npmrc"
mount_path = "/root/.npmrc"
sub_path = ".npmrc"
[[volumes.empty_dir]]
name = "scratch"
mount_path = "/scratch"
medium = "Memory"
size_limit = "1Gi"
[[volumes.csi]]
name = "inline"
mount_path = "/csi"
driver = "inline.storage.example.com"
volume_attributes = { size = "1Gi" }
[affinity.node_affinity.required_during_scheduling_ignored_during_execution]
node_selector_terms = [{ match_expressions = [{ key = "pool", operator = "In", values = ["ci"] }] }]
"#,
    )
    .expect("config");
    let mut p = payload();
    p.image = None;
    let jp = build_pod(&cfg, &p, &params()).expect("pod");
    let spec = jp.pod.spec.as_ref().expect("spec");
    let pvc = spec
        .volumes
        .as_ref()
        .expect("vols")
        .iter()
        .find(|v| v.name == "cache-3")
        .expect("pvc");
    assert_eq!(
        pvc.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("cache-3")
    );
    assert_eq!(spec.containers[0].image.as_deref(), Some("alpine:3"));
    assert_eq!(jp.pod.metadata.labels.as_ref().expect("labels")["job"], "77");
    assert!(spec.affinity.is_some(), "affinity converted from snake_case TOML");
    validate(&serde_json::to_value(&jp.pod).expect("json"));
    insta::assert_json_snapshot!("full_config_pod_spec", spec);
}

#[test]
fn quantities_compare_like_kubernetes() {
    assert_eq!(parse_quantity_milli("1"), Some(1000));
    assert_eq!(parse_quantity_milli("500m"), Some(500));
    assert_eq!(parse_quantity_milli("1.5"), Some(1500));
    assert_eq!(parse_quantity_milli("1Ki"), Some(1_024_000));
    assert_eq!(parse_quantity_milli("1k"), Some(1_000_000));
    assert!(parse_quantity_milli("2Gi") > parse_quantity_milli("2G"));
    assert_eq!(parse_quantity_milli("abc"), None);
    assert_eq!(parse_quantity_milli("-1"), None);
    assert_eq!(parse_quantity_milli("1Zi"), None);
}

proptest::proptest! {
    #[test]
    fn quantity_parser_never_panics(s in "\\PC{0,30}") {
        let _ = parse_quantity_milli(&s);
    }

    #[test]
    fn quantity_order_follows_numbers(a in 0u32..1_000_000, b in 0u32..1_000_000) {
        let qa = parse_quantity_milli(&format!("{a}m"));
        let qb = parse_quantity_milli(&format!("{b}m"));
        proptest::prop_assert_eq!(qa.cmp(&qb), a.cmp(&b));
        proptest::prop_assert_eq!(parse_quantity_milli(&format!("{a}Mi")), Some(i128::from(a) * 1024 * 1024 * 1000));
    }

    #[test]
    fn pod_names_are_dns_labels(token in "[A-Za-z0-9_-]{0,12}", project in 0u64..u64::MAX, slot in 0u32..1000, suffix in "[a-z0-9]{0,10}") {
        let mut p = payload();
        p.job_info.project_id = project;
        let params = PodParams { runner_short_token: token, concurrent_id: slot, suffix, now_unix: 0, job_url: String::new() };
        let name = podci_k8s::pod::pod_name(&p, &params);
        proptest::prop_assert!(podci_k8s::pod::is_dns_label(&name), "{}", name);
    }
}
