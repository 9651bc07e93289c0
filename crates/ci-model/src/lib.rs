#![doc = include_str!("../README.md")]
//!
//! Pure: no async, no network, no filesystem except through [`FileSource`], so that it
//! builds for `wasm32-unknown-unknown`.

pub mod compose;
pub mod diag;
pub mod emit;
pub mod eval;
pub mod expand;
pub mod expr;
pub mod mask;
pub mod payload;
pub mod pipeline;
pub(crate) mod rules;
pub mod schedule;
pub mod script;
pub mod source;
pub(crate) mod validate;
pub mod yaml;

pub use compose::{ComposeOptions, Composed, compose};
pub use diag::{Diagnostic, Severity};
pub use pipeline::{Job, LoadOptions, Need, Pipeline, load};
pub use source::{FetchError, FileSource, MemorySource, NoFiles};
pub use validate::parse_duration;

/// Evaluates a `rules:if` expression against variables (later pairs win). An expression
/// that does not parse is false; validation reports it.
pub(crate) fn expr_eval(expression: &str, vars: &[(String, String)]) -> bool {
    match expr::Expression::parse(expression) {
        Ok(e) => e.is_truthy(&rules::PairVars(vars)),
        Err(_) => false,
    }
}

/// Entry points for integration tests and conformance tools; not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::validate::validate_entry_fixture;
}
