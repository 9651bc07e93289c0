//! The real `kube` client against the fake server: discovery, Pod CRUD, watch, logs,
//! exec and attach over WebSocket, secrets in env and volumes, HTTPS, and the faults the
//! control API injects.

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use podci_fake_kube::{FakeKube, Options};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn client(fake: &FakeKube) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig("ci-jobs")).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn pod(name: &str, script: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "podci", "job": name}},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "build", "image": "debian:bookworm", "command": ["sh", "-c", script]}]}
    }))
    .expect("pod")
}

async fn wait_for(api: &Api<Pod>, name: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(p) = api.get(name).await
            && f(&p)
        {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn build_running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_crud_list_watch_logs() {
    let fake = FakeKube::start(Options::default()).await.unwrap();
    let c = client(&fake).await;
    let v = c.apiserver_version().await.expect("version");
    assert!(v.git_version.starts_with("v0.0.0-master"));
    let pods: Api<Pod> = Api::namespaced(c.clone(), "ci-jobs");
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();

    let mut w = pods
        .watch(&WatchParams::default().labels("app=podci"), &rv)
        .await
        .unwrap()
        .boxed();
    pods.create(
        &PostParams::default(),
        &pod("ok-1", "echo hello; echo oops >&2; exit 0"),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("fail-1", "exit 3"))
        .await
        .unwrap();
    let err = pods
        .create(&PostParams::default(), &pod("ok-1", "true"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        e => panic!("unexpected {e}"),
    }
    let done = wait_for(&pods, "ok-1", |p| phase(p) == "Succeeded").await;
    let cs = &done.status.unwrap().container_statuses.unwrap()[0];
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let failed = wait_for(&pods, "fail-1", |p| phase(p) == "Failed").await;
    let t = failed.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 3);

    // The watch saw both pods reach their final phase.
    let mut finals = std::collections::BTreeMap::new();
    while finals.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WatchEvent::Modified(p) = ev {
            let ph = phase(&p);
            if ph == "Succeeded" || ph == "Failed" {
                finals.insert(p.metadata.name.unwrap(), ph);
            }
        }
    }
    assert_eq!(finals["ok-1"], "Succeeded");

    let sel = pods
        .list(&ListParams::default().labels("job=fail-1"))
        .await
        .unwrap();
    assert_eq!(sel.items.len(), 1);
    let sel = pods
        .list(&ListParams::default().fields("status.phase=Succeeded"))
        .await
        .unwrap();
    assert_eq!(
        sel.items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["ok-1"]
    );

    let log = pods.logs("ok-1", &LogParams::default()).await.unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(lines, ["hello", "oops"]);

    let events: Api<Event> = Api::namespaced(c.clone(), "ci-jobs");
    let evs = events
        .list(&ListParams::default().fields("involvedObject.name=ok-1"))
        .await
        .unwrap();
    let reasons: Vec<String> = evs.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert_eq!(reasons, ["Scheduled", "Pulled", "Created", "Started"]);

    pods.delete("ok-1", &DeleteParams::default()).await.unwrap();
    let gone = pods.get_opt("ok-1").await.unwrap();
    assert!(gone.is_none(), "a finished pod is removed at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_logs_exec_and_attach() {
    let fake = FakeKube::start(Options::default()).await.unwrap();
    let c = client(&fake).await;
    let pods: Api<Pod> = Api::namespaced(c, "ci-jobs");
    pods.create(
        &PostParams::default(),
        &pod("logs-1", "for i in 1 2 3; do echo line $i; sleep 0.2; done"),
    )
    .await
    .unwrap();
    wait_for(&pods, "logs-1", build_running).await;
    let stream = pods
        .log_stream(
            "logs-1",
            &LogParams {
                follow: true,
                timestamps: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<String> = stream.lines().try_collect().await.unwrap();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert!(l.ends_with(&format!(" line {}", i + 1)), "{l}");
    }

    // exec: kube speaks v5 (the fake prefers it) and reads the exit code from channel 3.
    let mut ex = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
        "spec": {"containers": [{"name": "build", "image": "x", "command": ["sh"], "stdin": true, "stdinOnce": true},
                                {"name": "helper", "image": "x", "command": ["sleep", "3600"]}]}});
    ex["spec"]["restartPolicy"] = json!("Never");
    pods.create(&PostParams::default(), &serde_json::from_value(ex).unwrap())
        .await
        .unwrap();
    wait_for(&pods, "shell", build_running).await;
    let mut p = pods
        .exec(
            "shell",
            ["sh", "-c", "cat; echo done >&2; exit 5"],
            &AttachParams::default()
                .container("helper")
                .stdin(true)
                .stderr(true),
        )
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"from-stdin\n").await.unwrap();
    // Shutting the writer down makes kube send v5's CLOSE signal: cat sees EOF.
    stdin.shutdown().await.unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let mut err = String::new();
    p.stderr().unwrap().read_to_string(&mut err).await.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "from-stdin\n");
    assert_eq!(err, "done\n");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status.details.unwrap().causes.unwrap()[0].message.clone();
    assert_eq!(code.as_deref(), Some("5"));

    // attach to the shell waiting on stdin, send a script, read its output.
    let mut a = pods
        .attach(
            "shell",
            &AttachParams::default()
                .container("build")
                .stdin(true)
                .stderr(false),
        )
        .await
        .unwrap();
    let mut stdin = a.stdin().unwrap();
    stdin.write_all(b"echo attached; exit 4\n").await.unwrap();
    let mut out = String::new();
    a.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "attached\n");
    let st = a.take_status().unwrap().await.unwrap();
    assert_eq!(
        st.status.as_deref(),
        Some("Success"),
        "attach reports Success whatever the exit code"
    );
    let p = wait_for(&pods, "shell", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].state.as_ref().is_some_and(|s| s.terminated.is_some()))
    })
    .await;
    let t = p.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 4);
    assert_eq!(
        phase(&pods.get("shell").await.unwrap()),
        "Running",
        "helper still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_configmaps_volumes_and_env() {
    let fake = FakeKube::start(Options::default()).await.unwrap();
    let c = client(&fake).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "ci-jobs");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "ci-jobs");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cret", "user": "bob"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a.txt": "from configmap"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let s = secrets.get("creds").await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(s.data.unwrap()["token"].0, b"s3cret");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "ci-jobs");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "vols"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "work", "emptyDir": {}}, {"name": "sec", "secret": {"secretName": "creds"}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
        "containers": [{"name": "build", "image": "x", "workingDir": "/work",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "command": ["sh", "-c", "echo $TOKEN $POD; cat $FAKE_KUBE_ROOTFS/etc/sec/user; echo; cat $FAKE_KUBE_ROOTFS/etc/cfg/a.txt; echo; echo made > out.txt"],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "sec", "mountPath": "/etc/sec"}, {"name": "cfg", "mountPath": "/etc/cfg"}]}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_for(&pods, "vols", |p| phase(p) == "Succeeded").await;
    let log = pods.logs("vols", &LogParams::default()).await.unwrap();
    assert_eq!(log, "s3cret vols\nbob\nfrom configmap\n");
    let dir = fake.control().volume_dir("ci-jobs", "vols", "work").unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("out.txt")).unwrap(), "made\n");

    // A missing secret: CreateContainerConfigError, the Pod stays Pending.
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "nosecret"}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "build", "image": "x", "command": ["true"], "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}]}]}})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let p = wait_for(&pods, "nosecret", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| {
                c[0].state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.clone())
                    .as_deref()
                    == Some("CreateContainerConfigError")
            })
    })
    .await;
    assert_eq!(phase(&p), "Pending");

    // A Secret owned by a Pod is garbage-collected with it.
    let uid = pods.get("vols").await.unwrap().metadata.uid.unwrap();
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owned", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "vols", "uid": uid}]}})).unwrap())
        .await
        .unwrap();
    pods.delete("vols", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("owned").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_forbidden() {
    let mut opts = Options {
        tls: true,
        ..Default::default()
    };
    opts.tokens.insert(
        "ro".into(),
        podci_fake_kube::TokenGrant::restricted(
            "system:serviceaccount:ci-jobs:ro",
            &[("pods", "list"), ("pods", "get")],
        ),
    );
    let fake = FakeKube::start(opts).await.unwrap();
    assert!(fake.url().starts_with("https://"));
    let pods: Api<Pod> = Api::namespaced(client(&fake).await, "ci-jobs");
    pods.create(&PostParams::default(), &pod("tls-1", "true"))
        .await
        .unwrap();
    let kc = Kubeconfig::from_yaml(&fake.kubeconfig_for("ro", "ci-jobs")).unwrap();
    let ro = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let ro: Api<Pod> = Api::namespaced(ro, "ci-jobs");
    assert_eq!(ro.list(&ListParams::default()).await.unwrap().items.len(), 1);
    match ro.delete("tls-1", &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(
                s.message,
                "pods \"tls-1\" is forbidden: User \"system:serviceaccount:ci-jobs:ro\" cannot delete resource \"pods\" in API group \"\" in the namespace \"ci-jobs\""
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults() {
    let fake = FakeKube::start(Options::default()).await.unwrap();
    let ctl = fake.control();
    let pods: Api<Pod> = Api::namespaced(client(&fake).await, "ci-jobs");
    pods.create(&PostParams::default(), &pod("long", "sleep 600"))
        .await
        .unwrap();
    wait_for(&pods, "long", build_running).await;

    // 500s reach the caller (kube's client retries 503 by itself).
    ctl.fail_next_requests(2, 500);
    for _ in 0..2 {
        match pods.get("long").await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"))
            }
            other => panic!("expected 500, got {other:?}"),
        }
    }
    assert!(pods.get("long").await.is_ok(), "the burst is over");

    // A dropped watch ends without a clean end of stream.
    let rv = pods.get("long").await.unwrap().metadata.resource_version.unwrap();
    let mut w = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    ctl.drop_streams();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "watch ended after the drop");

    // Dropped log follows and exec sessions end mid-stream too.
    let mut logs = pods
        .log_stream(
            "long",
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .lines();
    let mut ex = pods
        .exec("long", ["sleep", "60"], &AttachParams::default().stderr(false))
        .await
        .unwrap();
    let _ex_out = ex.stdout().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ctl.drop_streams();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = logs.next().await {}
        // kube's exec task ends when the connection is cut.
        let _ = ex.join().await;
    })
    .await;
    assert!(ended.is_ok(), "log follow and exec ended after the drop");

    // The same faults over HTTP, for the binary and other languages.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/__fake/fail?n=1&code=500", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    match pods.get("long").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 500),
        other => panic!("expected 500, got {other:?}"),
    }

    // 410 on the next watch, as an ERROR event in a 200 stream.
    ctl.expire_next_watch();
    let mut w = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected the Expired error event, got {other:?}"),
    }

    // Latency.
    ctl.set_latency(Duration::from_millis(300));
    let t = std::time::Instant::now();
    pods.get("long").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    ctl.set_latency(Duration::ZERO);

    // Node loss fails the running Pod.
    ctl.lose_node();
    let p = wait_for(&pods, "long", |p| phase(p) == "Failed").await;
    assert_eq!(p.status.unwrap().reason.as_deref(), Some("NodeLost"));

    // A Pod deleted by someone else.
    pods.create(&PostParams::default(), &pod("victim", "sleep 600"))
        .await
        .unwrap();
    wait_for(&pods, "victim", build_running).await;
    assert!(ctl.delete_pod("ci-jobs", "victim"));
    assert!(pods.get_opt("victim").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_and_unschedulable() {
    let mut images = std::collections::BTreeMap::new();
    images.insert("debian:bookworm".to_string(), vec!["sh".to_string()]);
    let fake = FakeKube::start(Options {
        images: Some(images),
        ..Default::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client(&fake).await, "ci-jobs");
    let mut p = pod("nope", "true");
    p.spec.as_mut().unwrap().containers[0].image = Some("registry.invalid/nope:1".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    let reason = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
    };
    wait_for(&pods, "nope", |p| reason(p).as_deref() == Some("ErrImagePull")).await;
    wait_for(&pods, "nope", |p| {
        reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    match pods.logs("nope", &LogParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            "container \"build\" in pod \"nope\" is waiting to start: image can't be pulled"
        ),
        other => panic!("{other:?}"),
    }
    // A default (graceful) delete of a Pod that never ran completes promptly.
    pods.delete("nope", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pods.get_opt("nope").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "pod never went away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let fake = FakeKube::start(Options {
        unschedulable: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client(&fake).await, "ci-jobs");
    pods.create(&PostParams::default(), &pod("stuck", "true"))
        .await
        .unwrap();
    let p = wait_for(&pods, "stuck", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.reason.as_deref() == Some("Unschedulable")))
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    assert!(p.spec.unwrap().node_name.is_none());
}

/// With container roots, volumes appear at their mountPaths and other writes stay in
/// the container; exec enters the same root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_roots_mount_volumes_at_their_paths() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok();
    if !root || !unshare {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with util-linux: container roots must work"
        );
        eprintln!("SKIPPING container_roots test: needs root and unshare");
        return;
    }
    let fake = FakeKube::start(Options {
        container_roots: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = client(&fake).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "ci-jobs");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c, "ci-jobs");
    let leak = format!("/etc/fake-kube-leak-{}", std::process::id());
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "rooted"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "builds", "emptyDir": {}}, {"name": "creds", "secret": {"secretName": "creds"}}],
        "containers": [{"name": "build", "image": "x", "workingDir": "/builds/project",
            "command": ["sh", "-c", format!("pwd; cat /etc/creds/token; echo; echo made > /builds/out; touch {leak}; ls /var/run/secrets/kubernetes.io/serviceaccount; sleep 30")],
            "volumeMounts": [{"name": "builds", "mountPath": "/builds"}, {"name": "creds", "mountPath": "/etc/creds"}]}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_for(&pods, "rooted", build_running).await;
    let mut out = String::new();
    for _ in 0..50 {
        out = pods.logs("rooted", &LogParams::default()).await.unwrap();
        if out.contains("token") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(out, "/builds/project\ns3cret\nca.crt\nnamespace\ntoken\n");
    let vol = fake.control().volume_dir("ci-jobs", "rooted", "builds").unwrap();
    assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "made\n");
    assert!(
        !std::path::Path::new(&leak).exists(),
        "writes outside volumes stay in the container"
    );
    let mut ex = pods
        .exec(
            "rooted",
            [
                "sh".to_string(),
                "-c".to_string(),
                format!("pwd; cat /builds/out; [ -e {leak} ] && echo sees-the-container-overlay"),
            ],
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    let mut s = String::new();
    ex.stdout().unwrap().read_to_string(&mut s).await.unwrap();
    assert_eq!(s, "/builds/project\nmade\nsees-the-container-overlay\n");
    // A binary the container's root lacks fails as the runtime reports it, on the
    // status channel, not as a shell's exit 127.
    let missing = format!("/builds/no-such-binary-{}", std::process::id());
    let mut ex = pods
        .exec(
            "rooted",
            [missing.as_str()],
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    let status = ex.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"), "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("no such file or directory"),
        "{status:?}"
    );
    pods.delete(
        "rooted",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// kube-runtime's watcher (initial list, watch with bookmarks, re-list after a 410) keeps
/// an accurate view across the faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watcher_recovers_from_expired_watches() {
    use kube::runtime::{WatchStreamExt, watcher};
    let fake = FakeKube::start(Options::default()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client(&fake).await, "ci-jobs");
    let mut stream = watcher(pods.clone(), watcher::Config::default().labels("app=podci"))
        .default_backoff()
        .applied_objects()
        .boxed();
    pods.create(&PostParams::default(), &pod("w-1", "sleep 30"))
        .await
        .unwrap();
    let next_named = |name: &'static str| move |p: &Pod| p.metadata.name.as_deref() == Some(name);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(p)) = stream.next().await {
            if next_named("w-1")(&p) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen);
    // Expire the history and cut the stream: the watcher re-lists and sees w-2.
    fake.control().compact();
    fake.control().expire_next_watch();
    fake.control().drop_streams();
    pods.create(&PostParams::default(), &pod("w-2", "sleep 30"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(r) = stream.next().await {
            if let Ok(p) = r
                && next_named("w-2")(&p)
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen, "the watcher recovered and saw the new pod");
}
