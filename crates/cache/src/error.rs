//! The crate's error type. Each variant names what went wrong and what to look at, so a
//! job log line is enough for a user to act on it.

use std::path::PathBuf;

/// Everything podci-cache can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cache key that GitLab Runner would refuse too (empty after sanitizing, or only
    /// `.`/`..` segments).
    #[error(
        "cache key {0:?} is empty after sanitizing; give the cache a key with at least one normal path segment"
    )]
    InvalidKey(String),

    /// A `paths`/`exclude` pattern that GitLab's glob rules reject.
    #[error("path pattern {pattern:?} is not valid: {reason}")]
    InvalidPattern { pattern: String, reason: String },

    /// A pattern that points outside the project directory.
    #[error("path {0:?} is outside the project directory; cache and artifact paths must be relative to it")]
    OutsideProject(String),

    /// An archive entry that would be written outside the target directory.
    #[error("archive entry {entry:?} refused: {reason}; nothing was extracted")]
    UnsafeEntry { entry: String, reason: String },

    /// The archive is damaged: truncated, not the format it claims, or its digest does not
    /// match the one it was stored under.
    #[error("archive is corrupt: {0}")]
    Corrupt(String),

    /// A file or directory could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The object store failed (network, permissions, missing bucket).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),

    /// A store URL or configuration that cannot be used.
    #[error("store configuration: {0}")]
    Config(String),

    /// A metadata document in the store could not be decoded.
    #[error("metadata object {path} is not valid: {source}")]
    Metadata {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// The `git` program failed while listing untracked files.
    #[error("listing untracked files with git failed: {0}")]
    Git(String),

    /// A `reports:dotenv` file that GitLab would refuse.
    #[error("dotenv report {file}: line {line}: {reason}")]
    Dotenv {
        file: String,
        line: usize,
        reason: String,
    },
}

/// Short alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach the operation and path to an `io::Error`.
pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}
