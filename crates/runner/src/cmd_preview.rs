//! `podci preview [FILE]`: serves the browser pipeline previewer (bindings/wasm/web) and
//! the pipeline file on 127.0.0.1, and prints the URL to open.
//!
//! The page does all the work in WebAssembly; this command only serves files. The
//! pipeline and the files it includes locally are read again on every request, so a
//! reload shows the file as it is on disk.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cmd_lint::{IncludeArgs, load_pipeline};

/// Options of `podci preview`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline to show (default: `.gitlab-ci.yml`).
    pub file: Option<PathBuf>,
    /// Port on 127.0.0.1 (default: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The previewer's page directory (default: bindings/wasm/web of the source tree podci
    /// was built from, or `$PODCI_WEB_DIR`).
    #[arg(long, value_name = "DIR", env = "PODCI_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Project root for `include:local` (default: the file's directory).
    #[arg(long, value_name = "DIR")]
    pub project_dir: Option<PathBuf>,
}

/// Why the previewer cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The page's directory is missing.
    #[error(
        "previewer page not found at {0}; pass --web-dir DIR (the bindings/wasm/web directory of a podci checkout)"
    )]
    NoPage(PathBuf),
    /// The wasm has not been built.
    #[error(
        "the previewer's WebAssembly is not built ({0} is missing); build it with `bindings/wasm/build.sh` \
         (needs `rustup target add wasm32-unknown-unknown` and `cargo install wasm-bindgen-cli --version {1}`)"
    )]
    NotBuilt(PathBuf, &'static str),
    /// The pipeline file cannot be read.
    #[error("cannot read {0}: {1}")]
    File(PathBuf, std::io::Error),
    /// The port is taken or not allowed.
    #[error("cannot listen on 127.0.0.1:{0}: {1}")]
    Listen(u16, std::io::Error),
}

/// The wasm-bindgen version of Cargo.lock, for the build hint.
const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// What the server serves.
#[derive(Clone, Debug)]
pub struct Site {
    /// The page directory (index.html, app.js, style.css, pkg/).
    pub web: PathBuf,
    /// The pipeline file.
    pub file: PathBuf,
    /// Root for `include:local`.
    pub project_dir: PathBuf,
}

/// Finds the page directory and checks that the wasm is built.
pub fn locate_web(explicit: Option<&Path>) -> Result<PathBuf, PreviewError> {
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bindings/wasm/web"),
    };
    if !dir.join("index.html").is_file() {
        return Err(PreviewError::NoPage(dir));
    }
    let wasm = dir.join("pkg/podci_wasm_bg.wasm");
    if !wasm.is_file() || !dir.join("pkg/podci_wasm.js").is_file() {
        return Err(PreviewError::NotBuilt(wasm, WASM_BINDGEN_VERSION));
    }
    Ok(dir)
}

/// The URL path the page reads the pipeline from.
pub const PIPELINE_PATH: &str = "/_podci/pipeline.yml";
/// The URL path of the included files (`{"path": "text"}`).
pub const FILES_PATH: &str = "/_podci/files.json";

/// Runs `podci preview`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let web = locate_web(args.web_dir.as_deref())?;
    let file = args.file.unwrap_or_else(|| PathBuf::from(".gitlab-ci.yml"));
    std::fs::metadata(&file).map_err(|e| PreviewError::File(file.clone(), e))?;
    let project_dir = args.project_dir.unwrap_or_else(|| match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    });
    let listener =
        TcpListener::bind(("127.0.0.1", args.port)).map_err(|e| PreviewError::Listen(args.port, e))?;
    let port = listener.local_addr()?.port();
    println!(
        "podci preview: http://127.0.0.1:{port}/?src={PIPELINE_PATH}&files={FILES_PATH}  ({}; Ctrl-C stops)",
        file.display()
    );
    std::io::stdout().flush()?;
    serve(
        listener,
        Site {
            web,
            file,
            project_dir,
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// Serves `site` on `listener` until the process ends (one thread per connection).
pub fn serve(listener: TcpListener, site: Site) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let site = site.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &site);
        });
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("yml" | "yaml") => "text/yaml; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The local files the pipeline includes, read from the project directory.
fn included_files(site: &Site) -> BTreeMap<String, String> {
    let includes = IncludeArgs {
        project_dir: Some(site.project_dir.clone()),
        offline: true,
        ..IncludeArgs::default()
    };
    let mut out = BTreeMap::new();
    if let Ok((_, p)) = load_pipeline(Some(&site.file), &includes) {
        for inc in &p.included {
            let rel = inc.trim_start_matches('/');
            if rel.split('/').any(|c| c == "..") {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(site.project_dir.join(rel)) {
                out.insert(rel.to_string(), text);
            }
        }
    }
    out
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

fn handle(stream: TcpStream, site: &Site) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut stream = stream;
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", b"only GET\n");
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    match path {
        PIPELINE_PATH => match std::fs::read(&site.file) {
            Ok(b) => respond(&mut stream, "200 OK", content_type("x.yml"), &b),
            Err(e) => respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                e.to_string().as_bytes(),
            ),
        },
        FILES_PATH => {
            let body = serde_json::to_vec(&included_files(site)).unwrap_or_else(|_| b"{}".to_vec());
            respond(&mut stream, "200 OK", "application/json", &body)
        }
        _ => {
            let rel = if path == "/" {
                "index.html"
            } else {
                path.trim_start_matches('/')
            };
            if rel.split('/').any(|c| c == ".." || c.starts_with('.')) || rel.contains('\\') {
                return respond(&mut stream, "403 Forbidden", "text/plain", b"forbidden\n");
            }
            match std::fs::read(site.web.join(rel)) {
                Ok(b) => respond(&mut stream, "200 OK", content_type(rel), &b),
                Err(_) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(port: u16, path: &str) -> (String, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let status = head.lines().next().unwrap_or("").to_string();
        (status, head, raw[end + 4..].to_vec())
    }

    fn site() -> (tempfile::TempDir, Site) {
        let d = tempfile::tempdir().unwrap();
        let web = d.path().join("web");
        std::fs::create_dir_all(web.join("pkg")).unwrap();
        std::fs::write(web.join("index.html"), "<html>page</html>").unwrap();
        std::fs::write(web.join("pkg/podci_wasm_bg.wasm"), b"\0asm").unwrap();
        std::fs::write(web.join("pkg/podci_wasm.js"), "export default 1").unwrap();
        let proj = d.path().join("proj");
        std::fs::create_dir_all(proj.join("ci")).unwrap();
        std::fs::write(
            proj.join(".gitlab-ci.yml"),
            "include: ci/build.yml\ntest:\n  script: x\n",
        )
        .unwrap();
        std::fs::write(proj.join("ci/build.yml"), "build:\n  script: make\n").unwrap();
        std::fs::write(d.path().join("secret.txt"), "no").unwrap();
        let site = Site {
            web,
            file: proj.join(".gitlab-ci.yml"),
            project_dir: proj,
        };
        (d, site)
    }

    #[test]
    fn serves_page_pipeline_and_includes() {
        let (_d, site) = site();
        assert!(locate_web(Some(&site.web)).is_ok());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || serve(l, site));
        let (st, _, body) = get(port, "/");
        assert!(st.contains("200"), "{st}");
        assert_eq!(body, b"<html>page</html>");
        let (_, head, body) = get(port, "/pkg/podci_wasm_bg.wasm");
        assert!(head.contains("Content-Type: application/wasm"), "{head}");
        assert_eq!(body, b"\0asm");
        let (_, _, body) = get(port, PIPELINE_PATH);
        assert!(String::from_utf8_lossy(&body).starts_with("include: ci/build.yml"));
        let (_, _, body) = get(port, FILES_PATH);
        let files: BTreeMap<String, String> = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            files.get("ci/build.yml").map(String::as_str),
            Some("build:\n  script: make\n")
        );
        assert!(get(port, "/../secret.txt").0.contains("403"));
        assert!(get(port, "/nope.js").0.contains("404"));
    }

    #[test]
    fn build_hint_names_the_locked_wasm_bindgen() {
        let lock =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock")).unwrap();
        let i = lock.find("name = \"wasm-bindgen\"\nversion = \"").unwrap();
        let rest = &lock[i + "name = \"wasm-bindgen\"\nversion = \"".len()..];
        assert_eq!(&rest[..rest.find('"').unwrap()], WASM_BINDGEN_VERSION);
    }

    #[test]
    fn missing_wasm_names_the_build_command() {
        let (_d, site) = site();
        std::fs::remove_file(site.web.join("pkg/podci_wasm_bg.wasm")).unwrap();
        let err = locate_web(Some(&site.web)).unwrap_err().to_string();
        assert!(err.contains("bindings/wasm/build.sh"), "{err}");
        assert!(err.contains("wasm-bindgen-cli --version 0.2.130"), "{err}");
        let err = locate_web(Some(Path::new("/nonexistent")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--web-dir"), "{err}");
    }
}
