//! A real S3 server for tests: moto (`pip install 'moto[server]'`) on a free port of
//! 127.0.0.1, with one bucket, killed on drop. Shared with podci's runner tests
//! (`#[path]`-included), so that every S3 test starts its server the same way.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on a free port; killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as GitLab Runner's `ServerAddress` takes it (no scheme).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every object name in `bucket` (moto does not check signatures), sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = request(self.port, "GET", &format!("/{bucket}?list-type=2"), b"");
        assert_eq!(status, 200, "list {bucket}: {body}");
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.replace("&amp;", "&")))
            .collect();
        keys.sort();
        keys
    }

    /// Remove every object from `bucket`.
    pub fn empty(&self, bucket: &str) {
        for k in self.keys(bucket) {
            let (status, body) = request(self.port, "DELETE", &format!("/{bucket}/{k}"), b"");
            assert!(status == 204 || status == 200, "delete {k}: {status} {body}");
        }
    }
}

/// An Authorization header moto accepts without checking it (signatures are only checked
/// when moto's IAM enforcement is on): without one, moto applies object ACLs to an
/// anonymous caller and refuses to read objects a signed client wrote.
const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

/// One plain HTTP/1.1 request; the status code (0 when nothing answered) and the body
/// (bytes that are not UTF-8 replaced).
pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{AUTH}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let resp = String::from_utf8_lossy(&raw);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The status code of one plain HTTP/1.1 request.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> u16 {
    request(port, method, path, body).0
}

/// Start moto with a bucket, or `None` (a loud skip) when it is not installed outside CI.
pub fn moto(bucket: &str) -> Option<Moto> {
    if Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto_server is required when CI is set (pip install 'moto[server]')"
        );
        eprintln!("\n\n*** SKIPPED: moto_server is not installed ***\n");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let m = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http(port, "PUT", &format!("/{bucket}"), b""),
        200,
        "create bucket"
    );
    Some(m)
}
