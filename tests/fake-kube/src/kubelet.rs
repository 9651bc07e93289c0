//! The fake scheduler and kubelet: binds each Pod to the node `localhost`, "pulls" images
//! from the configured set, prepares volumes as directories, runs every container's
//! command as a local process group, records its output as the container log, and
//! reports containerStatuses, conditions, phase and Events the way the recorded kubelet
//! does. It also serves `pods/log`, and stops containers on delete, deadline or node loss.

use crate::Shared;
use crate::api::{self, Query};
use crate::store::Key;
use crate::util::{self, ApiError, fmt_nanos, fmt_secs};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::SinkExt;
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, broadcast, watch};

#[derive(Debug, Clone)]
pub enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started: Timestamp,
    },
    Terminated {
        exit: i32,
        reason: String,
        started: Timestamp,
        finished: Timestamp,
    },
}

pub struct LogLine {
    pub ts: Timestamp,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct LogBuf {
    pub lines: Vec<LogLine>,
    pub closed: bool,
}

pub struct ContainerRt {
    pub name: String,
    pub image: String,
    pub spec: Value,
    pub container_id: String,
    pub state: Mutex<CState>,
    /// Ever started: the log exists and `previous` semantics apply.
    pub started_once: AtomicBool,
    pub pulled: AtomicBool,
    pub log: Mutex<LogBuf>,
    pub log_version: watch::Sender<u64>,
    /// Raw output chunks (channel 1 or 2) for attach.
    pub output: broadcast::Sender<(u8, Bytes)>,
    pub stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    pub pid: Mutex<Option<i32>>,
    pub env: Mutex<Vec<(String, String)>>,
    pub cwd: Mutex<PathBuf>,
    pub exited: Notify,
    /// Attach clients currently connected (for stdinOnce).
    pub attached: AtomicU32,
    /// Runs in a root of its own (Options::container_roots): exec must enter it.
    pub in_root: Mutex<bool>,
}

impl ContainerRt {
    pub fn state(&self) -> CState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set_state(&self, s: CState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
    pub fn is_running(&self) -> bool {
        matches!(self.state(), CState::Running { .. })
    }
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn cwd(&self) -> PathBuf {
        self.cwd.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// What an exec must enter when this container has a root of its own: its mount
    /// namespace, root and working directory, opened now (before fork) so that the
    /// child only makes system calls. `None` when the container runs in the host's root.
    pub fn exec_root(&self) -> Option<std::io::Result<ExecRoot>> {
        let in_root = *self.in_root.lock().unwrap_or_else(|e| e.into_inner());
        let pid = self.pid()?;
        if !in_root {
            return None;
        }
        let open = |what: &str| std::fs::File::open(format!("/proc/{pid}/{what}"));
        Some((|| {
            Ok(ExecRoot {
                mnt: open("ns/mnt")?,
                root: open("root")?,
                cwd: open("cwd")?,
            })
        })())
    }
    fn pid(&self) -> Option<i32> {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn push_log(&self, ts: Timestamp, data: Vec<u8>) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .push(LogLine { ts, data });
        self.log_version.send_modify(|v| *v += 1);
    }
    fn close_log(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.log_version.send_modify(|v| *v += 1);
    }
}

#[derive(Default)]
pub struct PodFlags {
    pub deadline_exceeded: bool,
    pub node_lost: bool,
    /// The sandbox (pause container) is up: the Pod has its IP.
    pub sandbox_ready: bool,
    /// Conditions as last written, to keep lastTransitionTime stable.
    pub last_ready: Option<(bool, String)>,
}

pub struct PodRuntime {
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub dir: PathBuf,
    pub containers: Vec<Arc<ContainerRt>>,
    pub flags: Mutex<PodFlags>,
    pub wake: Notify,
    delete: watch::Sender<Option<i64>>,
    pub pod_ip: String,
    pub start_time: String,
}

impl PodRuntime {
    pub fn container(&self, name: &str) -> Option<Arc<ContainerRt>> {
        self.containers.iter().find(|c| c.name == name).cloned()
    }
    pub fn request_delete(&self, grace: i64) {
        self.delete.send_replace(Some(grace));
    }
    fn flags(&self) -> std::sync::MutexGuard<'_, PodFlags> {
        self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// SIGKILL every process group at once (server shutdown, grace 0).
    pub fn kill_all_now(&self) {
        for c in &self.containers {
            if let Some(pid) = c.pid() {
                // SAFETY: killpg only sends a signal; the group was created by us.
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
        }
    }
}

pub fn pod_dir(shared: &Shared, uid: &str) -> PathBuf {
    shared.work_dir.join("pods").join(uid)
}

static POD_IP: AtomicU32 = AtomicU32::new(11);

pub fn spawn_pod(shared: Arc<Shared>, ns: String, name: String) {
    tokio::spawn(async move {
        run_pod(shared, ns, name).await;
    });
}

fn pod_key(rt: &PodRuntime) -> Key {
    Key::new("pods", &rt.ns, &rt.name)
}

/// Record an Event about a Pod; a repeat of the same reason and message bumps `count`.
pub fn event(
    shared: &Shared,
    pod: &Value,
    reason: &str,
    message: &str,
    etype: &str,
    field_path: Option<&str>,
) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let now = util::now_rfc3339();
    let mut st = shared.lock();
    // Scan the namespace's events in place: cloning every event of the namespace for
    // each new one made a Pod start slower with every Pod that came before it.
    let existing = st
        .objects
        .range(Key::new("events", &ns, "")..)
        .take_while(|(k, _)| k.resource == "events" && k.namespace == ns)
        .find(|(_, e)| {
            e["involvedObject"]["uid"] == pod["metadata"]["uid"]
                && e["reason"].as_str() == Some(reason)
                && e["message"].as_str() == Some(message)
                && e["involvedObject"]["fieldPath"].as_str() == field_path
        })
        .map(|(k, _)| k.name.clone());
    if let Some(ename) = existing {
        st.modify(&Key::new("events", &ns, &ename), |o| {
            o["count"] = json!(o["count"].as_i64().unwrap_or(1) + 1);
            o["lastTimestamp"] = json!(now);
        });
        return;
    }
    let mut involved = json!({"kind": "Pod", "namespace": ns, "name": name, "uid": pod["metadata"]["uid"], "apiVersion": "v1", "resourceVersion": pod["metadata"]["resourceVersion"]});
    if let Some(fp) = field_path {
        involved["fieldPath"] = json!(fp);
    }
    // Like client-go's recorder: the suffix is the time in nanoseconds, so names sort
    // by creation and a list comes back in the order the events happened.
    let ename = format!("{name}.{:016x}", util::monotonic_nanos());
    let scheduler = reason == "Scheduled" || reason == "FailedScheduling";
    let obj = if scheduler {
        json!({"metadata": {"name": ename, "namespace": ns, "uid": util::new_uid(), "resourceVersion": "", "creationTimestamp": now},
            "involvedObject": involved, "reason": reason, "message": message, "source": {},
            "firstTimestamp": null, "lastTimestamp": null, "type": etype,
            "eventTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
            "action": if reason == "Scheduled" { "Binding" } else { "Scheduling" },
            "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler-localhost"})
    } else {
        json!({"metadata": {"name": ename, "namespace": ns, "uid": util::new_uid(), "resourceVersion": "", "creationTimestamp": now},
            "involvedObject": involved, "reason": reason, "message": message,
            "source": {"component": "kubelet", "host": "localhost"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": etype,
            "eventTime": null, "reportingComponent": "", "reportingInstance": ""})
    };
    st.create(Key::new("events", &ns, &ename), obj);
}

fn get_pod(shared: &Shared, ns: &str, name: &str) -> Option<Value> {
    shared.lock().get(&Key::new("pods", ns, name)).cloned()
}

async fn run_pod(shared: Arc<Shared>, ns: String, name: String) {
    let t = shared.opts.timing.clone();
    pause(t.schedule).await;
    let key = Key::new("pods", &ns, &name);
    let now = util::now_rfc3339();
    if shared.opts.unschedulable {
        let pod = shared.lock().modify(&key, |o| {
            o["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "lastProbeTime": null, "lastTransitionTime": now,
                "reason": "Unschedulable", "message": "0/1 nodes are available: 1 node(s) were unschedulable."}], "qosClass": o["status"]["qosClass"]});
        });
        if let Some(p) = pod {
            event(
                &shared,
                &p,
                "FailedScheduling",
                "0/1 nodes are available: 1 node(s) were unschedulable.",
                "Warning",
                None,
            );
        }
        return;
    }
    let Some(pod) = shared.lock().modify(&key, |o| {
        // spec.nodeName goes after serviceAccount, as in the server's field order.
        let mut spec = Map::new();
        if let Some(m) = o["spec"].as_object() {
            for (k, v) in m {
                if k == "securityContext" && !m.contains_key("nodeName") {
                    spec.insert("nodeName".into(), json!("localhost"));
                }
                spec.insert(k.clone(), v.clone());
            }
        }
        spec.insert("nodeName".into(), json!("localhost"));
        o["spec"] = Value::Object(spec);
        o["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}], "qosClass": o["status"]["qosClass"]});
    }) else {
        return;
    };
    event(
        &shared,
        &pod,
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to localhost"),
        "Normal",
        None,
    );
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let dir = pod_dir(&shared, &uid);
    let containers: Vec<Arc<ContainerRt>> = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            Arc::new(ContainerRt {
                name: c["name"].as_str().unwrap_or("").to_string(),
                image: c["image"].as_str().unwrap_or("").to_string(),
                spec: c.clone(),
                container_id: util::container_id(),
                state: Mutex::new(CState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                }),
                started_once: AtomicBool::new(false),
                pulled: AtomicBool::new(false),
                log: Mutex::new(LogBuf::default()),
                log_version: watch::channel(0).0,
                output: broadcast::channel(1024).0,
                stdin: tokio::sync::Mutex::new(None),
                pid: Mutex::new(None),
                env: Mutex::new(Vec::new()),
                cwd: Mutex::new(dir.clone()),
                exited: Notify::new(),
                attached: AtomicU32::new(0),
                in_root: Mutex::new(false),
            })
        })
        .collect();
    let (delete_tx, mut delete_rx) = watch::channel(None);
    let rt = Arc::new(PodRuntime {
        ns: ns.clone(),
        name: name.clone(),
        uid: uid.clone(),
        dir: dir.clone(),
        containers,
        flags: Mutex::new(PodFlags::default()),
        wake: Notify::new(),
        delete: delete_tx,
        pod_ip: format!("10.244.99.{}", POD_IP.fetch_add(1, Ordering::Relaxed) % 250 + 1),
        start_time: now.clone(),
    });
    shared.runtimes().insert(uid.clone(), rt.clone());
    // A delete that arrived before the runtime existed.
    if let Some(p) = get_pod(&shared, &ns, &name)
        && p["metadata"].get("deletionTimestamp").is_some()
    {
        api::finish_delete(&shared, &ns, &name);
        return;
    }
    pause(t.admit).await;
    sync_status(&shared, &rt, false);
    let deadline = pod["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs);
    let started_at = tokio::time::Instant::now();
    let grace_default = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);

    // Volumes, then containers in order, as the kubelet's SyncPod does.
    let volumes_ok = match prepare_volumes(&shared, &rt, &pod) {
        Ok(()) => true,
        Err(msg) => {
            event(&shared, &pod, "FailedMount", &msg, "Warning", None);
            false
        }
    };
    tokio::select! {
        _ = pause(t.create) => {}
        _ = delete_rx.changed() => {}
    }
    rt.flags().sandbox_ready = true;
    if volumes_ok && delete_rx.borrow().is_none() {
        for c in rt.containers.clone() {
            start_container(&shared, &rt, &pod, &c).await;
        }
    }
    pause(t.status_sync).await;
    sync_status(&shared, &rt, false);

    let deadline_at = deadline.map(|d| started_at + d);
    let mut deadline_done = false;
    loop {
        let deadline_sleep = async {
            match deadline_at {
                Some(d) if !deadline_done => tokio::time::sleep_until(d).await,
                _ => futures::future::pending().await,
            }
        };
        tokio::select! {
            _ = rt.wake.notified() => {
                pause(t.status_sync).await;
                sync_status(&shared, &rt, false);
            }
            _ = deadline_sleep => {
                deadline_done = true;
                let all_done = rt.containers.iter().all(|c| matches!(c.state(), CState::Terminated { .. }));
                if all_done { continue; }
                rt.flags().deadline_exceeded = true;
                sync_status(&shared, &rt, false);
                if let Some(p) = get_pod(&shared, &ns, &name) {
                    event(&shared, &p, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline", "Normal", None);
                }
                let shared2 = shared.clone();
                let rt2 = rt.clone();
                tokio::spawn(async move {
                    stop_containers(&shared2, &rt2, grace_default).await;
                    pause(shared2.opts.timing.status_sync).await;
                    sync_status(&shared2, &rt2, false);
                });
            }
            // wait_for also sees a delete that arrived before this loop started.
            r = async { delete_rx.wait_for(|d| d.is_some()).await.map(|g| *g) } => {
                let grace = match r {
                    Ok(g) => g.unwrap_or(grace_default),
                    Err(_) => return,
                };
                stop_containers(&shared, &rt, grace).await;
                pause(t.status_sync.min(Duration::from_millis(50))).await;
                sync_status(&shared, &rt, true);
                api::finish_delete(&shared, &ns, &name);
                return;
            }
        }
        if get_pod(&shared, &ns, &name).is_none() {
            rt.kill_all_now();
            return;
        }
    }
}

/// Write volumes as directories: emptyDir, hostPath (the path itself), PVC (a
/// directory per claim that outlives the Pod), secret/configMap/projected as files.
fn prepare_volumes(shared: &Shared, rt: &PodRuntime, pod: &Value) -> Result<(), String> {
    use base64::Engine;
    let vdir = rt.dir.join("volumes");
    let mk =
        |p: &PathBuf| std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    mk(&vdir)?;
    for v in pod["spec"]["volumes"].as_array().cloned().unwrap_or_default() {
        let name = v["name"].as_str().unwrap_or("");
        let dir = vdir.join(name);
        if let Some(hp) = v["hostPath"]["path"].as_str() {
            let p = PathBuf::from(hp);
            if matches!(v["hostPath"]["type"].as_str(), Some("DirectoryOrCreate")) {
                mk(&p)?;
            }
            let _ = std::os::unix::fs::symlink(&p, &dir);
            continue;
        }
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            if shared
                .lock()
                .get(&Key::new("persistentvolumeclaims", &rt.ns, claim))
                .is_none()
            {
                return Err(format!("persistentvolumeclaim \"{claim}\" not found"));
            }
            let p = shared.work_dir.join("pvcs").join(&rt.ns).join(claim);
            mk(&p)?;
            let _ = std::os::unix::fs::symlink(&p, &dir);
            continue;
        }
        mk(&dir)?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let source_files = |kind: &str, src: &Value| -> Result<Vec<(String, Vec<u8>)>, String> {
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            let (res, key_name) = if kind == "secret" {
                ("secrets", "secretName")
            } else {
                ("configmaps", "name")
            };
            let oname = src[key_name].as_str().unwrap_or("");
            let obj = shared.lock().get(&Key::new(res, &rt.ns, oname)).cloned();
            let Some(obj) = obj else {
                if src["optional"].as_bool() == Some(true) {
                    return Ok(files);
                }
                let what = if kind == "secret" { "secret" } else { "configmap" };
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : {what} \"{oname}\" not found"
                ));
            };
            let mut data: Vec<(String, Vec<u8>)> = Vec::new();
            for (k, val) in obj["data"].as_object().cloned().unwrap_or_default() {
                let s = val.as_str().unwrap_or("");
                let bytes = if kind == "secret" {
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .unwrap_or_default()
                } else {
                    s.as_bytes().to_vec()
                };
                data.push((k, bytes));
            }
            match src["items"].as_array() {
                Some(items) => {
                    for it in items {
                        let k = it["key"].as_str().unwrap_or("");
                        let p = it["path"].as_str().unwrap_or(k);
                        if let Some((_, b)) = data.iter().find(|(dk, _)| dk == k) {
                            files.push((p.to_string(), b.clone()));
                        }
                    }
                }
                None => files.extend(data),
            }
            Ok(files)
        };
        if v.get("secret").is_some() {
            files.extend(source_files("secret", &v["secret"])?);
        } else if v.get("configMap").is_some() {
            files.extend(source_files("configMap", &v["configMap"])?);
        } else if let Some(sources) = v["projected"]["sources"].as_array() {
            for s in sources {
                if s.get("serviceAccountToken").is_some() {
                    let p = s["serviceAccountToken"]["path"].as_str().unwrap_or("token");
                    files.push((
                        p.to_string(),
                        format!("fake-sa-token-{}", util::name_suffix(16)).into_bytes(),
                    ));
                } else if s.get("configMap").is_some() {
                    files.extend(source_files("configMap", &s["configMap"])?);
                } else if s.get("secret").is_some() {
                    let mut src = s["secret"].clone();
                    src["secretName"] = src["name"].clone();
                    files.extend(source_files("secret", &src)?);
                } else if let Some(items) = s["downwardAPI"]["items"].as_array() {
                    for it in items {
                        let p = it["path"].as_str().unwrap_or("");
                        let val = field_ref(pod, it["fieldRef"]["fieldPath"].as_str().unwrap_or(""), rt);
                        files.push((p.to_string(), val.into_bytes()));
                    }
                }
            }
        }
        for (p, b) in files {
            let f = dir.join(&p);
            if let Some(parent) = f.parent() {
                mk(&parent.to_path_buf())?;
            }
            std::fs::write(&f, b).map_err(|e| format!("cannot write {}: {e}", f.display()))?;
        }
    }
    // A root per Pod where each container's mountPaths appear as links to the volumes.
    let root = rt.dir.join("rootfs");
    mk(&root)?;
    for c in pod["spec"]["containers"].as_array().cloned().unwrap_or_default() {
        for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
            let mp = m["mountPath"].as_str().unwrap_or("").trim_start_matches('/');
            let vol = m["name"].as_str().unwrap_or("");
            if mp.is_empty() {
                continue;
            }
            let link = root.join(mp);
            if let Some(parent) = link.parent() {
                mk(&parent.to_path_buf())?;
            }
            let _ = std::os::unix::fs::symlink(vdir.join(vol), &link);
        }
    }
    Ok(())
}

fn field_ref(pod: &Value, path: &str, rt: &PodRuntime) -> String {
    match path {
        "metadata.name" => rt.name.clone(),
        "metadata.namespace" => rt.ns.clone(),
        "metadata.uid" => rt.uid.clone(),
        "spec.nodeName" => "localhost".into(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].as_str().unwrap_or("").into(),
        "status.podIP" => rt.pod_ip.clone(),
        "status.hostIP" => "192.0.2.2".into(),
        p => {
            if let Some(l) = p
                .strip_prefix("metadata.labels['")
                .and_then(|s| s.strip_suffix("']"))
            {
                return pod["metadata"]["labels"][l].as_str().unwrap_or("").into();
            }
            if let Some(a) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|s| s.strip_suffix("']"))
            {
                return pod["metadata"]["annotations"][a].as_str().unwrap_or("").into();
            }
            String::new()
        }
    }
}

/// The container's environment as the kubelet builds it; an error is the
/// CreateContainerConfigError message.
fn container_env(
    shared: &Shared,
    rt: &PodRuntime,
    pod: &Value,
    c: &Value,
) -> Result<Vec<(String, String)>, String> {
    use base64::Engine;
    let host_path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let path = shared
        .opts
        .path_prepend
        .iter()
        .map(|p| p.display().to_string())
        .chain(std::iter::once(host_path))
        .collect::<Vec<_>>()
        .join(":");
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("HOSTNAME".into(), rt.name.clone()),
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT".into(), shared.port.to_string()),
        (
            "FAKE_KUBE_ROOTFS".into(),
            rt.dir.join("rootfs").display().to_string(),
        ),
    ];
    let lookup = |res: &str, name: &str| shared.lock().get(&Key::new(res, &rt.ns, name)).cloned();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(a, _)| *a != k);
        env.push((k, v));
    };
    for ef in c["envFrom"].as_array().cloned().unwrap_or_default() {
        let prefix = ef["prefix"].as_str().unwrap_or("");
        for (res, key, secret) in [
            ("secrets", "secretRef", true),
            ("configmaps", "configMapRef", false),
        ] {
            if let Some(n) = ef[key]["name"].as_str() {
                match lookup(res, n) {
                    Some(o) => {
                        for (k, v) in o["data"].as_object().cloned().unwrap_or_default() {
                            let s = v.as_str().unwrap_or("");
                            let val = if secret {
                                String::from_utf8_lossy(
                                    &base64::engine::general_purpose::STANDARD
                                        .decode(s)
                                        .unwrap_or_default(),
                                )
                                .into_owned()
                            } else {
                                s.to_string()
                            };
                            set(&mut env, format!("{prefix}{k}"), val);
                        }
                    }
                    None if ef[key]["optional"].as_bool() == Some(true) => {}
                    None => {
                        return Err(format!(
                            "{} \"{n}\" not found",
                            if secret { "secret" } else { "configmap" }
                        ));
                    }
                }
            }
        }
    }
    for e in c["env"].as_array().cloned().unwrap_or_default() {
        let k = e["name"].as_str().unwrap_or("").to_string();
        if let Some(v) = e["value"].as_str() {
            // $(VAR) references to earlier variables, as the kubelet expands them.
            let mut out = v.to_string();
            for (ek, ev) in &env {
                out = out.replace(&format!("$({ek})"), ev);
            }
            set(&mut env, k, out);
            continue;
        }
        let vf = &e["valueFrom"];
        if let Some(r) = vf.get("secretKeyRef") {
            let (n, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
            match lookup("secrets", n) {
                Some(o) => match o["data"][key].as_str() {
                    Some(b) => set(
                        &mut env,
                        k,
                        String::from_utf8_lossy(
                            &base64::engine::general_purpose::STANDARD
                                .decode(b)
                                .unwrap_or_default(),
                        )
                        .into_owned(),
                    ),
                    None if r["optional"].as_bool() == Some(true) => {}
                    None => return Err(format!("couldn't find key {key} in Secret {}/{n}", rt.ns)),
                },
                None if r["optional"].as_bool() == Some(true) => {}
                None => return Err(format!("secret \"{n}\" not found")),
            }
        } else if let Some(r) = vf.get("configMapKeyRef") {
            let (n, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
            match lookup("configmaps", n) {
                Some(o) => match o["data"][key].as_str() {
                    Some(s) => set(&mut env, k, s.to_string()),
                    None if r["optional"].as_bool() == Some(true) => {}
                    None => {
                        return Err(format!("couldn't find key {key} in ConfigMap {}/{n}", rt.ns));
                    }
                },
                None if r["optional"].as_bool() == Some(true) => {}
                None => return Err(format!("configmap \"{n}\" not found")),
            }
        } else if let Some(r) = vf.get("fieldRef") {
            set(
                &mut env,
                k,
                field_ref(pod, r["fieldPath"].as_str().unwrap_or(""), rt),
            );
        }
    }
    Ok(env)
}

fn image_known(shared: &Shared, image: &str) -> Option<Vec<String>> {
    match &shared.opts.images {
        None => Some(vec!["sh".into()]),
        Some(m) => m.get(image).cloned(),
    }
}

fn image_id(image: &str) -> String {
    use std::hash::{Hash, Hasher};
    let repo = match image.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => r,
        _ => image,
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    image.hash(&mut h);
    let a = h.finish();
    format!(
        "{repo}@sha256:{a:016x}{:016x}{a:016x}{:016x}",
        a.rotate_left(17),
        a.rotate_left(41)
    )
}

async fn start_container(shared: &Arc<Shared>, rt: &Arc<PodRuntime>, pod: &Value, c: &Arc<ContainerRt>) {
    let field = format!("spec.containers{{{}}}", c.name);
    let Some(entrypoint) = image_known(shared, &c.image) else {
        // Pull failures cycle ErrImagePull -> ImagePullBackOff -> ErrImagePull.
        let shared = shared.clone();
        let rt = rt.clone();
        let c = c.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            let t = shared.opts.timing.clone();
            let msg = format!(
                "rpc error: code = NotFound desc = failed to pull and unpack image \"{i}\": failed to resolve reference \"{i}\": {i}: not found",
                i = c.image
            );
            loop {
                event(
                    &shared,
                    &pod,
                    "Pulling",
                    &format!("Pulling image \"{}\"", c.image),
                    "Normal",
                    Some(&field),
                );
                tokio::time::sleep(t.pull_error).await;
                if get_pod(&shared, &rt.ns, &rt.name).is_none() {
                    return;
                }
                c.set_state(CState::Waiting {
                    reason: "ErrImagePull".into(),
                    message: Some(msg.clone()),
                });
                event(
                    &shared,
                    &pod,
                    "Failed",
                    &format!("Failed to pull image \"{}\": {msg}", c.image),
                    "Warning",
                    Some(&field),
                );
                event(
                    &shared,
                    &pod,
                    "Failed",
                    "Error: ErrImagePull",
                    "Warning",
                    Some(&field),
                );
                sync_status(&shared, &rt, false);
                tokio::time::sleep(t.pull_backoff).await;
                if get_pod(&shared, &rt.ns, &rt.name).is_none() {
                    return;
                }
                c.set_state(CState::Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: Some(format!("Back-off pulling image \"{}\"", c.image)),
                });
                event(
                    &shared,
                    &pod,
                    "BackOff",
                    &format!("Back-off pulling image \"{}\"", c.image),
                    "Normal",
                    Some(&field),
                );
                event(
                    &shared,
                    &pod,
                    "Failed",
                    "Error: ImagePullBackOff",
                    "Warning",
                    Some(&field),
                );
                sync_status(&shared, &rt, false);
                tokio::time::sleep(t.pull_backoff).await;
                if get_pod(&shared, &rt.ns, &rt.name).is_none() {
                    return;
                }
            }
        });
        return;
    };
    c.pulled.store(true, Ordering::Relaxed);
    event(
        shared,
        pod,
        "Pulled",
        &format!("Container image \"{}\" already present on machine", c.image),
        "Normal",
        Some(&field),
    );
    let env = match container_env(shared, rt, pod, &c.spec) {
        Ok(e) => e,
        Err(msg) => {
            c.set_state(CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(msg.clone()),
            });
            event(
                shared,
                pod,
                "Failed",
                &format!("Error: {msg}"),
                "Warning",
                Some(&field),
            );
            return;
        }
    };
    let mut argv: Vec<String> = Vec::new();
    let cmd: Vec<String> = json_strings(&c.spec["command"]);
    let args: Vec<String> = json_strings(&c.spec["args"]);
    if cmd.is_empty() {
        argv.extend(entrypoint);
    } else {
        argv.extend(cmd);
    }
    argv.extend(args);
    let root = rt.dir.join("rootfs");
    let cwd = match c.spec["workingDir"].as_str() {
        Some(w) if root.join(w.trim_start_matches('/')).is_dir() => root.join(w.trim_start_matches('/')),
        _ => root.clone(),
    };
    let mut env = env;
    let mut home = root.clone();
    let mut cwd = cwd;
    let mut root_plan: Option<RootPlan> = None;
    if shared.opts.container_roots {
        // The process sees the volumes at their mountPaths in a root of its own.
        let mounts = c.spec["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let dst = m["mountPath"].as_str()?;
                let vol = m["name"].as_str()?;
                Some((rt.dir.join("volumes").join(vol), dst.to_string()))
            })
            .collect::<Vec<(PathBuf, String)>>();
        let inner_cwd = c.spec["workingDir"].as_str().unwrap_or("/").to_string();
        env.retain(|(k, _)| k != "FAKE_KUBE_ROOTFS");
        env.push(("FAKE_KUBE_ROOTFS".into(), String::new()));
        let base = rt.dir.join("containers").join(&c.name);
        root_plan = Some(RootPlan::new(&base, &mounts, &inner_cwd));
        home = PathBuf::from("/root");
        cwd = rt.dir.clone();
        *c.in_root.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
    *c.env.lock().unwrap_or_else(|e| e.into_inner()) = env.clone();
    *c.cwd.lock().unwrap_or_else(|e| e.into_inner()) = cwd.clone();
    let Some((prog, rest)) = argv.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(prog);
    die_with_parent(&mut cmd);
    let root_err = match root_plan.map(|plan| plan.prepare()) {
        Some(Ok(plan)) => {
            plan.apply_in_child(&mut cmd);
            None
        }
        Some(Err(e)) => Some(e),
        None => None,
    };
    cmd.args(rest)
        .env_clear()
        .envs(env)
        .env("HOME", &home)
        .current_dir(&cwd)
        .process_group(0)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if c.spec["stdin"].as_bool() == Some(true) {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    event(
        shared,
        pod,
        "Created",
        &format!("Created container {}", c.name),
        "Normal",
        Some(&field),
    );
    let started = Timestamp::now();
    let spawned = match root_err {
        Some(e) => Err(e),
        None => cmd.spawn(),
    };
    let mut child = match spawned {
        Ok(ch) => ch,
        Err(e) => {
            let msg = format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{prog}\": {}: unknown",
                if e.kind() == std::io::ErrorKind::NotFound {
                    "executable file not found in $PATH".to_string()
                } else {
                    e.to_string()
                }
            );
            c.set_state(CState::Terminated {
                exit: 128,
                reason: "StartError".into(),
                started,
                finished: started,
            });
            c.started_once.store(true, Ordering::Relaxed);
            c.close_log();
            event(
                shared,
                pod,
                "Failed",
                &format!("Error: {msg}"),
                "Warning",
                Some(&field),
            );
            rt.wake.notify_one();
            return;
        }
    };
    *c.pid.lock().unwrap_or_else(|e| e.into_inner()) = child.id().map(|p| p as i32);
    *c.stdin.lock().await = child.stdin.take();
    c.started_once.store(true, Ordering::Relaxed);
    c.set_state(CState::Running { started });
    event(
        shared,
        pod,
        "Started",
        &format!("Started container {}", c.name),
        "Normal",
        Some(&field),
    );
    let out = child.stdout.take();
    let err = child.stderr.take();
    let p1 = out.map(|o| tokio::spawn(pump(c.clone(), 1, o)));
    let p2 = err.map(|e| tokio::spawn(pump(c.clone(), 2, e)));
    let c2 = c.clone();
    let rt2 = rt.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        // Only the main process is PID 1: when it ends the whole "container" ends.
        if let Some(pid) = c2.pid() {
            // SAFETY: signalling our own process group.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
        if let Some(p) = p1 {
            let _ = p.await;
        }
        if let Some(p) = p2 {
            let _ = p.await;
        }
        let code = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
            }
            Err(_) => 137,
        };
        c2.close_log();
        if rt2.flags().node_lost {
            c2.exited.notify_waiters();
            return;
        }
        c2.set_state(CState::Terminated {
            exit: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            started,
            finished: Timestamp::now(),
        });
        *c2.stdin.lock().await = None;
        c2.exited.notify_waiters();
        rt2.wake.notify_one();
    });
}

/// A container's own root, set up in the child between fork and exec (no helper
/// processes, so the container is in its root when `spawn` returns, as a runtime's
/// container is when the kubelet reports it running): a new mount namespace, an overlay
/// of the host's `/` (writes go to the container's own upper directory, never to the
/// host), `/dev`, `/proc` and `/sys` bound in, each volume bound at its mountPath, then
/// chroot and chdir to the working directory.
struct RootPlan {
    base: PathBuf,
    /// (volume directory, mountPath) in the spec's order.
    mounts: Vec<(PathBuf, String)>,
    cwd: String,
}

/// [`RootPlan`] as C strings, made before fork: the child only makes system calls.
struct PreparedRoot {
    root: std::ffi::CString,
    overlay_opts: std::ffi::CString,
    /// (source, target, recursive, directories to create first)
    binds: Vec<(std::ffi::CString, std::ffi::CString, bool, Vec<std::ffi::CString>)>,
    cwd_dirs: Vec<std::ffi::CString>,
    cwd: std::ffi::CString,
}

impl RootPlan {
    fn new(base: &Path, mounts: &[(PathBuf, String)], cwd: &str) -> Self {
        RootPlan {
            base: base.to_path_buf(),
            mounts: mounts.to_vec(),
            cwd: cwd.to_string(),
        }
    }

    fn prepare(self) -> std::io::Result<PreparedRoot> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
        };
        let upper = self.base.join("upper");
        let work = self.base.join("work");
        let root = self.base.join("root");
        for d in [&upper, &work, &root] {
            std::fs::create_dir_all(d)?;
        }
        let overlay_opts = CString::new(format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        ))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))?;
        let mut binds = Vec::new();
        for d in ["/dev", "/proc", "/sys"] {
            if Path::new(d).is_dir() {
                binds.push((c(Path::new(d))?, c(&root.join(&d[1..]))?, true, Vec::new()));
            }
        }
        for (src, dst) in &self.mounts {
            let inside = resolve_in_host_root(dst);
            let target = root.join(inside.strip_prefix("/").unwrap_or(&inside));
            let dirs = ancestors_from(&root, &target)
                .iter()
                .map(|d| c(d))
                .collect::<Result<_, _>>()?;
            binds.push((c(src)?, c(&target)?, false, dirs));
        }
        let cwd_inside = resolve_in_host_root(&self.cwd);
        let cwd_target = root.join(cwd_inside.strip_prefix("/").unwrap_or(&cwd_inside));
        let cwd_dirs = ancestors_from(&root, &cwd_target)
            .iter()
            .map(|d| c(d))
            .collect::<Result<_, _>>()?;
        Ok(PreparedRoot {
            root: c(&root)?,
            overlay_opts,
            binds,
            cwd_dirs,
            cwd: c(&cwd_inside)?,
        })
    }
}

/// Where `path` lands inside a root that is an overlay of the host's `/`: its symbolic
/// links resolve as on the host (`/var/run` -> `/run`); what does not exist yet is kept.
fn resolve_in_host_root(path: &str) -> PathBuf {
    let p = Path::new("/").join(path.trim_start_matches('/'));
    let mut existing = p.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.file_name().map(|f| f.to_os_string()), existing.parent()) {
            (Some(f), Some(parent)) => {
                rest.push(f);
                existing = parent.to_path_buf();
            }
            _ => return p,
        }
    }
}

/// Every directory from just below `root` down to `target`, outermost first.
fn ancestors_from(root: &Path, target: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = target
        .ancestors()
        .take_while(|a| a.starts_with(root) && *a != root)
        .map(Path::to_path_buf)
        .collect();
    dirs.reverse();
    dirs
}

impl PreparedRoot {
    fn apply_in_child(self, cmd: &mut tokio::process::Command) {
        // SAFETY: only system calls on memory prepared before fork; no allocation.
        unsafe {
            cmd.pre_exec(move || {
                let err = std::io::Error::last_os_error;
                let null = std::ptr::null::<libc::c_char>();
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(err());
                }
                if libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
                if libc::mount(
                    c"overlay".as_ptr(),
                    self.root.as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    self.overlay_opts.as_ptr().cast(),
                ) != 0
                {
                    return Err(err());
                }
                for (src, dst, rec, dirs) in &self.binds {
                    for d in dirs {
                        libc::mkdir(d.as_ptr(), 0o755);
                    }
                    let flags = libc::MS_BIND | if *rec { libc::MS_REC } else { 0 };
                    if libc::mount(src.as_ptr(), dst.as_ptr(), null, flags, std::ptr::null()) != 0 {
                        return Err(err());
                    }
                }
                for d in &self.cwd_dirs {
                    libc::mkdir(d.as_ptr(), 0o755);
                }
                if libc::chroot(self.root.as_ptr()) != 0 || libc::chdir(self.cwd.as_ptr()) != 0 {
                    return Err(err());
                }
                Ok(())
            });
        }
    }
}

/// Containers and execs die with the server's thread that started them, so a test that
/// is killed (not dropped) leaves no processes behind.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A simulated delay. Zero means none at all: `tokio::time::sleep(0)` still waits for
/// the timer's next millisecond tick, which a benchmark with zero delays would count.
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// An exec's way into a container's root, as `nsenter --mount --root --wd` does it but
/// in the child between fork and exec: no `nsenter` process per exec (a container
/// runtime's exec does not start one either). The files close on exec.
pub struct ExecRoot {
    mnt: std::fs::File,
    root: std::fs::File,
    cwd: std::fs::File,
}

impl ExecRoot {
    pub fn apply_in_child(self, cmd: &mut tokio::process::Command) {
        use std::os::fd::AsRawFd;
        let (mnt, root, cwd) = (self.mnt, self.root, self.cwd);
        // SAFETY: only system calls on descriptors opened before fork; no allocation.
        unsafe {
            cmd.pre_exec(move || {
                let err = std::io::Error::last_os_error;
                if libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0
                    || libc::fchdir(root.as_raw_fd()) != 0
                    || libc::chroot(c".".as_ptr()) != 0
                    || libc::fchdir(cwd.as_raw_fd()) != 0
                {
                    return Err(err());
                }
                Ok(())
            });
        }
    }
}

fn json_strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Read one output stream: raw chunks go to attach clients, complete lines (stamped
/// when their newline arrives) to the log; a last partial line is kept at EOF.
async fn pump(c: Arc<ContainerRt>, chan: u8, mut r: impl tokio::io::AsyncRead + Unpin) {
    let mut buf = vec![0u8; 8192];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let _ = c.output.send((chan, Bytes::copy_from_slice(chunk)));
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            partial.extend_from_slice(&rest[..=i]);
            c.push_log(Timestamp::now(), std::mem::take(&mut partial));
            rest = &rest[i + 1..];
        }
        partial.extend_from_slice(rest);
    }
    if !partial.is_empty() {
        c.push_log(Timestamp::now(), partial);
    }
}

/// Does the process have a SIGTERM handler? PID 1 in a container ignores signals it
/// does not handle, so only then is SIGTERM delivered; otherwise the grace period runs out.
fn catches_sigterm(pid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

async fn stop_containers(shared: &Arc<Shared>, rt: &Arc<PodRuntime>, grace: i64) {
    let pod = get_pod(shared, &rt.ns, &rt.name);
    let mut waits = Vec::new();
    for c in rt.containers.clone() {
        if !c.is_running() {
            // A container that never started is simply never started.
            if let CState::Waiting { .. } = c.state() {
                c.set_state(CState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                });
            }
            continue;
        }
        if let Some(p) = &pod {
            event(
                shared,
                p,
                "Killing",
                &format!("Stopping container {}", c.name),
                "Normal",
                Some(&format!("spec.containers{{{}}}", c.name)),
            );
        }
        let Some(pid) = c.pid() else { continue };
        waits.push(tokio::spawn(async move {
            let exited = c.exited.notified();
            tokio::pin!(exited);
            exited.as_mut().enable();
            if !c.is_running() {
                return;
            }
            if grace > 0 && catches_sigterm(pid) {
                // SAFETY: signalling the container's main process.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let wait = tokio::time::sleep(Duration::from_secs(grace as u64));
            tokio::select! {
                _ = &mut exited => {}
                _ = wait => {
                    // SAFETY: our process group.
                    unsafe { libc::killpg(pid, libc::SIGKILL); }
                    let _ = tokio::time::timeout(Duration::from_secs(5), exited).await;
                }
            }
        }));
    }
    for w in waits {
        let _ = w.await;
    }
}

/// Node loss: processes die, the node stops reporting, the Pods fail.
pub fn lose_node(shared: &Arc<Shared>) {
    let rts: Vec<Arc<PodRuntime>> = shared.runtimes().values().cloned().collect();
    for rt in rts {
        if rt.containers.iter().all(|c| !c.is_running()) {
            continue;
        }
        rt.flags().node_lost = true;
        rt.kill_all_now();
        sync_status(shared, &rt, false);
        if let Some(p) = get_pod(shared, &rt.ns, &rt.name) {
            event(shared, &p, "NodeNotReady", "Node is not ready", "Warning", None);
        }
    }
}

/// Compute the Pod status from the runtime the way the kubelet's status manager does,
/// and write it if it changed.
pub fn sync_status(shared: &Shared, rt: &PodRuntime, killed: bool) {
    let now = util::now_rfc3339();
    let mut flags = rt.flags();
    let states: Vec<CState> = rt.containers.iter().map(|c| c.state()).collect();
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in &states {
        match s {
            CState::Waiting { .. } => waiting += 1,
            CState::Running { .. } => running += 1,
            CState::Terminated { exit, .. } => {
                stopped += 1;
                if *exit == 0 {
                    succeeded += 1;
                }
            }
        }
    }
    let mut phase = if waiting > 0 && !killed {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 && stopped == succeeded && waiting == 0 {
        "Succeeded"
    } else if stopped > 0 || killed {
        "Failed"
    } else {
        "Pending"
    };
    let (mut reason, mut message) = (None, None);
    if flags.deadline_exceeded {
        phase = "Failed";
        reason = Some("DeadlineExceeded");
        message = Some("Pod was active on the node longer than the specified deadline".to_string());
    }
    if flags.node_lost {
        phase = "Failed";
        reason = Some("NodeLost");
        message = Some(format!(
            "Node localhost which was running pod {} is unresponsive",
            rt.name
        ));
    }
    let unready: Vec<&str> = rt
        .containers
        .iter()
        .zip(&states)
        .filter(|(_, s)| !matches!(s, CState::Running { .. }) || flags.node_lost)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let ready = unready.is_empty();
    let ready_since = match &flags.last_ready {
        Some((r, t)) if *r == ready => t.clone(),
        _ => {
            let t = if flags.last_ready.is_none() {
                rt.start_time.clone()
            } else {
                now.clone()
            };
            flags.last_ready = Some((ready, t.clone()));
            t
        }
    };
    drop(flags);
    let cond = |ty: &str| {
        let mut c = json!({"type": ty, "status": if ready { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": ready_since});
        if !ready {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!("containers with unready status: [{}]", unready.join(" ")));
        }
        c
    };
    // The Pod IP is reported with the first container state past ContainerCreating.
    let sandbox_ready = rt.flags().sandbox_ready
        && states
            .iter()
            .any(|s| !matches!(s, CState::Waiting { reason, .. } if reason == "ContainerCreating"));
    let statuses: Vec<Value> = rt
        .containers
        .iter()
        .zip(&states)
        .map(|(c, s)| {
            let (state, is_ready, started, with_id) = match s {
                CState::Waiting { reason, message } => {
                    let mut w = json!({"reason": reason});
                    if let Some(m) = message {
                        w["message"] = json!(m);
                    }
                    (json!({"waiting": w}), false, false, false)
                }
                CState::Running { started } => (
                    json!({"running": {"startedAt": fmt_secs(*started)}}),
                    !flags_node_lost(rt),
                    true,
                    true,
                ),
                CState::Terminated { exit, reason, started, finished } => (
                    json!({"terminated": {"exitCode": exit, "reason": reason, "startedAt": fmt_secs(*started), "finishedAt": fmt_secs(*finished), "containerID": c.container_id}}),
                    false,
                    false,
                    true,
                ),
            };
            let mut m = Map::new();
            m.insert("name".into(), json!(c.name));
            m.insert("state".into(), state);
            m.insert("lastState".into(), json!({}));
            m.insert("ready".into(), json!(is_ready));
            m.insert("restartCount".into(), json!(0));
            m.insert("image".into(), json!(c.image));
            m.insert(
                "imageID".into(),
                json!(if c.pulled.load(Ordering::Relaxed) && with_id { image_id(&c.image) } else { String::new() }),
            );
            if with_id {
                m.insert("containerID".into(), json!(c.container_id));
            }
            m.insert("started".into(), json!(started));
            Value::Object(m)
        })
        .collect();
    let key = pod_key(rt);
    let start_time = rt.start_time.clone();
    let pod_ip = rt.pod_ip.clone();
    shared.lock().modify(&key, |o| {
        let mut st = Map::new();
        st.insert("phase".into(), json!(phase));
        let sched = o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == json!("PodScheduled")).cloned())
            .unwrap_or(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": start_time}));
        st.insert(
            "conditions".into(),
            json!([{"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": start_time}, cond("Ready"), cond("ContainersReady"), sched]),
        );
        if let Some(m) = &message {
            st.insert("message".into(), json!(m));
        }
        if let Some(r) = reason {
            st.insert("reason".into(), json!(r));
        }
        st.insert("hostIP".into(), json!("192.0.2.2"));
        if sandbox_ready || o["status"].get("podIP").is_some() {
            st.insert("podIP".into(), json!(pod_ip));
            st.insert("podIPs".into(), json!([{"ip": pod_ip}]));
        }
        st.insert("startTime".into(), json!(start_time));
        st.insert("containerStatuses".into(), json!(statuses));
        st.insert("qosClass".into(), o["status"]["qosClass"].clone());
        o["status"] = Value::Object(st);
    });
}

fn flags_node_lost(rt: &PodRuntime) -> bool {
    rt.flags().node_lost
}

/// `GET pods/NAME/log`, with the kubelet's refusals and options.
pub async fn logs(shared: Arc<Shared>, ns: &str, name: &str, q: &Query) -> Result<Response, ApiError> {
    let pod = get_pod(&shared, ns, name).ok_or_else(|| ApiError::not_found("pods", name))?;
    let cname = select_container(&pod, name, q)?;
    if q.flag("previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{cname}\" in pod \"{name}\" not found"
        )));
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let rt = shared.runtimes().get(uid).cloned();
    let c = rt.as_ref().and_then(|r| r.container(&cname));
    let c = match c {
        Some(c) if c.started_once.load(Ordering::Relaxed) => c,
        other => {
            let why = match other.map(|c| c.state()) {
                Some(CState::Waiting { reason, .. })
                    if reason == "ErrImagePull" || reason == "ImagePullBackOff" =>
                {
                    "image can't be pulled".to_string()
                }
                Some(CState::Waiting { reason, .. }) => reason,
                _ => "ContainerCreating".to_string(),
            };
            return Err(ApiError::bad_request(format!(
                "container \"{cname}\" in pod \"{name}\" is waiting to start: {why}"
            )));
        }
    };
    let follow = q.flag("follow");
    let timestamps = q.flag("timestamps");
    let since: Option<Timestamp> = match q.get("sinceTime") {
        // sinceTime travels as a whole-second metav1.Time: that second is included.
        Some(s) => {
            let t = s
                .parse::<Timestamp>()
                .map_err(|e| ApiError::bad_request(format!("invalid sinceTime {s:?}: {e}")))?;
            Timestamp::from_second(t.as_second()).ok()
        }
        None => q
            .get("sinceSeconds")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| {
                Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_secs(s))
                    .ok()
            }),
    };
    let tail = q.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let mut limit = q.get("limitBytes").and_then(|t| t.parse::<usize>().ok());
    let render = move |l: &LogLine| -> Vec<u8> {
        if timestamps {
            let mut v = format!("{} ", fmt_nanos(l.ts)).into_bytes();
            v.extend_from_slice(&l.data);
            v
        } else {
            l.data.clone()
        }
    };
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut drop_rx = shared.drop_streams.subscribe();
    tokio::spawn(async move {
        let mut vrx = c.log_version.subscribe();
        let mut next = {
            let log = c.log.lock().unwrap_or_else(|e| e.into_inner());
            let eligible: Vec<usize> = (0..log.lines.len())
                .filter(|i| since.is_none_or(|s| log.lines[*i].ts >= s))
                .collect();
            match tail {
                Some(n) => {
                    let k = eligible.len().saturating_sub(n);
                    eligible.get(k).copied().unwrap_or(log.lines.len())
                }
                None => eligible.first().copied().unwrap_or(log.lines.len()),
            }
        };
        loop {
            let (chunk, closed) = {
                let log = c.log.lock().unwrap_or_else(|e| e.into_inner());
                let mut out: Vec<Vec<u8>> = Vec::new();
                while next < log.lines.len() {
                    if since.is_none_or(|s| log.lines[next].ts >= s) {
                        out.push(render(&log.lines[next]));
                    }
                    next += 1;
                }
                (out, log.closed)
            };
            for mut piece in chunk {
                if let Some(l) = limit.as_mut() {
                    if *l == 0 {
                        return;
                    }
                    if piece.len() > *l {
                        piece.truncate(*l);
                    }
                    *l -= piece.len();
                }
                if tx.send(Ok(Bytes::from(piece))).await.is_err() {
                    return;
                }
            }
            if !follow || closed || limit == Some(0) {
                return;
            }
            tokio::select! {
                r = vrx.changed() => if r.is_err() { return; },
                _ = drop_rx.changed() => {
                    let _ = tx.send(Err(std::io::Error::other("log stream dropped by fault injection"))).await;
                    return;
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(rx));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

/// The container a `log`/`exec`/`attach` request addresses: the `container` parameter, or the
/// only container; the API server's 400 messages otherwise.
pub(crate) fn select_container(pod: &Value, name: &str, q: &Query) -> Result<String, ApiError> {
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let cname = match q.get("container") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ if names.len() == 1 => names[0].clone(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    if !names.contains(&cname) {
        return Err(ApiError::bad_request(format!(
            "container {cname} is not valid for pod {name}"
        )));
    }
    Ok(cname)
}
