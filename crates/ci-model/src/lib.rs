//! podci-model: `.gitlab-ci.yml` -> [`Pipeline`].
//!
//! Pure: no async, no network, no filesystem except through [`FileSource`], so that it
//! builds for `wasm32-unknown-unknown`.

pub mod expr;
