//! The Role check: podci's Role (deploy/manifests/role.yaml, and the same rules in the
//! Helm chart) grants exactly what podci-k8s uses.
//!
//! Jobs run against the fake API server (tests/fake-kube) with a ServiceAccount token
//! restricted to the Role's rules, so any call the Role does not allow fails the job.
//! Then every request in the server's log is mapped to (verb, group, resource,
//! subresource) the way the apiserver's RequestInfo and the RBAC authorizer do, and the
//! test asserts that each one is allowed and that every granted (resource, verb) was used.
//! The jobs cover: a service container, a PVC volume, secret and file variables with
//! registry credentials (the per-job Secret), a failing script with after_script, a
//! canceled job, a Pod that never starts (events quoted) and the orphan sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use podci_fake_kube::{FakeKube, Options, TokenGrant};
use podci_k8s::KubernetesConfig;
use podci_k8s::executor::{ExecutorOptions, Job, KubernetesExecutor, Outcome, TraceSink};
use podci_model::payload::{Credential, JobPayload, JobVariable, Service, Step};
use tokio_util::sync::CancellationToken;

const NS: &str = "ci-jobs";
const SA_TOKEN: &str = "podci-serviceaccount-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One RBAC rule as written in a Role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// What one request needs: the verbs (all of them) on `group`/`resource`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    verbs: Vec<&'static str>,
    group: String,
    /// `pods`, or `pods/exec` for a subresource.
    resource: String,
}

fn strings(v: &serde_json::Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what} holds strings: {v}"))
                .to_string()
        })
        .collect()
}

fn yaml_docs(text: &str, file: &str) -> Vec<serde_json::Value> {
    podci_model::yaml::load_documents(text, 0, Default::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .iter()
        .map(|n| n.to_json())
        .collect()
}

fn parse_rules(v: &serde_json::Value, file: &str) -> Vec<Rule> {
    let rules: Vec<Rule> = v
        .as_array()
        .unwrap_or_else(|| panic!("{file}: rules is a list"))
        .iter()
        .map(|r| {
            let keys: BTreeSet<&str> = r
                .as_object()
                .unwrap_or_else(|| panic!("{file}: a rule is a mapping"))
                .keys()
                .map(String::as_str)
                .collect();
            assert!(
                keys.iter()
                    .all(|k| ["apiGroups", "resources", "verbs"].contains(k)),
                "{file}: only apiGroups/resources/verbs (no resourceNames, no nonResourceURLs): {r}"
            );
            Rule {
                groups: strings(&r["apiGroups"], "apiGroups"),
                resources: strings(&r["resources"], "resources"),
                verbs: strings(&r["verbs"], "verbs"),
            }
        })
        .collect();
    for r in &rules {
        assert!(
            !r.verbs.iter().any(|v| v == "*")
                && !r.resources.iter().any(|v| v == "*")
                && !r.groups.iter().any(|v| v == "*"),
            "{file}: no wildcards: {r:?}"
        );
    }
    rules
}

/// The Role in deploy/manifests/role.yaml: a namespaced Role, never a ClusterRole.
fn manifest_rules() -> Vec<Rule> {
    let path = repo_root().join("deploy/manifests/role.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = yaml_docs(&text, "role.yaml");
    assert_eq!(docs.len(), 1, "role.yaml holds one object");
    let role = &docs[0];
    assert_eq!(role["kind"], "Role", "namespaced, nothing cluster-wide");
    assert_eq!(role["apiVersion"], "rbac.authorization.k8s.io/v1");
    parse_rules(&role["rules"], "role.yaml")
}

/// (group, resource, verb) triples the rules grant.
fn grants(rules: &[Rule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in &r.groups {
            for res in &r.resources {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// Maps a logged request (`METHOD /path?query`) to what RBAC checks, as the apiserver's
/// RequestInfoFactory does: GET on an item is get, on a collection list, `watch=true`
/// (or the legacy /watch/ prefix) watch; POST create; PUT update; PATCH patch; DELETE on
/// an item delete, on a collection deletecollection. A WebSocket upgrade to pods/exec,
/// pods/attach or pods/portforward is a GET (verb get); Kubernetes 1.35+ also checks
/// create for it (AuthorizePodWebsocketUpgradeCreatePermission), so it needs both.
fn map_request(line: &str) -> Result<Need, String> {
    let (method, target) = line
        .split_once(' ')
        .ok_or_else(|| format!("not a request line: {line}"))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let watch_param = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", g, _version, rest @ ..] => (g.to_string(), rest),
        _ => return Err(format!("non-resource request (not in a Role): {line}")),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (resource, name, sub) = match rest {
        ["namespaces", ns, r, tail @ ..] => {
            if *ns != NS {
                return Err(format!("request outside the job namespace {NS}: {line}"));
            }
            match tail {
                [] => (r.to_string(), None, None),
                [n] => (r.to_string(), Some(n.to_string()), None),
                [n, s] => (r.to_string(), Some(n.to_string()), Some(s.to_string())),
                _ => return Err(format!("unexpected path: {line}")),
            }
        }
        _ => return Err(format!("cluster-scoped request (a Role cannot allow it): {line}")),
    };
    let verbs: Vec<&'static str> = match (method, name.is_some()) {
        ("GET", _) if watch_param || legacy_watch => vec!["watch"],
        ("GET", true) => {
            if matches!(sub.as_deref(), Some("exec" | "attach" | "portforward")) {
                vec!["get", "create"]
            } else {
                vec!["get"]
            }
        }
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", _) => vec!["patch"],
        ("DELETE", true) => vec!["delete"],
        ("DELETE", false) => vec!["deletecollection"],
        _ => return Err(format!("method RBAC has no verb for: {line}")),
    };
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource,
    };
    Ok(Need {
        verbs,
        group,
        resource,
    })
}

#[test]
fn request_mapping_follows_the_rbac_authorizer() {
    let m = |l: &str| map_request(l).unwrap_or_else(|e| panic!("{e}"));
    let n = |verbs: &[&'static str], resource: &str| Need {
        verbs: verbs.to_vec(),
        group: String::new(),
        resource: resource.into(),
    };
    assert_eq!(m("POST /api/v1/namespaces/ci-jobs/pods"), n(&["create"], "pods"));
    assert_eq!(m("GET /api/v1/namespaces/ci-jobs/pods/p1"), n(&["get"], "pods"));
    assert_eq!(
        m("GET /api/v1/namespaces/ci-jobs/pods?labelSelector=a%3Db"),
        n(&["list"], "pods")
    );
    assert_eq!(
        m("GET /api/v1/namespaces/ci-jobs/pods?fieldSelector=metadata.name%3Dp&watch=true&resourceVersion=5"),
        n(&["watch"], "pods")
    );
    assert_eq!(
        m("GET /api/v1/watch/namespaces/ci-jobs/pods"),
        n(&["watch"], "pods")
    );
    assert_eq!(
        m("GET /api/v1/namespaces/ci-jobs/pods/p1/exec?command=sh&stdin=true"),
        n(&["get", "create"], "pods/exec")
    );
    assert_eq!(
        m("GET /api/v1/namespaces/ci-jobs/pods/p1/log"),
        n(&["get"], "pods/log")
    );
    assert_eq!(
        m("PATCH /api/v1/namespaces/ci-jobs/secrets/s?fieldManager=x"),
        n(&["patch"], "secrets")
    );
    assert_eq!(
        m("PUT /api/v1/namespaces/ci-jobs/secrets/s"),
        n(&["update"], "secrets")
    );
    assert_eq!(
        m("DELETE /api/v1/namespaces/ci-jobs/pods/p1"),
        n(&["delete"], "pods")
    );
    assert_eq!(
        m("DELETE /api/v1/namespaces/ci-jobs/pods"),
        n(&["deletecollection"], "pods")
    );
    assert_eq!(
        m("GET /apis/events.k8s.io/v1/namespaces/ci-jobs/events"),
        Need {
            verbs: vec!["list"],
            group: "events.k8s.io".into(),
            resource: "events".into()
        }
    );
    assert!(map_request("GET /api/v1/pods").is_err(), "cluster-wide list");
    assert!(map_request("GET /api/v1/nodes/n1").is_err(), "cluster-scoped");
    assert!(
        map_request("GET /api/v1/namespaces/other/pods").is_err(),
        "other namespace"
    );
    assert!(map_request("GET /version").is_err(), "non-resource URL");
}

#[test]
fn chart_role_grants_the_same_rules_as_the_manifests() {
    let chart = repo_root().join("deploy/helm/podci");
    let rules_file = chart.join("files/role-rules.yaml");
    let text =
        std::fs::read_to_string(&rules_file).unwrap_or_else(|e| panic!("{}: {e}", rules_file.display()));
    let docs = yaml_docs(&text, "role-rules.yaml");
    assert_eq!(docs.len(), 1);
    let chart_rules = parse_rules(&docs[0], "role-rules.yaml");
    assert_eq!(
        grants(&chart_rules),
        grants(&manifest_rules()),
        "the chart's rules and deploy/manifests/role.yaml grant the same"
    );
    // The Role template takes its rules from that file and adds none of its own.
    let tpl_path = chart.join("templates/role.yaml");
    let tpl = std::fs::read_to_string(&tpl_path).unwrap_or_else(|e| panic!("{}: {e}", tpl_path.display()));
    assert!(tpl.contains("kind: Role\n"), "{tpl}");
    assert!(!tpl.contains("ClusterRole"), "nothing cluster-wide: {tpl}");
    let rules_at = tpl.find("rules:").expect("the template has a rules block");
    let block = &tpl[rules_at..];
    assert!(
        block.contains(".Files.Get \"files/role-rules.yaml\""),
        "the rules block includes files/role-rules.yaml: {block}"
    );
    assert!(
        !block.contains("verbs") && !block.contains("resources"),
        "the template adds no rules of its own: {block}"
    );
}

/// A sink tests can read while the job runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl TraceSink for Shared {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Whether container roots work here; under CI they must.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok();
    if root && unshare {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root with util-linux: container roots must work"
    );
    eprintln!("SKIPPING the Role check: needs root and unshare for the fake server's container roots");
    false
}

/// A fake server that knows the ServiceAccount token restricted to `rules`.
async fn start(rules: &[Rule], unschedulable: bool) -> FakeKube {
    let pairs: Vec<(String, String)> = grants(rules)
        .into_iter()
        .map(|(_, res, verb)| (res, verb))
        .collect();
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(r, v)| (r.as_str(), v.as_str())).collect();
    let mut opts = Options {
        container_roots: true,
        unschedulable,
        ..Default::default()
    };
    opts.tokens.insert(
        SA_TOKEN.into(),
        TokenGrant::restricted("system:serviceaccount:ci-jobs:podci", &refs),
    );
    FakeKube::start(opts).await.expect("fake server starts")
}

async fn client(fake: &FakeKube, token: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig_for(token, NS)).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn executor(c: kube::Client, extra: &str) -> KubernetesExecutor {
    let cfg = KubernetesConfig::from_toml_str(&format!(
        "namespace = \"{NS}\"\nimage = \"debian:bookworm\"\nhelper_image = \"podci-helper:test\"\n{extra}"
    ))
    .expect("config");
    let mut o = ExecutorOptions::new("glrt1234abcdef");
    o.retry_base = Duration::from_millis(50);
    KubernetesExecutor::new(c, cfg, o)
}

fn step(name: &str, script: &[&str]) -> Step {
    Step {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        timeout: 600,
        when: if name == "after_script" {
            "always".into()
        } else {
            "on_success".into()
        },
        allow_failure: false,
    }
}

fn job(id: u64, script: &[&str], after: &[&str]) -> JobPayload {
    let mut p = JobPayload {
        id,
        token: "glcbt-job-token-secret".into(),
        ..Default::default()
    };
    p.job_info.name = "rbac".into();
    p.job_info.project_id = 9;
    p.job_info.project_name = "demo".into();
    p.runner_info.timeout = 600;
    p.variables = vec![JobVariable {
        key: "CI_JOB_ID".into(),
        value: id.to_string(),
        public: true,
        ..Default::default()
    }];
    p.steps = vec![step("script", script)];
    if !after.is_empty() {
        p.steps.push(step("after_script", after));
    }
    p
}

async fn run_job(
    ex: &KubernetesExecutor,
    p: &JobPayload,
    sink: &mut Shared,
    cancel: CancellationToken,
) -> Outcome {
    let probe = sink.clone();
    match tokio::time::timeout(Duration::from_secs(60), ex.run(&Job::new(p), sink, cancel)).await {
        Ok(o) => o,
        Err(_) => panic!(
            "job {} did not finish within 60 s; trace so far:\n{}",
            p.id,
            probe.text()
        ),
    }
}

/// The jobs on a schedulable node; returns the requests the restricted client made.
async fn run_jobs(rules: &[Rule]) -> Vec<String> {
    let fake = start(rules, false).await;
    // Set-up with the admin token stays out of the log: it is reset before the jobs.
    fake.control().put_object(
        "persistentvolumeclaims",
        NS,
        serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "cache-0"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    let admin = client(&fake, podci_fake_kube::ADMIN_TOKEN).await;
    // An orphan left by a runner that died long ago, for the sweep below.
    let mut orphan = job(90, &["sleep 1"], &[]);
    orphan.variables.push(JobVariable {
        key: "SECRET".into(),
        value: "x".into(),
        public: false,
        ..Default::default()
    });
    let cfg =
        KubernetesConfig::from_toml_str(&format!("namespace = \"{NS}\"\nimage = \"debian:bookworm\"\n"))
            .expect("config");
    let jp = podci_k8s::build_pod(
        &cfg,
        &orphan,
        &podci_k8s::PodParams {
            runner_short_token: "glrt1234".into(),
            concurrent_id: 0,
            suffix: "orphan".into(),
            now_unix: 1_000_000_000,
            job_url: String::new(),
        },
    )
    .expect("pod");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(admin.clone(), NS);
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(admin.clone(), NS);
    secrets
        .create(&Default::default(), jp.secret.as_ref().expect("secret"))
        .await
        .expect("orphan secret");
    pods.create(&Default::default(), &jp.pod)
        .await
        .expect("orphan pod");
    fake.control().reset_requests();

    let c = client(&fake, SA_TOKEN).await;
    let ex = executor(
        c.clone(),
        "[[volumes.pvc]]\nname = \"cache-$CI_CONCURRENT_ID\"\nmount_path = \"/cache\"\n",
    );

    // 1. A service, a PVC volume, secret and file variables, registry credentials.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut p = job(
        1,
        &[
            "for i in $(seq 1 100); do python3 -c \"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$SVC_PORT/ready.txt').read().decode())\" 2>/dev/null && break; sleep 0.1; done",
            "test \"$API_KEY\" = s3cr3t-value && echo key-ok",
            "cat \"$CREDS_FILE\"",
            "echo cached > /cache/marker && cat /cache/marker",
        ],
        &[],
    );
    p.variables.push(JobVariable {
        key: "SVC_PORT".into(),
        value: port.to_string(),
        public: true,
        ..Default::default()
    });
    p.variables.push(JobVariable {
        key: "API_KEY".into(),
        value: "s3cr3t-value".into(),
        public: false,
        masked: true,
        ..Default::default()
    });
    p.variables.push(JobVariable {
        key: "CREDS_FILE".into(),
        value: "file-content-line\n".into(),
        public: false,
        file: true,
        ..Default::default()
    });
    p.credentials.push(Credential {
        kind: "registry".into(),
        url: "registry.example.com".into(),
        username: "gitlab-ci-token".into(),
        password: "glcbt-job-token-secret".into(),
    });
    p.services = vec![Service {
        name: "python:3".into(),
        alias: Some("web".into()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        command: Some(vec![format!(
            "mkdir -p /srv && echo service-ready > /srv/ready.txt && cd /srv && exec python3 -m http.server {port} --bind 127.0.0.1"
        )]),
        ..Default::default()
    }];
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Success, "{trace}");
    for want in ["service-ready", "key-ok\n", "file-content-line", "cached\n"] {
        assert!(trace.contains(want), "{want:?} in the trace: {trace}");
    }

    // 2. A failing script; after_script still runs.
    let p = job(2, &["echo failing", "exit 3"], &["echo after $CI_JOB_STATUS"]);
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    let trace = sink.text();
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                exit_code: Some(3),
                ..
            }
        ),
        "{outcome:?}\n{trace}"
    );
    assert!(trace.contains("after failed"), "{trace}");

    // 3. A canceled job.
    let p = job(
        3,
        &["echo started", "sleep 60", "echo not reached"],
        &["echo after $CI_JOB_STATUS"],
    );
    let cancel = CancellationToken::new();
    let mut sink = Shared::default();
    let watcher = {
        let sink = sink.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while !sink.text().contains("started\n") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        })
    };
    let outcome = run_job(&ex, &p, &mut sink, cancel).await;
    let _ = watcher.await;
    let trace = sink.text();
    assert_eq!(outcome, Outcome::Canceled, "{trace}");
    assert!(trace.contains("after canceled"), "{trace}");

    // 4. The orphan sweep at runner start.
    let report = podci_k8s::sweep_orphans(c.clone(), NS, "glrt1234", jiff::Timestamp::now())
        .await
        .expect("the sweep is allowed");
    assert_eq!(report.pods, vec![jp.name.clone()], "{report:?}");

    let requests = fake.control().requests();
    // Nothing was left behind (checked after the log was read).
    for (resource, name) in [("pods", jp.name.clone()), ("secrets", format!("{}-job", jp.name))] {
        assert!(
            fake.control().get(resource, NS, &name).is_none(),
            "{resource} {name} swept"
        );
    }
    requests
}

/// A Pod that never starts: the failure quotes its events.
async fn run_unschedulable(rules: &[Rule]) -> Vec<String> {
    let fake = start(rules, true).await;
    fake.control().reset_requests();
    let ex = executor(client(&fake, SA_TOKEN).await, "poll_timeout = 1");
    let p = job(4, &["echo unreachable"], &[]);
    let mut sink = Shared::default();
    let outcome = run_job(&ex, &p, &mut sink, CancellationToken::new()).await;
    match &outcome {
        Outcome::Failed { message, .. } => assert!(
            message.contains("FailedScheduling") || message.contains("Unschedulable"),
            "events quoted (not 'events unavailable'): {message}"
        ),
        other => panic!("expected a start timeout, got {other:?}"),
    }
    fake.control().requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_allows_every_call_the_executor_makes_and_grants_nothing_more() {
    if !can_run() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let rules = manifest_rules();
    let granted = grants(&rules);
    let mut requests = run_jobs(&rules).await;
    requests.extend(run_unschedulable(&rules).await);
    assert!(!requests.is_empty(), "the jobs made API requests");

    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    for line in &requests {
        match map_request(line) {
            Ok(need) => {
                for verb in &need.verbs {
                    let key = (need.group.clone(), need.resource.clone(), verb.to_string());
                    if !granted.contains(&key) {
                        refused.insert(line.clone(), format!("{verb} {}", need.resource));
                    }
                    used.insert(key);
                }
            }
            Err(e) => {
                refused.insert(line.clone(), e);
            }
        }
    }
    eprintln!(
        "{} API requests; (group, resource, verb) used:\n{}",
        requests.len(),
        used.iter()
            .map(|(g, r, v)| format!("  {g:?} {r} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(refused.is_empty(), "calls the Role does not allow: {refused:#?}");
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "the Role grants what no job used (remove it): {unused:?}"
    );
}

/// The installation's `[runners.kubernetes]` (deploy/manifests/runner.toml, what the
/// entrypoint appends after `[[runners]]`) is one podci-k8s accepts, in the namespace the
/// Role is bound in.
#[test]
fn manifests_runner_kubernetes_section_parses_with_podci_k8s() {
    let path = repo_root().join("deploy/manifests/runner.toml");
    let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let whole = format!("[[runners]]\ntoken = \"glrt-test\"\n{body}");
    let cfg =
        KubernetesConfig::from_runner_config_toml(&whole).unwrap_or_else(|e| panic!("runner.toml: {e}"));
    let kustomization = std::fs::read_to_string(repo_root().join("deploy/manifests/kustomization.yaml"))
        .expect("kustomization.yaml");
    let k = yaml_docs(&kustomization, "kustomization.yaml");
    assert_eq!(
        k[0]["namespace"].as_str(),
        Some(cfg.namespace.as_str()),
        "job Pods run where the Role is"
    );
}
