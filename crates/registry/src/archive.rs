//! `docker save` tarballs (`manifest.json` + config + layer tars). Reading indexes the
//! tar once and addresses layers by their byte range inside it, so nothing is extracted;
//! writing streams each blob into the tar. Images read from an archive come out as OCI
//! manifests whose layer media types say whether each layer is gzip'd or plain tar.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::client::{BlobSource, Client};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::image::{Image, Layer, WriteReport, blocking, materialize};
use crate::manifest::{Descriptor, RawManifest, media};

#[derive(serde::Deserialize, serde::Serialize)]
struct Entry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidContent {
        what: format!("docker archive {}", path.display()),
        reason: reason.into(),
    }
}

fn normalize(p: &str) -> String {
    p.trim_start_matches("./").to_string()
}

/// Reads the image tagged `tag` (or the only image) from a `docker save` tarball.
pub fn read(path: &Path, tag: Option<&str>) -> Result<Image> {
    let file = File::open(path).map_err(Error::io(path))?;
    let mut archive = tar::Archive::new(file);
    let mut files: HashMap<String, (u64, u64)> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in archive.entries_with_seek().map_err(Error::io(path))? {
        let mut e = entry.map_err(Error::io(path))?;
        let name = normalize(&e.path().map_err(Error::io(path))?.to_string_lossy());
        match e.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(t)) = e.link_name() {
                    let t = t.to_string_lossy().into_owned();
                    let resolved = if e.header().entry_type() == tar::EntryType::Symlink {
                        let base = Path::new(&name)
                            .parent()
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        resolve_rel(&base, &t)
                    } else {
                        normalize(&t)
                    };
                    links.insert(name, resolved);
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = e.size();
                // Metadata documents are small; keep them, address everything else by range.
                if (name.ends_with(".json") || name == "manifest.json") && size < 16 * 1024 * 1024 {
                    let mut buf = Vec::with_capacity(size as usize);
                    e.read_to_end(&mut buf).map_err(Error::io(path))?;
                    small.insert(name.clone(), buf);
                }
                files.insert(name, (e.raw_file_position(), size));
            }
            _ => {}
        }
    }
    let manifest = small
        .get("manifest.json")
        .ok_or_else(|| invalid(path, "no manifest.json (is this a `docker save` tarball?)"))?;
    let entries: Vec<Entry> =
        serde_json::from_slice(manifest).map_err(|e| invalid(path, format!("manifest.json: {e}")))?;
    let all_tags = || {
        entries
            .iter()
            .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entry = match tag {
        Some(t) => entries.iter().find(|e| {
            e.repo_tags
                .as_ref()
                .is_some_and(|ts| ts.iter().any(|x| x == t || x.ends_with(&format!("/{t}"))))
        }),
        None if entries.len() == 1 => entries.first(),
        None => None,
    }
    .ok_or_else(|| {
        invalid(
            path,
            format!(
                "no image {} (present: {})",
                tag.unwrap_or("without a tag"),
                all_tags()
            ),
        )
    })?;
    let lookup = |name: &str| -> Option<(String, u64, u64)> {
        let mut n = normalize(name);
        for _ in 0..8 {
            if let Some((o, s)) = files.get(&n) {
                return Some((n, *o, *s));
            }
            n = links.get(&n)?.clone();
        }
        None
    };
    let config_name = lookup(&entry.config)
        .map(|x| x.0)
        .ok_or_else(|| invalid(path, format!("config {} missing", entry.config)))?;
    let config = match small.get(&config_name) {
        Some(c) => Bytes::from(c.clone()),
        None => {
            let (_, o, s) = lookup(&config_name).ok_or_else(|| invalid(path, "config missing"))?;
            Bytes::from(read_range(path, o, s)?)
        }
    };
    let mut layers = Vec::new();
    let mut f = File::open(path).map_err(Error::io(path))?;
    for l in &entry.layers {
        let (_, offset, size) = lookup(l).ok_or_else(|| invalid(path, format!("layer {l} missing")))?;
        f.seek(SeekFrom::Start(offset)).map_err(Error::io(path))?;
        let mut head = [0u8; 2];
        let mut limited = (&mut f).take(size);
        let mut w = HashingWriter::new(std::io::sink());
        let n = limited.read(&mut head).map_err(Error::io(path))?;
        std::io::Write::write_all(&mut w, &head[..n]).map_err(Error::io(path))?;
        std::io::copy(&mut limited, &mut w).map_err(Error::io(path))?;
        let (_, digest, _) = w.finish();
        let mt = if n == 2 && head == [0x1f, 0x8b] {
            media::OCI_LAYER_GZIP
        } else {
            media::OCI_LAYER_TAR
        };
        layers.push(Layer {
            desc: Descriptor::new(mt, digest, size),
            source: BlobSource::File {
                path: path.to_path_buf(),
                offset,
            },
        });
    }
    let config_desc = Descriptor::new(media::OCI_CONFIG, Digest::of(&config), config.len() as u64);
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config_desc,
        "layers": layers.iter().map(|l| &l.desc).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| invalid(path, e.to_string()))?;
    Ok(Image {
        manifest: RawManifest::new(bytes.into(), Some(media::OCI_MANIFEST))?,
        config_desc,
        config,
        layers,
    })
}

fn resolve_rel(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn read_range(path: &Path, offset: u64, size: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(Error::io(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(Error::io(path))?;
    let mut buf = Vec::new();
    f.take(size).read_to_end(&mut buf).map_err(Error::io(path))?;
    Ok(buf)
}

/// Writes an image as a `docker save` tarball that `docker load` accepts.
pub async fn write(client: &Client, image: &Image, path: &Path, tags: &[String]) -> Result<WriteReport> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let scratch = tempfile::Builder::new()
        .prefix(".podci-archive-")
        .tempdir_in(&parent)
        .map_err(Error::io(&parent))?;
    // Remote layers are fetched to scratch files first; local ones are read in place.
    let mut parts: Vec<(PathBuf, u64, Descriptor)> = Vec::new();
    for l in &image.layers {
        match &l.source {
            BlobSource::File { path, offset } => parts.push((path.clone(), *offset, l.desc.clone())),
            _ => {
                let p = scratch.path().join(l.desc.digest.hex());
                materialize(client, l, &p).await?;
                parts.push((p, 0, l.desc.clone()));
            }
        }
    }
    let (image, path, tags) = (image.clone(), path.to_path_buf(), tags.to_vec());
    let report = blocking(move || {
        let tmp = path.with_extension("partial");
        let out = File::create(&tmp).map_err(Error::io(&tmp))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(256 * 1024, out));
        let header = |size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(size);
            h.set_mtime(0);
            h
        };
        let mut layer_names = Vec::new();
        for (src, offset, desc) in &parts {
            let name = format!("{}.tar", desc.digest.hex());
            let mut f = File::open(src).map_err(Error::io(src))?;
            f.seek(SeekFrom::Start(*offset)).map_err(Error::io(src))?;
            tar.append_data(&mut header(desc.size), &name, f.take(desc.size))
                .map_err(Error::io(&tmp))?;
            layer_names.push(name);
        }
        let config_name = format!("{}.json", image.config_desc.digest.hex());
        tar.append_data(
            &mut header(image.config.len() as u64),
            &config_name,
            &image.config[..],
        )
        .map_err(Error::io(&tmp))?;
        let manifest = vec![Entry {
            config: config_name,
            repo_tags: Some(tags),
            layers: layer_names,
        }];
        let doc = serde_json::to_vec(&manifest).map_err(|e| invalid(&path, e.to_string()))?;
        tar.append_data(&mut header(doc.len() as u64), "manifest.json", &doc[..])
            .map_err(Error::io(&tmp))?;
        let w = tar.into_inner().map_err(Error::io(&tmp))?;
        w.into_inner().map_err(|e| Error::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        Ok(WriteReport {
            digest: Some(image.manifest.digest.clone()),
            blobs_uploaded: parts.len() + 1,
            ..Default::default()
        })
    })
    .await?;
    drop(scratch);
    Ok(report)
}
