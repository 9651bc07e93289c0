//! podci-registry: an OCI registry client and daemonless image builds.
//!
//! - [`Client`]: ping, authentication (anonymous, Basic, Bearer tokens cached per
//!   registry and scope set), blob push with HEAD-skip, cross-repository mount, monolithic
//!   or chunked uploads streamed from disk, manifest push/pull, tag listing.
//! - [`image`]: images in a registry, an OCI layout directory or a `docker save` tarball,
//!   and copies between them.
//! - [`mod@append`]: add deterministic layers and config changes to a base image without a
//!   container engine.
//!
//! This crate knows the distribution protocol and image formats, nothing of CI.

pub mod append;
pub mod archive;
pub mod auth;
pub mod client;
pub mod digest;
pub mod error;
pub mod image;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod reference;

pub use append::{AppendOptions, ConfigChanges, append};
pub use auth::{AuthEnv, Credential, CredentialStore};
pub use client::{BlobSource, Client, ClientOptions, PushOutcome};
pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{Image, Location, WriteReport, copy};
pub use layer::{LayerOptions, LayerSpec};
pub use manifest::{Descriptor, Platform, RawManifest};
pub use reference::Reference;

/// Compiles the README's example so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
