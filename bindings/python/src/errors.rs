//! Raising podci's Python exceptions. The classes live in `podci/_errors.py` (so that they
//! are ordinary, documented, picklable Python classes); this module imports them when an
//! error is raised and passes the structured fields as keyword arguments.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Builds `podci._errors.<class>(message, **fields)` as a `PyErr`. If the class cannot be
/// imported (a broken installation), the import error is what the user sees.
pub fn raise(py: Python<'_>, class: &str, message: &str, fields: &Bound<'_, PyDict>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("podci._errors")?.getattr(class)?;
        let value = cls.call((message,), Some(fields))?;
        Ok(PyErr::from_value(value))
    };
    match build() {
        Ok(e) | Err(e) => e,
    }
}

/// `podci.PipelineError` with the given diagnostics (`Diagnostic` objects) and job name.
pub fn pipeline_error(
    py: Python<'_>,
    message: &str,
    diagnostics: Vec<crate::model::Diagnostic>,
    job: Option<&str>,
) -> PyErr {
    let fields = PyDict::new(py);
    let fill = || -> PyResult<()> {
        fields.set_item("diagnostics", diagnostics)?;
        fields.set_item("job", job)?;
        Ok(())
    };
    if let Err(e) = fill() {
        return e;
    }
    raise(py, "PipelineError", message, &fields)
}

/// `podci.RegistryError` from a podci-registry error: its message plus `kind` (the
/// variant), `registry`, `operation`, `status`, `codes` and `path` where they apply.
pub fn registry_error(py: Python<'_>, err: &podci_registry::Error) -> PyErr {
    use podci_registry::Error as E;
    let (kind, registry, operation, path): (&str, Option<&str>, Option<&str>, Option<String>) = match err {
        E::InvalidReference { .. } => ("invalid_reference", None, None, None),
        E::InvalidDigest(_) => ("invalid_digest", None, None, None),
        E::Registry {
            registry, operation, ..
        } => ("registry", Some(registry), Some(operation), None),
        E::Auth { registry, .. } => ("auth", Some(registry), None, None),
        E::DigestMismatch { .. } => ("digest_mismatch", None, None, None),
        E::InvalidContent { .. } => ("invalid_content", None, None, None),
        E::NoMatchingPlatform { .. } => ("no_matching_platform", None, None, None),
        E::Credentials(_) => ("credentials", None, None, None),
        E::Io { path, .. } => ("io", None, None, Some(path.display().to_string())),
        E::Http { .. } => ("http", None, None, None),
        E::RetriesExhausted {
            registry, operation, ..
        } => ("retries_exhausted", Some(registry), Some(operation), None),
        E::Protocol {
            registry, operation, ..
        } => ("protocol", Some(registry), Some(operation), None),
        E::Task(_) => ("task", None, None, None),
    };
    let fields = PyDict::new(py);
    let fill = || -> PyResult<()> {
        fields.set_item("kind", kind)?;
        fields.set_item("registry", registry)?;
        fields.set_item("operation", operation)?;
        fields.set_item("status", err.status())?;
        fields.set_item("codes", err.registry_codes())?;
        fields.set_item("path", path)?;
        Ok(())
    };
    if let Err(e) = fill() {
        return e;
    }
    raise(py, "RegistryError", &err.to_string(), &fields)
}

/// `podci.RegistryError` for a problem found before any registry was contacted (bad
/// arguments that only the bindings check, a runtime that could not start).
pub fn registry_usage_error(py: Python<'_>, kind: &str, message: &str) -> PyErr {
    let fields = PyDict::new(py);
    if let Err(e) = fields.set_item("kind", kind) {
        return e;
    }
    raise(py, "RegistryError", message, &fields)
}
