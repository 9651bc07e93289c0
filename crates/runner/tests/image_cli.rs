//! `podci image append|copy|inspect|login` end to end against Debian's docker-registry.

use std::io::Write;
use std::process::{Child, Command, Stdio};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn require(bin: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!("{bin} is required in CI (see .ci/setup.d/40-registry.sh)");
        }
        eprintln!("!!!!! SKIPPING: {bin} not installed (run .ci/setup.d/40-registry.sh) !!!!!");
    }
    ok
}

struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// docker-registry on a free port, with htpasswd auth when `user` is given.
fn registry(user: Option<(&str, &str)>) -> Option<Registry> {
    if !require("docker-registry") || (user.is_some() && !require("htpasswd")) {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let mut auth = String::new();
    if let Some((u, p)) = user {
        let mut c = Command::new("htpasswd")
            .args(["-Bin", u])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        c.stdin.take()?.write_all(p.as_bytes()).ok()?;
        let out = c.wait_with_output().ok()?;
        std::fs::write(dir.path().join("htpasswd"), out.stdout).ok()?;
        auth = format!(
            "auth:\n  htpasswd:\n    realm: t\n    path: {}\n",
            dir.path().join("htpasswd").display()
        );
    }
    let cfg = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("c.yml"), cfg).ok()?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("c.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(Registry {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    })
}

fn podci(args: &[&str], docker_config: &std::path::Path, stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DOCKER_AUTH_CONFIG")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("podci: {e}"));
    if let (Some(s), Some(mut i)) = (stdin, c.stdin.take()) {
        let _ = i.write_all(s.as_bytes());
    }
    let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn append_copy_inspect_with_login() -> TestResult {
    let Some(reg) = registry(Some(("ci", "s3cr3t-pw"))) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let cfg = work.path().join("docker");
    let app = work.path().join("app");
    std::fs::create_dir_all(app.join("bin"))?;
    std::fs::write(app.join("bin/run"), "#!/bin/sh\necho ok\n")?;

    // Without login the push is refused with a clear message.
    let target = format!("{}/team/app:v1", reg.host);
    let layer = format!("{}:/app", app.display());
    let append = [
        "image",
        "append",
        "--layer",
        &layer,
        "--entrypoint",
        "/app/bin/run",
        "--env",
        "A=1",
        "--tag",
        &target,
        "--tag",
        &format!("{}/team/app:latest", reg.host),
    ];
    let (ok, _, err) = podci(&append, &cfg, None);
    assert!(!ok && err.contains("401"), "{err}");

    // Login reads the password from stdin and stores it; a wrong one is refused.
    let (ok, _, err) = podci(
        &[
            "image",
            "login",
            &reg.host,
            "--username",
            "ci",
            "--password-stdin",
        ],
        &cfg,
        Some("wrong\n"),
    );
    assert!(!ok && !err.contains("wrong"), "{err}");
    let (ok, out, err) = podci(
        &[
            "image",
            "login",
            &reg.host,
            "--username",
            "ci",
            "--password-stdin",
        ],
        &cfg,
        Some("s3cr3t-pw\n"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    assert!(std::fs::read_to_string(cfg.join("config.json"))?.contains(&reg.host));
    let (ok, _, err) = podci(&["image", "login", &reg.host, "--username", "ci"], &cfg, None);
    assert!(!ok && err.contains("--password-stdin"), "{err}");

    let (ok, out, err) = podci(&append, &cfg, None);
    assert!(ok, "{err}");
    let digest = out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .ok_or(format!("no digest in {out}"))?
        .to_string();

    let (ok, out, err) = podci(
        &["image", "inspect", &format!("{}/team/app:latest", reg.host)],
        &cfg,
        None,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["digest"], digest);
    assert_eq!(v["config"]["Entrypoint"], serde_json::json!(["/app/bin/run"]));
    assert_eq!(v["config"]["Env"], serde_json::json!(["A=1"]));
    assert_eq!(v["layers"].as_array().map(|a| a.len()), Some(1));

    // Copy to an OCI layout and a docker archive, then back to another repository.
    let oci = format!("oci:{}:v1", work.path().join("lay").display());
    let (ok, _, err) = podci(&["image", "copy", &target, &oci], &cfg, None);
    assert!(ok, "{err}");
    let arch = format!("docker-archive:{}", work.path().join("img.tar").display());
    let (ok, _, err) = podci(&["image", "copy", &oci, &arch], &cfg, None);
    assert!(ok, "{err}");
    let (ok, out, err) = podci(
        &["image", "copy", &oci, &format!("{}/copies/app:v1", reg.host)],
        &cfg,
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&digest), "layout copy keeps the digest: {out}");
    let (ok, out, err) = podci(&["image", "inspect", &arch], &cfg, None);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["config"]["Entrypoint"], serde_json::json!(["/app/bin/run"]));

    // Explicit credentials with the password in a file, no stored login needed.
    let fresh = work.path().join("fresh-docker-config");
    let pwfile = work.path().join("pw");
    std::fs::write(&pwfile, "s3cr3t-pw\n")?;
    let pw = pwfile.display().to_string();
    let dst = format!("{}/explicit/app:v1", reg.host);
    let (ok, _, err) = podci(&["image", "copy", &oci, &dst], &fresh, None);
    assert!(!ok, "no credentials, no push: {err}");
    let (ok, out, err) = podci(
        &[
            "image",
            "copy",
            &oci,
            &dst,
            "--username",
            "ci",
            "--password-file",
            &pw,
        ],
        &fresh,
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&digest), "{out}");

    // Same input, same digest: the CLI build is reproducible.
    let again = format!("{}/team/again:v1", reg.host);
    let (ok, out, err) = podci(
        &[
            "image",
            "append",
            "--layer",
            &layer,
            "--entrypoint",
            "/app/bin/run",
            "--env",
            "A=1",
            "--tag",
            &again,
        ],
        &cfg,
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&digest), "{out}");
    Ok(())
}

#[test]
fn bad_input_gives_actionable_errors() -> TestResult {
    let work = tempfile::tempdir()?;
    let (ok, _, err) = podci(
        &["image", "copy", "oci:/nonexistent/dir", "oci:/tmp/x"],
        work.path(),
        None,
    );
    assert!(!ok && err.contains("/nonexistent/dir"), "{err}");
    let (ok, _, err) = podci(&["image", "inspect", "UPPER/Case"], work.path(), None);
    assert!(!ok && err.contains("invalid image reference"), "{err}");
    let (ok, _, err) = podci(
        &[
            "image",
            "append",
            "--layer",
            "/x",
            "--env",
            "novalue",
            "--tag",
            "oci:/tmp/y",
        ],
        work.path(),
        None,
    );
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
    Ok(())
}

/// Our users' seed pipeline builds its image with `podci image append` under `podci exec`
/// and pushes it with the masked registry password, which reaches podci through stdin:
/// the pushed image carries the packaged artifact, and no log holds the password.
#[test]
fn seed_pipeline_pushes_its_image_with_the_masked_password() -> TestResult {
    let password = "s33d-Regi5try-pw";
    let Some(reg) = registry(Some(("ci", password))) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let project = work.path().join("seed");
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&seed)
        .arg(&project)
        .status()?
        .success();
    assert!(ok, "copying examples/seed");
    let _ = std::fs::remove_dir_all(project.join(".podci"));
    std::fs::create_dir_all(project.join(".podci"))?;
    std::fs::write(
        project.join(".podci/variables.yml"),
        format!(
            "REGISTRY: {host}/team\nREGISTRY_USER: ci\nREGISTRY_PASSWORD: {{value: \"{password}\", masked: true}}\n",
            host = reg.host
        ),
    )?;
    let cfg = work.path().join("docker");
    let out = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["exec", "--needs", "docker_build"])
        .current_dir(&project)
        .env("DOCKER_CONFIG", &cfg)
        .env_remove("DOCKER_AUTH_CONFIG")
        .env("XDG_CONFIG_HOME", work.path().join("xdg"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(password), "password in podci's output:\n{text}");
    let mut logs = String::new();
    for entry in walkdir::WalkDir::new(project.join(".podci/logs")) {
        let entry = entry?;
        if entry.file_type().is_file() {
            logs.push_str(&std::fs::read_to_string(entry.path())?);
        }
    }
    assert!(logs.contains("pushed"), "{logs}");
    assert!(!logs.contains(password), "password in a job log:\n{logs}");
    // The pushed reference, read back from the job log's own words.
    let image = logs
        .lines()
        .find_map(|l| l.strip_prefix("image ").and_then(|r| r.strip_suffix(" pushed")))
        .ok_or("no 'image ... pushed' line")?
        .to_string();
    assert!(
        image.starts_with(&format!("{}/team/seed-app:", reg.host)),
        "{image}"
    );

    let (ok, inspect, err) = podci(
        &["image", "inspect", &image, "-u", "ci", "--password-stdin"],
        &cfg,
        Some(password),
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    let text = v.to_string();
    assert!(text.contains("\"/app\""), "workdir /app expected: {inspect}");
    let layers = v["layers"]
        .as_array()
        .or_else(|| v["manifest"]["layers"].as_array())
        .map_or(0, Vec::len);
    assert_eq!(layers, 1, "one layer (target/) on scratch: {inspect}");
    Ok(())
}
