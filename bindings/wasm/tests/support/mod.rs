//! What the browser tests need: finding the tools (failing under `CI`), building the wasm
//! once, a static file server on 127.0.0.1, and a small WebDriver client for chromedriver.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target dir of this build (integration tests get `CARGO_TARGET_TMPDIR` inside it).
pub fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The external programs, or why the test cannot run. Under `CI` a missing one fails the
/// test; elsewhere it is skipped loudly.
pub struct Tools {
    pub chromedriver: PathBuf,
    pub wasm_bindgen_dir: PathBuf,
}

pub fn tools(test: &str) -> Option<Tools> {
    let mut missing = Vec::new();
    if which(CHROMIUM).is_none() {
        missing.push("chromium (apt install chromium)");
    }
    let chromedriver = which("chromedriver");
    if chromedriver.is_none() {
        missing.push("chromedriver (apt install chromium-driver)");
    }
    let wb = which("wasm-bindgen");
    if wb.is_none() || which("wasm-bindgen-test-runner").is_none() {
        missing.push("wasm-bindgen-cli (cargo install wasm-bindgen-cli --version <Cargo.lock's>)");
    }
    if missing.is_empty() {
        let wb = wb.unwrap_or_default();
        return Some(Tools {
            chromedriver: chromedriver.unwrap_or_default(),
            wasm_bindgen_dir: wb.parent().map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    let msg = format!(
        "{test}: missing {}; .ci/setup.d/60-wasm.sh installs them",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    None
}

/// Serialises the nested cargo builds of this test binary (they share a target dir).
pub static CARGO: Mutex<()> = Mutex::new(());

/// Builds the wasm and a copy of the page once per test run; returns the page directory.
pub fn built_page(tools: &Tools) -> PathBuf {
    static PAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = PAGE.get_or_init(|| {
        let _g = CARGO.lock().unwrap_or_else(|e| e.into_inner());
        let dir = target_dir().join("podci-wasm-page");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let web = workspace_root().join("bindings/wasm/web");
        for f in ["index.html", "style.css", "app.js"] {
            std::fs::copy(web.join(f), dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
        let status = Command::new("bash")
            .arg(workspace_root().join("bindings/wasm/build.sh"))
            .arg(dir.join("pkg"))
            .env("PATH", path_with(&tools.wasm_bindgen_dir))
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("bindings/wasm/build.sh failed: {status}"));
        }
        Ok(dir)
    });
    match r {
        Ok(d) => d.clone(),
        Err(e) => panic!("{e}"),
    }
}

pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// Where screenshots go: `<target>/podci-wasm-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let d = target_dir().join("podci-wasm-screenshots");
    let _ = std::fs::create_dir_all(&d);
    d
}

// ---- static file server -------------------------------------------------------------

/// Serves a directory on 127.0.0.1 until dropped.
pub struct StaticServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    pub fn start(dir: PathBuf) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let dir = dir.clone();
                    std::thread::spawn(move || serve(c, &dir));
                }
            }
        });
        StaticServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, dir: &Path) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let rel = if path == "/" {
        "index.html"
    } else {
        path.trim_start_matches('/')
    };
    let mut stream = stream;
    if rel.split('/').any(|c| c == "..") {
        let _ = stream.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    match std::fs::read(dir.join(rel)) {
        Ok(body) => {
            let ct = match rel.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                Some("wasm") => "application/wasm",
                Some("json") => "application/json",
                _ => "text/plain; charset=utf-8",
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
        Err(_) => {
            let _ =
                stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    }
}

// ---- WebDriver ----------------------------------------------------------------------

/// chromedriver on a port of its own, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9515)
}

impl Driver {
    pub fn start(chromedriver: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http(port, "GET", "/status", None) {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not answer on port {port}");
    }

    pub fn session(&self, width: u32, height: u32) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let (code, v) = http(self.port, "POST", "/session", Some(&caps)).expect("new session");
        assert_eq!(code, 200, "new session: {v}");
        let id = v["value"]["sessionId"].as_str().expect("session id").to_string();
        Session { port: self.port, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Session {
    port: u16,
    id: String,
}

impl Session {
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{}", self.id, path);
        let (code, v) = http(self.port, method, &p, body).unwrap_or_else(|e| panic!("{method} {p}: {e}"));
        assert_eq!(code, 200, "{method} {p}: {v}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Runs an async function body; its returned promise's value is the result.
    pub fn exec_async(&self, body: &str, args: Value) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1]; (async (...arguments) => {{ {body} }})(...Array.from(arguments).slice(0, -1)).then(done, e => done({{error: String(e)}}));"
        );
        self.cmd(
            "POST",
            "/execute/async",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Clears an input and types `text` into it as a user would.
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/clear"), Some(&json!({})));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(&json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(&json!({})));
    }

    /// Waits until the page has rendered more than `after` times; returns the count.
    pub fn wait_render(&self, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.exec(
                "return [document.body.dataset.state, Number(document.body.dataset.renders || 0)];",
                json!([]),
            );
            let n = v[1].as_u64().unwrap_or(0);
            if v[0] == "failed" {
                let text = self.exec("return document.body.innerText.slice(0, 500);", json!([]));
                panic!("page failed to start: {text}");
            }
            if n > after {
                return n;
            }
            assert!(Instant::now() < deadline, "page did not render (state {v})");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG screenshot; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = http(self.port, "DELETE", &format!("/session/{}", self.id), None);
    }
}

/// One HTTP/1.1 request to chromedriver on 127.0.0.1.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the header, then exactly the body.
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status code")?;
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut raw = Vec::new();
    match length {
        Some(n) => {
            raw.resize(n, 0);
            reader.read_exact(&mut raw).map_err(|e| e.to_string())?;
        }
        None if lower.contains("transfer-encoding: chunked") => loop {
            let mut size = String::new();
            reader.read_line(&mut size).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        },
        None => {
            reader.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        }
    }
    let body = String::from_utf8_lossy(&raw);
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok((code, v))
}
