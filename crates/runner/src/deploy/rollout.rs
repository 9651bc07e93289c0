//! Waiting for workloads: judge Deployments, StatefulSets and DaemonSets the way
//! `kubectl rollout status` does (observedGeneration, updated, ready and available
//! counts; ProgressDeadlineExceeded), poll until done, and fail early when their Pods
//! cannot start (CrashLoopBackOff, image pull errors, a crashed container). A failure or
//! a timeout carries the failing Pods' events and last log lines.

use super::apply::Workload;
use super::{DeployError, DeployEvent, DeployOptions, PodReport, RolloutFailure, RolloutStatus};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use serde_json::Value;
use tokio::time::Instant;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    Done(String),
    Waiting(String),
    Failed(String),
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Judge a workload object (JSON as the server returns it) as `kubectl rollout status`
/// does; unknown kinds are done at once.
pub fn judge_rollout(obj: &Value) -> RolloutState {
    let kind = obj["kind"].as_str().unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let generation = int(&obj["metadata"]["generation"]);
    let st = &obj["status"];
    let observed = int(&st["observedGeneration"]);
    let spec_replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    match kind {
        "Deployment" => {
            if generation > observed {
                return RolloutState::Waiting("Waiting for deployment spec update to be observed...".into());
            }
            let progressing = st["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"));
            if let Some(c) = progressing
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return RolloutState::Failed(format!("deployment {name:?} exceeded its progress deadline"));
            }
            let updated = int(&st["updatedReplicas"]);
            let replicas = int(&st["replicas"]);
            let available = int(&st["availableReplicas"]);
            if updated < spec_replicas {
                RolloutState::Waiting(format!(
                    "Waiting for deployment {name:?} rollout to finish: {updated} out of {spec_replicas} new replicas have been updated..."
                ))
            } else if replicas > updated {
                RolloutState::Waiting(format!(
                    "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                    replicas - updated
                ))
            } else if available < updated {
                RolloutState::Waiting(format!(
                    "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
                ))
            } else {
                RolloutState::Done(format!("deployment {name:?} successfully rolled out"))
            }
        }
        "StatefulSet" => {
            let strategy = obj["spec"]["updateStrategy"]["type"]
                .as_str()
                .unwrap_or("RollingUpdate");
            if strategy != "RollingUpdate" {
                return RolloutState::Done(format!(
                    "statefulset {name:?}: rollout status is only available for RollingUpdate strategy type"
                ));
            }
            if observed == 0 || generation > observed {
                return RolloutState::Waiting("Waiting for statefulset spec update to be observed...".into());
            }
            let ready = int(&st["readyReplicas"]);
            if ready < spec_replicas {
                return RolloutState::Waiting(format!(
                    "Waiting for {} pods to be ready...",
                    spec_replicas - ready
                ));
            }
            let update_rev = st["updateRevision"].as_str().unwrap_or("");
            let current_rev = st["currentRevision"].as_str().unwrap_or("");
            if update_rev != current_rev {
                return RolloutState::Waiting(format!(
                    "waiting for statefulset rolling update to complete {} pods at revision {update_rev}...",
                    int(&st["updatedReplicas"])
                ));
            }
            RolloutState::Done(format!(
                "statefulset rolling update complete {} pods at revision {current_rev}...",
                int(&st["currentReplicas"])
            ))
        }
        "DaemonSet" => {
            if generation > observed {
                return RolloutState::Waiting("Waiting for daemon set spec update to be observed...".into());
            }
            let desired = int(&st["desiredNumberScheduled"]);
            let updated = int(&st["updatedNumberScheduled"]);
            let available = int(&st["numberAvailable"]);
            if updated < desired {
                RolloutState::Waiting(format!(
                    "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
                ))
            } else if available < desired {
                RolloutState::Waiting(format!(
                    "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
                ))
            } else {
                RolloutState::Done(format!("daemon set {name:?} successfully rolled out"))
            }
        }
        _ => RolloutState::Done(format!("{kind} {name:?} has no rollout")),
    }
}

/// Container waiting reasons that will not fix themselves without a new deploy.
const FATAL_WAITING: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a Pod is failing, if it is.
pub(crate) fn pod_failure(pod: &Value) -> Option<String> {
    if pod["status"]["phase"] == "Failed" {
        let reason = pod["status"]["reason"].as_str().unwrap_or("");
        return Some(if reason.is_empty() {
            "Pod failed".to_string()
        } else {
            format!("Pod failed: {reason}")
        });
    }
    let statuses = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][*k].as_array())
        .flatten();
    for cs in statuses {
        let name = cs["name"].as_str().unwrap_or("?");
        if let Some(reason) = cs["state"]["waiting"]["reason"].as_str()
            && FATAL_WAITING.contains(&reason)
        {
            let msg = cs["state"]["waiting"]["message"].as_str().unwrap_or("");
            return Some(if msg.is_empty() {
                format!("container {name}: {reason}")
            } else {
                format!("container {name}: {reason}: {msg}")
            });
        }
        // A Deployment's containers restart: an exit, even before the kubelet reports
        // CrashLoopBackOff, is a crash.
        for state in [&cs["state"]["terminated"], &cs["lastState"]["terminated"]] {
            if let Some(code) = state["exitCode"].as_i64()
                && code != 0
            {
                return Some(format!(
                    "container {name} exited with code {code} ({})",
                    state["reason"].as_str().unwrap_or("Error")
                ));
            }
        }
    }
    None
}

fn selector_of(obj: &Value) -> String {
    let sel = &obj["spec"]["selector"];
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match e["operator"].as_str().unwrap_or("") {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

/// Wait for every workload in turn, all within `opts.timeout` from now.
pub(crate) async fn wait_all(
    client: &kube::Client,
    workloads: &[Workload],
    opts: &DeployOptions,
    progress: &mut dyn FnMut(DeployEvent),
) -> Result<Vec<RolloutStatus>, DeployError> {
    let deadline = Instant::now() + opts.timeout;
    let mut out = Vec::new();
    for w in workloads {
        out.push(wait_one(client, w, opts, deadline, progress).await?);
    }
    Ok(out)
}

async fn wait_one(
    client: &kube::Client,
    w: &Workload,
    opts: &DeployOptions,
    deadline: Instant,
    progress: &mut dyn FnMut(DeployEvent),
) -> Result<RolloutStatus, DeployError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &w.namespace, &w.ar);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
    let label = format!("{}/{}", w.kind.to_ascii_lowercase(), w.name);
    let api_err = |source| DeployError::Api {
        kind: w.kind.clone(),
        name: w.name.clone(),
        source,
    };
    let mut last = String::new();
    loop {
        let obj = api.get(&w.name).await.map_err(api_err)?;
        let mut obj = serde_json::to_value(&obj).unwrap_or(Value::Null);
        obj["kind"] = Value::String(w.kind.clone());
        let state = judge_rollout(&obj);
        let message = match &state {
            RolloutState::Done(m) | RolloutState::Waiting(m) | RolloutState::Failed(m) => m.clone(),
        };
        if message != last {
            progress(DeployEvent::Progress {
                workload: label.clone(),
                message: message.clone(),
            });
            last = message.clone();
        }
        let status = |done| RolloutStatus {
            kind: w.kind.clone(),
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            done,
            message: message.clone(),
        };
        let selector = selector_of(&obj);
        let list = |sel: String| {
            let pods = pods.clone();
            async move {
                let lp = ListParams::default().labels(&sel);
                pods.list(&lp).await
            }
        };
        match state {
            RolloutState::Done(_) => {
                progress(DeployEvent::RolledOut { workload: label });
                return Ok(status(true));
            }
            RolloutState::Failed(reason) => {
                let items = list(selector).await.map_err(api_err)?.items;
                let failing = collect_reports(client, &w.namespace, &items, opts, |p| {
                    pod_failure(p).or_else(|| not_ready(p))
                })
                .await;
                return Err(DeployError::RolloutFailed(Box::new(RolloutFailure {
                    workload: label,
                    namespace: w.namespace.clone(),
                    reason,
                    pods: failing,
                })));
            }
            RolloutState::Waiting(_) => {}
        }
        if !selector.is_empty() {
            let items = list(selector).await.map_err(api_err)?.items;
            let crashed: Vec<&Pod> = items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| pod_failure(&serde_json::to_value(p).unwrap_or(Value::Null)).is_some())
                .collect();
            if let Some(first) = crashed.first() {
                let v = serde_json::to_value(first).unwrap_or(Value::Null);
                let reason = pod_failure(&v).unwrap_or_default();
                let reports = collect_reports(client, &w.namespace, &items, opts, pod_failure).await;
                return Err(DeployError::RolloutFailed(Box::new(RolloutFailure {
                    workload: label,
                    namespace: w.namespace.clone(),
                    reason: format!("pod {}: {reason}", first.metadata.name.as_deref().unwrap_or("?")),
                    pods: reports,
                })));
            }
            if Instant::now() >= deadline {
                let reports = collect_reports(client, &w.namespace, &items, opts, not_ready).await;
                return Err(DeployError::Timeout {
                    timeout: opts.timeout,
                    failure: Box::new(RolloutFailure {
                        workload: label,
                        namespace: w.namespace.clone(),
                        reason: last,
                        pods: reports,
                    }),
                });
            }
        } else if Instant::now() >= deadline {
            return Err(DeployError::Timeout {
                timeout: opts.timeout,
                failure: Box::new(RolloutFailure {
                    workload: label,
                    namespace: w.namespace.clone(),
                    reason: last,
                    pods: Vec::new(),
                }),
            });
        }
        let sleep = opts
            .poll_interval
            .min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(sleep.max(std::time::Duration::from_millis(10))).await;
    }
}

/// Why a Pod is not ready yet (for timeout reports).
fn not_ready(pod: &Value) -> Option<String> {
    let ready = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    if ready {
        return None;
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let waiting = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][*k].as_array())
        .flatten()
        .find_map(|cs| {
            cs["state"]["waiting"]["reason"]
                .as_str()
                .map(|r| format!("container {}: {r}", cs["name"].as_str().unwrap_or("?")))
        });
    let unschedulable = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        })
        .map(|c| format!("not scheduled: {}", c["message"].as_str().unwrap_or("")));
    Some(
        unschedulable
            .or(waiting)
            .unwrap_or_else(|| format!("not ready ({phase})")),
    )
}

async fn collect_reports(
    client: &kube::Client,
    ns: &str,
    pods: &[Pod],
    opts: &DeployOptions,
    why: impl Fn(&Value) -> Option<String>,
) -> Vec<PodReport> {
    let mut out = Vec::new();
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let v = serde_json::to_value(p).unwrap_or(Value::Null);
        let Some(reason) = why(&v) else {
            continue;
        };
        let name = p.metadata.name.clone().unwrap_or_default();
        out.push(PodReport {
            events: pod_events(client, ns, &name).await,
            logs: pod_logs(client, ns, &name, &v, opts.log_lines).await,
            name,
            reason,
        });
    }
    out
}

async fn pod_events(client: &kube::Client, ns: &str, pod: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let mut events = match api.list(&lp).await {
        Ok(l) => l.items,
        Err(e) => return vec![format!("(events unavailable: {e})")],
    };
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    events
        .iter()
        .map(|e| {
            let count = e
                .count
                .filter(|c| *c > 1)
                .map(|c| format!(" (x{c})"))
                .unwrap_or_default();
            format!(
                "{} {}: {}{count}",
                e.type_.as_deref().unwrap_or("Normal"),
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect()
}

async fn pod_logs(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    v: &Value,
    lines: usize,
) -> Vec<(String, Vec<String>)> {
    if lines == 0 {
        return Vec::new();
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    let statuses = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| v["status"][*k].as_array())
        .flatten();
    for cs in statuses {
        let Some(name) = cs["name"].as_str() else { continue };
        // A container that never started has no logs (the server answers 400).
        if cs["state"].get("waiting").is_some() && cs["lastState"].get("terminated").is_none() {
            continue;
        }
        let mut lp = LogParams {
            container: Some(name.to_string()),
            tail_lines: Some(lines as i64),
            ..Default::default()
        };
        let text = match api.logs(pod, &lp).await {
            Ok(t) => t,
            Err(_) => {
                lp.previous = true;
                api.logs(pod, &lp).await.unwrap_or_default()
            }
        };
        let l: Vec<String> = text.lines().map(str::to_string).collect();
        let skip = l.len().saturating_sub(lines);
        out.push((name.to_string(), l.into_iter().skip(skip).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_judged_like_kubectl() {
        let d = |gen_: i64, status: Value| json!({"kind": "Deployment", "metadata": {"name": "web", "generation": gen_}, "spec": {"replicas": 2}, "status": status});
        assert_eq!(
            judge_rollout(&d(2, json!({"observedGeneration": 1}))),
            RolloutState::Waiting("Waiting for deployment spec update to be observed...".into())
        );
        assert_eq!(
            judge_rollout(&d(1, json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1}))),
            RolloutState::Waiting("Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...".into())
        );
        assert_eq!(
            judge_rollout(&d(
                1,
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2})
            )),
            RolloutState::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
                    .into()
            )
        );
        assert_eq!(
            judge_rollout(&d(
                1,
                json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1})
            )),
            RolloutState::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available..."
                    .into()
            )
        );
        assert_eq!(
            judge_rollout(&d(
                1,
                json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            )),
            RolloutState::Done("deployment \"web\" successfully rolled out".into())
        );
        assert_eq!(
            judge_rollout(&d(
                1,
                json!({"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]})
            )),
            RolloutState::Failed("deployment \"web\" exceeded its progress deadline".into())
        );
    }

    #[test]
    fn statefulset_and_daemonset() {
        let s = json!({"kind": "StatefulSet", "metadata": {"name": "db", "generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "readyReplicas": 1}});
        assert_eq!(
            judge_rollout(&s),
            RolloutState::Waiting("Waiting for 1 pods to be ready...".into())
        );
        let ds = json!({"kind": "DaemonSet", "metadata": {"name": "agent", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 1, "updatedNumberScheduled": 1, "numberAvailable": 1}});
        assert_eq!(
            judge_rollout(&ds),
            RolloutState::Done("daemon set \"agent\" successfully rolled out".into())
        );
    }

    #[test]
    fn pod_failures() {
        let crash = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}}]}});
        assert_eq!(
            pod_failure(&crash).as_deref(),
            Some("container app: CrashLoopBackOff: back-off 10s")
        );
        let exited = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}});
        assert_eq!(
            pod_failure(&exited).as_deref(),
            Some("container app exited with code 3 (Error)")
        );
        let creating = json!({"status": {"phase": "Pending", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_failure(&creating), None);
        assert_eq!(
            not_ready(&creating).as_deref(),
            Some("container app: ContainerCreating")
        );
    }

    #[test]
    fn selectors() {
        let o = json!({"spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}});
        assert_eq!(selector_of(&o), "app=web,tier in (a,b)");
    }
}
