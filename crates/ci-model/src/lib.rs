//! podci-model: `.gitlab-ci.yml` -> [`Pipeline`].
//!
//! Pure: no async, no network, no filesystem except through [`FileSource`], so that it
//! builds for `wasm32-unknown-unknown`.

pub mod compose;
pub mod diag;
pub mod source;
pub(crate) mod validate;
pub mod yaml;

pub use compose::{ComposeOptions, Composed, compose};
pub use diag::{Diagnostic, Severity};
pub use source::{FetchError, FileSource, MemorySource, NoFiles};
pub use validate::parse_duration;
