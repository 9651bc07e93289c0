//! The error type of podci-registry: every variant says what went wrong and, where it
//! helps, what the user can do about it. Secrets never appear in these messages.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a registry or building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference could not be parsed.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    /// A digest string is not `algorithm:hex`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),

    /// The registry answered with an error document (or a bare status).
    #[error("registry {registry} refused {operation}: HTTP {status}{}", fmt_codes(.errors))]
    Registry {
        registry: String,
        operation: String,
        status: u16,
        errors: Vec<RegistryErrorEntry>,
    },

    /// Authentication failed: wrong or missing credentials, or the token server refused.
    #[error("authentication to {registry} failed: {reason}")]
    Auth { registry: String, reason: String },

    /// Content did not hash to the digest it was fetched or pushed as.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A manifest, index or config could not be understood.
    #[error("invalid {what}: {reason}")]
    InvalidContent { what: String, reason: String },

    /// No manifest in an index matches the wanted platform.
    #[error("no image for platform {platform} in {reference} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    /// Reading a credential store failed.
    #[error("credentials: {0}")]
    Credentials(String),

    /// A local file or directory could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A network error before any HTTP status was received.
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Retries were exhausted on a transient failure.
    #[error("{operation} on {registry} still failing after {attempts} attempts (last: HTTP {status})")]
    RetriesExhausted {
        registry: String,
        operation: String,
        attempts: u32,
        status: u16,
    },

    /// The server broke the distribution protocol.
    #[error("registry {registry} broke the protocol during {operation}: {reason}")]
    Protocol {
        registry: String,
        operation: String,
        reason: String,
    },

    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// One entry of a registry's `{"errors": [...]}` body.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
pub struct RegistryErrorEntry {
    /// Machine-readable code such as `DENIED` or `MANIFEST_BLOB_UNKNOWN`.
    #[serde(default)]
    pub code: String,
    /// Human-readable message from the registry.
    #[serde(default)]
    pub message: String,
}

fn fmt_codes(errors: &[RegistryErrorEntry]) -> String {
    let mut out = String::new();
    for e in errors {
        out.push_str(&format!(" [{}: {}]", e.code, e.message));
        if let Some(hint) = hint_for(&e.code) {
            out.push_str(&format!(" ({hint})"));
        }
    }
    out
}

fn hint_for(code: &str) -> Option<&'static str> {
    Some(match code {
        "DENIED" => "the credentials lack permission for this repository",
        "UNAUTHORIZED" => "log in with `podci image login` or check the credentials",
        "MANIFEST_BLOB_UNKNOWN" => "a blob the manifest references was not pushed first",
        "DIGEST_INVALID" => "the uploaded content does not match its digest",
        "BLOB_UNKNOWN" => "the blob does not exist in this repository",
        "MANIFEST_UNKNOWN" => "no such tag or digest",
        "NAME_UNKNOWN" => "no such repository",
        "TOOMANYREQUESTS" => "the registry rate-limits this client",
        "BLOB_UPLOAD_INVALID" | "BLOB_UPLOAD_UNKNOWN" => "the upload session was lost; retry",
        _ => return None,
    })
}

impl Error {
    /// The registry error codes, if this is a registry error.
    pub fn registry_codes(&self) -> Vec<&str> {
        match self {
            Error::Registry { errors, .. } => errors.iter().map(|e| e.code.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The HTTP status the registry answered, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { status, .. } | Error::RetriesExhausted { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
