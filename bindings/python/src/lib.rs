//! `podci._native`: the compiled half of the `podci` Python package.
//!
//! This crate is conversion glue only (DESIGN.md, "bindings"): it turns Python arguments
//! into podci-model and podci-registry calls and their results into Python objects. The
//! pure-Python layer in `python/podci` gives the public API its final shape (keyword
//! arguments, `async` variants, the exception classes).
//!
//! - `model`: `load`, `Pipeline`, `Job`, `Need`, `Diagnostic`, evaluation and payloads.
//! - `image`: `append`, `copy`, `inspect` against registries, OCI layouts and archives.
//! - `errors`: raising the `podci.*Error` classes with structured fields.

use pyo3::prelude::*;

mod convert;
mod errors;
mod files;
mod image;
mod model;

/// The compiled part of podci. Import `podci` instead of this module.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(model::load_text, m)?)?;
    m.add_class::<model::Pipeline>()?;
    m.add_class::<model::Job>()?;
    m.add_class::<model::Need>()?;
    m.add_class::<model::Diagnostic>()?;
    m.add_function(wrap_pyfunction!(image::image_append, m)?)?;
    m.add_function(wrap_pyfunction!(image::image_copy, m)?)?;
    m.add_function(wrap_pyfunction!(image::image_inspect, m)?)?;
    m.add_class::<image::WriteReport>()?;
    Ok(())
}
