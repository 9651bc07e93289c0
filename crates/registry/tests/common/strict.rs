//! A strict in-memory registry for what docker-registry is lax about: 416 (with the
//! server's `Range`) on an out-of-order chunk, 201 for a single-POST upload, relative
//! upload `Location`s carrying a query string, an upload `Location` on another host, 429
//! with `Retry-After`, `OCI-Chunk-Min-Length`, registry error bodies, tag pagination.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::Digest as _;

#[derive(Default, Clone)]
pub struct StrictConfig {
    /// Require `Authorization: Basic` with these credentials on the registry host.
    pub basic: Option<(String, String)>,
    /// Serve upload sessions on 127.0.0.2 (another host): the Location points there.
    pub uploads_elsewhere: bool,
    /// Advertise `OCI-Chunk-Min-Length`.
    pub chunk_min: Option<u64>,
    /// Answer this many blob PUTs with 429 + `Retry-After: 1` first.
    pub throttle_puts: u32,
    /// Acknowledge but drop the data of the n-th PATCH (1-based): the next one is out of order.
    pub lose_patch: Option<u32>,
    /// Serve blobs with their last byte flipped (a corrupting cache or disk).
    pub corrupt_blobs: bool,
    /// Answer this many manifest PUTs with 503 (no Retry-After) first.
    pub fail_manifest_puts: u32,
    /// Answer blob GETs with a 307 to blob storage on 127.0.0.2 (another host).
    pub redirect_blobs: bool,
    /// Repositories (prefix) for which every push is DENIED.
    pub denied_prefix: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub uri: String,
    pub host: String,
    pub auth: bool,
    pub status: u16,
}

#[derive(Default)]
struct Store {
    blobs: HashMap<String, Bytes>,
    repo_blobs: HashSet<(String, String)>,
    uploads: HashMap<String, (String, Vec<u8>)>,
    manifests: HashMap<(String, String), (String, Bytes)>,
}

pub struct Strict {
    cfg: StrictConfig,
    store: Mutex<Store>,
    pub log: Mutex<Vec<Logged>>,
    next_id: AtomicU64,
    puts_throttled: AtomicU32,
    manifest_fails: AtomicU32,
    patches: AtomicU32,
    pub patch_sizes: Mutex<Vec<usize>>,
    pub host: String,
    pub other_host: String,
}

pub struct StrictHandle {
    pub state: Arc<Strict>,
}

impl StrictHandle {
    pub fn host(&self) -> &str {
        &self.state.host
    }
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        self.state
            .store
            .lock()
            .map(|s| s.repo_blobs.contains(&(repo.to_string(), digest.to_string())))
            .unwrap_or(false)
    }
}

pub async fn start(cfg: StrictConfig) -> StrictHandle {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = l1.local_addr().map(|a| a.port()).unwrap_or(0);
    // Same port on another loopback address: a different host to the client.
    let l2 = tokio::net::TcpListener::bind(("127.0.0.2", port)).await.ok();
    let state = Arc::new(Strict {
        cfg,
        store: Mutex::new(Store::default()),
        log: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        puts_throttled: AtomicU32::new(0),
        manifest_fails: AtomicU32::new(0),
        patches: AtomicU32::new(0),
        patch_sizes: Mutex::new(Vec::new()),
        host: format!("127.0.0.1:{port}"),
        other_host: format!("127.0.0.2:{port}"),
    });
    let app = axum::Router::new().fallback(handle).with_state(state.clone());
    let app2 = app.clone();
    tokio::spawn(async move {
        let _ = axum::serve(l1, app).await;
    });
    if let Some(l2) = l2 {
        tokio::spawn(async move {
            let _ = axum::serve(l2, app2).await;
        });
    }
    StrictHandle { state }
}

fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"errors": [{"code": code, "message": msg}]}).to_string(),
    )
        .into_response()
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

async fn handle(
    axum::extract::State(st): axum::extract::State<Arc<Strict>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let resp = route(&st, &method, &uri, &headers, &host, auth.as_deref(), body);
    if let Ok(mut l) = st.log.lock() {
        l.push(Logged {
            method: method.to_string(),
            uri: uri.to_string(),
            host,
            auth: auth.is_some(),
            status: resp.status().as_u16(),
        });
    }
    resp
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

fn route(
    st: &Strict,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    host: &str,
    auth: Option<&str>,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let on_other_host = host == st.other_host;
    if on_other_host && !path.starts_with("/upload/") && !path.starts_with("/blobdata/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    // Upload URLs on the other host work without credentials, like presigned URLs.
    if let Some((u, p)) = &st.cfg.basic
        && !on_other_host
    {
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        );
        if auth != Some(want.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"strict\"")],
                "",
            )
                .into_response();
        }
    }
    if path == "/v2/" {
        return StatusCode::OK.into_response();
    }
    if let Some(d) = path.strip_prefix("/blobdata/") {
        let Ok(s) = st.store.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        return match s.blobs.get(d) {
            Some(b) => (StatusCode::OK, b.clone()).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return upload(st, method, uri, headers, id, body);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    for kind in ["/blobs/uploads/", "/blobs/", "/manifests/", "/tags/list"] {
        if let Some(i) = rest.find(kind) {
            let repo = &rest[..i];
            let tail = &rest[i + kind.len()..];
            if let Some(pre) = &st.cfg.denied_prefix
                && repo.starts_with(pre.as_str())
                && (*method == Method::POST || *method == Method::PUT)
            {
                return err(
                    StatusCode::FORBIDDEN,
                    "DENIED",
                    "requested access to the resource is denied",
                );
            }
            return match kind {
                "/blobs/uploads/" => start_upload(st, uri, repo, body),
                "/blobs/" => blob(st, method, repo, tail),
                "/manifests/" => manifest(st, method, headers, repo, tail, body),
                _ => tags(st, uri, repo),
            };
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

fn location(st: &Strict, id: &str) -> String {
    // A relative Location with a query string of its own, or an absolute one elsewhere.
    if st.cfg.uploads_elsewhere {
        format!("http://{}/upload/{id}?state=s{id}", st.other_host)
    } else {
        format!("/upload/{id}?state=s{id}")
    }
}

fn start_upload(st: &Strict, uri: &Uri, repo: &str, body: Bytes) -> Response {
    let q = query(uri);
    let Ok(mut s) = st.store.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let (Some(d), Some(from)) = (q.get("mount"), q.get("from"))
        && s.repo_blobs.contains(&(from.clone(), d.clone()))
    {
        s.repo_blobs.insert((repo.to_string(), d.clone()));
        return (
            StatusCode::CREATED,
            [
                ("location", format!("/v2/{repo}/blobs/{d}")),
                ("docker-content-digest", d.clone()),
            ],
        )
            .into_response();
    }
    if let Some(d) = q.get("digest") {
        // Single POST: the whole blob in the POST body; a strict registry answers 201.
        if sha(&body) != *d {
            return err(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
            );
        }
        s.blobs.insert(d.clone(), body);
        s.repo_blobs.insert((repo.to_string(), d.clone()));
        return (
            StatusCode::CREATED,
            [("location", format!("/v2/{repo}/blobs/{d}"))],
        )
            .into_response();
    }
    let id = st.next_id.fetch_add(1, Ordering::Relaxed).to_string();
    s.uploads.insert(id.clone(), (repo.to_string(), Vec::new()));
    let mut r = (
        StatusCode::ACCEPTED,
        [("location", location(st, &id)), ("range", "0-0".to_string())],
    )
        .into_response();
    if let Some(m) = st.cfg.chunk_min
        && let Ok(v) = m.to_string().parse()
    {
        r.headers_mut().insert("oci-chunk-min-length", v);
    }
    r
}

fn upload(st: &Strict, method: &Method, uri: &Uri, headers: &HeaderMap, id: &str, body: Bytes) -> Response {
    let q = query(uri);
    if q.get("state").map(String::as_str) != Some(&format!("s{id}")) {
        return err(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "the upload state query was lost",
        );
    }
    let Ok(mut s) = st.store.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some((repo, data)) = s.uploads.get(id).cloned() else {
        return err(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown",
        );
    };
    let range = |len: usize| {
        if len == 0 {
            "0-0".to_string()
        } else {
            format!("0-{}", len - 1)
        }
    };
    match *method {
        Method::GET => (
            StatusCode::NO_CONTENT,
            [("location", location(st, id)), ("range", range(data.len()))],
        )
            .into_response(),
        Method::PATCH => {
            let cr = headers
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let start = cr.split_once('-').and_then(|(a, _)| a.parse::<usize>().ok());
            if start != Some(data.len()) {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [("location", location(st, id)), ("range", range(data.len()))],
                )
                    .into_response();
            }
            if let Ok(mut sizes) = st.patch_sizes.lock() {
                sizes.push(body.len());
            }
            let n = st.patches.fetch_add(1, Ordering::Relaxed) + 1;
            let mut data = data;
            // A lost chunk is still acknowledged with the Range it would have made, so
            // the client only learns of the loss from the 416 on its next chunk.
            let len = data.len() + body.len();
            if st.cfg.lose_patch != Some(n) {
                data.extend_from_slice(&body);
            }
            s.uploads.insert(id.to_string(), (repo, data));
            (
                StatusCode::ACCEPTED,
                [("location", location(st, id)), ("range", range(len))],
            )
                .into_response()
        }
        Method::PUT => {
            if st.puts_throttled.load(Ordering::Relaxed) < st.cfg.throttle_puts {
                st.puts_throttled.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
            }
            let Some(d) = q.get("digest").cloned() else {
                return err(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "digest missing");
            };
            let mut data = data;
            data.extend_from_slice(&body);
            if sha(&data) != d {
                return err(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                );
            }
            s.uploads.remove(id);
            s.blobs.insert(d.clone(), Bytes::from(data));
            s.repo_blobs.insert((repo.clone(), d.clone()));
            (
                StatusCode::CREATED,
                [
                    ("location", format!("/v2/{repo}/blobs/{d}")),
                    ("docker-content-digest", d),
                ],
            )
                .into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn blob(st: &Strict, method: &Method, repo: &str, digest: &str) -> Response {
    let Ok(s) = st.store.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if !s.repo_blobs.contains(&(repo.to_string(), digest.to_string())) {
        return err(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry");
    }
    let Some(b) = s.blobs.get(digest).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = b.len().to_string();
    if *method == Method::HEAD {
        return (
            StatusCode::OK,
            [
                ("content-length", len),
                ("docker-content-digest", digest.to_string()),
            ],
        )
            .into_response();
    }
    if st.cfg.redirect_blobs {
        let to = format!("http://{}/blobdata/{digest}", st.other_host);
        return (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response();
    }
    let b = if st.cfg.corrupt_blobs {
        let mut v = b.to_vec();
        if let Some(x) = v.last_mut() {
            *x ^= 0xff;
        }
        Bytes::from(v)
    } else {
        b
    };
    (StatusCode::OK, [("docker-content-digest", digest.to_string())], b).into_response()
}

fn manifest(
    st: &Strict,
    method: &Method,
    headers: &HeaderMap,
    repo: &str,
    reference: &str,
    body: Bytes,
) -> Response {
    let Ok(mut s) = st.store.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match *method {
        Method::PUT if st.manifest_fails.load(Ordering::Relaxed) < st.cfg.fail_manifest_puts => {
            st.manifest_fails.fetch_add(1, Ordering::Relaxed);
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Method::PUT => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return err(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "manifest invalid");
            };
            if doc
                .get("mediaType")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m != ct)
            {
                return err(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    "mediaType does not match Content-Type",
                );
            }
            let mut refs: Vec<String> = doc
                .get("layers")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
                .filter_map(|l| l.get("digest")?.as_str().map(str::to_string))
                .collect();
            if let Some(c) = doc
                .get("config")
                .and_then(|c| c.get("digest"))
                .and_then(|d| d.as_str())
            {
                refs.push(c.to_string());
            }
            for r in refs {
                if !s.repo_blobs.contains(&(repo.to_string(), r.clone())) {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        &format!("blob unknown to registry: {r}"),
                    );
                }
            }
            let d = sha(&body);
            s.manifests.insert(
                (repo.to_string(), reference.to_string()),
                (ct.clone(), body.clone()),
            );
            s.manifests.insert((repo.to_string(), d.clone()), (ct, body));
            (StatusCode::CREATED, [("docker-content-digest", d)]).into_response()
        }
        Method::GET | Method::HEAD => match s.manifests.get(&(repo.to_string(), reference.to_string())) {
            Some((ct, b)) => (
                StatusCode::OK,
                [("content-type", ct.clone()), ("docker-content-digest", sha(b))],
                b.clone(),
            )
                .into_response(),
            None => err(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown"),
        },
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn tags(st: &Strict, uri: &Uri, repo: &str) -> Response {
    let q = query(uri);
    let Ok(s) = st.store.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut all: Vec<String> = s
        .manifests
        .keys()
        .filter(|(r, t)| r == repo && !t.starts_with("sha256:"))
        .map(|(_, t)| t.clone())
        .collect();
    all.sort();
    let after: Vec<String> = match q.get("last") {
        Some(l) => all.into_iter().filter(|t| t > l).collect(),
        None => all,
    };
    let n = q
        .get("n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let page: Vec<String> = after.iter().take(n).cloned().collect();
    let mut r = axum::Json(serde_json::json!({"name": repo, "tags": page})).into_response();
    if after.len() > page.len()
        && let Some(last) = page.last()
        && let Ok(v) = format!("</v2/{repo}/tags/list?n={n}&last={last}>; rel=\"next\"").parse()
    {
        r.headers_mut().insert("link", v);
    }
    r
}
