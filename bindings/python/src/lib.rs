//! `podci._native`: the compiled half of the `podci` Python package.
//!
//! This crate is conversion glue only (DESIGN.md, "bindings"): it turns Python arguments
//! into podci-model and podci-registry calls and their results into Python objects. The
//! pure-Python layer in `python/podci` gives the public API its final shape (keyword
//! arguments, `async` variants, the exception classes).
//!
//! - `model`: `load`, `Pipeline`, `Job`, `Need`, `Diagnostic`, evaluation and payloads.
//! - `image`: `append`, `copy`, `inspect` against registries, OCI layouts and archives.
//! - `run`: `run_pipeline` (local pipelines through the runner library's `exec`).
//! - `k8s`: `pod_for` (podci-k8s's pure Pod construction).
//! - `deploy`: `deploy` (the runner library's manifests, apply and rollout wait).
//! - `errors`: raising the `podci.*Error` classes with structured fields.

use pyo3::prelude::*;

mod convert;
mod deploy;
mod errors;
mod files;
mod image;
mod k8s;
mod model;
mod run;
mod runtime;

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
    m.add_function(wrap_pyfunction!(run::run_pipeline, m)?)?;
    m.add_class::<run::Cancel>()?;
    m.add_class::<run::PipelineResult>()?;
    m.add_class::<run::JobResult>()?;
    m.add_function(wrap_pyfunction!(k8s::pod_for, m)?)?;
    m.add_function(wrap_pyfunction!(deploy::deploy_manifests, m)?)?;
    m.add_class::<deploy::DeployResult>()?;
    m.add_class::<deploy::AppliedObject>()?;
    m.add_class::<deploy::RolloutStatus>()?;
    Ok(())
}
