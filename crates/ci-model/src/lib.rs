//! podci-model: `.gitlab-ci.yml` -> [`Pipeline`].
//!
//! Pure: no async, no network, no filesystem except through [`FileSource`], so that it
//! builds for `wasm32-unknown-unknown`.

pub mod diag;
pub(crate) mod validate;
pub mod yaml;

pub use validate::parse_duration;

/// Entry points for integration tests and conformance tools; not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::validate::validate_entry_fixture;
}
