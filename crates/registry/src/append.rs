//! Daemonless image builds: take a base image, add layers made deterministically from
//! local files, change config fields, and produce a new image whose manifest keeps the
//! base's media-type family (OCI or Docker). Base layers are not touched: they stay where
//! they are (a registry, a layout, a tarball) and are mounted, skipped or streamed when
//! the result is written.

use std::path::Path;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::client::{BlobSource, Client};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Image, Layer, Location, blocking, load};
use crate::layer::{LayerOptions, LayerSpec, build_layer};
use crate::manifest::{Descriptor, Platform, RawManifest, is_docker_family, media};

/// Config fields to set on the new image. `None` / empty leaves the base's value.
#[derive(Debug, Clone, Default)]
pub struct ConfigChanges {
    /// Replaces the entrypoint; like a Dockerfile `ENTRYPOINT`, this also clears the
    /// base's `Cmd` unless `cmd` is given too.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries, replacing an existing `KEY`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub labels: Vec<(String, String)>,
    /// `8080` or `8080/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
}

/// What to append.
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    pub layers: Vec<LayerSpec>,
    pub layer_options: LayerOptions,
    pub changes: ConfigChanges,
    /// `created` of the config and history; fixed so builds are reproducible.
    pub created: Option<String>,
}

/// The new image plus the directory holding its freshly built layers, which must live
/// until the image is written.
pub struct Appended {
    pub image: Image,
    _work: tempfile::TempDir,
}

/// A base image with no layers (`--base scratch`).
pub fn scratch(platform: &Platform) -> Result<Image> {
    let config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    let config = Bytes::from(serde_json::to_vec(&config).map_err(invalid("config"))?);
    let config_desc = Descriptor::new(media::OCI_CONFIG, Digest::of(&config), config.len() as u64);
    let manifest =
        json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": config_desc, "layers": []});
    let bytes = serde_json::to_vec(&manifest).map_err(invalid("manifest"))?;
    Ok(Image {
        manifest: RawManifest::new(bytes.into(), Some(media::OCI_MANIFEST))?,
        config_desc,
        config,
        layers: vec![],
    })
}

fn invalid(what: &'static str) -> impl Fn(serde_json::Error) -> Error {
    move |e| Error::InvalidContent {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Loads `base` (or scratch when `None`), builds the layers in a temporary directory
/// under `work_dir`, and returns the new image.
pub async fn append(
    client: &Client,
    base: Option<&Location>,
    opts: &AppendOptions,
    work_dir: &Path,
) -> Result<Appended> {
    let base = match base {
        Some(l) => load(client, l).await?,
        None => scratch(&client.options().platform)?,
    };
    let work = tempfile::Builder::new()
        .prefix(".podci-append-")
        .tempdir_in(work_dir)
        .map_err(Error::io(work_dir))?;
    let (specs, lopts, dir) = (
        opts.layers.clone(),
        opts.layer_options.clone(),
        work.path().to_path_buf(),
    );
    let built = blocking(move || {
        specs
            .iter()
            .map(|s| build_layer(s, &dir, &lopts))
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    let image = apply(base, &built, opts)?;
    Ok(Appended { image, _work: work })
}

fn apply(base: Image, built: &[crate::layer::BuiltLayer], opts: &AppendOptions) -> Result<Image> {
    let docker = is_docker_family(&base.manifest.media_type);
    let (layer_mt, config_mt) = if docker {
        (media::DOCKER_LAYER_GZIP, media::DOCKER_CONFIG)
    } else {
        (media::OCI_LAYER_GZIP, media::OCI_CONFIG)
    };
    let created = opts
        .created
        .clone()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string());

    let mut config = base.config_json()?;
    let cfg = config.as_object_mut().ok_or_else(|| Error::InvalidContent {
        what: "image config".into(),
        reason: "not a JSON object".into(),
    })?;
    cfg.insert("created".into(), created.clone().into());
    let rootfs = cfg
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs
        .as_object_mut()
        .map(|r| r.entry("diff_ids").or_insert_with(|| json!([])))
        .and_then(|d| d.as_array_mut())
        .ok_or_else(|| Error::InvalidContent {
            what: "image config".into(),
            reason: "rootfs.diff_ids is not a list".into(),
        })?;
    for b in built {
        diff_ids.push(b.diff_id.to_string().into());
    }
    let history = cfg.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        for b in built {
            h.push(json!({"created": created, "created_by": format!("podci image append ({})", b.diff_id)}));
        }
    }
    let c = cfg.entry("config").or_insert_with(|| json!({}));
    if c.is_null() {
        *c = json!({});
    }
    let c = c.as_object_mut().ok_or_else(|| Error::InvalidContent {
        what: "image config".into(),
        reason: "config is not an object".into(),
    })?;
    apply_changes(c, &opts.changes);
    let config = Bytes::from(serde_json::to_vec(&config).map_err(invalid("config"))?);
    let config_desc = Descriptor::new(config_mt, Digest::of(&config), config.len() as u64);

    let mut manifest: Value = serde_json::from_slice(&base.manifest.bytes).map_err(invalid("manifest"))?;
    let m = manifest.as_object_mut().ok_or_else(|| Error::InvalidContent {
        what: "manifest".into(),
        reason: "not an object".into(),
    })?;
    m.insert(
        "config".into(),
        serde_json::to_value(&config_desc).map_err(invalid("descriptor"))?,
    );
    let mut layers = base.layers.clone();
    for b in built {
        layers.push(Layer {
            desc: Descriptor::new(layer_mt, b.digest.clone(), b.size),
            source: BlobSource::File {
                path: b.path.clone(),
                offset: 0,
            },
        });
    }
    m.insert(
        "layers".into(),
        serde_json::to_value(layers.iter().map(|l| &l.desc).collect::<Vec<_>>())
            .map_err(invalid("layers"))?,
    );
    let bytes = serde_json::to_vec(&manifest).map_err(invalid("manifest"))?;
    let manifest = RawManifest::new(bytes.into(), Some(&base.manifest.media_type))?;
    Ok(Image {
        manifest,
        config_desc,
        config,
        layers,
    })
}

fn apply_changes(c: &mut Map<String, Value>, ch: &ConfigChanges) {
    if let Some(ep) = &ch.entrypoint {
        c.insert("Entrypoint".into(), json!(ep));
        if ch.cmd.is_none() {
            c.insert("Cmd".into(), Value::Null);
        }
    }
    if let Some(cmd) = &ch.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    if !ch.env.is_empty() {
        let mut env: Vec<String> = c
            .get("Env")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for kv in &ch.env {
            let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
            env.retain(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) != key);
            env.push(kv.clone());
        }
        c.insert("Env".into(), json!(env));
    }
    if let Some(w) = &ch.workdir {
        c.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &ch.user {
        c.insert("User".into(), json!(u));
    }
    if !ch.labels.is_empty() {
        let labels = c.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        if let Some(l) = labels.as_object_mut() {
            for (k, v) in &ch.labels {
                l.insert(k.clone(), json!(v));
            }
        }
    }
    if !ch.exposed_ports.is_empty() {
        let ports = c.entry("ExposedPorts").or_insert_with(|| json!({}));
        if !ports.is_object() {
            *ports = json!({});
        }
        if let Some(p) = ports.as_object_mut() {
            for port in &ch.exposed_ports {
                let key = if port.contains('/') {
                    port.clone()
                } else {
                    format!("{port}/tcp")
                };
                p.insert(key, json!({}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_merge_into_base_config() {
        let mut c = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Labels": {"x": "1"}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        apply_changes(
            &mut c,
            &ConfigChanges {
                entrypoint: Some(vec!["/app".into()]),
                env: vec!["A=2".into(), "B=3".into()],
                labels: vec![("y".into(), "2".into())],
                exposed_ports: vec!["8080".into(), "53/udp".into()],
                workdir: Some("/srv".into()),
                user: Some("1000:1000".into()),
                cmd: None,
            },
        );
        assert_eq!(
            Value::Object(c),
            json!({"Env": ["PATH=/bin", "A=2", "B=3"], "Cmd": null, "Labels": {"x": "1", "y": "2"},
                   "Entrypoint": ["/app"], "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
                   "WorkingDir": "/srv", "User": "1000:1000"})
        );
    }
}
