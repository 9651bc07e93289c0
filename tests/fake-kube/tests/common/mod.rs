//! Helpers for the transcript comparisons: loading the recordings, a raw HTTP and
//! WebSocket client, and a structural JSON comparison that ignores only values that are
//! specific to one instance (uids, resourceVersions, timestamps, IPs, container ids).
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use podci_fake_kube::{ADMIN_TOKEN, ChannelProtocols, FakeKube, Options};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub fn transcripts_dir() -> PathBuf {
    // <repo root>/../shared/k8s-transcripts; the crate is <repo root>/tests/fake-kube.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("../shared/k8s-transcripts");
    assert!(
        dir.join("README.md").is_file(),
        "the recordings are missing: expected them at {} (a copy of shared/ beside the repository)",
        dir.display()
    );
    dir
}

pub fn load(file: &str) -> Vec<Value> {
    let p = transcripts_dir().join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: bad line: {e}")))
        .collect()
}

pub fn rec<'a>(records: &'a [Value], ty: &str, id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["type"] == json!(ty) && r["id"] == json!(id))
        .unwrap_or_else(|| panic!("no {ty} record with id {id}"))
}

pub fn recs<'a>(records: &'a [Value], ty: &str, id: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == json!(ty) && r["id"] == json!(id))
        .collect()
}

/// The images the recorded cluster's registry held; anything else fails to pull.
pub fn recorded_images() -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for i in [
        "127.0.0.1:5000/local/debian:bookworm",
        "127.0.0.1:5000/local/busybox:latest",
    ] {
        m.insert(i.to_string(), vec!["sh".to_string()]);
    }
    m
}

pub const NOPERM_TOKEN: &str = "noperm-token";

/// A fake server configured like the recorded one.
pub async fn recorded_like() -> FakeKube {
    let mut opts = Options {
        images: Some(recorded_images()),
        channel_protocols: ChannelProtocols::V4Only,
        ..Default::default()
    };
    opts.tokens.insert(
        NOPERM_TOKEN.into(),
        podci_fake_kube::TokenGrant::restricted("system:serviceaccount:ci-jobs:noperm", &[]),
    );
    FakeKube::start(opts).await.expect("fake server starts")
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(fake: &FakeKube) -> Api {
        Api {
            base: fake.url(),
            token: ADMIN_TOKEN.into(),
            http: reqwest::Client::new(),
        }
    }
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            base: self.base.clone(),
            token: token.into(),
            http: self.http.clone(),
        }
    }
    pub async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(m, format!("{}{}", self.base, path))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }
    /// Replay a recorded request (method, path, body) as it was sent.
    pub async fn replay(&self, req: &Value) -> Resp {
        let body = if let Some(t) = req["body_text"].as_str() {
            Some(t.as_bytes().to_vec())
        } else if req["body"].is_null() {
            None
        } else {
            Some(serde_json::to_vec(&req["body"]).expect("json"))
        };
        self.call(
            req["method"].as_str().expect("method"),
            req["path"].as_str().expect("path"),
            body,
        )
        .await
    }
    /// Open a watch and collect its events on a channel.
    pub async fn watch(&self, path: &str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Value>) {
        let r = self
            .http
            .get(format!("{}{}", self.base, path))
            .header("Authorization", format!("Bearer {}", self.token))
            .send()
            .await
            .expect("watch");
        let status = r.status().as_u16();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut s = r.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = s.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line)
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        (status, rx)
    }
}

/// Receive watch events until `stop` matches one (inclusive) or the timeout passes.
pub async fn collect_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    timeout: Duration,
    mut stop: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => {
                let done = stop(&ev);
                out.push(ev);
                if done {
                    return out;
                }
            }
            _ => return out,
        }
    }
}

/// One line per watch event: type, phase, reason, conditions and container states;
/// what a client branches on, without instance-specific values.
pub fn summary(ev: &Value) -> String {
    let o = &ev["object"];
    let s = &o["status"];
    let conds: Vec<String> = s["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{}={}{}",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().map(|r| format!("({r})")).unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let cs: Vec<String> = s["containerStatuses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let st = &c["state"];
                    let state = if let Some(w) = st.get("waiting") {
                        format!("waiting:{}", w["reason"].as_str().unwrap_or(""))
                    } else if let Some(t) = st.get("terminated") {
                        format!(
                            "terminated:{}:{}",
                            t["exitCode"],
                            t["reason"].as_str().unwrap_or("")
                        )
                    } else if st.get("running").is_some() {
                        "running".to_string()
                    } else {
                        "?".to_string()
                    };
                    format!(
                        "{}[{state} ready={} started={}]",
                        c["name"].as_str().unwrap_or(""),
                        c["ready"],
                        c["started"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let del = if o["metadata"].get("deletionTimestamp").is_some() {
        format!(" deleting(grace={})", o["metadata"]["deletionGracePeriodSeconds"])
    } else {
        String::new()
    };
    format!(
        "{} {}{}{} node={} [{}] {}",
        ev["type"].as_str().unwrap_or(""),
        s["phase"].as_str().unwrap_or(""),
        s["reason"].as_str().map(|r| format!("/{r}")).unwrap_or_default(),
        del,
        o["spec"]["nodeName"].as_str().unwrap_or("-"),
        conds.join(","),
        cs.join(",")
    )
}

/// Keys whose values are specific to one cluster or one run.
const VOLATILE: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "startedAt",
    "finishedAt",
    "lastTransitionTime",
    "startTime",
    "hostIP",
    "podIP",
    "ip",
    "containerID",
    "imageID",
    "time",
    "eventTime",
    "firstTimestamp",
    "lastTimestamp",
    "continue",
    "count",
    "serverAddress",
    "expirationTimestamp",
    "reportingInstance",
];

/// Compare `ours` with `recorded`: the same keys, the same JSON types, and the same
/// values except under [`VOLATILE`] keys and generated names. Returns the differences.
pub fn shape_diff(recorded: &Value, ours: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at(recorded, ours, "", &mut out);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn diff_at(r: &Value, o: &Value, path: &str, out: &mut Vec<String>) {
    let key = path.rsplit('.').next().unwrap_or("");
    if key == "managedFields" {
        return;
    }
    if type_name(r) != type_name(o) {
        out.push(format!(
            "{path}: recorded {} {r}, ours {} {o}",
            type_name(r),
            type_name(o)
        ));
        return;
    }
    match (r, o) {
        (Value::Object(rm), Value::Object(om)) => {
            for (k, rv) in rm {
                if k == "managedFields" {
                    continue;
                }
                match om.get(k) {
                    Some(ov) => diff_at(rv, ov, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: missing in ours (recorded {rv})")),
                }
            }
            for k in om.keys() {
                if !rm.contains_key(k) {
                    out.push(format!("{path}.{k}: only in ours ({})", om[k]));
                }
            }
        }
        (Value::Array(ra), Value::Array(oa)) => {
            if ra.len() != oa.len() {
                out.push(format!(
                    "{path}: recorded {} elements, ours {}",
                    ra.len(),
                    oa.len()
                ));
                return;
            }
            for (i, (a, b)) in ra.iter().zip(oa).enumerate() {
                diff_at(a, b, &format!("{path}[{i}]"), out);
            }
        }
        _ => {
            if VOLATILE.contains(&key) || r == o {
                return;
            }
            if let (Some(a), Some(b)) = (r.as_str(), o.as_str())
                && generated_equal(a, b)
            {
                return;
            }
            out.push(format!("{path}: recorded {r}, ours {o}"));
        }
    }
}

/// Generated names and cluster-specific strings compare by their stable part.
fn generated_equal(a: &str, b: &str) -> bool {
    for prefix in ["kube-api-access-", "containerd://", "10.244.", "192.0.2."] {
        if a.starts_with(prefix) && b.starts_with(prefix) {
            return true;
        }
    }
    // Event names: <object>.<16 hex digits>.
    let event_name = |s: &str| {
        s.rsplit_once('.').and_then(|(obj, hex)| {
            (hex.len() == 16 && hex.bytes().all(|c| c.is_ascii_hexdigit())).then_some(obj.to_string())
        })
    };
    matches!((event_name(a), event_name(b)), (Some(x), Some(y)) if x == y)
}

pub fn assert_same_shape(what: &str, recorded: &Value, ours: &Value) {
    let d = shape_diff(recorded, ours);
    assert!(
        d.is_empty(),
        "{what} differs from the recording:\n  {}\nours: {ours}",
        d.join("\n  ")
    );
}

/// A WebSocket exchange as the recordings show it: the 101 (or refusal) and the
/// server's frames as (opcode, channel, payload).
pub struct WsResult {
    pub status: u16,
    pub protocol: Option<String>,
    pub body: String,
    pub frames: Vec<(String, Option<u8>, Vec<u8>)>,
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(
    fake: &FakeKube,
    token: &str,
    path: &str,
    protocols: &[&str],
) -> Result<(WsStream, Option<String>), WsResult> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    if protocols.is_empty() {
        return raw_ws_connect(fake, token, path).await;
    }
    let url = format!("{}{}", fake.url().replacen("http", "ws", 1), path);
    let mut req = url.into_client_request().expect("ws request");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.join(", ").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((s, resp)) => {
            let p = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            Ok((s, p))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(WsResult {
                status,
                protocol: None,
                body,
                frames: Vec::new(),
            })
        }
        Err(e) => panic!("websocket connect to {path} failed: {e}"),
    }
}

/// A handshake without any subprotocol, done by hand: the server answers with an
/// empty `Sec-WebSocket-Protocol` header (as the recorded one does), which tungstenite's
/// client handshake rejects.
async fn raw_ws_connect(
    fake: &FakeKube,
    token: &str,
    path: &str,
) -> Result<(WsStream, Option<String>), WsResult> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(fake.addr())
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n",
        fake.addr()
    );
    tcp.write_all(req.as_bytes()).await.expect("write handshake");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await.expect("read handshake") == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.read_to_end(&mut body)).await;
        return Err(WsResult {
            status,
            protocol: None,
            body: String::from_utf8_lossy(&body).into_owned(),
            frames: Vec::new(),
        });
    }
    let proto = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("sec-websocket-protocol:")
                .or_else(|| l.strip_prefix("Sec-WebSocket-Protocol:"))
        })
        .map(|v| v.trim().to_string());
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    Ok((ws, proto))
}

/// Read server frames until the server's close frame or `quiet` passes without one.
pub async fn ws_read(s: &mut WsStream, quiet: Duration) -> Vec<(String, Option<u8>, Vec<u8>)> {
    use tokio_tungstenite::tungstenite::Message;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(quiet, s.next()).await {
            Ok(Some(Ok(m))) => match m {
                Message::Binary(b) => out.push((
                    "binary".into(),
                    b.first().copied(),
                    b.get(1..).unwrap_or(&[]).to_vec(),
                )),
                Message::Text(t) => out.push(("text".into(), None, t.as_bytes().to_vec())),
                Message::Close(f) => {
                    let code = f.map(|f| u16::from(f.code)).unwrap_or(0);
                    out.push(("close".into(), None, code.to_string().into_bytes()));
                    return out;
                }
                _ => {}
            },
            _ => return out,
        }
    }
}

pub async fn ws_send(s: &mut WsStream, chan: u8, data: &[u8]) {
    use tokio_tungstenite::tungstenite::Message;
    let mut v = vec![chan];
    v.extend_from_slice(data);
    s.send(Message::Binary(v.into())).await.expect("send frame");
}

/// The recorded server frames of one WebSocket exchange.
pub fn recorded_frames(records: &[Value], id: &str) -> Vec<(String, Option<u8>, Vec<u8>)> {
    use base64::Engine;
    recs(records, "ws-frame", id)
        .into_iter()
        .filter(|f| f["dir"] == json!("server->client"))
        .map(|f| {
            let op = f["opcode"].as_str().unwrap_or("").to_string();
            if op == "close" {
                return (op, None, f["close_code"].to_string().into_bytes());
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(f["data_b64"].as_str().unwrap_or(""))
                .unwrap_or_default();
            (op, f["channel"].as_u64().map(|c| c as u8), data)
        })
        .collect()
}

/// Frames normalized for comparison: consecutive data on the same channel joined
/// (how output is cut into frames depends on pipe timing, in both servers), stdout and
/// stderr kept apart, the order of status and close kept.
pub fn normalize_frames(frames: &[(String, Option<u8>, Vec<u8>)]) -> Vec<(String, Option<u8>, String)> {
    let mut first_empty = false;
    let mut out: Vec<(String, Option<u8>, String)> = Vec::new();
    let mut stdout = String::new();
    let mut stderr = String::new();
    for (i, (op, ch, data)) in frames.iter().enumerate() {
        let text = String::from_utf8_lossy(data).into_owned();
        match (op.as_str(), ch) {
            ("binary", Some(1)) if i == 0 && data.is_empty() => first_empty = true,
            ("binary", Some(1)) => stdout.push_str(&text),
            ("binary", Some(2)) => stderr.push_str(&text),
            _ => out.push((op.clone(), *ch, text)),
        }
    }
    let mut v = Vec::new();
    if first_empty {
        v.push(("binary".into(), Some(1), "<first empty frame>".into()));
    }
    v.push(("binary".into(), Some(1), stdout));
    v.push(("binary".into(), Some(2), stderr));
    v.extend(out);
    v
}
