//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/...`):
//! reading an image by its `org.opencontainers.image.ref.name` and writing one, copying
//! only the blobs the directory does not have yet.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::client::{BlobSource, Client};
use crate::error::{Error, Result};
use crate::image::{Image, Layer, WriteReport, materialize};
use crate::manifest::{Descriptor, Platform, RawManifest, media, select_platform};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn blob_path(dir: &Path, d: &crate::digest::Digest) -> PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

fn read_blob(dir: &Path, desc: &Descriptor) -> Result<Bytes> {
    let p = blob_path(dir, &desc.digest);
    let b = std::fs::read(&p).map_err(Error::io(&p))?;
    let got = crate::digest::Digest::of(&b);
    if got != desc.digest {
        return Err(Error::DigestMismatch {
            what: p.display().to_string(),
            expected: desc.digest.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(Bytes::from(b))
}

fn read_index(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join("index.json");
    let text = std::fs::read(&p).map_err(Error::io(&p))?;
    serde_json::from_slice(&text).map_err(|e| Error::InvalidContent {
        what: p.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads the image tagged `tag` (or the only image) from a layout.
pub fn read(dir: &Path, tag: Option<&str>, platform: &Platform) -> Result<Image> {
    let index = read_index(dir)?;
    let idx: crate::manifest::IndexManifest =
        serde_json::from_value(index).map_err(|e| Error::InvalidContent {
            what: format!("{}/index.json", dir.display()),
            reason: e.to_string(),
        })?;
    let name_of = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let chosen = match tag {
        Some(t) => idx.manifests.iter().find(|d| name_of(d).as_deref() == Some(t)),
        None if idx.manifests.len() == 1 => idx.manifests.first(),
        None => None,
    };
    let desc = chosen.cloned().ok_or_else(|| Error::InvalidContent {
        what: format!("OCI layout {}", dir.display()),
        reason: format!(
            "no image {} (tags present: {})",
            tag.map(|t| format!("tagged {t:?}"))
                .unwrap_or_else(|| "without a tag when several are present".into()),
            idx.manifests
                .iter()
                .filter_map(name_of)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let mut raw = RawManifest::new(read_blob(dir, &desc)?, Some(&desc.media_type))?;
    if raw.is_index() {
        let d = select_platform(&raw.index()?, platform, &dir.display().to_string())?;
        raw = RawManifest::new(read_blob(dir, &d)?, Some(&d.media_type))?;
    }
    let m = raw.image()?;
    let config = read_blob(dir, &m.config)?;
    let layers = m
        .layers
        .into_iter()
        .map(|desc| Layer {
            source: BlobSource::File {
                path: blob_path(dir, &desc.digest),
                offset: 0,
            },
            desc,
        })
        .collect();
    Ok(Image {
        manifest: raw,
        config_desc: m.config,
        config,
        layers,
    })
}

/// Writes an image into a layout (created if missing) and records it in `index.json`
/// under each tag, replacing older entries with the same tag.
pub async fn write(client: &Client, image: &Image, dir: &Path, tags: &[String]) -> Result<WriteReport> {
    let blobs = dir.join("blobs/sha256");
    tokio::fs::create_dir_all(&blobs)
        .await
        .map_err(Error::io(&blobs))?;
    let marker = dir.join("oci-layout");
    tokio::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .await
        .map_err(Error::io(&marker))?;
    let mut report = WriteReport::default();
    for l in &image.layers {
        if tokio::fs::metadata(blob_path(dir, &l.desc.digest)).await.is_ok() {
            report.blobs_existing += 1;
        } else {
            report.blobs_uploaded += 1;
        }
    }
    futures::stream::iter(image.layers.iter())
        .map(|l| async move { materialize(client, l, &blob_path(dir, &l.desc.digest)).await })
        .buffer_unordered(client.options().parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    for (bytes, d) in [
        (&image.config, &image.config_desc.digest),
        (&image.manifest.bytes, &image.manifest.digest),
    ] {
        let p = blob_path(dir, d);
        tokio::fs::write(&p, bytes).await.map_err(Error::io(&p))?;
    }
    let (dir2, tags, desc) = (dir.to_path_buf(), tags.to_vec(), image.manifest.descriptor());
    crate::image::blocking(move || update_index(&dir2, &tags, desc)).await?;
    report.digest = Some(image.manifest.digest.clone());
    Ok(report)
}

fn update_index(dir: &Path, tags: &[String], desc: Descriptor) -> Result<()> {
    let mut index = match read_index(dir) {
        Ok(v) => v,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
        }
        Err(e) => return Err(e),
    };
    let bad = || Error::InvalidContent {
        what: format!("{}/index.json", dir.display()),
        reason: "\"manifests\" is not a list".into(),
    };
    let list = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(bad)?;
    let mut entries: Vec<Descriptor> = Vec::new();
    if tags.is_empty() {
        entries.push(desc.clone());
        list.retain(|m| {
            m.get("digest").and_then(|d| d.as_str()) != Some(desc.digest.as_str())
                || m.get("annotations").is_some()
        });
    }
    for t in tags {
        let mut d = desc.clone();
        let mut ann = serde_json::Map::new();
        ann.insert(REF_NAME.into(), t.clone().into());
        d.annotations = Some(ann);
        list.retain(|m| {
            m.get("annotations")
                .and_then(|a| a.get(REF_NAME))
                .and_then(|v| v.as_str())
                != Some(t.as_str())
        });
        entries.push(d);
    }
    for e in entries {
        list.push(serde_json::to_value(e).map_err(|e| Error::InvalidContent {
            what: "descriptor".into(),
            reason: e.to_string(),
        })?);
    }
    let p = dir.join("index.json");
    let tmp = dir.join(".index.json.tmp");
    let text = serde_json::to_vec(&index).map_err(|e| Error::InvalidContent {
        what: "index.json".into(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(Error::io(&p))
}
