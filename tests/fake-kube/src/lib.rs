//! A fake Kubernetes API server with a fake kubelet, for podci's tests.
//!
//! It serves the core/v1 API that podci uses (pods with watch, logs, exec and attach over
//! WebSocket, secrets, configmaps, services, serviceaccounts, events, PVCs), apps/v1
//! workloads with their controllers, and server-side apply, on 127.0.0.1
//! over HTTP or HTTPS, runs each Pod's containers as local processes, and follows the
//! recordings of a real API server in `../shared/k8s-transcripts/`. Its deliberate
//! differences from those recordings are listed in README.md.
//!
//! ```no_run
//! # async fn demo() -> Result<(), podci_fake_kube::StartError> {
//! let fake = podci_fake_kube::FakeKube::start(Default::default()).await?;
//! let kubeconfig_yaml = fake.kubeconfig("ci-jobs");
//! # let _ = kubeconfig_yaml; Ok(()) }
//! ```

mod api;
mod apply;
mod apps;
mod controllers;
mod kubelet;
mod store;
mod streams;
mod util;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use util::{fmt_nanos, go_json};

/// Which WebSocket channel protocols exec and attach accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelProtocols {
    /// Like the recorded v1.24 server: `v4.channel.k8s.io` only; a client offering only
    /// v5 is refused with 403.
    V4Only,
    /// Like v1.30+ servers: v5 (with the CLOSE signal) preferred, v4 accepted.
    V5,
}

/// What a token may do; tokens not listed in [`Options::tokens`] are rejected with 401.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The user name in 403 messages, e.g. `system:serviceaccount:ci-jobs:noperm`.
    pub user: String,
    /// `None`: everything. Otherwise the allowed `(resource, verb)` pairs, for example
    /// `("pods", "create")` or `("pods/exec", "get")`; `"*"` matches any verb.
    pub allowed: Option<BTreeSet<(String, String)>>,
}

impl TokenGrant {
    pub fn admin() -> Self {
        TokenGrant {
            user: "kubernetes-admin".into(),
            allowed: None,
        }
    }
    pub fn restricted(user: &str, allowed: &[(&str, &str)]) -> Self {
        TokenGrant {
            user: user.into(),
            allowed: Some(
                allowed
                    .iter()
                    .map(|(r, v)| (r.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }
    fn permits(&self, resource: &str, verb: &str) -> bool {
        match &self.allowed {
            None => true,
            Some(set) => {
                set.contains(&(resource.to_string(), verb.to_string()))
                    || set.contains(&(resource.to_string(), "*".to_string()))
            }
        }
    }
}

/// Delays of the fake kubelet. The defaults are short so tests run fast; the real
/// kubelet's are in the comments.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Creation to the scheduler's binding (real: ~10-50 ms).
    pub schedule: Duration,
    /// Binding to the kubelet's first status (ContainerCreating) (real: ~20 ms).
    pub admit: Duration,
    /// ContainerCreating to the containers being started (real: ~0.7-1.6 s).
    pub create: Duration,
    /// How long after a status change the kubelet reports it (real PLEG relist: 1 s).
    /// A container that exits faster than this is never reported as running.
    pub status_sync: Duration,
    /// A missing image: ContainerCreating to ErrImagePull (real: ~0.7 s).
    pub pull_error: Duration,
    /// ErrImagePull to ImagePullBackOff and back to ErrImagePull (real: ~14-15 s).
    pub pull_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            schedule: Duration::from_millis(10),
            admit: Duration::from_millis(15),
            create: Duration::from_millis(150),
            status_sync: Duration::from_millis(200),
            pull_error: Duration::from_millis(300),
            pull_backoff: Duration::from_millis(1500),
        }
    }
}

/// How to start a fake server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespaces that exist from the start (each gets a `default` ServiceAccount and a
    /// `kube-root-ca.crt` ConfigMap).
    pub namespaces: Vec<String>,
    /// Bearer tokens and their rights. The default holds one admin token, [`ADMIN_TOKEN`].
    pub tokens: BTreeMap<String, TokenGrant>,
    /// Images the fake node can "pull", with the command used when a container sets
    /// neither `command` nor `args` (the image's entrypoint). `None`: every image exists
    /// and its entrypoint is `sh`.
    pub images: Option<BTreeMap<String, Vec<String>>>,
    /// Serve HTTPS with a fresh self-signed certificate (in the kubeconfig).
    pub tls: bool,
    pub channel_protocols: ChannelProtocols,
    pub timing: Timing,
    /// Leave every new Pod Pending with PodScheduled=False/Unschedulable.
    pub unschedulable: bool,
    /// Where Pod directories and volumes live; default a temporary directory removed on drop.
    pub work_dir: Option<PathBuf>,
    /// Give each container a root of its own (needs root, `unshare`, overlayfs): an
    /// overlay of the host's `/` with every volume mounted at its `mountPath`, so scripts
    /// that use `/builds` see the Pod's volume and their writes elsewhere stay in the
    /// container. Off by default: processes then run on the host (see README).
    pub container_roots: bool,
    /// Directories put in front of the containers' `PATH`, standing in for programs an
    /// image would carry (a helper image's `podci`, say). Empty by default.
    pub path_prepend: Vec<PathBuf>,
}

/// The token every default server accepts with full rights.
pub const ADMIN_TOKEN: &str = "fake-kube-admin-token";

impl Default for Options {
    fn default() -> Self {
        let mut tokens = BTreeMap::new();
        tokens.insert(ADMIN_TOKEN.to_string(), TokenGrant::admin());
        Options {
            namespaces: vec!["default".into(), "ci-jobs".into()],
            tokens,
            images: None,
            tls: false,
            channel_protocols: ChannelProtocols::V5,
            timing: Timing::default(),
            unschedulable: false,
            work_dir: None,
            container_roots: false,
            path_prepend: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Faults the control API injects.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The next N API requests fail with `fail_code`.
    pub fail_next: u32,
    pub fail_code: u16,
    pub latency: Duration,
    /// The next watch gets the 410 Expired ERROR event.
    pub expire_next_watch: bool,
    /// Every API request (not `/__fake/`) as `METHOD path?query`, in arrival order, so
    /// tests and benchmarks can count what a client costs the API server.
    pub requests: Vec<String>,
    /// When each of `requests` arrived.
    pub request_times: Vec<std::time::Instant>,
    /// The next attach that sends stdin is cut (see [`Control::cut_next_attach_stdin`]).
    pub cut_attach_stdin: Option<usize>,
    /// The next attach is cut when it would send output (see [`Control::cut_next_attach_output`]).
    pub cut_attach_output: bool,
    /// The next exec that sends stdin is cut (see [`Control::cut_next_exec_stdin`]).
    pub cut_exec_stdin: Option<usize>,
}

pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    pub opts: Options,
    pub work_dir: PathBuf,
    pub port: u16,
    pub runtimes: Mutex<BTreeMap<String, Arc<kubelet::PodRuntime>>>,
    pub faults: Mutex<Faults>,
    /// Bumped to end every open watch, log and exec stream abruptly.
    pub drop_streams: tokio::sync::watch::Sender<u64>,
    pub ca_pem: Option<String>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, store::Store> {
        // A poisoned lock means a handler panicked; the data is still usable for a test.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn runtimes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<kubelet::PodRuntime>>> {
        self.runtimes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake server; dropping it stops the server and kills every Pod's processes.
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    _tmp: Option<tempfile::TempDir>,
}

impl FakeKube {
    /// Bind a free port on 127.0.0.1 and start serving.
    pub async fn start(opts: Options) -> Result<FakeKube, StartError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(StartError::Bind)?;
        let addr = listener.local_addr().map_err(StartError::Bind)?;
        let (tmp, work_dir) = match &opts.work_dir {
            Some(p) => {
                std::fs::create_dir_all(p).map_err(|source| StartError::WorkDir {
                    path: p.clone(),
                    source,
                })?;
                (None, p.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("fake-kube-")
                    .tempdir()
                    .map_err(|source| StartError::WorkDir {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let (tls, ca_pem) = if opts.tls {
            let (cfg, pem) = api::tls_config().map_err(StartError::Tls)?;
            (Some(cfg), Some(pem))
        } else {
            (None, None)
        };
        let (drop_streams, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new()),
            opts,
            work_dir,
            port: addr.port(),
            runtimes: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Faults::default()),
            drop_streams,
            ca_pem,
        });
        api::seed(&shared);
        let server = tokio::spawn(api::serve(shared.clone(), listener, tls));
        Ok(FakeKube {
            shared,
            addr,
            server,
            _tmp: tmp,
        })
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.shared.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared.ca_pem.as_deref()
    }

    /// A kubeconfig (YAML) for the admin token with `namespace` as the default.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        self.kubeconfig_for(ADMIN_TOKEN, namespace)
    }

    /// A kubeconfig for any token (for example a restricted one).
    pub fn kubeconfig_for(&self, token: &str, namespace: &str) -> String {
        use base64::Engine;
        let ca = match &self.shared.ca_pem {
            Some(pem) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n{ca}contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {token}\n",
            url = self.url()
        )
    }

    /// Write [`FakeKube::kubeconfig`] to `path` (mode 0600: it holds a token).
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(self.kubeconfig(namespace).as_bytes())
    }

    /// The fault-injection and inspection API.
    pub fn control(&self) -> Control {
        Control {
            shared: self.shared.clone(),
        }
    }

    /// Where Pod directories and PVC directories live.
    pub fn work_dir(&self) -> &Path {
        &self.shared.work_dir
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.drop_streams.send_modify(|g| *g += 1);
        for rt in self.shared.runtimes().values() {
            rt.kill_all_now();
        }
    }
}

/// Fault injection and test helpers; cheap to clone.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl Control {
    /// The next `n` API requests fail with `code` (500 or 503 usually) and a Status body.
    pub fn fail_next_requests(&self, n: u32, code: u16) {
        let mut f = self.shared.faults();
        f.fail_next = n;
        f.fail_code = code;
    }
    /// Every API request waits this long before it is handled.
    pub fn set_latency(&self, d: Duration) {
        self.shared.faults().latency = d;
    }
    /// End every open watch, log follow, exec and attach connection abruptly.
    pub fn drop_streams(&self) {
        self.shared.drop_streams.send_modify(|g| *g += 1);
    }
    /// The next watch request is answered with the 410 Expired ERROR event.
    pub fn expire_next_watch(&self) {
        self.shared.faults().expire_next_watch = true;
    }
    /// Forget the event history, like an etcd compaction: older resourceVersions expire.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }
    /// Delete a Pod as another client would (grace period 0). False if it did not exist.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        api::delete_pod(&self.shared, namespace, name, Some(0)).is_ok()
    }
    /// The node is lost: every running Pod's processes die and the Pod fails.
    pub fn lose_node(&self) {
        kubelet::lose_node(&self.shared);
    }
    /// Create an object (a Secret, a ConfigMap, a PVC...) as another client would.
    pub fn put_object(&self, resource: &str, namespace: &str, obj: serde_json::Value) {
        let _ = api::create_simple(&self.shared, resource, namespace, obj);
    }
    /// How many API requests (control requests excluded) arrived so far.
    pub fn request_count(&self) -> usize {
        self.shared.faults().requests.len()
    }
    /// The API requests so far, each `METHOD path?query` (WebSocket upgrades are `GET`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.faults().requests.clone()
    }
    /// The API requests so far with the instant each arrived, for timing breakdowns.
    pub fn requests_timed(&self) -> Vec<(std::time::Instant, String)> {
        let f = self.shared.faults();
        f.request_times
            .iter()
            .copied()
            .zip(f.requests.iter().cloned())
            .collect()
    }
    /// Forget the recorded requests (for counting one job among several).
    pub fn reset_requests(&self) {
        let mut f = self.shared.faults();
        f.requests.clear();
        f.request_times.clear();
    }
    /// The next attach session that receives stdin passes whole frames to the container
    /// until at least `bytes` bytes went through, then its connection drops, as a
    /// connection lost while a client writes: leading frames arrive, the rest is lost.
    /// `0` drops it at the first frame, passing nothing.
    pub fn cut_next_attach_stdin(&self, bytes: usize) {
        self.shared.faults().cut_attach_stdin = Some(bytes);
    }
    /// The next exec session with stdin passes whole frames to its process until at
    /// least `bytes` bytes went through, then its connection drops and the process is
    /// killed (as the runtime ends an exec with its connection): a client's write lost
    /// half-way through, say a script sent to `sh`. `0` drops it at the first frame.
    pub fn cut_next_exec_stdin(&self, bytes: usize) {
        self.shared.faults().cut_exec_stdin = Some(bytes);
    }
    /// The next attach session drops its connection instead of sending the first output
    /// of the container: what the client wrote arrived, but it never hears back.
    pub fn cut_next_attach_output(&self) {
        self.shared.faults().cut_attach_output = true;
    }
    /// The current resourceVersion of the store.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
    /// A snapshot of an object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.shared
            .lock()
            .get(&store::Key::new(resource, namespace, name))
            .cloned()
    }
    /// The directory a Pod's volume lives in (emptyDir, configMap, secret).
    pub fn volume_dir(&self, namespace: &str, pod: &str, volume: &str) -> Option<PathBuf> {
        let uid = self.get("pods", namespace, pod)?["metadata"]["uid"]
            .as_str()?
            .to_string();
        Some(kubelet::pod_dir(&self.shared, &uid).join("volumes").join(volume))
    }
    #[doc(hidden)]
    pub fn status_json(&self) -> serde_json::Value {
        json!({"rv": self.resource_version()})
    }
}
