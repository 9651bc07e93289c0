//! The one tokio runtime of the extension: registry clients keep connection pools and
//! token caches per client, pipeline runs and deploys spawn tasks, and the runtime's
//! threads are reused across calls instead of being started per call.

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The process's runtime, started on first use. A runtime that cannot start (no threads
/// left) raises `podci.Error`.
pub fn get(py: Python<'_>) -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("podci")
            .build()
            .map_err(|e| e.to_string())
    });
    rt.as_ref().map_err(|e| {
        crate::errors::raise(
            py,
            "Error",
            &format!("cannot start podci's I/O threads: {e}"),
            &PyDict::new(py),
        )
    })
}
