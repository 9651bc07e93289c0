//! Small helpers shared by the API handlers and the fake kubelet: timestamps in the
//! formats the API server writes, Status bodies, Go-compatible JSON encoding and names.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// RFC 3339 with whole seconds, as metadata timestamps are written (`2026-11-27T20:57:17Z`).
pub fn now_rfc3339() -> String {
    fmt_secs(jiff::Timestamp::now())
}

pub fn fmt_secs(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The kubelet's fixed-width RFC3339Nano used for log timestamps (always 9 digits).
pub fn fmt_nanos(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// Go's encoding/json escapes `<`, `>` and `&` inside strings; the recordings show it.
/// Outside strings these characters never occur in JSON, so a plain replace is exact.
pub fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".to_string());
    if s.contains(['<', '>', '&']) {
        s.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
    } else {
        s
    }
}

/// A JSON response the way the API server writes one: compact, then a newline.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut body = go_json(v);
    body.push('\n');
    let mut r = (code, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

pub fn plain_response(code: StatusCode, text: &str) -> Response {
    let mut r = (code, text.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error as a `metav1.Status`, the body of every API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Some errors (exec refusals) are plain text on the real server.
    pub plain_text: bool,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            plain_text: false,
        }
    }
    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
    pub fn plain(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: "",
            message: message.into(),
            details: None,
            plain_text: true,
        }
    }
    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(json!({"name": name, "kind": resource}))
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn status_json(&self) -> Value {
        let mut s = serde_json::Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), json!({}));
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(self.message));
        s.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            s.insert("details".into(), d.clone());
        }
        s.insert("code".into(), json!(self.code));
        Value::Object(s)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.plain_text {
            return plain_response(code, &self.message);
        }
        let mut r = json_response(code, &self.status_json());
        if self.code == 403 {
            r.headers_mut()
                .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        }
        r
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// 64 random-looking bits without a random-number crate: std's per-process SipHash keys
/// mixed with a counter are unique enough for uids and generated names.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Nanoseconds since the epoch, strictly increasing across calls.
pub fn monotonic_nanos() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

pub fn new_uid() -> String {
    let a = random_u64();
    let b = random_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The five-character suffix of generated names (`kube-api-access-42wz6`): consonants
/// and digits, as apimachinery's `rand.String` uses.
pub fn name_suffix(n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut v = random_u64();
    (0..n)
        .map(|_| {
            let c = ALPHA[(v % ALPHA.len() as u64) as usize] as char;
            v /= ALPHA.len() as u64;
            c
        })
        .collect()
}

pub fn container_id() -> String {
    format!(
        "containerd://{:016x}{:016x}{:016x}{:016x}",
        random_u64(),
        random_u64(),
        random_u64(),
        random_u64()
    )
}

/// DNS-1123 subdomain (object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_inner)
}

fn is_dns1123_label_inner(p: &str) -> bool {
    let b = p.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 label (container and volume names).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_inner(s)
}

pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Label values: empty, or up to 63 of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let b = s.as_bytes();
    s.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Label keys: optional DNS subdomain prefix and a `/`, then a name like a label value.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_escapes_html_characters() {
        let v = json!({"m": "a<b>&c"});
        assert_eq!(go_json(&v), r#"{"m":"a\u003cb\u003e\u0026c"}"#);
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("runner-1.x"));
        assert!(!is_dns1123_subdomain("Bad_Name"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(!is_label_value("-x"));
        assert_eq!(new_uid().len(), 36);
    }
}
