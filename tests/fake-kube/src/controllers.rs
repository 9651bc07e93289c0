//! The controller-manager's workload controllers, compressed: a Deployment owns one
//! ReplicaSet per Pod template (named `<deployment>-<pod-template-hash>`), a ReplicaSet,
//! StatefulSet or DaemonSet owns Pods made from its template, and each reports status as
//! the real controllers do (observedGeneration, replicas, updated/ready/available counts,
//! the Deployment's Progressing and Available conditions, ProgressDeadlineExceeded after
//! `progressDeadlineSeconds` without progress, StatefulSet revisions, DaemonSet counts on
//! the single node).
//!
//! The fake kubelet does not restart containers; for Pods these controllers own
//! (restartPolicy Always), a container that exits is reported as the kubelet would after
//! the restart: `waiting: CrashLoopBackOff`, `lastState.terminated`, `restartCount` + 1,
//! and a `BackOff` Warning event.
//!
//! One task per workload polls every 25 ms until the workload is deleted or the server
//! is dropped; reconciling the whole object each time keeps the logic level-triggered
//! like the real controllers.

use crate::Shared;
use crate::api;
use crate::store::Key;
use crate::util;
use serde_json::{Value, json};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(25);

/// Start the controller of a newly created workload.
pub fn start(shared: &Arc<Shared>, resource: &str, ns: &str, name: &str) {
    let weak = Arc::downgrade(shared);
    let (resource, ns, name) = (resource.to_string(), ns.to_string(), name.to_string());
    let uid = shared
        .lock()
        .get(&Key::new(&resource, &ns, &name))
        .map(|o| o["metadata"]["uid"].clone())
        .unwrap_or(Value::Null);
    tokio::spawn(async move {
        let mut progress = Progress::default();
        loop {
            tokio::time::sleep(TICK).await;
            let Some(shared) = Weak::upgrade(&weak) else {
                return;
            };
            let Some(obj) = shared.lock().get(&Key::new(&resource, &ns, &name)).cloned() else {
                return;
            };
            if obj["metadata"]["uid"] != uid {
                return;
            }
            match resource.as_str() {
                "deployments" => reconcile_deployment(&shared, &ns, &obj, &mut progress),
                "replicasets" => {
                    reconcile_replicaset(&shared, &ns, &obj);
                }
                "statefulsets" => reconcile_statefulset(&shared, &ns, &obj),
                "daemonsets" => reconcile_daemonset(&shared, &ns, &obj),
                _ => return,
            }
        }
    });
}

/// The real `pod-template-hash` is an FNV hash of the template rendered with a safe
/// alphabet; any stable hash of the template serves the same purpose here.
pub fn template_hash(template: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    util::go_json(template).hash(&mut h);
    let mut n = h.finish();
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

fn owner_ref(kind: &str, obj: &Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true})
}

fn owned_by<'a>(objs: impl Iterator<Item = &'a Value>, uid: &Value) -> Vec<Value> {
    objs.filter(|o| {
        o["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
    })
    .cloned()
    .collect()
}

fn live_pods(shared: &Shared, ns: &str, owner_uid: &Value) -> Vec<Value> {
    let st = shared.lock();
    let pods = st.list("pods", Some(ns));
    owned_by(pods.iter(), owner_uid)
        .into_iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

fn replicas(obj: &Value) -> usize {
    obj["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize
}

/// A Pod from `template`, owned by `owner`.
fn pod_from_template(template: &Value, name: &str, extra_labels: &[(&str, String)], owner: Value) -> Value {
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    for (k, v) in extra_labels {
        meta["labels"][*k] = json!(v);
    }
    meta["name"] = json!(name);
    meta["ownerReferences"] = json!([owner]);
    json!({"metadata": meta, "spec": template["spec"].clone()})
}

fn create_pod(shared: &Arc<Shared>, ns: &str, pod: Value, owner: &Value) {
    if let Err(e) = api::create_pod(shared, ns, pod) {
        // The real controllers record FailedCreate on the owner and retry.
        owner_event(shared, owner, "FailedCreate", &format!("Error creating: {}", e.message), "Warning");
    }
}

/// An Event about a workload object, as the controller-manager's recorder writes it.
fn owner_event(shared: &Shared, obj: &Value, reason: &str, message: &str, etype: &str) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let kind = if obj["spec"].get("template").is_some() && obj["metadata"]["labels"].get("pod-template-hash").is_some() {
        "ReplicaSet"
    } else if obj["spec"].get("progressDeadlineSeconds").is_some() {
        "Deployment"
    } else if obj["spec"].get("podManagementPolicy").is_some() {
        "StatefulSet"
    } else {
        "DaemonSet"
    };
    let now = util::now_rfc3339();
    let ename = format!("{name}.{:016x}", util::monotonic_nanos());
    let ev = json!({"metadata": {"name": ename, "namespace": ns, "uid": util::new_uid(), "resourceVersion": "", "creationTimestamp": now},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name, "uid": obj["metadata"]["uid"], "apiVersion": "apps/v1", "resourceVersion": obj["metadata"]["resourceVersion"]},
        "reason": reason, "message": message, "source": {"component": format!("{}-controller", kind.to_ascii_lowercase())},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": etype, "eventTime": null, "reportingComponent": "", "reportingInstance": ""});
    shared.lock().create(Key::new("events", &ns, &ename), ev);
}

/// Crash-loop emulation for a Pod whose containers restart (see the module comment).
fn restart_exited(shared: &Arc<Shared>, ns: &str, pod: &Value) {
    if pod["spec"]["restartPolicy"].as_str().unwrap_or("Always") != "Always" {
        return;
    }
    let exited: Vec<String> = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"].get("terminated").is_some())
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    if exited.is_empty() {
        return;
    }
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let key = Key::new("pods", ns, &name);
    let updated = shared.lock().modify(&key, |p| {
        if let Some(cs) = p["status"]["containerStatuses"].as_array_mut() {
            for c in cs.iter_mut() {
                if let Some(t) = c["state"].get("terminated").cloned() {
                    let cname = c["name"].as_str().unwrap_or("").to_string();
                    let n = c["restartCount"].as_i64().unwrap_or(0) + 1;
                    c["lastState"] = json!({"terminated": t});
                    c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off 10s restarting failed container={cname} pod={name}_{ns}({uid})")}});
                    c["restartCount"] = json!(n);
                    c["ready"] = json!(false);
                    c["started"] = json!(false);
                }
            }
        }
        p["status"]["phase"] = json!("Running");
        if let Some(conds) = p["status"]["conditions"].as_array_mut() {
            for c in conds.iter_mut() {
                if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                    c["status"] = json!("False");
                    c["reason"] = json!("ContainersNotReady");
                    c["message"] = json!(format!("containers with unready status: [{}]", exited.join(" ")));
                }
            }
        }
    });
    if let Some(p) = updated {
        for c in &exited {
            crate::kubelet::event(
                shared,
                &p,
                "BackOff",
                &format!("Back-off restarting failed container {c} in pod {name}_{ns}({uid})"),
                "Warning",
                Some(&format!("spec.containers{{{c}}}")),
            );
        }
    }
}

/// Keep a ReplicaSet's Pod count, report its status; returns its live Pods.
fn reconcile_replicaset(shared: &Arc<Shared>, ns: &str, rs: &Value) -> Vec<Value> {
    let uid = rs["metadata"]["uid"].clone();
    let want = replicas(rs);
    let mut pods = live_pods(shared, ns, &uid);
    for p in &pods {
        restart_exited(shared, ns, p);
    }
    let rs_name = rs["metadata"]["name"].as_str().unwrap_or("").to_string();
    let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or("").to_string();
    if pods.len() < want {
        for _ in pods.len()..want {
            let name = format!("{rs_name}-{}", util::name_suffix(5));
            let pod = pod_from_template(&rs["spec"]["template"], &name, &[("pod-template-hash", hash.clone())], owner_ref("ReplicaSet", rs));
            create_pod(shared, ns, pod, rs);
        }
    } else if pods.len() > want {
        // Not-ready Pods go first, as the real controller prefers.
        pods.sort_by_key(is_ready);
        for p in &pods[..pods.len() - want] {
            let _ = api::delete_pod(shared, ns, p["metadata"]["name"].as_str().unwrap_or(""), Some(0));
        }
    }
    let pods = live_pods(shared, ns, &uid);
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let status = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(), "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]});
    write_status(shared, "replicasets", ns, rs, status);
    pods
}

fn write_status(shared: &Shared, resource: &str, ns: &str, obj: &Value, mut status: Value) {
    // The real controllers omit zero counts.
    if let Some(m) = status.as_object_mut() {
        m.retain(|_, v| v.as_i64() != Some(0) && !v.is_null());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    shared.lock().modify(&Key::new(resource, ns, name), |o| {
        let conditions = o["status"].get("conditions").cloned();
        let mut s = status.clone();
        if s.get("conditions").is_none()
            && let Some(c) = conditions
        {
            s["conditions"] = c;
        }
        o["status"] = s;
    });
}

/// Tracks when a Deployment last made progress, for progressDeadlineSeconds.
#[derive(Default)]
struct Progress {
    last: Option<(Instant, String)>,
    exceeded: bool,
}

fn condition(t: &str, status: &str, reason: &str, message: &str, prev: Option<&Value>) -> Value {
    let now = util::now_rfc3339();
    let transition = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let update = match prev {
        Some(p) if p["status"] == status && p["reason"] == reason => p["lastUpdateTime"].clone(),
        _ => json!(now),
    };
    json!({"type": t, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": message})
}

fn reconcile_deployment(shared: &Arc<Shared>, ns: &str, d: &Value, progress: &mut Progress) {
    let uid = d["metadata"]["uid"].clone();
    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
    let want = replicas(d);
    let template = d["spec"]["template"].clone();
    let hash = template_hash(&template);
    let rs_name = format!("{name}-{hash}");
    let all_rs = {
        let st = shared.lock();
        let list = st.list("replicasets", Some(ns));
        owned_by(list.iter(), &uid)
    };
    let new_rs = match all_rs.iter().find(|r| r["metadata"]["name"] == json!(rs_name)) {
        Some(r) => {
            if replicas(r) != want {
                shared.lock().modify(&Key::new("replicasets", ns, &rs_name), |o| {
                    o["spec"]["replicas"] = json!(want);
                    o["metadata"]["generation"] = json!(o["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
                });
            }
            shared.lock().get(&Key::new("replicasets", ns, &rs_name)).cloned().unwrap_or_else(|| r.clone())
        }
        None => {
            let mut labels = template["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            let mut tpl = template.clone();
            tpl["metadata"]["labels"] = labels.clone();
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({"metadata": {"name": rs_name, "namespace": ns, "uid": util::new_uid(), "resourceVersion": "",
                    "generation": 1, "creationTimestamp": util::now_rfc3339(), "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": want.to_string(), "deployment.kubernetes.io/revision": (all_rs.len() + 1).to_string()},
                    "ownerReferences": [owner_ref("Deployment", d)]},
                "spec": {"replicas": want, "selector": selector, "template": tpl}, "status": {"replicas": 0}});
            let stored = shared.lock().create(Key::new("replicasets", ns, &rs_name), rs);
            owner_event(shared, d, "ScalingReplicaSet", &format!("Scaled up replica set {rs_name} from 0 to {want}"), "Normal");
            stored
        }
    };
    let new_pods = reconcile_replicaset(shared, ns, &new_rs);
    let new_ready = new_pods.iter().filter(|p| is_ready(p)).count();
    let mut total = new_pods.len();
    let mut ready_total = new_ready;
    for old in all_rs.iter().filter(|r| r["metadata"]["name"] != json!(rs_name)) {
        // Old ReplicaSets scale down once the new one is fully available (a surge
        // rollout with the whole new set first, simpler than maxSurge steps).
        if new_ready >= want && replicas(old) > 0 {
            let oname = old["metadata"]["name"].as_str().unwrap_or("").to_string();
            shared.lock().modify(&Key::new("replicasets", ns, &oname), |o| o["spec"]["replicas"] = json!(0));
        }
        let cur = shared
            .lock()
            .get(&Key::new("replicasets", ns, old["metadata"]["name"].as_str().unwrap_or("")))
            .cloned();
        if let Some(cur) = cur {
            let pods = reconcile_replicaset(shared, ns, &cur);
            total += pods.len();
            ready_total += pods.iter().filter(|p| is_ready(p)).count();
        }
    }
    let complete = new_pods.len() == want && new_ready >= want && total == want;
    let snapshot = format!("{rs_name} {} {new_ready} {total}", new_pods.len());
    match &progress.last {
        Some((_, s)) if *s == snapshot => {}
        _ => {
            progress.last = Some((Instant::now(), snapshot));
            progress.exceeded = false;
        }
    }
    let deadline = d["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600);
    if !complete
        && progress
            .last
            .as_ref()
            .is_some_and(|(t, _)| t.elapsed() >= Duration::from_secs(deadline))
    {
        progress.exceeded = true;
    }
    let conds = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let prev = |t: &str| conds.iter().find(|c| c["type"] == t);
    let max_unavailable = max_unavailable(d, want);
    let available = if ready_total + max_unavailable >= want {
        condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", prev("Available"))
    } else {
        condition("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", prev("Available"))
    };
    let progressing = if progress.exceeded {
        condition("Progressing", "False", "ProgressDeadlineExceeded", &format!("ReplicaSet \"{rs_name}\" has timed out progressing."), prev("Progressing"))
    } else if complete {
        condition("Progressing", "True", "NewReplicaSetAvailable", &format!("ReplicaSet \"{rs_name}\" has successfully progressed."), prev("Progressing"))
    } else {
        condition("Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{rs_name}\" is progressing."), prev("Progressing"))
    };
    let status = json!({"observedGeneration": d["metadata"]["generation"], "replicas": total, "updatedReplicas": new_pods.len(),
        "readyReplicas": ready_total, "availableReplicas": ready_total,
        "unavailableReplicas": want.saturating_sub(ready_total), "conditions": [available, progressing]});
    write_status(shared, "deployments", ns, d, status);
}

/// `maxUnavailable` as a count (percentages round down, as for Deployments).
fn max_unavailable(d: &Value, want: usize) -> usize {
    let v = &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"];
    if let Some(n) = v.as_u64() {
        return n as usize;
    }
    let pct = v
        .as_str()
        .and_then(|s| s.strip_suffix('%'))
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(25);
    want * pct / 100
}

fn reconcile_statefulset(shared: &Arc<Shared>, ns: &str, s: &Value) {
    let uid = s["metadata"]["uid"].clone();
    let name = s["metadata"]["name"].as_str().unwrap_or("").to_string();
    let want = replicas(s);
    let revision = format!("{name}-{}", template_hash(&s["spec"]["template"]));
    let pods = live_pods(shared, ns, &uid);
    for p in &pods {
        restart_exited(shared, ns, p);
        let ordinal_ok = p["metadata"]["name"]
            .as_str()
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, i)| i.parse::<usize>().ok())
            .is_some_and(|i| i < want);
        let outdated = p["metadata"]["labels"]["controller-revision-hash"] != json!(revision);
        if !ordinal_ok || outdated {
            let _ = api::delete_pod(shared, ns, p["metadata"]["name"].as_str().unwrap_or(""), Some(0));
        }
    }
    let pods = live_pods(shared, ns, &uid);
    // OrderedReady: the next ordinal starts when all before it are ready.
    for i in 0..want {
        let pname = format!("{name}-{i}");
        match pods.iter().find(|p| p["metadata"]["name"] == json!(pname)) {
            Some(p) if is_ready(p) => continue,
            Some(_) => break,
            None => {
                if shared.lock().get(&Key::new("pods", ns, &pname)).is_some() {
                    break; // still terminating
                }
                let pod = pod_from_template(
                    &s["spec"]["template"],
                    &pname,
                    &[("controller-revision-hash", revision.clone()), ("statefulset.kubernetes.io/pod-name", pname.clone())],
                    owner_ref("StatefulSet", s),
                );
                create_pod(shared, ns, pod, s);
                break;
            }
        }
    }
    let pods = live_pods(shared, ns, &uid);
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == json!(revision))
        .count();
    let current = if updated == want && ready == want {
        revision.clone()
    } else {
        s["status"]["currentRevision"].as_str().unwrap_or(&revision).to_string()
    };
    let current_replicas = if current == revision { updated } else { pods.len() - updated };
    let status = json!({"observedGeneration": s["metadata"]["generation"], "replicas": pods.len(), "readyReplicas": ready,
        "currentReplicas": current_replicas, "updatedReplicas": updated, "availableReplicas": ready,
        "currentRevision": current, "updateRevision": revision, "collisionCount": 0});
    write_status(shared, "statefulsets", ns, s, status);
}

fn reconcile_daemonset(shared: &Arc<Shared>, ns: &str, ds: &Value) {
    let uid = ds["metadata"]["uid"].clone();
    let name = ds["metadata"]["name"].as_str().unwrap_or("").to_string();
    let hash = template_hash(&ds["spec"]["template"]);
    let pods = live_pods(shared, ns, &uid);
    for p in &pods {
        restart_exited(shared, ns, p);
        if p["metadata"]["labels"]["controller-revision-hash"] != json!(hash) {
            let _ = api::delete_pod(shared, ns, p["metadata"]["name"].as_str().unwrap_or(""), Some(0));
        }
    }
    // One node (`localhost`): one Pod.
    if live_pods(shared, ns, &uid).is_empty() {
        let pname = format!("{name}-{}", util::name_suffix(5));
        let gen_ = ds["metadata"]["generation"].as_i64().unwrap_or(1).to_string();
        let pod = pod_from_template(
            &ds["spec"]["template"],
            &pname,
            &[("controller-revision-hash", hash.clone()), ("pod-template-generation", gen_)],
            owner_ref("DaemonSet", ds),
        );
        create_pod(shared, ns, pod, ds);
    }
    let pods = live_pods(shared, ns, &uid);
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == json!(hash))
        .count();
    let status = json!({"currentNumberScheduled": pods.len(), "numberMisscheduled": 0, "desiredNumberScheduled": 1,
        "numberReady": ready, "observedGeneration": ds["metadata"]["generation"], "updatedNumberScheduled": updated,
        "numberAvailable": ready, "numberUnavailable": 1usize.saturating_sub(ready)});
    write_status(shared, "daemonsets", ns, ds, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"spec": {"containers": [{"name": "app", "image": "a:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "app", "image": "a:2"}]}});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }

    #[test]
    fn max_unavailable_rounds_down() {
        let d = json!({"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": "25%"}}}});
        assert_eq!(max_unavailable(&d, 3), 0);
        assert_eq!(max_unavailable(&d, 4), 1);
        assert_eq!(max_unavailable(&json!({"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": 2}}}}), 3), 2);
    }
}
