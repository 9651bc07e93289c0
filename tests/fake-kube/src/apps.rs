//! The `apps/v1` API group: discovery (`/apis`, `/apis/apps`, `/apis/apps/v1`), and
//! Deployments, ReplicaSets, StatefulSets and DaemonSets with create, get, list, watch,
//! merge patch, server-side apply (`crate::apply`), update and delete with cascading
//! deletion of what they own. Admission defaults and validates as the real server does
//! for the fields podci relies on (replicas, strategy, progressDeadlineSeconds, the
//! selector matching the template's labels) and keeps `metadata.generation`. The
//! controllers behind these objects are in `crate::controllers`.

use crate::Shared;
use crate::api::{self, Caller, Query};
use crate::store::Key;
use crate::util::{ApiError, json_response};
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;

/// The resources this module serves.
pub const RESOURCES: &[&str] = &["deployments", "replicasets", "statefulsets", "daemonsets"];

pub fn is_apps(resource: &str) -> bool {
    RESOURCES.contains(&resource)
}

/// Kind of any resource the fake serves (core/v1 or apps/v1).
pub fn kind_of(resource: &str) -> &'static str {
    match resource {
        "deployments" => "Deployment",
        "replicasets" => "ReplicaSet",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "pods" => "Pod",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "services" => "Service",
        "serviceaccounts" => "ServiceAccount",
        "events" => "Event",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "namespaces" => "Namespace",
        "nodes" => "Node",
        _ => "Unknown",
    }
}

/// The apiVersion objects of a kind carry.
pub fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => "apps/v1",
        "DeploymentList" | "ReplicaSetList" | "StatefulSetList" | "DaemonSetList" => "apps/v1",
        _ => "v1",
    }
}

/// `GET /apis`: the groups served (apps only; core is under `/api`).
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

fn group() -> Value {
    json!({"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}})
}

/// `GET /apis/apps/v1`, as a v1.33 server lists it.
pub fn resource_list() -> Value {
    let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
    let sub = json!(["get", "patch", "update"]);
    let mut resources = Vec::new();
    for (name, singular, kind, short) in [
        ("controllerrevisions", "controllerrevision", "ControllerRevision", None),
        ("daemonsets", "daemonset", "DaemonSet", Some("ds")),
        ("deployments", "deployment", "Deployment", Some("deploy")),
        ("replicasets", "replicaset", "ReplicaSet", Some("rs")),
        ("statefulsets", "statefulset", "StatefulSet", Some("sts")),
    ] {
        let mut r = json!({"name": name, "singularName": singular, "namespaced": true, "kind": kind, "verbs": verbs});
        if let Some(s) = short {
            r["shortNames"] = json!([s]);
            r["categories"] = json!(["all"]);
        }
        resources.push(r);
        if name != "controllerrevisions" {
            resources.push(json!({"name": format!("{name}/status"), "singularName": "", "namespaced": true, "kind": kind, "verbs": sub}));
            if name != "daemonsets" {
                resources.push(json!({"name": format!("{name}/scale"), "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": sub}));
            }
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": resources})
}

fn not_found_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
}

/// Route a request under `/apis/apps...`. `segs` are the path segments.
pub async fn route(shared: &Arc<Shared>, caller: &Caller, req: Request, segs: &[String], query: &Query) -> Result<Response, ApiError> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (ns, resource, name, sub) = match s.as_slice() {
        ["apis", "apps"] => return Ok(json_response(StatusCode::OK, &{
            let mut g = group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })),
        ["apis", "apps", "v1"] => return Ok(json_response(StatusCode::OK, &resource_list())),
        ["apis", "apps", "v1", r] => ("*".to_string(), r.to_string(), None, None),
        ["apis", "apps", "v1", "namespaces", ns, r] => (ns.to_string(), r.to_string(), None, None),
        ["apis", "apps", "v1", "namespaces", ns, r, n] => (ns.to_string(), r.to_string(), Some(n.to_string()), None),
        ["apis", "apps", "v1", "namespaces", ns, r, n, sub] => {
            (ns.to_string(), r.to_string(), Some(n.to_string()), Some(sub.to_string()))
        }
        _ => return Err(not_found_path()),
    };
    if !is_apps(&resource) || sub.as_deref().is_some_and(|s| s != "status") {
        return Err(not_found_path());
    }
    let method = req.method().clone();
    let verb = match (&method, name.is_some()) {
        (&Method::GET, _) if query.flag("watch") => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        _ => {
            return Err(ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"));
        }
    };
    let ns_rbac = if ns == "*" { "" } else { ns.as_str() };
    caller.authorize(verb, &resource, sub.as_deref(), ns_rbac, name.as_deref())?;
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let name = name.unwrap_or_default();
    if ns != "*" && !ns.is_empty() && !namespace_exists(shared, &ns) && matches!(verb, "create" | "patch" | "update") {
        return Err(ApiError::not_found("namespaces", &ns));
    }
    match verb {
        "watch" => api::watch(shared, &resource, &ns, (!name.is_empty()).then_some(name.as_str()), query),
        "list" => api::list(shared, &resource, &ns, query, &parts.headers),
        "get" => api::get_one(shared, &resource, &ns, &name),
        "create" => {
            let obj = api::parse_json(&body, kind_of(&resource))?;
            if let Some(ons) = obj["metadata"]["namespace"].as_str()
                && !ons.is_empty()
                && ons != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if query.get("dryRun") == Some("All") {
                let mut o = obj.clone();
                admit(&resource, &mut o)?;
                return Ok(api::object_response(StatusCode::CREATED, &resource, o));
            }
            create(shared, &resource, &ns, obj).map(|o| api::object_response(StatusCode::CREATED, &resource, o))
        }
        "patch" => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if crate::apply::is_apply(ct) {
                return crate::apply::apply(shared, &resource, &ns, &name, &body, query);
            }
            let patch = api::parse_json(&body, kind_of(&resource))?;
            let key = Key::new(&resource, &ns, &name);
            let status_only = sub.is_some();
            let mut st = shared.lock();
            let live = st.get(&key).cloned().ok_or_else(|| ApiError::not_found(&resource, &name))?;
            let mut next = live.clone();
            if status_only {
                api::merge_patch(&mut next["status"], &patch["status"]);
            } else {
                let mut p = patch.clone();
                if let Some(m) = p.as_object_mut() {
                    m.remove("status");
                }
                api::merge_patch(&mut next, &p);
                after_update(&live, &mut next)?;
            }
            let out = st.modify(&key, |o| *o = next).ok_or_else(|| ApiError::not_found(&resource, &name))?;
            Ok(api::object_response(StatusCode::OK, &resource, out))
        }
        "update" => {
            let obj = api::parse_json(&body, kind_of(&resource))?;
            let key = Key::new(&resource, &ns, &name);
            let mut st = shared.lock();
            let live = st.get(&key).cloned().ok_or_else(|| ApiError::not_found(&resource, &name))?;
            let mut next = live.clone();
            if sub.is_some() {
                next["status"] = obj["status"].clone();
            } else {
                next["spec"] = obj["spec"].clone();
                for k in ["labels", "annotations"] {
                    match obj["metadata"].get(k) {
                        Some(v) => next["metadata"][k] = v.clone(),
                        None => {
                            if let Some(m) = next["metadata"].as_object_mut() {
                                m.remove(k);
                            }
                        }
                    }
                }
                after_update(&live, &mut next)?;
            }
            let out = st.modify(&key, |o| *o = next).ok_or_else(|| ApiError::not_found(&resource, &name))?;
            Ok(api::object_response(StatusCode::OK, &resource, out))
        }
        "delete" => {
            let removed = delete_cascade(shared, &resource, &ns, &name).ok_or_else(|| ApiError::not_found(&resource, &name))?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": "apps", "kind": resource, "uid": removed["metadata"]["uid"]}}),
            ))
        }
        _ => Err(not_found_path()),
    }
}

fn namespace_exists(shared: &Shared, ns: &str) -> bool {
    shared.lock().get(&Key::new("namespaces", "", ns)).is_some()
}

/// Defaults and validation of a workload of `resource` (`obj` has metadata and spec).
pub fn admit(resource: &str, obj: &mut Value) -> Result<(), ApiError> {
    default_workload(kind_of(resource), obj)?;
    default_kind_fields(resource, obj);
    Ok(())
}

fn default_workload(kind: &str, obj: &mut Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    let labels = spec["template"]["metadata"]["labels"].clone();
    let sel = spec["selector"]["matchLabels"].clone();
    let mut causes = api::Causes(Vec::new());
    if spec["selector"].is_null() {
        causes.required("spec.selector");
    } else if let Some(m) = sel.as_object() {
        let ok = m.iter().all(|(k, v)| labels.get(k) == Some(v));
        if !ok {
            causes.invalid(
                "spec.template.metadata.labels",
                &labels.as_object().map(|l| l.iter().map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                "`selector` does not match template `labels`",
            );
        }
    }
    if spec["template"]["spec"]["containers"].as_array().is_none_or(|c| c.is_empty()) {
        causes.required("spec.template.spec.containers");
    }
    causes.into_result(kind, &name)?;
    if spec.get("replicas").is_none_or(|r| r.is_null()) {
        spec["replicas"] = json!(1);
    }
    spec.as_object_mut().map(|m| m.entry("revisionHistoryLimit").or_insert(json!(10)));
    obj["metadata"]["generation"] = json!(1);
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    Ok(())
}

fn default_kind_fields(resource: &str, obj: &mut Value) {
    let spec = &mut obj["spec"];
    match resource {
        "deployments" => {
            if spec["strategy"].is_null() {
                spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
            }
            if spec["progressDeadlineSeconds"].is_null() {
                spec["progressDeadlineSeconds"] = json!(600);
            }
        }
        "statefulsets" => {
            if spec["updateStrategy"].is_null() {
                spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
            }
            if spec["podManagementPolicy"].is_null() {
                spec["podManagementPolicy"] = json!("OrderedReady");
            }
        }
        "daemonsets" => {
            if spec["updateStrategy"].is_null() {
                spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
            }
            if let Some(m) = spec.as_object_mut() {
                m.remove("replicas");
            }
        }
        _ => {}
    }
}

/// Admit and store a new workload, and start its controller.
pub fn create(shared: &Arc<Shared>, resource: &str, ns: &str, obj: Value) -> Result<Value, ApiError> {
    let mut causes = api::Causes(Vec::new());
    api::validate_meta(&obj, &mut causes);
    causes.into_result(kind_of(resource), obj["metadata"]["name"].as_str().unwrap_or(""))?;
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    admit(resource, &mut o)?;
    let mut meta = api::base_metadata(&o, ns);
    meta.insert("generation".into(), json!(1));
    let name = meta["name"].as_str().unwrap_or("").to_string();
    o["metadata"] = Value::Object(meta);
    let key = Key::new(resource, ns, &name);
    let stored = {
        let mut st = shared.lock();
        if st.get(&key).is_some() {
            return Err(ApiError::new(409, "AlreadyExists", format!("{resource}.apps \"{name}\" already exists"))
                .with_details(json!({"name": name, "group": "apps", "kind": resource})));
        }
        st.create(key, o)
    };
    crate::controllers::start(shared, resource, ns, &name);
    Ok(stored)
}

/// A spec change bumps `metadata.generation`; the selector is immutable.
pub fn after_update(live: &Value, next: &mut Value) -> Result<(), ApiError> {
    if live["spec"]["selector"] != next["spec"]["selector"] && !live["spec"]["selector"].is_null() {
        let name = live["metadata"]["name"].as_str().unwrap_or("");
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("Deployment.apps \"{name}\" is invalid: spec.selector: Invalid value: field is immutable"),
        ));
    }
    if live["spec"] != next["spec"] {
        let g = live["metadata"]["generation"].as_i64().unwrap_or(1);
        next["metadata"]["generation"] = json!(g + 1);
    }
    Ok(())
}

/// Delete an object and, like the garbage collector with background propagation,
/// everything it owns (ReplicaSets, then their Pods).
pub fn delete_cascade(shared: &Arc<Shared>, resource: &str, ns: &str, name: &str) -> Option<Value> {
    let removed = shared.lock().remove(&Key::new(resource, ns, name))?;
    let uid = removed["metadata"]["uid"].clone();
    let owned: Vec<Key> = shared
        .lock()
        .objects
        .iter()
        .filter(|(k, v)| {
            k.namespace == ns
                && v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in owned {
        if k.resource == "pods" {
            let _ = api::delete_pod(shared, &k.namespace, &k.name, Some(0));
        } else {
            delete_cascade(shared, &k.resource, &k.namespace, &k.name);
        }
    }
    Some(removed)
}
