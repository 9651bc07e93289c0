//! `podci.image`: daemonless image builds and transfers through podci-registry, with the
//! CLI's credential handling (Docker/Podman credential files, helpers and environment,
//! plus an explicit username and password that never reach a log or an argument list).
//!
//! Every call releases the GIL while it talks to registries, so Python threads (and the
//! `*_async` wrappers, which run these calls in worker threads) proceed meanwhile.

use podci_registry::image::{self, Location};
use podci_registry::{
    AppendOptions, Client, ClientOptions, ConfigChanges, Credential, CredentialStore, LayerOptions,
    LayerSpec, Platform,
};
use pyo3::prelude::*;

use crate::convert::{json_to_py, py_repr, py_repr_opt};
use crate::errors::{registry_error, registry_usage_error};

/// What writing an image did.
#[pyclass(module = "podci.image", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct WriteReport {
    /// Where the image was written.
    pub reference: String,
    /// Digest of the manifest written (`sha256:...`).
    pub digest: Option<String>,
    /// Blobs sent to the destination.
    pub blobs_uploaded: usize,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: usize,
    /// Blobs the destination already had.
    pub blobs_existing: usize,
}

#[pymethods]
impl WriteReport {
    fn __repr__(&self) -> String {
        format!(
            "WriteReport(reference={}, digest={}, blobs_uploaded={}, blobs_mounted={}, blobs_existing={})",
            py_repr(&self.reference),
            py_repr_opt(self.digest.as_deref()),
            self.blobs_uploaded,
            self.blobs_mounted,
            self.blobs_existing
        )
    }
}

impl WriteReport {
    fn new(loc: &Location, rep: &podci_registry::WriteReport) -> WriteReport {
        WriteReport {
            reference: loc.to_string(),
            digest: rep.digest.as_ref().map(ToString::to_string),
            blobs_uploaded: rep.blobs_uploaded,
            blobs_mounted: rep.blobs_mounted,
            blobs_existing: rep.blobs_existing,
        }
    }
}

/// Connection settings shared by every call, as the CLI's common flags.
struct Common {
    platform: Option<String>,
    insecure_registries: Vec<String>,
    parallel: usize,
    chunk_size: Option<u64>,
    username: Option<String>,
    password: Option<String>,
}

/// A client whose credentials are the usual stores plus, when a username is given, that
/// username and password for the registries of `locations`.
fn client(py: Python<'_>, common: &Common, locations: &[&Location]) -> PyResult<Client> {
    let mut opts = ClientOptions {
        insecure_registries: common.insecure_registries.clone(),
        chunk_size: common.chunk_size,
        parallel: common.parallel.max(1),
        ..Default::default()
    };
    if let Some(p) = &common.platform {
        opts.platform = Platform::parse(p).map_err(|e| registry_error(py, &e))?;
    }
    let mut creds = CredentialStore::from_env();
    match (&common.username, &common.password) {
        (Some(user), Some(password)) => {
            for l in locations {
                if let Location::Registry(r) = l {
                    creds.insert(
                        &r.registry,
                        Credential::Basic {
                            username: user.clone(),
                            password: password.clone(),
                        },
                    );
                }
            }
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(registry_usage_error(
                py,
                "credentials",
                "username= was given without password=",
            ));
        }
        (None, Some(_)) => {
            return Err(registry_usage_error(
                py,
                "credentials",
                "password= was given without username=",
            ));
        }
    }
    Client::with_credentials(opts, creds).map_err(|e| registry_error(py, &e))
}

fn location(py: Python<'_>, s: &str) -> PyResult<Location> {
    s.parse::<Location>().map_err(|e| registry_error(py, &e))
}

/// How often a running call looks for Ctrl-C (Python signal handlers).
const SIGNAL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs the registry future `make` returns with the GIL released. The future is made
/// inside the GIL-free section so that it need not be `Send` itself.
///
/// Every [`SIGNAL_CHECK`] the GIL is taken briefly to run Python's signal handlers, so
/// Ctrl-C (`KeyboardInterrupt`) stops a transfer instead of waiting for it to end. The
/// transfer is then dropped mid-way, as when the CLI is interrupted: an unfinished upload
/// session is left for the registry to expire, and no manifest is written.
fn block_on<T, F, Fut>(py: Python<'_>, make: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = podci_registry::Result<T>>,
{
    let rt = crate::runtime::get(py)?;
    let outcome: PyResult<podci_registry::Result<T>> = py.detach(|| {
        rt.block_on(async {
            let fut = make();
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => return Ok(r),
                    () = tokio::time::sleep(SIGNAL_CHECK) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    });
    outcome?.map_err(|e| registry_error(py, &e))
}

/// Builds `base` plus `layers` with config changes and writes it to `tag` (and
/// `extra_tags` of the same repository). See `podci.image.append`.
#[pyfunction]
#[pyo3(signature = (
    base, layers, tag, *, extra_tags, entrypoint, cmd, env, workdir, user, labels, expose,
    mtime, created, platform, insecure_registries, parallel, chunk_size, username, password
))]
#[allow(clippy::too_many_arguments)]
pub fn image_append(
    py: Python<'_>,
    base: Option<String>,
    layers: Vec<(String, Option<String>)>,
    tag: String,
    extra_tags: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<String>,
    labels: Vec<(String, String)>,
    expose: Vec<String>,
    mtime: u64,
    created: Option<String>,
    platform: Option<String>,
    insecure_registries: Vec<String>,
    parallel: usize,
    chunk_size: Option<u64>,
    username: Option<String>,
    password: Option<String>,
) -> PyResult<WriteReport> {
    let common = Common {
        platform,
        insecure_registries,
        parallel,
        chunk_size,
        username,
        password,
    };
    let base = match base.as_deref() {
        None | Some("scratch") => None,
        Some(b) => Some(location(py, b)?),
    };
    let target = location(py, &tag)?;
    let mut involved: Vec<&Location> = vec![&target];
    involved.extend(base.iter());
    let client = client(py, &common, &involved)?;
    let mut specs = Vec::with_capacity(layers.len());
    for (src, dest) in layers {
        let spec = match dest {
            // The destination is given separately, so a source path may contain ':'.
            Some(dest) => LayerSpec {
                source: src.into(),
                dest,
            },
            None => LayerSpec::parse(&src).map_err(|e| registry_error(py, &e))?,
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(registry_usage_error(
            py,
            "invalid_content",
            "layers is empty: give at least one directory or file to add",
        ));
    }
    for (k, _) in env.iter().chain(labels.iter()) {
        if k.is_empty() || k.contains('=') {
            return Err(registry_usage_error(
                py,
                "invalid_content",
                &format!("{} is not a valid environment variable or label name", py_repr(k)),
            ));
        }
    }
    let opts = AppendOptions {
        layers: specs,
        layer_options: LayerOptions {
            mtime,
            ..Default::default()
        },
        changes: ConfigChanges {
            entrypoint,
            cmd,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            workdir,
            user,
            labels,
            exposed_ports: expose,
        },
        created,
    };
    let work = std::env::temp_dir();
    let rep = block_on(py, || async {
        let appended = podci_registry::append(&client, base.as_ref(), &opts, &work).await?;
        image::write(&client, &appended.image, &target, &extra_tags).await
    })?;
    Ok(WriteReport::new(&target, &rep))
}

/// Copies an image between registries, OCI layouts and docker archives. See
/// `podci.image.copy`.
#[pyfunction]
#[pyo3(signature = (
    src, dst, *, extra_tags, platform, insecure_registries, parallel, chunk_size, username, password
))]
#[allow(clippy::too_many_arguments)]
pub fn image_copy(
    py: Python<'_>,
    src: String,
    dst: String,
    extra_tags: Vec<String>,
    platform: Option<String>,
    insecure_registries: Vec<String>,
    parallel: usize,
    chunk_size: Option<u64>,
    username: Option<String>,
    password: Option<String>,
) -> PyResult<WriteReport> {
    let common = Common {
        platform,
        insecure_registries,
        parallel,
        chunk_size,
        username,
        password,
    };
    let src = location(py, &src)?;
    let dst = location(py, &dst)?;
    let client = client(py, &common, &[&src, &dst])?;
    let rep = block_on(py, || image::copy(&client, &src, &dst, &extra_tags))?;
    Ok(WriteReport::new(&dst, &rep))
}

/// An image's manifest digest, media type, platform, config and layers, as the CLI's
/// `podci image inspect` prints them. See `podci.image.inspect`.
#[pyfunction]
#[pyo3(signature = (
    reference, *, platform, insecure_registries, username, password
))]
pub fn image_inspect<'py>(
    py: Python<'py>,
    reference: String,
    platform: Option<String>,
    insecure_registries: Vec<String>,
    username: Option<String>,
    password: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let common = Common {
        platform,
        insecure_registries,
        parallel: 1,
        chunk_size: None,
        username,
        password,
    };
    let loc = location(py, &reference)?;
    let client = client(py, &common, &[&loc])?;
    let img = block_on(py, || image::load(&client, &loc))?;
    let cfg = img.config_json().map_err(|e| registry_error(py, &e))?;
    let text = |k: &str| cfg.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let out = serde_json::json!({
        "reference": loc.to_string(),
        "digest": img.manifest.digest.to_string(),
        "mediaType": img.manifest.media_type,
        "platform": format!("{}/{}", text("os"), text("architecture")),
        "config": cfg.get("config").cloned().unwrap_or_default(),
        "layers": img.layers.iter().map(|l| &l.desc).collect::<Vec<_>>(),
    });
    json_to_py(py, &out)
}
