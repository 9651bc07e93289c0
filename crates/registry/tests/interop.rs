//! Interoperability with the tools users already trust: an image podci pushes is pulled
//! by skopeo and unpacked by umoci with the expected files, modes and config; images
//! skopeo pushes (OCI and Docker schema2) are pulled and extended by podci; where a
//! Docker engine is running, the appended image runs with `docker run`.

mod common;

use std::io::Read;
use std::path::Path;

use common::{RealRegistry, RegistryAuth, TestResult, require, run, sample_tree};
use podci_registry::image::{self, Location};
use podci_registry::manifest::media;
use podci_registry::{
    AppendOptions, AuthEnv, Client, ClientOptions, ConfigChanges, CredentialStore, LayerSpec,
};

fn client() -> Client {
    Client::with_credentials(
        ClientOptions::default(),
        CredentialStore::with_env(AuthEnv::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn mode(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(
        &std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions(),
    ) & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_and_umoci_unpacks_what_podci_pushes() -> TestResult {
    if !require("skopeo") || !require("umoci") {
        return Ok(());
    }
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let c = client();
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    sample_tree(&src, "interop");
    let opts = AppendOptions {
        layers: vec![LayerSpec {
            source: src,
            dest: "/app".into(),
        }],
        changes: ConfigChanges {
            entrypoint: Some(vec!["/app/bin/hello".into()]),
            cmd: Some(vec!["--flag".into()]),
            env: vec!["MODE=interop".into()],
            workdir: Some("/app".into()),
            user: Some("1000:1000".into()),
            labels: vec![("built-by".into(), "podci".into())],
            exposed_ports: vec!["8080".into()],
        },
        ..Default::default()
    };
    let img = podci_registry::append(&c, None, &opts, work.path()).await?;
    let r = format!("{}/interop/app:v1", reg.host);
    image::push(&c, &img.image, &r.parse()?, &[]).await?;

    let raw = run(
        "skopeo",
        &["inspect", "--tls-verify=false", "--raw", &format!("docker://{r}")],
    );
    assert_eq!(
        raw.as_bytes(),
        &img.image.manifest.bytes[..],
        "skopeo sees our manifest byte-exact"
    );
    let lay = work.path().join("lay");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{r}"),
            &format!("oci:{}:v1", lay.display()),
        ],
    );
    let bundle = work.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:v1", lay.display()),
            &bundle.display().to_string(),
        ],
    );
    let root = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(root.join("app/bin/hello"))?,
        "#!/bin/sh\necho hello interop\n"
    );
    assert_eq!(mode(&root.join("app/bin/hello")), 0o755);
    assert_eq!(mode(&root.join("app/data.txt")), 0o644);
    assert_eq!(std::fs::read_link(root.join("app/link"))?, Path::new("data.txt"));
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json"))?)?;
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["/app/bin/hello", "--flag"])
    );
    assert_eq!(spec["process"]["cwd"], "/app");
    assert_eq!(spec["process"]["user"]["uid"], 1000);
    let env = spec["process"]["env"].as_array().cloned().unwrap_or_default();
    assert!(env.iter().any(|e| e == "MODE=interop"), "{env:?}");
    assert_eq!(spec["annotations"]["built-by"], "podci");
    Ok(())
}

fn layer_files(path: &Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut head = [0u8; 2];
    let gz = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut a = tar::Archive::new(reader);
    let mut names = Vec::new();
    for e in a.entries().unwrap_or_else(|e| panic!("{e}")) {
        let e = e.unwrap_or_else(|e| panic!("{e}"));
        names.push(
            e.path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podci_pulls_and_extends_what_skopeo_pushes() -> TestResult {
    if !require("skopeo") || !require("umoci") {
        return Ok(());
    }
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    // An image built by umoci, not by podci.
    let lay = work.path().join("umoci").display().to_string();
    run("umoci", &["init", "--layout", &lay]);
    run("umoci", &["new", "--image", &format!("{lay}:base")]);
    let b = work.path().join("b").display().to_string();
    run("umoci", &["unpack", "--image", &format!("{lay}:base"), &b]);
    std::fs::write(work.path().join("b/rootfs/from-umoci.txt"), "umoci\n")?;
    run("umoci", &["repack", "--image", &format!("{lay}:base"), &b]);
    run(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{lay}:base"),
            "--config.env",
            "FROM=umoci",
        ],
    );

    let c = client();
    for (format, repo, mt) in [
        ("oci", "sk/oci", media::OCI_MANIFEST),
        ("v2s2", "sk/docker", media::DOCKER_MANIFEST),
    ] {
        let r = format!("{}/{repo}:v1", reg.host);
        run(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                "--format",
                format,
                &format!("oci:{lay}:base"),
                &format!("docker://{r}"),
            ],
        );
        let out = work.path().join(format!("pulled-{format}"));
        image::copy(
            &c,
            &Location::Registry(r.parse()?),
            &Location::OciLayout {
                dir: out.clone(),
                tag: Some("v1".into()),
            },
            &[],
        )
        .await?;
        let pulled = image::load(
            &c,
            &Location::OciLayout {
                dir: out.clone(),
                tag: Some("v1".into()),
            },
        )
        .await?;
        assert_eq!(pulled.manifest.media_type, mt);
        let last = pulled.layers.last().ok_or("no layers")?;
        let files = layer_files(&out.join("blobs/sha256").join(last.desc.digest.hex()));
        assert!(files.iter().any(|f| f.ends_with("from-umoci.txt")), "{files:?}");
        assert!(
            pulled.config_json()?["config"]["Env"]
                .to_string()
                .contains("FROM=umoci")
        );

        // Extend it and hand it back to skopeo + umoci.
        let extra = work.path().join(format!("extra-{format}"));
        std::fs::create_dir_all(&extra)?;
        std::fs::write(extra.join("added.txt"), "by podci\n")?;
        let opts = AppendOptions {
            layers: vec![LayerSpec {
                source: extra,
                dest: "/added".into(),
            }],
            ..Default::default()
        };
        let app =
            podci_registry::append(&c, Some(&Location::Registry(r.parse()?)), &opts, work.path()).await?;
        assert_eq!(app.image.manifest.media_type, mt, "media-type family kept");
        let r2 = format!("{}/{repo}:extended", reg.host);
        let rep = image::push(&c, &app.image, &r2.parse()?, &[]).await?;
        assert_eq!(
            rep.blobs_existing,
            pulled.layers.len(),
            "base layers already in the repository: {rep:?}"
        );
        let back = work.path().join(format!("back-{format}")).display().to_string();
        run(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{r2}"),
                &format!("oci:{back}:x"),
            ],
        );
        let bundle = work.path().join(format!("bundle-{format}")).display().to_string();
        run("umoci", &["unpack", "--image", &format!("{back}:x"), &bundle]);
        assert_eq!(
            std::fs::read_to_string(Path::new(&bundle).join("rootfs/added/added.txt"))?,
            "by podci\n"
        );
        assert_eq!(
            std::fs::read_to_string(Path::new(&bundle).join("rootfs/from-umoci.txt"))?,
            "umoci\n"
        );
    }
    Ok(())
}

/// A private Docker engine (own socket, data and exec roots), stopped with SIGTERM on
/// drop so that its containerd shuts down too.
struct Engine {
    child: std::process::Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn docker_ok(host: &str) -> bool {
    std::process::Command::new("docker")
        .args(["-H", host, "info"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_engine() -> Option<Engine> {
    let dir = tempfile::Builder::new()
        .prefix("podci-dockerd-")
        .tempdir_in("/var/tmp")
        .ok()?;
    let host = format!("unix://{}/docker.sock", dir.path().display());
    let child = std::process::Command::new("dockerd")
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "-H",
            &host,
        ])
        .arg("--data-root")
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("exec"))
        .arg("--pidfile")
        .arg(dir.path().join("dockerd.pid"))
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(dir.path().join("dockerd.log"))
                .map(std::process::Stdio::from)
                .unwrap_or(std::process::Stdio::null()),
        )
        .spawn()
        .ok()?;
    let engine = Engine {
        child,
        host,
        _dir: dir,
    };
    for _ in 0..60 {
        if docker_ok(&engine.host) {
            return Some(engine);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    None
}

/// Starts a private Docker engine when `dockerd` can run here (it needs root and
/// overlayfs); otherwise skips loudly. PODCI_REQUIRE_DOCKER=1 makes that a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runs_the_appended_image() -> TestResult {
    let must = std::env::var("PODCI_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let skip = |why: &str| -> TestResult {
        if must {
            panic!("PODCI_REQUIRE_DOCKER=1 but {why}");
        }
        eprintln!("!!!!! SKIPPING docker run interop: {why} !!!!!");
        Ok(())
    };
    if !require("docker") || !require("dockerd") {
        return Ok(());
    }
    if !Path::new("/bin/busybox").exists() {
        return skip("/bin/busybox (busybox-static) is missing");
    }
    let Some(engine) = start_engine() else {
        return skip("dockerd did not start (not root, or no overlayfs?)");
    };
    let docker = |args: &[&str]| {
        let mut a = vec!["-H", engine.host.as_str()];
        a.extend_from_slice(args);
        run("docker", &a)
    };
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let c = client();
    let work = tempfile::tempdir()?;
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
    let app = work.path().join("app");
    sample_tree(&app, "from-docker");
    let opts = AppendOptions {
        layers: vec![
            LayerSpec {
                source: rootfs,
                dest: "/".into(),
            },
            LayerSpec {
                source: app,
                dest: "/app".into(),
            },
        ],
        changes: ConfigChanges {
            entrypoint: Some(vec!["/bin/sh".into(), "/app/bin/hello".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let img = podci_registry::append(&c, None, &opts, work.path()).await?;
    let r = format!("{}/run/app:v1", reg.host);
    image::push(&c, &img.image, &r.parse()?, &[]).await?;
    docker(&["pull", &r]);
    let out = docker(&["run", "--rm", "--network", "none", &r]);
    assert_eq!(out.trim(), "hello from-docker");

    // A real `docker save` tarball is a base podci reads in place ...
    let saved = work.path().join("saved.tar");
    docker(&["save", "-o", &saved.display().to_string(), &r]);
    let base = Location::DockerArchive {
        path: saved,
        tag: Some(r.clone()),
    };
    let loaded = image::load(&c, &base).await?;
    let diff_ids = loaded.config_json()?["rootfs"]["diff_ids"].clone();
    let digests: Vec<String> = loaded.layers.iter().map(|l| l.desc.digest.to_string()).collect();
    assert_eq!(
        diff_ids,
        serde_json::json!(digests),
        "docker save layers are the uncompressed diffs"
    );
    // ... and what podci writes as a docker archive, `docker load` accepts and runs.
    let extra = work.path().join("extra");
    std::fs::create_dir_all(&extra)?;
    std::fs::write(extra.join("note"), "loaded")?;
    let opts = AppendOptions {
        layers: vec![LayerSpec {
            source: extra,
            dest: "/note".into(),
        }],
        changes: ConfigChanges {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), "cat /note/note".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let next = podci_registry::append(&c, Some(&base), &opts, work.path()).await?;
    let tar = work.path().join("podci.tar");
    let tag = "podci.test/loaded:v1".to_string();
    image::write(
        &c,
        &next.image,
        &Location::DockerArchive {
            path: tar.clone(),
            tag: Some(tag.clone()),
        },
        &[],
    )
    .await?;
    docker(&["load", "-i", &tar.display().to_string()]);
    let out = docker(&["run", "--rm", "--network", "none", &tag]);
    assert_eq!(out.trim(), "loaded");
    Ok(())
}
