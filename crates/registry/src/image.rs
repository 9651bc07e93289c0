//! One image (manifest, config, layers with where their bytes are) and the places it can
//! be read from or written to: a registry, an OCI layout directory, a `docker save`
//! tarball. Copying between them moves each blob once, streaming, and skips what the
//! destination already has.

use std::path::PathBuf;
use std::str::FromStr;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::client::{BlobSource, Client, PushOutcome, push_scopes};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, RawManifest};
use crate::reference::Reference;

/// Where an image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A registry reference (`docker://` prefix optional).
    Registry(Reference),
    /// An OCI image layout directory, `oci:DIR[:TAG]`.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// A `docker save` tarball, `docker-archive:FILE[:REF]`.
    DockerArchive { path: PathBuf, tag: Option<String> },
}

fn split_tag(s: &str) -> (&str, Option<String>) {
    // A suffix is a tag only if it cannot be part of a path.
    match s.rsplit_once(':') {
        Some((p, t)) if !t.is_empty() && !t.contains('/') && !p.is_empty() => (p, Some(t.to_string())),
        _ => (s, None),
    }
}

impl FromStr for Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Location> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest);
            return Ok(Location::OciLayout { dir: dir.into(), tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            // The reference in an archive may itself contain ':' (a registry port).
            let (path, tag) = match rest.split_once(':') {
                Some((p, t)) if !t.is_empty() => (p, Some(t.to_string())),
                _ => (rest, None),
            };
            return Ok(Location::DockerArchive {
                path: path.into(),
                tag,
            });
        }
        let r = s.strip_prefix("docker://").unwrap_or(s);
        Ok(Location::Registry(r.parse()?))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Registry(r) => write!(f, "{r}"),
            Location::OciLayout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            Location::DockerArchive { path, tag } => {
                write!(f, "docker-archive:{}", path.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
        }
    }
}

/// A layer: its descriptor and where its bytes are.
#[derive(Debug, Clone)]
pub struct Layer {
    pub desc: Descriptor,
    pub source: BlobSource,
}

/// A single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: RawManifest,
    pub config_desc: Descriptor,
    pub config: Bytes,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Parses the config JSON.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.config).map_err(|e| Error::InvalidContent {
            what: "image config".into(),
            reason: e.to_string(),
        })
    }
}

/// Reads an image; for a registry only the manifest and config are fetched, layers stay
/// remote until written somewhere.
pub async fn load(client: &Client, loc: &Location) -> Result<Image> {
    match loc {
        Location::Registry(r) => {
            let (manifest, pinned) = client.resolve(r).await?;
            let m = manifest.image()?;
            let config = client.get_blob_bytes(&pinned, &m.config).await?;
            let layers = m
                .layers
                .into_iter()
                .map(|desc| Layer {
                    desc,
                    source: BlobSource::Registry { repo: pinned.clone() },
                })
                .collect();
            Ok(Image {
                manifest,
                config_desc: m.config,
                config,
                layers,
            })
        }
        Location::OciLayout { dir, tag } => {
            let (dir, tag, platform) = (dir.clone(), tag.clone(), client.options().platform.clone());
            blocking(move || crate::layout::read(&dir, tag.as_deref(), &platform)).await
        }
        Location::DockerArchive { path, tag } => {
            let (path, tag) = (path.clone(), tag.clone());
            blocking(move || crate::archive::read(&path, tag.as_deref())).await
        }
    }
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// What writing an image did.
#[derive(Debug, Clone, Default)]
pub struct WriteReport {
    /// Digest of the manifest written.
    pub digest: Option<Digest>,
    pub blobs_existing: usize,
    pub blobs_mounted: usize,
    pub blobs_uploaded: usize,
}

/// Writes an image to a location under its tag plus `extra_tags`.
pub async fn write(
    client: &Client,
    image: &Image,
    loc: &Location,
    extra_tags: &[String],
) -> Result<WriteReport> {
    match loc {
        Location::Registry(r) => push(client, image, r, extra_tags).await,
        Location::OciLayout { dir, tag } => {
            let mut tags: Vec<String> = tag.iter().cloned().collect();
            tags.extend(extra_tags.iter().cloned());
            crate::layout::write(client, image, dir, &tags).await
        }
        Location::DockerArchive { path, tag } => {
            let mut tags: Vec<String> = tag.iter().cloned().collect();
            tags.extend(extra_tags.iter().cloned());
            crate::archive::write(client, image, path, &tags).await
        }
    }
}

/// Pushes layers (a few at a time), then the config, then the manifest under each tag.
pub async fn push(
    client: &Client,
    image: &Image,
    target: &Reference,
    extra_tags: &[String],
) -> Result<WriteReport> {
    let sources: Vec<&Reference> = image
        .layers
        .iter()
        .filter_map(|l| match &l.source {
            BlobSource::Registry { repo } => Some(repo),
            _ => None,
        })
        .collect();
    // One token for the whole push (target push + mount sources pull), fetched up front.
    let scopes = push_scopes(target, &sources);
    client.authorize(&target.registry, &scopes).await?;
    let outcomes: Vec<PushOutcome> = futures::stream::iter(image.layers.iter())
        .map(|l| client.push_blob(target, &l.desc, &l.source))
        .buffer_unordered(client.options().parallel.max(1))
        .try_collect()
        .await?;
    let cfg = client
        .push_blob(
            target,
            &image.config_desc,
            &BlobSource::Bytes(image.config.clone()),
        )
        .await?;
    let mut report = WriteReport::default();
    for o in outcomes.iter().chain(std::iter::once(&cfg)) {
        match o {
            PushOutcome::Existed => report.blobs_existing += 1,
            PushOutcome::Mounted => report.blobs_mounted += 1,
            PushOutcome::Uploaded => report.blobs_uploaded += 1,
        }
    }
    let mut refs = vec![target.clone()];
    refs.extend(extra_tags.iter().map(|t| target.with_tag(t)));
    for r in &refs {
        client.put_manifest(r, &image.manifest).await?;
    }
    report.digest = Some(image.manifest.digest.clone());
    Ok(report)
}

/// Copies one image between locations (resolving an index to the client's platform).
pub async fn copy(
    client: &Client,
    src: &Location,
    dst: &Location,
    extra_tags: &[String],
) -> Result<WriteReport> {
    let image = load(client, src).await?;
    write(client, &image, dst, extra_tags).await
}

/// Streams a blob from its source into a file (verifying the digest) unless the file
/// already exists with the right size.
pub(crate) async fn materialize(client: &Client, layer: &Layer, path: &std::path::Path) -> Result<()> {
    if tokio::fs::metadata(path)
        .await
        .map(|m| m.len() == layer.desc.size)
        .unwrap_or(false)
    {
        return Ok(());
    }
    match &layer.source {
        BlobSource::Registry { repo } => client.get_blob_to_file(repo, &layer.desc, path).await,
        BlobSource::Bytes(b) => {
            let got = Digest::of(b);
            if got != layer.desc.digest {
                return Err(Error::DigestMismatch {
                    what: "blob".into(),
                    expected: layer.desc.digest.to_string(),
                    actual: got.to_string(),
                });
            }
            tokio::fs::write(path, b).await.map_err(Error::io(path))
        }
        BlobSource::File { path: src, offset } => {
            let (src, offset, dst, desc) = (src.clone(), *offset, path.to_path_buf(), layer.desc.clone());
            blocking(move || copy_range_verified(&src, offset, &desc, &dst)).await
        }
    }
}

fn copy_range_verified(
    src: &std::path::Path,
    offset: u64,
    desc: &Descriptor,
    dst: &std::path::Path,
) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(src).map_err(Error::io(src))?;
    f.seek(SeekFrom::Start(offset)).map_err(Error::io(src))?;
    let tmp = dst.with_extension("partial");
    let out = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    let mut w = crate::digest::HashingWriter::new(std::io::BufWriter::new(out));
    std::io::copy(&mut f.take(desc.size), &mut w).map_err(Error::io(&tmp))?;
    let (buf, digest, n) = w.finish();
    buf.into_inner().map_err(|e| Error::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    if digest != desc.digest || n != desc.size {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::DigestMismatch {
            what: format!("blob read from {}", src.display()),
            expected: desc.digest.to_string(),
            actual: digest.to_string(),
        });
    }
    std::fs::rename(&tmp, dst).map_err(Error::io(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn location_parser_never_panics(s in ".{0,120}") {
            let _ = s.parse::<Location>();
        }
        #[test]
        fn oci_locations_roundtrip(dir in "/[a-z0-9_/.-]{1,30}", tag in "[a-z0-9][a-z0-9._-]{0,10}") {
            let s = format!("oci:{dir}:{tag}");
            let l: Location = s.parse().map_err(|e: Error| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(l.to_string(), s);
        }
    }

    #[test]
    fn parses_locations() -> Result<()> {
        assert_eq!(
            "oci:/tmp/lay:v1".parse::<Location>()?,
            Location::OciLayout {
                dir: "/tmp/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "oci:./dir".parse::<Location>()?,
            Location::OciLayout {
                dir: "./dir".into(),
                tag: None
            }
        );
        assert_eq!(
            "docker-archive:/x.tar:127.0.0.1:5000/a:b".parse::<Location>()?,
            Location::DockerArchive {
                path: "/x.tar".into(),
                tag: Some("127.0.0.1:5000/a:b".into())
            }
        );
        assert!(
            matches!("docker://127.0.0.1:5000/a:b".parse::<Location>()?, Location::Registry(r) if r.repository == "a")
        );
        assert!("docker://UPPER".parse::<Location>().is_err());
        Ok(())
    }
}
