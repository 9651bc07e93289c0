//! Applying: find each object's resource through API discovery (one request per
//! group/version, so CRDs work as well as built-in kinds), place it in its namespace, and
//! send it with server-side apply (`PATCH ... application/apply-patch+yaml`,
//! `fieldManager=podci`, `force=true`). A dry run sends the same request with
//! `dryRun=All` and diffs the live object against what the server would store.

use super::yaml::to_yaml;
use super::{Action, AppliedObject, DeployError, DeployEvent, DeployOptions, FIELD_MANAGER, Manifest};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;
use std::collections::HashMap;

/// A workload to wait for.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub ar: ApiResource,
}

pub(crate) struct Applied {
    pub objects: Vec<AppliedObject>,
    pub workloads: Vec<Workload>,
    pub diff: String,
    pub rendered: String,
}

/// Namespaces and CRDs first (what later objects may need), then file order.
fn apply_order(m: &Manifest) -> u8 {
    match m.kind() {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    }
}

fn gvk_of(m: &Manifest) -> GroupVersionKind {
    let (group, version) = match m.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", m.api_version()),
    };
    GroupVersionKind::gvk(group, version, m.kind())
}

/// The object without what the server alone owns, for printing and diffing.
pub(crate) fn clean(v: &Value) -> Value {
    let mut o = v.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    o
}

async fn discover(
    client: &kube::Client,
    cache: &mut HashMap<String, (ApiResource, ApiCapabilities)>,
    m: &Manifest,
) -> Result<(ApiResource, ApiCapabilities), DeployError> {
    let key = format!("{}/{}", m.api_version(), m.kind());
    if let Some(hit) = cache.get(&key) {
        return Ok(hit.clone());
    }
    let gvk = gvk_of(m);
    let found = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| match e {
            kube::Error::Discovery(_) => DeployError::UnknownKind {
                api_version: m.api_version().to_string(),
                kind: m.kind().to_string(),
            },
            kube::Error::Api(s) if s.code == 404 => DeployError::UnknownKind {
                api_version: m.api_version().to_string(),
                kind: m.kind().to_string(),
            },
            source => DeployError::Api {
                kind: m.kind().to_string(),
                name: m.name().to_string(),
                source,
            },
        })?;
    cache.insert(key, found.clone());
    Ok(found)
}

pub(crate) async fn apply_all(
    client: &kube::Client,
    manifests: &[Manifest],
    opts: &DeployOptions,
    default_ns: &str,
    progress: &mut dyn FnMut(DeployEvent),
) -> Result<Applied, DeployError> {
    let mut ordered: Vec<&Manifest> = manifests.iter().collect();
    ordered.sort_by_key(|m| apply_order(m));
    let mut cache = HashMap::new();
    let mut out = Applied {
        objects: Vec::new(),
        workloads: Vec::new(),
        diff: String::new(),
        rendered: String::new(),
    };
    for m in ordered {
        let (ar, caps) = discover(client, &mut cache, m).await?;
        let mut obj = m.object.clone();
        let name = m.name().to_string();
        let namespace = if caps.scope == Scope::Namespaced {
            let own = obj["metadata"]["namespace"].as_str().filter(|s| !s.is_empty());
            let ns = match (&opts.namespace, own) {
                (Some(flag), Some(own)) if flag != own => {
                    return Err(DeployError::NamespaceMismatch {
                        file: m.source.clone(),
                        kind: m.kind().to_string(),
                        name,
                        own: own.to_string(),
                        flag: flag.clone(),
                    });
                }
                (Some(flag), _) => flag.clone(),
                (None, Some(own)) => own.to_string(),
                (None, None) => default_ns.to_string(),
            };
            obj["metadata"]["namespace"] = Value::String(ns.clone());
            Some(ns)
        } else {
            if let Some(meta) = obj["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            None
        };
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let api_err = |source| DeployError::Api {
            kind: m.kind().to_string(),
            name: name.clone(),
            source,
        };
        let live = api.get_opt(&name).await.map_err(api_err)?;
        let mut pp = PatchParams::apply(FIELD_MANAGER).force();
        if opts.dry_run {
            pp = pp.dry_run();
        }
        let result = api
            .patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .map_err(api_err)?;
        let live_json = live
            .as_ref()
            .map(|l| serde_json::to_value(l).unwrap_or(Value::Null));
        let result_json = serde_json::to_value(&result).unwrap_or(Value::Null);
        let action = match (&live, opts.dry_run) {
            (None, false) => Action::Created,
            (None, true) => Action::WouldCreate,
            (Some(l), false) => {
                if l.metadata.resource_version == result.metadata.resource_version {
                    Action::Unchanged
                } else {
                    Action::Configured
                }
            }
            (Some(_), true) => {
                if live_json.as_ref().map(clean) == Some(clean(&result_json)) {
                    Action::WouldStayUnchanged
                } else {
                    Action::WouldConfigure
                }
            }
        };
        if opts.dry_run {
            let after = to_yaml(&clean(&result_json));
            let before = live_json.as_ref().map(|l| to_yaml(&clean(l))).unwrap_or_default();
            let label = match &namespace {
                Some(ns) => format!("{}/{ns}/{name}", m.kind()),
                None => format!("{}/{name}", m.kind()),
            };
            out.diff.push_str(&unified_diff(&before, &after, &label));
            out.rendered.push_str("---\n");
            out.rendered.push_str(&after);
        }
        let applied = AppliedObject {
            api_version: m.api_version().to_string(),
            kind: m.kind().to_string(),
            name: name.clone(),
            namespace: namespace.clone(),
            action,
        };
        progress(DeployEvent::Applied(applied.clone()));
        out.objects.push(applied);
        if matches!(m.kind(), "Deployment" | "StatefulSet" | "DaemonSet")
            && let Some(ns) = namespace
        {
            out.workloads.push(Workload {
                kind: m.kind().to_string(),
                name,
                namespace: ns,
                ar,
            });
        }
    }
    Ok(out)
}

/// `diff -u` of two texts with `live/LABEL` and `podci/LABEL` headers; empty when equal.
pub(crate) fn unified_diff(before: &str, after: &str, label: &str) -> String {
    if before == after {
        return String::new();
    }
    let diff = similar::TextDiff::from_lines(before, after);
    diff.unified_diff()
        .context_radius(3)
        .header(&format!("live/{label}"), &format!("podci/{label}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_shows_only_changes() {
        let d = unified_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n", "ConfigMap/ns/x");
        assert_eq!(
            d,
            "--- live/ConfigMap/ns/x\n+++ podci/ConfigMap/ns/x\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n"
        );
        assert_eq!(unified_diff("a\n", "a\n", "x"), "");
    }

    #[test]
    fn clean_drops_server_fields() {
        let v = json!({"kind": "ConfigMap", "metadata": {"name": "x", "uid": "u", "resourceVersion": "5", "managedFields": [], "labels": {"a": "b"}}, "status": {}});
        assert_eq!(
            clean(&v),
            json!({"kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "b"}}})
        );
    }

    #[test]
    fn namespaces_first() {
        let m = |kind: &str| Manifest {
            source: "s".into(),
            document: 1,
            object: json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "n"}}),
        };
        let ms = [m("Deployment"), m("Namespace"), m("Service")];
        let mut v: Vec<&Manifest> = ms.iter().collect();
        v.sort_by_key(|m| apply_order(m));
        assert_eq!(
            v.iter().map(|m| m.kind()).collect::<Vec<_>>(),
            ["Namespace", "Deployment", "Service"]
        );
    }
}
