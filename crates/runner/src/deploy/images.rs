//! Setting images by container name (`--image app=REF`): every container and init
//! container called `app` in a workload's Pod template gets `REF`. This edits the parsed
//! objects, never the text, so comments, anchors or an image string elsewhere in a
//! manifest cannot be hit by accident (the `sed` problem this replaces).

use super::{DeployError, Manifest};
use serde_json::Value;
use std::collections::BTreeSet;

/// Parse `NAME=IMAGE`.
pub fn parse_image_arg(arg: &str) -> Result<(String, String), DeployError> {
    match arg.split_once('=') {
        Some((n, i)) if !n.trim().is_empty() && !i.trim().is_empty() && !n.contains(char::is_whitespace) => {
            Ok((n.trim().to_string(), i.trim().to_string()))
        }
        _ => Err(DeployError::ImageArg { arg: arg.to_string() }),
    }
}

/// The Pod spec inside an object of a workload kind.
fn pod_spec_mut(obj: &mut Value) -> Option<&mut Value> {
    let kind = obj["kind"].as_str()?.to_string();
    let spec = match kind.as_str() {
        "Pod" => obj.get_mut("spec")?,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            obj.get_mut("spec")?.get_mut("template")?.get_mut("spec")?
        }
        "CronJob" => obj
            .get_mut("spec")?
            .get_mut("jobTemplate")?
            .get_mut("spec")?
            .get_mut("template")?
            .get_mut("spec")?,
        _ => return None,
    };
    Some(spec)
}

/// Set every `(container name, image)`; an image whose name matches no container in any
/// workload is an error that lists the container names there are.
pub fn set_images(manifests: &mut [Manifest], images: &[(String, String)]) -> Result<(), DeployError> {
    let mut matched = vec![false; images.len()];
    let mut known = BTreeSet::new();
    for m in manifests.iter_mut() {
        let Some(spec) = pod_spec_mut(&mut m.object) else {
            continue;
        };
        for list in ["initContainers", "containers"] {
            let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in containers {
                let Some(name) = c["name"].as_str().map(str::to_string) else {
                    continue;
                };
                for (i, (want, image)) in images.iter().enumerate() {
                    if *want == name {
                        c["image"] = Value::String(image.clone());
                        matched[i] = true;
                    }
                }
                known.insert(name);
            }
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.into_iter().collect::<Vec<_>>().join(", ")
        };
        return Err(DeployError::ImageUnmatched {
            name: images[i].0.clone(),
            image: images[i].1.clone(),
            known,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(object: Value) -> Manifest {
        Manifest {
            source: "t".into(),
            document: 1,
            object,
        }
    }

    #[test]
    fn sets_containers_and_init_containers_by_name_only() {
        let mut ms = vec![
            m(json!({"kind": "Deployment", "spec": {"template": {"spec": {
                "initContainers": [{"name": "app", "image": "old"}, {"name": "migrate", "image": "m"}],
                "containers": [{"name": "app", "image": "old", "env": [{"name": "X", "value": "old"}]}, {"name": "side", "image": "old"}]}}}})),
            m(
                json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "c"}]}}}}}}),
            ),
            m(json!({"kind": "ConfigMap", "data": {"app": "old"}})),
        ];
        set_images(&mut ms, &[("app".into(), "reg/app:2".into())]).unwrap();
        let d = &ms[0].object["spec"]["template"]["spec"];
        assert_eq!(d["initContainers"][0]["image"], "reg/app:2");
        assert_eq!(d["initContainers"][1]["image"], "m");
        assert_eq!(d["containers"][0]["image"], "reg/app:2");
        assert_eq!(d["containers"][0]["env"][0]["value"], "old");
        assert_eq!(d["containers"][1]["image"], "old");
        assert_eq!(
            ms[1].object["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "reg/app:2"
        );
        assert_eq!(ms[2].object["data"]["app"], "old");
    }

    #[test]
    fn unmatched_name_is_an_error_listing_containers() {
        let mut ms = vec![m(
            json!({"kind": "Pod", "spec": {"containers": [{"name": "web", "image": "x"}]}}),
        )];
        let e = set_images(&mut ms, &[("app".into(), "r".into())]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--image app=r: no container or init container named \"app\" in any workload (containers: web)"
        );
    }

    #[test]
    fn image_args() {
        assert_eq!(
            parse_image_arg("app=reg:5000/a:1").unwrap(),
            ("app".into(), "reg:5000/a:1".into())
        );
        assert!(parse_image_arg("app").is_err());
        assert!(parse_image_arg("=x").is_err());
        assert!(parse_image_arg("app=").is_err());
    }
}
