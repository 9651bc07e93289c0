//! Daemonless append with local bases and targets: OCI layout directories and
//! `docker save` tarballs, config changes, media-type family, reproducibility.

mod common;

use common::{TestResult, sample_tree};
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

fn opts(src: &std::path::Path, dest: &str) -> AppendOptions {
    AppendOptions {
        layers: vec![LayerSpec {
            source: src.to_path_buf(),
            dest: dest.into(),
        }],
        changes: ConfigChanges {
            entrypoint: Some(vec!["/app/bin/hello".into()]),
            env: vec!["MODE=test".into()],
            workdir: Some("/app".into()),
            user: Some("1000:1000".into()),
            labels: vec![("org.opencontainers.image.source".into(), "podci".into())],
            exposed_ports: vec!["8080".into()],
            cmd: None,
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn append_to_oci_layout_is_reproducible_and_sets_config() -> TestResult {
    let c = client();
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    sample_tree(&src, "one");
    let out1 = work.path().join("out1");
    let out2 = work.path().join("out2");
    let a = podci_registry::append(&c, None, &opts(&src, "/app"), work.path()).await?;
    let dst1 = Location::OciLayout {
        dir: out1.clone(),
        tag: Some("v1".into()),
    };
    image::write(&c, &a.image, &dst1, &["latest".into()]).await?;
    let b = podci_registry::append(&c, None, &opts(&src, "/app"), work.path()).await?;
    image::write(
        &c,
        &b.image,
        &Location::OciLayout {
            dir: out2,
            tag: Some("v1".into()),
        },
        &[],
    )
    .await?;
    assert_eq!(
        a.image.manifest.digest, b.image.manifest.digest,
        "same input, same image"
    );

    // Read back from the layout under both tags.
    for tag in ["v1", "latest"] {
        let back = image::load(
            &c,
            &Location::OciLayout {
                dir: out1.clone(),
                tag: Some(tag.into()),
            },
        )
        .await?;
        assert_eq!(back.manifest.digest, a.image.manifest.digest);
    }
    let cfg = a.image.config_json()?;
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/app/bin/hello"]));
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["MODE=test"]));
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    assert_eq!(cfg["config"]["User"], "1000:1000");
    assert_eq!(cfg["config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(a.image.manifest.media_type, media::OCI_MANIFEST);
    assert_eq!(a.image.layers[0].desc.media_type, media::OCI_LAYER_GZIP);

    // Appending on top of the layout image stacks a second layer and keeps the first.
    let more = work.path().join("more");
    std::fs::create_dir_all(&more)?;
    std::fs::write(more.join("extra.txt"), "extra")?;
    let base = Location::OciLayout {
        dir: out1.clone(),
        tag: Some("v1".into()),
    };
    let o = AppendOptions {
        layers: vec![LayerSpec {
            source: more,
            dest: "/etc/extra".into(),
        }],
        ..Default::default()
    };
    let c2 = podci_registry::append(&c, Some(&base), &o, work.path()).await?;
    assert_eq!(c2.image.layers.len(), 2);
    assert_eq!(c2.image.layers[0].desc, a.image.layers[0].desc);
    let cfg2 = c2.image.config_json()?;
    assert_eq!(
        cfg2["config"]["Entrypoint"], cfg["config"]["Entrypoint"],
        "base config kept"
    );
    assert_eq!(cfg2["rootfs"]["diff_ids"].as_array().map(|a| a.len()), Some(2));
    Ok(())
}

#[tokio::test]
async fn docker_family_is_kept() -> TestResult {
    let c = client();
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    sample_tree(&src, "docker");
    let a = podci_registry::append(&c, None, &opts(&src, "/app"), work.path()).await?;
    // Turn it into a Docker schema2 image in a layout, then append onto that.
    let mut doc: serde_json::Value = serde_json::from_slice(&a.image.manifest.bytes)?;
    doc["mediaType"] = media::DOCKER_MANIFEST.into();
    doc["config"]["mediaType"] = media::DOCKER_CONFIG.into();
    doc["layers"][0]["mediaType"] = media::DOCKER_LAYER_GZIP.into();
    let mut docker = a.image.clone();
    docker.manifest =
        podci_registry::RawManifest::new(serde_json::to_vec(&doc)?.into(), Some(media::DOCKER_MANIFEST))?;
    let lay = work.path().join("lay");
    image::write(
        &c,
        &docker,
        &Location::OciLayout {
            dir: lay.clone(),
            tag: Some("d".into()),
        },
        &[],
    )
    .await?;
    let b = podci_registry::append(
        &c,
        Some(&Location::OciLayout {
            dir: lay,
            tag: Some("d".into()),
        }),
        &opts(&src, "/again"),
        work.path(),
    )
    .await?;
    assert_eq!(b.image.manifest.media_type, media::DOCKER_MANIFEST);
    assert_eq!(b.image.config_desc.media_type, media::DOCKER_CONFIG);
    assert!(
        b.image
            .layers
            .iter()
            .all(|l| l.desc.media_type == media::DOCKER_LAYER_GZIP)
    );
    let m: serde_json::Value = serde_json::from_slice(&b.image.manifest.bytes)?;
    assert_eq!(m["mediaType"], media::DOCKER_MANIFEST);
    Ok(())
}

#[tokio::test]
async fn docker_archive_roundtrip_and_append() -> TestResult {
    let c = client();
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    sample_tree(&src, "archive");
    let a = podci_registry::append(&c, None, &opts(&src, "/app"), work.path()).await?;
    let tar = work.path().join("img.tar");
    let loc = Location::DockerArchive {
        path: tar.clone(),
        tag: Some("example.com/app:v1".into()),
    };
    image::write(&c, &a.image, &loc, &[]).await?;
    let back = image::load(&c, &loc).await?;
    assert_eq!(back.config, a.image.config);
    assert_eq!(back.layers.len(), 1);
    assert_eq!(back.layers[0].desc.digest, a.image.layers[0].desc.digest);
    assert_eq!(back.layers[0].desc.media_type, media::OCI_LAYER_GZIP);
    // Also found without a tag (only image) and by its tag's last component.
    let untagged = Location::DockerArchive {
        path: tar.clone(),
        tag: None,
    };
    assert_eq!(image::load(&c, &untagged).await?.config, a.image.config);

    // Append on the archive and write an OCI layout; blobs verify.
    let more = work.path().join("more");
    std::fs::create_dir_all(&more)?;
    std::fs::write(more.join("m"), "m")?;
    let o = AppendOptions {
        layers: vec![LayerSpec {
            source: more,
            dest: "/m".into(),
        }],
        ..Default::default()
    };
    let b = podci_registry::append(&c, Some(&loc), &o, work.path()).await?;
    let out = work.path().join("out");
    image::write(
        &c,
        &b.image,
        &Location::OciLayout {
            dir: out.clone(),
            tag: None,
        },
        &[],
    )
    .await?;
    let blob = std::fs::read(out.join("blobs/sha256").join(a.image.layers[0].desc.digest.hex()))?;
    assert_eq!(podci_registry::Digest::of(&blob), a.image.layers[0].desc.digest);
    // A missing tag is a clear error.
    let e = image::load(
        &c,
        &Location::DockerArchive {
            path: tar,
            tag: Some("nope:v9".into()),
        },
    )
    .await
    .err()
    .ok_or("found")?;
    assert!(e.to_string().contains("example.com/app:v1"), "{e}");
    Ok(())
}
