//! The HTTP side: the accept loop (HTTP or HTTPS), authentication and authorization,
//! routing of core/v1 paths, admission (validation and defaulting) of Pods and the
//! other objects, list/watch with selectors and resourceVersions, and deletion.

use crate::kubelet;
use crate::store::{Change, FieldSelector, Key, LabelSelector};
use crate::util::{self, ApiError, DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG, json_response, now_rfc3339};
use crate::{Shared, TokenGrant};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

type TlsConfig = Arc<tokio_rustls::rustls::ServerConfig>;

/// A fresh self-signed certificate for 127.0.0.1 and localhost.
pub fn tls_config() -> Result<(TlsConfig, String), String> {
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| e.to_string())?;
    let pem = ck.cert.pem();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), pem))
}

pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener, tls: Option<TlsConfig>) {
    let router = axum::Router::new().fallback(dispatch).with_state(shared);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // As the real API server: Go turns Nagle's algorithm off on every TCP connection
        // (net.TCPConn's default), so a small exec/attach frame or watch event is sent at
        // once instead of waiting for the client to acknowledge the previous one.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(a) => {
                    if let Ok(s) = a.accept(stream).await {
                        let io = hyper_util::rt::TokioIo::new(s);
                        let _ = http.serve_connection(io, svc).with_upgrades().await;
                    }
                }
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = http.serve_connection(io, svc).with_upgrades().await;
                }
            }
        });
    }
}

/// Namespaces, their default ServiceAccount and root CA ConfigMap, as a fresh cluster has.
pub fn seed(shared: &Shared) {
    for ns in &shared.opts.namespaces {
        let _ = create_simple(
            shared,
            "namespaces",
            "",
            json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        let _ = create_simple(
            shared,
            "serviceaccounts",
            ns,
            json!({"metadata": {"name": "default"}}),
        );
        let _ = create_simple(
            shared,
            "configmaps",
            ns,
            json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": shared.ca_pem.clone().unwrap_or_default()}}),
        );
    }
}

/// Query parameters in order, repeated keys kept (exec's `command=`).
pub struct Query(pub Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut v = Vec::new();
        for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, val) = part.split_once('=').unwrap_or((part, ""));
            v.push((pct_decode(k), pct_decode(val)));
        }
        Query(v)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, b)| b.clone())
            .collect()
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | "True"))
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            // Hex digits as bytes: slicing the str could split a multi-byte character.
            b'%' if i + 2 < b.len() => match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who is calling, resolved from the bearer token.
pub struct Caller {
    pub grant: TokenGrant,
}

impl Caller {
    /// 403 exactly as RBAC words it.
    pub fn authorize(
        &self,
        verb: &str,
        resource: &str,
        sub: Option<&str>,
        ns: &str,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        let full = match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        };
        if self.grant.permits(&full, verb) {
            return Ok(());
        }
        let user = &self.grant.user;
        let scope = if ns.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{ns}\"")
        };
        let (msg, details) = match name {
            Some(n) => (
                format!(
                    "{resource} \"{n}\" is forbidden: User \"{user}\" cannot {verb} resource \"{full}\" in API group \"\" {scope}"
                ),
                json!({"name": n, "kind": resource}),
            ),
            None => (
                format!(
                    "{resource} is forbidden: User \"{user}\" cannot {verb} resource \"{full}\" in API group \"\" {scope}"
                ),
                json!({"kind": resource}),
            ),
        };
        Err(ApiError::new(403, "Forbidden", msg).with_details(details))
    }
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/__fake/") {
        return control(&shared, rest, req).await;
    }
    let (latency, fail) = {
        let mut f = shared.faults();
        let uri = req.uri();
        f.requests.push(match uri.query() {
            Some(q) => format!("{} {}?{q}", req.method(), uri.path()),
            None => format!("{} {}", req.method(), uri.path()),
        });
        f.request_times.push(std::time::Instant::now());
        let fail = if f.fail_next > 0 {
            f.fail_next -= 1;
            Some(f.fail_code)
        } else {
            None
        };
        (f.latency, fail)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = fail {
        let (reason, msg) = match code {
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            _ => ("InternalError", "Internal error occurred: injected fault"),
        };
        let mut r = ApiError::new(code, reason, msg).into_response();
        if code == 429 || code == 503 {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        return r;
    }
    match route(&shared, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = || ApiError::new(401, "Unauthorized", "Unauthorized");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let grant = shared.opts.tokens.get(token.trim()).ok_or_else(unauthorized)?;
    Ok(Caller { grant: grant.clone() })
}

async fn route(shared: &Arc<Shared>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = Query::parse(req.uri().query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Discovery is readable by any authenticated caller (system:discovery).
    let caller = authenticate(shared, req.headers())?;
    match segs.as_slice() {
        ["version"] => return Ok(version()),
        ["api"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", shared.port)}]}),
            ));
        }
        ["api", "v1"] => {
            let body: Value = serde_json::from_str(include_str!("../data/api-v1.json")).unwrap_or_else(
                |_| json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}),
            );
            return Ok(json_response(StatusCode::OK, &body));
        }
        ["apis"] => return Ok(json_response(StatusCode::OK, &crate::apps::group_list())),
        ["apis", ..] => {
            let owned: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
            return crate::apps::route(shared, &caller, req, &owned, &query).await;
        }
        ["healthz"] | ["livez"] | ["readyz"] => {
            return Ok(util::plain_response(StatusCode::OK, "ok"));
        }
        _ => {}
    }
    let (ns, resource, name, sub): (String, String, Option<String>, Option<String>) = match segs.as_slice() {
        ["api", "v1", "namespaces"] => (String::new(), "namespaces".into(), None, None),
        ["api", "v1", "namespaces", n] => (String::new(), "namespaces".into(), Some(n.to_string()), None),
        ["api", "v1", "namespaces", ns, r] => (ns.to_string(), r.to_string(), None, None),
        ["api", "v1", "namespaces", ns, r, n] => (ns.to_string(), r.to_string(), Some(n.to_string()), None),
        ["api", "v1", "namespaces", ns, r, n, s] => (
            ns.to_string(),
            r.to_string(),
            Some(n.to_string()),
            Some(s.to_string()),
        ),
        ["api", "v1", "nodes"] => (String::new(), "nodes".into(), None, None),
        ["api", "v1", "nodes", n] => (String::new(), "nodes".into(), Some(n.to_string()), None),
        // Cluster-wide lists of namespaced resources: /api/v1/pods.
        ["api", "v1", r] => ("*".into(), r.to_string(), None, None),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .with_details(json!({})));
        }
    };
    if !SUPPORTED.contains(&resource.as_str()) {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({})));
    }
    let method = req.method().clone();
    let is_watch = query.flag("watch");
    let verb = match (&method, name.is_some()) {
        (&Method::GET, _) if is_watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let ns_for_rbac = if ns == "*" { "" } else { ns.as_str() };
    // Like the apiserver's RequestInfo: a list or watch narrowed to one name by
    // `fieldSelector=metadata.name=X` is authorized (and refused) for that name.
    let selected_name = if matches!(verb, "list" | "watch") {
        query.get("fieldSelector").and_then(|f| {
            f.strip_prefix("metadata.name=")
                .filter(|n| !n.contains(','))
                .map(String::from)
        })
    } else {
        None
    };
    // POST to a named subresource (token, eviction) is a create on it.
    caller.authorize(
        verb,
        &resource,
        sub.as_deref(),
        ns_for_rbac,
        name.as_deref().or(selected_name.as_deref()),
    )?;

    if resource == "nodes" {
        return Ok(nodes(name.as_deref()));
    }
    let body_bytes = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        let (parts, body) = req.into_parts();
        let b = axum::body::to_bytes(body, 64 << 20)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        (Some(parts), b)
    } else {
        let (parts, _) = req.into_parts();
        (Some(parts), Bytes::new())
    };
    let (parts, body) = body_bytes;
    let parts = parts.ok_or_else(|| ApiError::bad_request("no request"))?;
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _ = user_agent;

    // Namespaced objects need their namespace to exist (except to read namespaces).
    if !ns.is_empty() && ns != "*" && !namespace_exists(shared, &ns) && method == Method::POST {
        return Err(ApiError::not_found("namespaces", &ns));
    }

    match (resource.as_str(), sub.as_deref()) {
        ("pods", Some("log")) => {
            let name = name.unwrap_or_default();
            return crate::kubelet::logs(shared.clone(), &ns, &name, &query).await;
        }
        ("pods", Some(s @ ("exec" | "attach"))) => {
            let name = name.unwrap_or_default();
            let req = Request::from_parts(parts, Body::empty());
            return crate::streams::handle(shared.clone(), req, &ns, &name, s == "exec", &query).await;
        }
        ("pods", Some("status")) => {
            let name = name.unwrap_or_default();
            return match method {
                Method::GET => get_one(shared, "pods", &ns, &name),
                Method::PATCH | Method::PUT => {
                    let patch = parse_json(&body, "Pod")?;
                    let status = patch.get("status").cloned().unwrap_or(Value::Null);
                    let key = Key::new("pods", &ns, &name);
                    let out = shared
                        .lock()
                        .modify(&key, |o| merge_patch(&mut o["status"], &status));
                    out.map(|o| object_response(StatusCode::OK, "pods", o))
                        .ok_or_else(|| ApiError::not_found("pods", &name))
                }
                _ => Err(ApiError::new(405, "MethodNotAllowed", "method not allowed")),
            };
        }
        ("serviceaccounts", Some("token")) if method == Method::POST => {
            let name = name.unwrap_or_default();
            get_one(shared, "serviceaccounts", &ns, &name)?;
            let req: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            let exp = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
            let expires = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(exp))
                .unwrap_or_else(|_| jiff::Timestamp::now());
            return Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null},
                    "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": exp, "boundObjectRef": null},
                    "status": {"token": format!("fake-sa-token-{}", util::name_suffix(16)), "expirationTimestamp": util::fmt_secs(expires)}}),
            ));
        }
        (_, Some(s)) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({s})"),
            ));
        }
        _ => {}
    }

    match verb {
        "watch" => watch(shared, &resource, &ns, name.as_deref(), &query),
        "list" => list(shared, &resource, &ns, &query, &parts.headers),
        "get" => get_one(shared, &resource, &ns, name.as_deref().unwrap_or_default()),
        "create" => {
            let kind = kind_of(&resource);
            let obj = parse_json(&body, kind)?;
            if let Some(ons) = obj["metadata"]["namespace"].as_str()
                && !ons.is_empty()
                && ons != ns
                && !ns.is_empty()
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if resource == "pods" {
                create_pod(shared, &ns, obj).map(|o| object_response(StatusCode::CREATED, "pods", o))
            } else {
                create_simple(shared, &resource, &ns, obj)
                    .map(|o| object_response(StatusCode::CREATED, &resource, o))
            }
        }
        "patch"
            if crate::apply::is_apply(
                parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ) =>
        {
            crate::apply::apply(
                shared,
                &resource,
                &ns,
                name.as_deref().unwrap_or_default(),
                &body,
                &query,
            )
        }
        "update" | "patch" => {
            let name = name.unwrap_or_default();
            let patch = parse_json(&body, kind_of(&resource))?;
            let key = Key::new(&resource, &ns, &name);
            let is_put = verb == "update";
            let out = shared.lock().modify(&key, |o| {
                if is_put && resource != "pods" {
                    let meta = o["metadata"].clone();
                    *o = patch.clone();
                    o["metadata"] = meta;
                    if let Some(l) = patch["metadata"].get("labels") {
                        o["metadata"]["labels"] = l.clone();
                    }
                    if let Some(a) = patch["metadata"].get("annotations") {
                        o["metadata"]["annotations"] = a.clone();
                    }
                } else {
                    // Pods: only metadata labels/annotations may change here (spec is
                    // immutable apart from images, which the fake does not restart for).
                    let mut p = patch.clone();
                    if resource == "pods" {
                        p = json!({"metadata": {"labels": patch["metadata"]["labels"], "annotations": patch["metadata"]["annotations"]}});
                        if let Some(m) = p["metadata"].as_object_mut() {
                            m.retain(|_, v| !v.is_null());
                        }
                    }
                    merge_patch(o, &p);
                }
            });
            out.map(|o| object_response(StatusCode::OK, &resource, o))
                .ok_or_else(|| ApiError::not_found(&resource, &name))
        }
        "delete" => {
            let name = name.unwrap_or_default();
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?
            };
            let grace = query
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse::<i64>().ok())
                .or_else(|| opts["gracePeriodSeconds"].as_i64());
            if resource == "pods" {
                delete_pod(shared, &ns, &name, grace).map(|o| object_response(StatusCode::OK, "pods", o))
            } else {
                let removed = shared.lock().remove(&Key::new(&resource, &ns, &name));
                match removed {
                    Some(o) => {
                        if resource == "namespaces" {
                            return Ok(object_response(StatusCode::OK, "namespaces", o));
                        }
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "details": {"name": name, "kind": resource, "uid": o["metadata"]["uid"]}}),
                        ))
                    }
                    None => Err(ApiError::not_found(&resource, &name)),
                }
            }
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

const SUPPORTED: &[&str] = &[
    "pods",
    "secrets",
    "configmaps",
    "services",
    "serviceaccounts",
    "events",
    "persistentvolumeclaims",
    "namespaces",
    "nodes",
];

pub(crate) fn kind_of(resource: &str) -> &'static str {
    crate::apps::kind_of(resource)
}

fn version() -> Response {
    // The recorded server's /version is pretty-printed without a trailing newline.
    let body = "{\n  \"major\": \"\",\n  \"minor\": \"\",\n  \"gitVersion\": \"v0.0.0-master+ab451280a0ea817bd9d6b4f3c06204e3f9a37e75\",\n  \"gitCommit\": \"ab451280a0ea817bd9d6b4f3c06204e3f9a37e75\",\n  \"gitTreeState\": \"\",\n  \"buildDate\": \"1970-01-01T00:00:00Z\",\n  \"goVersion\": \"go1.19.8\",\n  \"compiler\": \"gc\",\n  \"platform\": \"linux/amd64\"\n}";
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn nodes(name: Option<&str>) -> Response {
    let node = json!({"kind": "Node", "apiVersion": "v1",
        "metadata": {"name": "localhost", "uid": "00000000-0000-4000-8000-000000000001", "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"kubernetes.io/hostname": "localhost", "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "192.0.2.2"}, {"type": "Hostname", "address": "localhost"}],
            "nodeInfo": {"kubeletVersion": "v1.24.0-fake", "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion": "containerd://1.6.20"}}});
    match name {
        Some("localhost") => json_response(StatusCode::OK, &node),
        Some(n) => ApiError::not_found("nodes", n).into_response(),
        None => {
            let mut n = node.clone();
            if let Some(m) = n.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            json_response(
                StatusCode::OK,
                &json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": [n]}),
            )
        }
    }
}

fn namespace_exists(shared: &Shared, ns: &str) -> bool {
    shared.lock().get(&Key::new("namespaces", "", ns)).is_some()
}

/// Parse a request body as the real decoder words its failures.
pub(crate) fn parse_json(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: json: cannot unmarshal into Go value"
        ))),
        Err(e) => {
            let text = String::from_utf8_lossy(body);
            let mut shown: String = text.chars().take(30).collect();
            if text.chars().count() > 30 {
                shown.push_str(" ...");
            }
            let what = if e.is_eof() {
                "unexpected end of JSON input".to_string()
            } else {
                e.to_string()
            };
            Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {what} ({shown})"
            )))
        }
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The object with kind and apiVersion first, as the API server writes it.
fn with_type(kind: &str, obj: Value) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!(crate::apps::api_version_of(kind)));
    if let Value::Object(o) = obj {
        for (k, v) in o {
            if k != "kind" && k != "apiVersion" {
                m.insert(k, v);
            }
        }
    }
    Value::Object(m)
}

fn without_type(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

pub(crate) fn object_response(code: StatusCode, resource: &str, obj: Value) -> Response {
    json_response(code, &with_type(kind_of(resource), obj))
}

pub(crate) fn get_one(shared: &Shared, resource: &str, ns: &str, name: &str) -> Result<Response, ApiError> {
    let obj = shared.lock().get(&Key::new(resource, ns, name)).cloned();
    match obj {
        Some(o) => Ok(object_response(StatusCode::OK, resource, o)),
        None => Err(ApiError::not_found(resource, name)),
    }
}

fn selectors(resource: &str, q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), resource)?,
    ))
}

pub(crate) fn list(
    shared: &Shared,
    resource: &str,
    ns: &str,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (ls, fs) = selectors(resource, q)?;
    let st = shared.lock();
    if let Some(rv) = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok())
        && q.get("resourceVersionMatch") == Some("Exact")
        && rv <= st.compacted
    {
        return Err(ApiError::new(
            410,
            "Expired",
            "The resourceVersion for the provided list is too old.",
        ));
    }
    let scope = if ns == "*" || ns.is_empty() {
        None
    } else {
        Some(ns)
    };
    let mut items: Vec<Value> = st
        .list(resource, scope)
        .into_iter()
        .filter(|o| ls.matches(o) && fs.matches(o))
        .collect();
    let rv = st.rv;
    let compacted = st.compacted;
    drop(st);
    // Chunking: a continue token that encodes where the next page starts.
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(cont) = q.get("continue").filter(|c| !c.is_empty()) {
        let (crv, start) =
            decode_continue(cont).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        if crv >= 0 && (crv as u64) <= compacted {
            let mut st = ApiError::new(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.").status_json();
            st["metadata"] = json!({"continue": encode_continue(-1, &start)});
            return Ok(json_response(StatusCode::GONE, &st));
        }
        items.retain(|o| {
            let k = format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            );
            k > start
        });
    }
    if let Some(limit) = q.get("limit").and_then(|l| l.parse::<usize>().ok())
        && limit > 0
        && items.len() > limit
    {
        let rest = items.len() - limit;
        items.truncate(limit);
        let last = &items[limit - 1];
        let k = format!(
            "{}/{}",
            last["metadata"]["namespace"].as_str().unwrap_or(""),
            last["metadata"]["name"].as_str().unwrap_or("")
        );
        meta["continue"] = json!(encode_continue(rv as i64, &k));
        meta["remainingItemCount"] = json!(rest);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if resource == "pods" && accept.contains("as=Table") {
        return Ok(pod_table(&items, meta));
    }
    let items: Vec<Value> = items.iter().map(without_type).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", kind_of(resource)), "apiVersion": crate::apps::api_version_of(kind_of(resource)), "metadata": meta, "items": items}),
    ))
}

fn encode_continue(rv: i64, start: &str) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(tok: &str) -> Option<(i64, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        v["rv"].as_i64()?,
        v["start"].as_str()?.trim_end_matches('\u{0}').to_string(),
    ))
}

/// `kubectl get pods` asks for a server-side Table.
fn pod_table(items: &[Value], meta: Value) -> Response {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|p| {
            let cs = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            let total = p["spec"]["containers"].as_array().map(|c| c.len()).unwrap_or(0);
            let ready = cs.iter().filter(|c| c["ready"] == json!(true)).count();
            let mut status = p["status"]["reason"]
                .as_str()
                .or(p["status"]["phase"].as_str())
                .unwrap_or("Pending")
                .to_string();
            for c in &cs {
                if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                    status = r.to_string();
                } else if let Some(r) = c["state"]["terminated"]["reason"].as_str()
                    && status == "Running"
                    && cs.iter().all(|c| c["state"].get("running").is_none())
                {
                    status = r.to_string();
                }
            }
            if p["metadata"].get("deletionTimestamp").is_some() {
                status = "Terminating".into();
            }
            let restarts: i64 = cs.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
            let age = p["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| {
                    let s = now.duration_since(t).as_secs().max(0);
                    if s < 120 { format!("{s}s") } else if s < 7200 { format!("{}m", s / 60) } else { format!("{}h", s / 3600) }
                })
                .unwrap_or_else(|| "<unknown>".into());
            json!({"cells": [p["metadata"]["name"], format!("{ready}/{total}"), status, restarts, age],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]}})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
                {"name": "Ready", "type": "string", "format": "", "description": "ready containers", "priority": 0},
                {"name": "Status", "type": "string", "format": "", "description": "status", "priority": 0},
                {"name": "Restarts", "type": "integer", "format": "", "description": "restarts", "priority": 0},
                {"name": "Age", "type": "string", "format": "", "description": "age", "priority": 0}],
            "rows": rows}),
    )
}

/// A watch: replay history after the given resourceVersion (or synthesize ADDED for the
/// current state), then stream live changes as newline-delimited JSON.
pub(crate) fn watch(
    shared: &Arc<Shared>,
    resource: &str,
    ns: &str,
    name: Option<&str>,
    q: &Query,
) -> Result<Response, ApiError> {
    let (ls, mut fs) = selectors(resource, q)?;
    if let Some(n) = name {
        fs = FieldSelector::parse(&format!("metadata.name={n}"), resource)?;
    }
    let expire = std::mem::take(&mut shared.faults().expire_next_watch);
    let rv_param = q.get("resourceVersion").unwrap_or("");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let bookmarks = q.flag("allowWatchBookmarks");
    let scope = if ns == "*" || ns.is_empty() {
        None
    } else {
        Some(ns.to_string())
    };
    let resource = resource.to_string();
    let kind = kind_of(&resource);
    let (initial, mut rx, start_rv, expired) = {
        let st = shared.lock();
        let rx = st.tx.subscribe();
        let matches_scope =
            |c: &Change| c.resource == resource && scope.as_ref().is_none_or(|s| *s == c.namespace);
        match rv_param.parse::<u64>() {
            Ok(rv) if rv != 0 => {
                if expire || rv < st.compacted {
                    (Vec::new(), rx, st.rv, Some(rv))
                } else {
                    // The history is in resourceVersion order: start at the first
                    // change after `rv` instead of scanning all of it.
                    let from = st.history.partition_point(|c| c.rv <= rv);
                    let evs: Vec<Change> = st.history[from..]
                        .iter()
                        .filter(|c| matches_scope(c))
                        .cloned()
                        .collect();
                    (evs, rx, st.rv, None)
                }
            }
            _ if expire => (Vec::new(), rx, st.rv, Some(0)),
            _ => {
                let evs: Vec<Change> = st
                    .list(&resource, scope.as_deref())
                    .into_iter()
                    .map(|o| Change {
                        rv: 0,
                        resource: resource.clone(),
                        namespace: String::new(),
                        kind: "ADDED",
                        object: Arc::new(o),
                    })
                    .collect();
                (evs, rx, st.rv, None)
            }
        }
    };
    let (mut tx, body_rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut drop_rx = shared.drop_streams.subscribe();
    let compacted = shared.lock().compacted;
    tokio::spawn(async move {
        let line = |ev_type: &str, obj: &Value| {
            let mut s = util::go_json(&json!({"type": ev_type, "object": with_type(kind, obj.clone())}));
            s.push('\n');
            Bytes::from(s)
        };
        if let Some(rv) = expired {
            let st = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {rv} ({})", compacted.max(1)), "reason": "Expired", "code": 410}});
            let mut s = util::go_json(&st);
            s.push('\n');
            let _ = tx.send(Ok(Bytes::from(s))).await;
            return;
        }
        for c in &initial {
            if ls.matches(&c.object)
                && fs.matches(&c.object)
                && tx.send(Ok(line(c.kind, &c.object))).await.is_err()
            {
                return;
            }
        }
        let mut last = initial
            .iter()
            .map(|c| c.rv)
            .max()
            .unwrap_or(start_rv)
            .max(start_rv);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => return,
                _ = drop_rx.changed() => {
                    let _ = tx.send(Err(std::io::Error::other("connection dropped by fault injection"))).await;
                    return;
                }
                _ = bookmark_tick.tick(), if bookmarks => {
                    let bm = json!({"type": "BOOKMARK", "object": {"kind": kind_of(&resource), "apiVersion": "v1", "metadata": {"resourceVersion": last.to_string()}}});
                    let mut s = util::go_json(&bm);
                    s.push('\n');
                    if tx.send(Ok(Bytes::from(s))).await.is_err() { return; }
                }
                ev = rx.recv() => {
                    let c = match ev {
                        Ok(c) => c,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => return,
                    };
                    if c.rv <= last || c.resource != resource || scope.as_ref().is_some_and(|s| *s != c.namespace) {
                        continue;
                    }
                    last = c.rv;
                    if ls.matches(&c.object) && fs.matches(&c.object)
                        && tx.send(Ok(line(c.kind, &c.object))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(body_rx));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

pub(crate) fn base_metadata(obj: &Value, ns: &str) -> Map<String, Value> {
    let m = &obj["metadata"];
    let mut out = Map::new();
    let name = match m["name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match m["generateName"].as_str() {
            Some(g) => format!("{g}{}", util::name_suffix(5)),
            None => String::new(),
        },
    };
    out.insert("name".into(), json!(name));
    if let Some(g) = m.get("generateName") {
        out.insert("generateName".into(), g.clone());
    }
    if !ns.is_empty() {
        out.insert("namespace".into(), json!(ns));
    }
    out.insert("uid".into(), json!(util::new_uid()));
    out.insert("resourceVersion".into(), json!(""));
    out.insert("creationTimestamp".into(), json!(now_rfc3339()));
    for k in ["labels", "annotations", "ownerReferences", "finalizers"] {
        if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    out
}

pub(crate) struct Causes(pub Vec<(String, &'static str, String)>);

impl Causes {
    pub(crate) fn invalid(&mut self, field: &str, value: &str, msg: &str) {
        self.0.push((
            field.into(),
            "FieldValueInvalid",
            format!("Invalid value: \"{value}\": {msg}"),
        ));
    }
    pub(crate) fn required(&mut self, field: &str) {
        self.0
            .push((field.into(), "FieldValueRequired", "Required value".into()));
    }
    pub(crate) fn other(&mut self, field: &str, reason: &'static str, msg: String) {
        self.0.push((field.into(), reason, msg));
    }
    pub(crate) fn into_result(self, kind: &str, name: &str) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self.0.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let causes: Vec<Value> = self
            .0
            .iter()
            .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
            .collect();
        Err(
            ApiError::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {joined}"))
                .with_details(json!({"name": name, "kind": kind, "causes": causes})),
        )
    }
}

pub(crate) fn validate_meta(obj: &Value, causes: &mut Causes) {
    let m = &obj["metadata"];
    match m["name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => {
            if !util::is_dns1123_subdomain(n) {
                causes.invalid("metadata.name", n, DNS1123_SUBDOMAIN_MSG);
            }
        }
        None => {
            if m["generateName"].as_str().is_none() {
                causes.0.push((
                    "metadata.name".into(),
                    "FieldValueRequired",
                    "Required value: name or generateName is required".into(),
                ));
            }
        }
    }
    if let Some(labels) = m["labels"].as_object() {
        for (k, v) in labels {
            if !util::is_label_key(k) {
                causes.invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
            }
            match v.as_str() {
                Some(s) if util::is_label_value(s) => {}
                _ => causes.invalid(
                    "metadata.labels",
                    v.as_str().unwrap_or(""),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ),
            }
        }
    }
}

/// Validate and default a Pod, store it and hand it to the fake kubelet.
pub fn create_pod(shared: &Arc<Shared>, ns: &str, obj: Value) -> Result<Value, ApiError> {
    for field in ["spec", "metadata"] {
        if let Some(v) = obj.get(field)
            && !v.is_object()
        {
            return Err(ApiError::bad_request(format!(
                "{} in body must be of type object: {}",
                field,
                util::go_json(v)
            )));
        }
    }
    let mut causes = Causes(Vec::new());
    validate_meta(&obj, &mut causes);
    let spec = &obj["spec"];
    let vols: Vec<String> = spec["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|x| x["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (i, v) in spec["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match v["name"].as_str() {
            Some(n) if util::is_dns1123_label(n) => {}
            Some(n) => causes.invalid(&format!("spec.volumes[{i}].name"), n, DNS1123_LABEL_MSG),
            None => causes.required(&format!("spec.volumes[{i}].name")),
        }
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.required("spec.containers");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        match c["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) if !util::is_dns1123_label(n) => {
                causes.invalid(&format!("{path}.name"), n, DNS1123_LABEL_MSG)
            }
            Some(n) => {
                if !seen.insert(n.to_string()) {
                    causes.other(
                        &format!("{path}.name"),
                        "FieldValueDuplicate",
                        format!("Duplicate value: \"{n}\""),
                    );
                }
            }
            None => causes.required(&format!("{path}.name")),
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            causes.required(&format!("{path}.image"));
        }
        for (j, m) in c["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let mp = format!("{path}.volumeMounts[{j}]");
            match m["name"].as_str() {
                Some(n) if vols.iter().any(|v| v == n) => {}
                Some(n) => causes.other(
                    &format!("{mp}.name"),
                    "FieldValueNotFound",
                    format!("Not found: \"{n}\""),
                ),
                None => causes.required(&format!("{mp}.name")),
            }
            if m["mountPath"].as_str().is_none_or(|s| s.is_empty()) {
                causes.required(&format!("{mp}.mountPath"));
            }
        }
    }
    if let Some(rp) = spec["restartPolicy"].as_str()
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        causes.other(
            "spec.restartPolicy",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
        );
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(|d| d.as_i64())
        && d <= 0
    {
        causes.invalid(
            "spec.activeDeadlineSeconds",
            &d.to_string(),
            "must be between 1 and 2147483647, inclusive",
        );
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    causes.into_result("Pod", &name)?;

    let mut meta = base_metadata(&obj, ns);
    let name = meta["name"].as_str().unwrap_or("").to_string();
    let key = Key::new("pods", ns, &name);
    if shared.lock().get(&key).is_some() {
        return Err(already_exists("pods", &name));
    }
    meta.remove("resourceVersion");
    let mut m2 = Map::new();
    for (k, v) in meta {
        m2.insert(k.clone(), v);
        if k == "uid" {
            m2.insert("resourceVersion".into(), json!(""));
        }
    }
    let spec = default_pod_spec(spec);
    let pod =
        json!({"metadata": m2, "spec": spec, "status": {"phase": "Pending", "qosClass": qos_class(&spec)}});
    let stored = shared.lock().create(key, pod);
    kubelet::spawn_pod(shared.clone(), ns.to_string(), name);
    Ok(stored)
}

fn already_exists(resource: &str, name: &str) -> ApiError {
    ApiError::new(
        409,
        "AlreadyExists",
        format!("{resource} \"{name}\" already exists"),
    )
    .with_details(json!({"name": name, "kind": resource}))
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let any = cs.iter().any(|c| {
        c["resources"]["requests"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
            || c["resources"]["limits"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        let l = &c["resources"]["limits"];
        let r = &c["resources"]["requests"];
        ["cpu", "memory"]
            .iter()
            .all(|k| !l[k].is_null() && (r[k].is_null() || r[k] == l[k]))
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// The defaults the real API server fills in (and the service-account admission
/// plug-in's projected token volume), in its field order.
fn default_pod_spec(spec: &Value) -> Value {
    let mut out = Map::new();
    let api_vol = format!("kube-api-access-{}", util::name_suffix(5));
    let automount = spec["automountServiceAccountToken"].as_bool() != Some(false);
    let mut vols: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
    for v in vols.iter_mut() {
        if let Some(s) = v.get_mut("secret").and_then(|s| s.as_object_mut()) {
            s.entry("defaultMode").or_insert(json!(420));
        }
        if let Some(s) = v.get_mut("configMap").and_then(|s| s.as_object_mut()) {
            s.entry("defaultMode").or_insert(json!(420));
        }
        if let Some(s) = v.get_mut("hostPath").and_then(|s| s.as_object_mut()) {
            s.entry("type").or_insert(json!(""));
        }
    }
    if automount {
        vols.push(json!({"name": api_vol, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}],
            "defaultMode": 420}}));
    }
    if !vols.is_empty() {
        out.insert("volumes".into(), json!(vols));
    }
    let default_container = |c: &Value| -> Value {
        let mut m = Map::new();
        let src = c.as_object().cloned().unwrap_or_default();
        for k in [
            "name",
            "image",
            "command",
            "args",
            "workingDir",
            "ports",
            "envFrom",
            "env",
        ] {
            if let Some(v) = src.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        m.insert(
            "resources".into(),
            src.get("resources").cloned().unwrap_or(json!({})),
        );
        let mut mounts = src
            .get("volumeMounts")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        if automount {
            mounts.push(json!({"name": api_vol, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
        }
        if !mounts.is_empty() {
            m.insert("volumeMounts".into(), json!(mounts));
        }
        for k in ["livenessProbe", "readinessProbe", "startupProbe", "lifecycle"] {
            if let Some(v) = src.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        m.insert(
            "terminationMessagePath".into(),
            src.get("terminationMessagePath")
                .cloned()
                .unwrap_or(json!("/dev/termination-log")),
        );
        m.insert(
            "terminationMessagePolicy".into(),
            src.get("terminationMessagePolicy")
                .cloned()
                .unwrap_or(json!("File")),
        );
        let image = src.get("image").and_then(|i| i.as_str()).unwrap_or("");
        let last = image.rsplit('/').next().unwrap_or(image);
        let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
        m.insert(
            "imagePullPolicy".into(),
            src.get("imagePullPolicy").cloned().unwrap_or(json!(if latest {
                "Always"
            } else {
                "IfNotPresent"
            })),
        );
        for k in ["securityContext", "stdin", "stdinOnce", "tty"] {
            if let Some(v) = src.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        Value::Object(m)
    };
    if let Some(ic) = spec["initContainers"].as_array() {
        out.insert(
            "initContainers".into(),
            json!(ic.iter().map(default_container).collect::<Vec<_>>()),
        );
    }
    let cs: Vec<Value> = spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(default_container)
        .collect();
    out.insert("containers".into(), json!(cs));
    out.insert(
        "restartPolicy".into(),
        spec.get("restartPolicy").cloned().unwrap_or(json!("Always")),
    );
    out.insert(
        "terminationGracePeriodSeconds".into(),
        spec.get("terminationGracePeriodSeconds")
            .cloned()
            .unwrap_or(json!(30)),
    );
    if let Some(d) = spec.get("activeDeadlineSeconds") {
        out.insert("activeDeadlineSeconds".into(), d.clone());
    }
    out.insert(
        "dnsPolicy".into(),
        spec.get("dnsPolicy").cloned().unwrap_or(json!("ClusterFirst")),
    );
    if let Some(v) = spec.get("nodeSelector") {
        out.insert("nodeSelector".into(), v.clone());
    }
    let sa = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    out.insert("serviceAccountName".into(), json!(sa));
    out.insert("serviceAccount".into(), json!(sa));
    if let Some(v) = spec.get("automountServiceAccountToken") {
        out.insert("automountServiceAccountToken".into(), v.clone());
    }
    if let Some(v) = spec.get("nodeName") {
        out.insert("nodeName".into(), v.clone());
    }
    for k in ["hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"] {
        if let Some(v) = spec.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert(
        "securityContext".into(),
        spec.get("securityContext").cloned().unwrap_or(json!({})),
    );
    for k in ["imagePullSecrets", "hostname", "subdomain", "affinity"] {
        if let Some(v) = spec.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert(
        "schedulerName".into(),
        spec.get("schedulerName")
            .cloned()
            .unwrap_or(json!("default-scheduler")),
    );
    let mut tol = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !tol.iter().any(|t| t["key"] == json!(key)) {
            tol.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            );
        }
    }
    out.insert("tolerations".into(), json!(tol));
    if let Some(v) = spec.get("priorityClassName") {
        out.insert("priorityClassName".into(), v.clone());
    }
    out.insert("priority".into(), json!(0));
    out.insert(
        "enableServiceLinks".into(),
        spec.get("enableServiceLinks").cloned().unwrap_or(json!(true)),
    );
    out.insert("preemptionPolicy".into(), json!("PreemptLowerPriority"));
    Value::Object(out)
}

/// Create one of the plain objects (no controller behind it).
pub fn create_simple(shared: &Shared, resource: &str, ns: &str, obj: Value) -> Result<Value, ApiError> {
    for field in ["data", "stringData", "spec", "metadata"] {
        if let Some(v) = obj.get(field)
            && !v.is_object()
            && !v.is_null()
        {
            return Err(ApiError::bad_request(format!(
                "{} in body must be of type object: {}",
                field,
                util::go_json(v)
            )));
        }
    }
    let mut causes = Causes(Vec::new());
    validate_meta(&obj, &mut causes);
    let kind = kind_of(resource);
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if resource == "secrets"
        && let Some(d) = obj["data"].as_object()
    {
        {
            use base64::Engine;
            for (k, v) in d {
                if v.as_str()
                    .is_none_or(|s| base64::engine::general_purpose::STANDARD.decode(s).is_err())
                {
                    causes.invalid(&format!("data[{k}]"), "", "illegal base64 data");
                }
            }
        }
    }
    causes.into_result(kind, &name)?;
    let meta = base_metadata(&obj, ns);
    let name = meta["name"].as_str().unwrap_or("").to_string();
    let key = Key::new(resource, ns, &name);
    if shared.lock().get(&key).is_some() {
        return Err(already_exists(resource, &name));
    }
    let mut out = Map::new();
    out.insert("metadata".into(), Value::Object(meta));
    let src = obj.as_object().cloned().unwrap_or_default();
    for (k, v) in &src {
        if !matches!(k.as_str(), "metadata" | "kind" | "apiVersion" | "stringData") {
            out.insert(k.clone(), v.clone());
        }
    }
    match resource {
        "secrets" => {
            use base64::Engine;
            if let Some(sd) = src.get("stringData").and_then(|v| v.as_object()) {
                let data = out.entry("data").or_insert(json!({}));
                for (k, v) in sd {
                    data[k] =
                        json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or("")));
                }
            }
            out.entry("type").or_insert(json!("Opaque"));
        }
        "services" => {
            let spec = out.entry("spec").or_insert(json!({}));
            if spec.get("clusterIP").is_none() {
                spec["clusterIP"] = json!(format!(
                    "10.96.{}.{}",
                    util::random_u64() % 250,
                    1 + util::random_u64() % 250
                ));
                spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
            }
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            spec["sessionAffinity"] = spec.get("sessionAffinity").cloned().unwrap_or(json!("None"));
            out.insert("status".into(), json!({"loadBalancer": {}}));
        }
        "persistentvolumeclaims" => {
            out.insert("status".into(), json!({"phase": "Bound", "accessModes": obj["spec"]["accessModes"].clone(), "capacity": obj["spec"]["resources"]["requests"].clone()}));
        }
        "events" => {
            out.entry("reportingComponent").or_insert(json!(""));
            out.entry("reportingInstance").or_insert(json!(""));
        }
        _ => {}
    }
    Ok(shared.lock().create(key, Value::Object(out)))
}

/// Graceful Pod deletion: mark it, let the kubelet stop the containers, then remove it.
/// A Pod with nothing running (or grace 0) goes at once; the response is the Pod with
/// deletionTimestamp set, as the real server returns it.
pub fn delete_pod(shared: &Arc<Shared>, ns: &str, name: &str, grace: Option<i64>) -> Result<Value, ApiError> {
    let key = Key::new("pods", ns, name);
    let mut st = shared.lock();
    let cur = st
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    if cur["metadata"].get("deletionTimestamp").is_some() {
        // A repeated delete with a shorter grace period shortens it; otherwise no change.
        let cur_grace = cur["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0);
        if grace.is_none_or(|g| g >= cur_grace) {
            return Ok(cur);
        }
    }
    let phase = cur["status"]["phase"].as_str().unwrap_or("");
    let unscheduled = cur["spec"]["nodeName"].is_null();
    let default_grace = cur["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    let mut grace = grace.unwrap_or(default_grace).max(0);
    if matches!(phase, "Succeeded" | "Failed") || unscheduled {
        grace = 0;
    }
    let now = jiff::Timestamp::now();
    let ts = util::fmt_secs(
        now.checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or(now),
    );
    let marked = st
        .modify(&key, |o| {
            o["metadata"]["deletionTimestamp"] = json!(ts);
            o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            reorder_meta(o);
        })
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    drop(st);
    let uid = marked["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let rt = shared.runtimes().get(&uid).cloned();
    match rt {
        // Grace 0 is a forced deletion: the object goes at once, the kubelet kills
        // whatever still runs without reporting another status.
        Some(rt) if grace > 0 => rt.request_delete(grace),
        Some(rt) => {
            rt.kill_all_now();
            finish_delete(shared, ns, name);
        }
        None => finish_delete(shared, ns, name),
    }
    Ok(marked)
}

/// Keep metadata keys in the server's order (deletion fields before labels).
fn reorder_meta(o: &mut Value) {
    const ORDER: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    if let Some(m) = o["metadata"].as_object() {
        let mut out = Map::new();
        for k in ORDER {
            if let Some(v) = m.get(*k) {
                out.insert((*k).into(), v.clone());
            }
        }
        for (k, v) in m {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        o["metadata"] = Value::Object(out);
    }
}

/// Remove a Pod whose containers are gone, and garbage-collect what it owns.
pub fn finish_delete(shared: &Arc<Shared>, ns: &str, name: &str) {
    let key = Key::new("pods", ns, name);
    let mut st = shared.lock();
    let Some(cur) = st.get(&key).cloned() else {
        return;
    };
    let uid = cur["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if cur["metadata"]["deletionGracePeriodSeconds"].as_i64() != Some(0) {
        let now = util::now_rfc3339();
        st.modify(&key, |o| {
            o["metadata"]["deletionTimestamp"] = json!(now);
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        });
    }
    st.remove(&key);
    // Garbage collector (background propagation): dependents owned by this Pod.
    let owned: Vec<Key> = st
        .objects
        .iter()
        .filter(|(k, v)| {
            k.namespace == ns
                && v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in owned {
        st.remove(&k);
    }
    drop(st);
    shared.runtimes().remove(&uid);
}

/// The control API over HTTP, for the binary and for tests in other languages.
async fn control(shared: &Arc<Shared>, rest: &str, req: Request) -> Response {
    let q = Query::parse(req.uri().query());
    let ok = json_response(StatusCode::OK, &json!({"ok": true}));
    match rest {
        "fail" => {
            let n = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(1);
            let code = q.get("code").and_then(|v| v.parse().ok()).unwrap_or(500);
            let mut f = shared.faults();
            f.fail_next = n;
            f.fail_code = code;
            ok
        }
        "latency" => {
            shared.faults().latency =
                Duration::from_millis(q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0));
            ok
        }
        "drop-streams" => {
            shared.drop_streams.send_modify(|g| *g += 1);
            ok
        }
        "expire-next-watch" => {
            shared.faults().expire_next_watch = true;
            ok
        }
        "compact" => {
            shared.lock().compact();
            ok
        }
        "delete-pod" => {
            let ns = q.get("namespace").unwrap_or("default");
            let name = q.get("name").unwrap_or("");
            match delete_pod(shared, ns, name, Some(0)) {
                Ok(_) => ok,
                Err(e) => e.into_response(),
            }
        }
        "lose-node" => {
            kubelet::lose_node(shared);
            ok
        }
        _ => ApiError::not_found("control", rest).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn query_parsing_never_panics(q in ".{0,64}") {
            let _ = Query::parse(Some(&q));
        }

        #[test]
        fn percent_encoding_round_trips(s in "[ -~]{0,32}") {
            let enc: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(pct_decode(&enc), s);
        }

        #[test]
        fn parse_json_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_json(&b, "Pod");
        }
    }

    #[test]
    fn query_decoding_keeps_repeats() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo%20out%3B%20exit%207&x=a+b",
        ));
        assert_eq!(q.all("command"), ["sh", "-c", "echo out; exit 7"]);
        assert_eq!(q.get("x"), Some("a b"));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(546, "ci-jobs/deadline-1");
        assert_eq!(decode_continue(&t), Some((546, "ci-jobs/deadline-1".to_string())));
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let mut t = json!({"a": {"b": 1, "c": 2}});
        merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}}));
    }
}
