//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) for every resource the
//! fake serves: create-or-update, a `managedFields` entry for the field manager with the
//! applied fields as FieldsV1, `dryRun=All` (nothing stored), and no write (no new
//! resourceVersion) when an apply changes nothing, as the real server does.
//!
//! Merging follows the strategic-merge keys that matter for workloads: lists of objects
//! with a `name` (containers, env, volumes, ports...) merge by name, other lists are
//! replaced. Not implemented (see README): removal of fields a manager stopped applying,
//! and conflicts between managers (podci always applies with `force=true`).

use crate::Shared;
use crate::api::{self, Query};
use crate::store::Key;
use crate::util::{self, ApiError};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Whether a request's Content-Type asks for server-side apply.
pub fn is_apply(content_type: &str) -> bool {
    content_type.starts_with("application/apply-patch")
}

/// The FieldsV1 set of an applied configuration.
pub fn fields_v1(config: &Value) -> Value {
    match config {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                out.insert(format!("f:{k}"), field_set(v));
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

fn field_set(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(format!("f:{k}"), field_set(v));
            }
            Value::Object(out)
        }
        Value::Array(items) if items.iter().all(|i| list_key(i).is_some()) && !items.is_empty() => {
            let mut out = Map::new();
            for i in items {
                if let Some((k, kv)) = list_key(i) {
                    let mut entry = field_set(i);
                    if let Some(e) = entry.as_object_mut() {
                        e.insert(".".into(), json!({}));
                    }
                    out.insert(format!("k:{{\"{k}\":{}}}", util::go_json(&kv)), entry);
                }
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

/// The merge key of a list item: `name`, else `containerPort`/`port` for ports.
fn list_key(item: &Value) -> Option<(&'static str, Value)> {
    for k in ["name", "containerPort", "port", "mountPath"] {
        if let Some(v) = item.get(k).filter(|v| !v.is_null()) {
            return Some((k, v.clone()));
        }
    }
    None
}

/// Merge an applied configuration into a live object.
pub fn merge_applied(live: &mut Value, config: &Value) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, v) in c {
                match l.get_mut(k) {
                    Some(lv) if v.is_object() && lv.is_object() => merge_applied(lv, v),
                    Some(lv) if v.is_array() && lv.is_array() => merge_list(lv, v),
                    _ => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (l, c) => *l = c.clone(),
    }
}

fn merge_list(live: &mut Value, config: &Value) {
    let (Some(l), Some(c)) = (live.as_array(), config.as_array()) else {
        *live = config.clone();
        return;
    };
    let keyed = !c.is_empty() && c.iter().all(|i| list_key(i).is_some());
    if !keyed {
        *live = config.clone();
        return;
    }
    // The applied order wins; live items with the same key keep fields set by others.
    let mut out = Vec::new();
    for ci in c {
        let key = list_key(ci);
        let mut item = l
            .iter()
            .find(|li| list_key(li) == key)
            .cloned()
            .unwrap_or_else(|| json!({}));
        merge_applied(&mut item, ci);
        out.push(item);
    }
    *live = Value::Array(out);
}

fn managed_entry(manager: &str, api_version: &str, config: &Value) -> Value {
    json!({"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": util::now_rfc3339(),
        "fieldsType": "FieldsV1", "fieldsV1": fields_v1(config)})
}

fn set_managed(obj: &mut Value, entry: Value) {
    let manager = entry["manager"].clone();
    let mut list: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
        .collect();
    list.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(list);
}

/// Handle an apply PATCH of `resource/name` in `ns`.
pub fn apply(
    shared: &Arc<Shared>,
    resource: &str,
    ns: &str,
    name: &str,
    body: &[u8],
    q: &Query,
) -> Result<Response, ApiError> {
    let kind = crate::apps::kind_of(resource);
    let config: Value = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => v,
        _ => {
            return Err(ApiError::bad_request(format!(
                "error decoding YAML: the fake API server accepts apply patches as JSON only (kube and kubectl send JSON); {kind} {name:?}"
            )));
        }
    };
    let manager = q.get("fieldManager").unwrap_or("");
    if manager.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )
        .with_details(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]})));
    }
    let api_version = crate::apps::api_version_of(kind);
    if config["apiVersion"].as_str() != Some(api_version) || config["kind"].as_str() != Some(kind) {
        return Err(ApiError::bad_request(format!(
            "apply patches must set apiVersion {api_version:?} and kind {kind:?} for {resource}"
        )));
    }
    match config["metadata"]["name"].as_str() {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        None => {}
    }
    if let Some(ons) = config["metadata"]["namespace"].as_str()
        && !ons.is_empty()
        && ons != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let dry_run = q.get("dryRun") == Some("All");
    let key = Key::new(resource, ns, name);
    let existing = shared.lock().get(&key).cloned();
    let entry = managed_entry(manager, api_version, &config);
    match existing {
        None => {
            let mut obj = config.clone();
            obj["metadata"]["name"] = json!(name);
            if let Some(m) = obj.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            let created = if dry_run {
                dry_run_create(shared, resource, ns, obj)?
            } else if resource == "pods" {
                api::create_pod(shared, ns, obj)?
            } else if crate::apps::is_apps(resource) {
                crate::apps::create(shared, resource, ns, obj)?
            } else {
                api::create_simple(shared, resource, ns, obj)?
            };
            let out = if dry_run {
                let mut out = created;
                set_managed(&mut out, entry);
                out
            } else {
                let stored = shared.lock().modify(&key, |o| set_managed(o, entry.clone()));
                stored.unwrap_or(created)
            };
            Ok(api::object_response(StatusCode::CREATED, resource, out))
        }
        Some(live) => {
            let mut next = live.clone();
            let mut cfg = config.clone();
            if let Some(m) = cfg.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
                m.remove("status");
            }
            merge_applied(&mut next, &cfg);
            if crate::apps::is_apps(resource) {
                crate::apps::after_update(&live, &mut next)?;
            }
            let old_fields = live["metadata"]["managedFields"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["manager"] == json!(manager) && e["operation"] == "Apply"))
                .map(|e| e["fieldsV1"].clone());
            if next == live && old_fields.as_ref() == Some(&entry["fieldsV1"]) {
                // A no-op apply does not write: same resourceVersion.
                return Ok(api::object_response(StatusCode::OK, resource, live));
            }
            set_managed(&mut next, entry);
            if dry_run {
                return Ok(api::object_response(StatusCode::OK, resource, next));
            }
            let stored = shared
                .lock()
                .update(&key, next)
                .ok_or_else(|| ApiError::not_found(resource, name))?;
            Ok(api::object_response(StatusCode::OK, resource, stored))
        }
    }
}

/// What a create would store, without storing it (`dryRun=All`).
fn dry_run_create(shared: &Arc<Shared>, resource: &str, ns: &str, obj: Value) -> Result<Value, ApiError> {
    let _ = shared;
    let mut causes = api::Causes(Vec::new());
    api::validate_meta(&obj, &mut causes);
    causes.into_result(crate::apps::kind_of(resource), obj["metadata"]["name"].as_str().unwrap_or(""))?;
    let mut meta = api::base_metadata(&obj, ns);
    meta.remove("resourceVersion");
    let mut out = Map::new();
    out.insert("metadata".into(), Value::Object(meta));
    for (k, v) in obj.as_object().cloned().unwrap_or_default() {
        if k != "metadata" {
            out.insert(k, v);
        }
    }
    let mut out = Value::Object(out);
    if crate::apps::is_apps(resource) {
        crate::apps::admit(resource, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_lists_by_name_and_replaces_others() {
        let mut live = json!({"spec": {"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent"}, {"name": "side", "image": "s"}], "args": ["x"]}});
        merge_applied(&mut live, &json!({"spec": {"containers": [{"name": "app", "image": "a:2"}], "args": ["y", "z"]}}));
        assert_eq!(
            live,
            json!({"spec": {"containers": [{"name": "app", "image": "a:2", "imagePullPolicy": "IfNotPresent"}], "args": ["y", "z"]}})
        );
    }

    #[test]
    fn fields_v1_uses_keys() {
        let f = fields_v1(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "i"}]}}));
        assert_eq!(
            f,
            json!({"f:metadata": {"f:name": {}}, "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}}}}})
        );
    }
}
