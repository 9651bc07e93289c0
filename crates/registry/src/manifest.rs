//! Manifest formats: OCI image manifest and index, Docker schema2 manifest and manifest
//! list. Manifests are kept as the exact bytes they were read or built as, because their
//! digest is the hash of those bytes; the parsed view is only used to find blobs.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Media types this crate understands.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// The `Accept` header for manifest fetches: every format we can read.
    pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
}

/// A content descriptor. Unknown fields (annotations, urls, ...) are kept so that a
/// descriptor read from a base image is written back unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    /// A plain descriptor.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: None,
            extra: Default::default(),
        }
    }
}

/// An OS/architecture pair as used in indexes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine running this code, in Go's naming.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::InvalidContent {
                what: "platform".into(),
                reason: format!("{s:?} is not os/arch[/variant]"),
            }),
        }
    }

    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || other.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The parsed parts of an image manifest we need.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parsed parts of an index / manifest list we need.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexManifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest as bytes plus its media type and digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub media_type: String,
    pub bytes: bytes::Bytes,
    pub digest: Digest,
}

impl RawManifest {
    /// Wraps bytes, taking the media type from the document when the caller has none
    /// (an OCI layout has no Content-Type header).
    pub fn new(bytes: bytes::Bytes, content_type: Option<&str>) -> Result<RawManifest> {
        let media_type = match content_type.map(|c| c.split(';').next().unwrap_or(c).trim()) {
            Some(c) if is_manifest_type(c) => c.to_string(),
            _ => sniff_media_type(&bytes)?,
        };
        Ok(RawManifest {
            digest: Digest::of(&bytes),
            media_type,
            bytes,
        })
    }

    /// True for an OCI index or Docker manifest list.
    pub fn is_index(&self) -> bool {
        self.media_type == media::OCI_INDEX || self.media_type == media::DOCKER_LIST
    }

    /// Parses an image manifest.
    pub fn image(&self) -> Result<ImageManifest> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::InvalidContent {
            what: "image manifest".into(),
            reason: e.to_string(),
        })
    }

    /// Parses an index.
    pub fn index(&self) -> Result<IndexManifest> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::InvalidContent {
            what: "image index".into(),
            reason: e.to_string(),
        })
    }

    /// A descriptor pointing at this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest.clone(), self.bytes.len() as u64)
    }
}

/// True for the four manifest media types.
pub fn is_manifest_type(t: &str) -> bool {
    matches!(
        t,
        media::OCI_MANIFEST | media::OCI_INDEX | media::DOCKER_MANIFEST | media::DOCKER_LIST
    )
}

/// Finds the media type of a manifest from its own fields.
pub fn sniff_media_type(bytes: &[u8]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::InvalidContent {
        what: "manifest".into(),
        reason: e.to_string(),
    })?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str())
        && is_manifest_type(mt)
    {
        return Ok(mt.to_string());
    }
    if v.get("manifests").is_some() {
        Ok(media::OCI_INDEX.to_string())
    } else if v.get("layers").is_some() || v.get("config").is_some() {
        Ok(media::OCI_MANIFEST.to_string())
    } else {
        Err(Error::InvalidContent {
            what: "manifest".into(),
            reason: "neither an image manifest nor an index (schema1 is not supported)".into(),
        })
    }
}

/// Picks the manifest for `want` from an index.
pub fn select_platform(index: &IndexManifest, want: &Platform, reference: &str) -> Result<Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .cloned()
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: want.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// True when a manifest media type belongs to Docker's family (so new blobs use Docker
/// media types too).
pub fn is_docker_family(media_type: &str) -> bool {
    media_type == media::DOCKER_MANIFEST || media_type == media::DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_types() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(sniff_media_type(idx).ok().as_deref(), Some(media::OCI_INDEX));
        let d = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"sha256:{}","size":1}},"layers":[]}}"#,
            media::DOCKER_MANIFEST,
            "0".repeat(64)
        );
        let raw = RawManifest::new(d.into_bytes().into(), Some("text/plain")).map_err(|e| e.to_string());
        assert_eq!(raw.map(|r| r.media_type), Ok(media::DOCKER_MANIFEST.to_string()));
        assert!(sniff_media_type(br#"{"schemaVersion":1}"#).is_err());
    }

    #[test]
    fn selects_platform_and_reports_available() {
        let idx: IndexManifest = serde_json::from_str(&format!(
            r#"{{"manifests":[
              {{"mediaType":"{m}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{m}","digest":"sha256:{b}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            m = media::OCI_MANIFEST,
            a = "a".repeat(64),
            b = "b".repeat(64)
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let amd = Platform::parse("linux/amd64").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(select_platform(&idx, &amd, "r").map(|d| d.size).ok(), Some(2));
        let arm = Platform::parse("linux/arm64").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(select_platform(&idx, &arm, "r").map(|d| d.size).ok(), Some(1));
        let s390 = Platform::parse("linux/s390x").unwrap_or_else(|e| panic!("{e}"));
        let e = select_platform(&idx, &s390, "r")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("linux/arm64/v8, linux/amd64"), "{e}");
    }
}
