//! Test support: Debian's `docker-registry` started on a free port in three auth modes, a
//! token server the tests own (ES256 JWTs with an x5c chain, as distribution expects),
//! and a small strict in-memory registry for the behaviours docker-registry is lax about.
#![allow(dead_code)]

pub mod strict;
pub mod token;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// True if `bin` exists. Missing programs fail the test under CI and skip it loudly
/// elsewhere.
pub fn require(bin: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!("{bin} is required in CI (see .ci/setup.d/40-registry.sh)");
        }
        eprintln!("!!!!! SKIPPING: {bin} not installed (run .ci/setup.d/40-registry.sh) !!!!!");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// How the real registry authenticates.
pub enum RegistryAuth {
    None,
    Htpasswd {
        user: String,
        password: String,
    },
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

/// A running `docker-registry`, killed on drop.
pub struct RealRegistry {
    child: Child,
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealRegistry {
    /// Starts the registry, or returns `None` when it is not installed (outside CI).
    pub fn start(auth: RegistryAuth) -> Option<RealRegistry> {
        if !require("docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let auth_yaml = match &auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd { user, password } => {
                let file = dir.path().join("htpasswd");
                let out = run_stdin("htpasswd", &["-Bin", user], password.as_bytes());
                std::fs::write(&file, out).unwrap_or_else(|e| panic!("{e}"));
                format!(
                    "auth:\n  htpasswd:\n    realm: podci-test\n    path: {}\n",
                    file.display()
                )
            }
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("registry.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("docker-registry: {e}"));
        let reg = RealRegistry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
        };
        wait_port(port);
        Some(reg)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after 20 s");
}

pub fn run_stdin(bin: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input).unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{bin} {args:?} failed");
    out.stdout
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small tree to put in layers: a script with mode 0755, a data file, a symlink.
pub fn sample_tree(root: &Path, seed: &str) {
    std::fs::create_dir_all(root.join("bin")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("bin/hello"), format!("#!/bin/sh\necho hello {seed}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        root.join("bin/hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("data.txt"), format!("data {seed}\n").repeat(1000))
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::os::unix::fs::symlink("data.txt", root.join("link"));
}

/// Random-ish incompressible bytes without pulling in a RNG crate.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
