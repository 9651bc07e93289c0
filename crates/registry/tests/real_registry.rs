//! Push, pull and authentication against Debian's docker-registry: anonymous, htpasswd
//! Basic auth and token auth with our own token server.

mod common;

use common::token::{ISSUER, SERVICE, TokenServer};
use common::{RealRegistry, RegistryAuth, TestResult, sample_tree};
use podci_registry::append::Appended;
use podci_registry::image::{self, Location};
use podci_registry::manifest::{Descriptor, RawManifest, media};
use podci_registry::{
    AppendOptions, AuthEnv, BlobSource, Client, ClientOptions, Credential, CredentialStore, Digest,
    LayerSpec, Reference,
};

fn client_with(creds: &[(&str, Credential)], opts: ClientOptions) -> Client {
    let mut store = CredentialStore::with_env(AuthEnv::default());
    for (h, c) in creds {
        store.insert(h, c.clone());
    }
    Client::with_credentials(opts, store).unwrap_or_else(|e| panic!("{e}"))
}

fn basic(u: &str, p: &str) -> Credential {
    Credential::Basic {
        username: u.into(),
        password: p.into(),
    }
}

/// An image made from scratch with two layers built from sample trees.
async fn sample_image(client: &Client, work: &std::path::Path, seed: &str) -> Appended {
    let a = work.join(format!("a-{seed}"));
    let b = work.join(format!("b-{seed}"));
    sample_tree(&a, seed);
    std::fs::create_dir_all(&b).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(b.join("blob.bin"), common::noise(300_000, seed.len() as u64))
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = AppendOptions {
        layers: vec![
            LayerSpec {
                source: a,
                dest: "/app".into(),
            },
            LayerSpec {
                source: b,
                dest: "/data".into(),
            },
        ],
        ..Default::default()
    };
    podci_registry::append(client, None, &opts, work)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn reference(host: &str, repo: &str) -> Reference {
    format!("{host}/{repo}").parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Pull into an OCI layout and check every blob against the pushed image.
async fn pull_and_compare(client: &Client, r: &Reference, pushed: &podci_registry::Image) -> TestResult {
    let out = tempfile::tempdir()?;
    let dst = Location::OciLayout {
        dir: out.path().to_path_buf(),
        tag: Some("pulled".into()),
    };
    image::copy(client, &Location::Registry(r.clone()), &dst, &[]).await?;
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("index.json"))?)?;
    assert_eq!(
        idx["manifests"][0]["digest"].as_str(),
        Some(pushed.manifest.digest.as_str())
    );
    for l in &pushed.layers {
        let b = std::fs::read(out.path().join("blobs/sha256").join(l.desc.digest.hex()))?;
        assert_eq!(Digest::of(&b), l.desc.digest);
    }
    let cfg = std::fs::read(
        out.path()
            .join("blobs/sha256")
            .join(pushed.config_desc.digest.hex()),
    )?;
    assert_eq!(cfg, pushed.config.to_vec());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_push_pull_and_head_skip() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let client = client_with(&[], ClientOptions::default());
    let img = sample_image(&client, work.path(), "anon").await;
    let r = reference(&reg.host, "team/app:v1");
    let first = image::push(&client, &img.image, &r, &[]).await?;
    assert_eq!((first.blobs_uploaded, first.blobs_existing), (3, 0), "{first:?}");
    let again = image::push(&client, &img.image, &r, &[]).await?;
    assert_eq!(
        (again.blobs_uploaded, again.blobs_existing),
        (0, 3),
        "re-push must HEAD-skip: {again:?}"
    );
    pull_and_compare(&client, &r, &img.image).await?;
    // The manifest comes back byte-exact with its media type.
    let m = client.get_manifest(&r).await?;
    assert_eq!(m.bytes, img.image.manifest.bytes);
    assert_eq!(m.media_type, media::OCI_MANIFEST);
    assert_eq!(client.token_fetches(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tags_and_paginated_listing() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let client = client_with(&[], ClientOptions::default());
    let img = sample_image(&client, work.path(), "tags").await;
    let r = reference(&reg.host, "tags/app:t1");
    let extra: Vec<String> = ["t2", "t3", "t4", "t5"].iter().map(|s| s.to_string()).collect();
    image::push(&client, &img.image, &r, &extra).await?;
    let mut tags = client.list_tags(&r, Some(2)).await?;
    tags.sort();
    assert_eq!(tags, vec!["t1", "t2", "t3", "t4", "t5"]);
    for t in &tags {
        assert_eq!(
            client.get_manifest(&r.with_tag(t)).await?.digest,
            img.image.manifest.digest
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_and_docker_schema2_manifest() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let opts = ClientOptions {
        chunk_size: Some(64 * 1024),
        ..Default::default()
    };
    let client = client_with(&[], opts);
    let img = sample_image(&client, work.path(), "chunks").await;
    // Re-dress the image as Docker schema2 to check the Content-Type round trip.
    let mut doc: serde_json::Value = serde_json::from_slice(&img.image.manifest.bytes)?;
    doc["mediaType"] = media::DOCKER_MANIFEST.into();
    doc["config"]["mediaType"] = media::DOCKER_CONFIG.into();
    for l in doc["layers"].as_array_mut().into_iter().flatten() {
        l["mediaType"] = media::DOCKER_LAYER_GZIP.into();
    }
    let mut docker = img.image.clone();
    docker.manifest = RawManifest::new(serde_json::to_vec(&doc)?.into(), Some(media::DOCKER_MANIFEST))?;
    let r = reference(&reg.host, "chunked/app:v1");
    let rep = image::push(&client, &docker, &r, &[]).await?;
    assert_eq!(rep.blobs_uploaded, 3);
    let m = client.get_manifest(&r).await?;
    assert_eq!(m.media_type, media::DOCKER_MANIFEST);
    assert_eq!(m.bytes, docker.manifest.bytes);
    pull_and_compare(&client, &r, &docker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_errors_are_clear() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let client = client_with(&[], ClientOptions::default());
    let r = reference(&reg.host, "errs/app:v1");
    // A manifest whose blobs were never pushed.
    let missing = Descriptor::new(media::OCI_CONFIG, Digest::of(b"nothing"), 7);
    let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": missing, "layers": []});
    let m = RawManifest::new(serde_json::to_vec(&doc)?.into(), Some(media::OCI_MANIFEST))?;
    let e = client
        .put_manifest(&r, &m)
        .await
        .err()
        .ok_or("manifest with unknown blob was accepted")?;
    assert!(e.registry_codes().contains(&"MANIFEST_BLOB_UNKNOWN"), "{e}");
    assert!(e.to_string().contains("was not pushed first"), "{e}");
    // Content that does not match its digest.
    let lie = Descriptor::new(media::OCI_LAYER_TAR, Digest::of(b"claimed"), 6);
    let e = client
        .push_blob(&r, &lie, &BlobSource::Bytes("actual".into()))
        .await
        .err()
        .ok_or("bad digest accepted")?;
    assert!(e.registry_codes().contains(&"DIGEST_INVALID"), "{e}");
    // A tag that does not exist.
    let e = client
        .get_manifest(&r.with_tag("nope"))
        .await
        .err()
        .ok_or("unknown tag found")?;
    assert!(e.registry_codes().contains(&"MANIFEST_UNKNOWN"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_htpasswd() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::Htpasswd {
        user: "ci".into(),
        password: "pa55-w0rd".into(),
    }) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let good = client_with(&[(&reg.host, basic("ci", "pa55-w0rd"))], ClientOptions::default());
    good.ping(&reg.host).await?;
    let img = sample_image(&good, work.path(), "basic").await;
    let r = reference(&reg.host, "basic/app:v1");
    image::push(&good, &img.image, &r, &[]).await?;
    pull_and_compare(&good, &r, &img.image).await?;

    let anon = client_with(&[], ClientOptions::default());
    let e = anon
        .get_manifest(&r)
        .await
        .err()
        .ok_or("anonymous pull worked on an auth registry")?;
    assert_eq!(e.status(), Some(401), "{e}");
    let wrong = client_with(
        &[(&reg.host, basic("ci", "wrong-secret"))],
        ClientOptions::default(),
    );
    let e = wrong
        .ping(&reg.host)
        .await
        .err()
        .ok_or("wrong password accepted")?;
    let msg = e.to_string();
    assert!(msg.contains("401") && !msg.contains("wrong-secret"), "{msg}");
    Ok(())
}

async fn token_setup() -> Option<(RealRegistry, TokenServer)> {
    if !common::require("openssl") {
        return None;
    }
    let ts = TokenServer::start(
        &[
            ("pusher", "push-pw", &["pull", "push"]),
            ("reader", "read-pw", &["pull"]),
        ],
        &[("refresh-123", "pusher")],
    )
    .await;
    let reg = RealRegistry::start(RegistryAuth::Token {
        realm: ts.realm.clone(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert: ts.cert.clone(),
    })?;
    Some((reg, ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_cached_per_scope_set() -> TestResult {
    let Some((reg, ts)) = token_setup().await else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let client = client_with(
        &[(&reg.host, basic("pusher", "push-pw"))],
        ClientOptions::default(),
    );
    let img = sample_image(&client, work.path(), "bearer").await;
    let r = reference(&reg.host, "tok/app:v1");
    image::push(&client, &img.image, &r, &[]).await?;
    image::push(&client, &img.image, &r, &["v2".into()]).await?;
    let reqs = ts.requests();
    let push_scope: Vec<_> = reqs
        .iter()
        .filter(|q| q.scopes == vec!["repository:tok/app:pull,push".to_string()])
        .collect();
    assert_eq!(
        push_scope.len(),
        1,
        "one token for all pushes to one scope set: {reqs:?}"
    );
    assert!(
        reqs.iter().all(|q| q.user.as_deref() == Some("pusher")),
        "{reqs:?}"
    );
    // The push token covers pulling the same repository: no new token.
    pull_and_compare(&client, &r, &img.image).await?;
    assert_eq!(ts.requests().len(), 1, "{:?}", ts.requests());
    assert_eq!(client.token_fetches(), 1);

    // A reader can pull (one token, though layers download in parallel) but not push;
    // the error says so without leaking the password.
    let reader = client_with(
        &[(&reg.host, basic("reader", "read-pw"))],
        ClientOptions::default(),
    );
    pull_and_compare(&reader, &r, &img.image).await?;
    let pulls = ts
        .requests()
        .iter()
        .filter(|q| q.scopes == vec!["repository:tok/app:pull".to_string()])
        .count();
    assert_eq!(pulls, 1, "pull scope fetched once: {:?}", ts.requests());
    let e = image::push(&reader, &img.image, &reference(&reg.host, "tok/other:v1"), &[])
        .await
        .err()
        .ok_or("reader pushed")?;
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!e.to_string().contains("read-pw"));
    // Wrong password: the token server refuses, the error names the registry.
    let bad = client_with(&[(&reg.host, basic("reader", "nope"))], ClientOptions::default());
    let e = bad.get_manifest(&r).await.err().ok_or("bad password pulled")?;
    assert!(matches!(e, podci_registry::Error::Auth { .. }), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_and_cross_repo_mount() -> TestResult {
    let Some((reg, ts)) = token_setup().await else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let client = client_with(
        &[(&reg.host, Credential::IdentityToken("refresh-123".into()))],
        ClientOptions::default(),
    );
    let img = sample_image(&client, work.path(), "mount").await;
    let base = reference(&reg.host, "base/img:v1");
    image::push(&client, &img.image, &base, &[]).await?;
    assert!(
        ts.requests().iter().all(|q| q.refresh),
        "identity token goes through the refresh grant"
    );

    // Append onto the base in the same registry, to another repository: base layers mount.
    let extra = work.path().join("extra");
    std::fs::create_dir_all(&extra)?;
    std::fs::write(extra.join("x.txt"), "x")?;
    let opts = AppendOptions {
        layers: vec![LayerSpec {
            source: extra,
            dest: "/x".into(),
        }],
        ..Default::default()
    };
    let fresh = client_with(
        &[(&reg.host, Credential::IdentityToken("refresh-123".into()))],
        ClientOptions::default(),
    );
    let app = podci_registry::append(
        &fresh,
        Some(&Location::Registry(base.clone())),
        &opts,
        work.path(),
    )
    .await?;
    let target = reference(&reg.host, "apps/derived:v1");
    let rep = image::push(&fresh, &app.image, &target, &[]).await?;
    assert_eq!((rep.blobs_mounted, rep.blobs_uploaded), (2, 2), "{rep:?}");
    let two = ts.requests().into_iter().any(|q| {
        q.scopes
            .contains(&"repository:apps/derived:pull,push".to_string())
            && q.scopes.contains(&"repository:base/img:pull".to_string())
    });
    assert!(two, "a two-scope token for the mount: {:?}", ts.requests());
    pull_and_compare(&fresh, &target, &app.image).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_and_manifest_list_resolve_to_platform() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let amd = client_with(
        &[],
        ClientOptions {
            platform: podci_registry::Platform::parse("linux/amd64")?,
            ..Default::default()
        },
    );
    let arm = client_with(
        &[],
        ClientOptions {
            platform: podci_registry::Platform::parse("linux/arm64/v8")?,
            ..Default::default()
        },
    );
    let a = sample_image(&amd, work.path(), "amd").await;
    let b = sample_image(&amd, work.path(), "armmm").await;
    let repo = reference(&reg.host, "multi/app:amd");
    image::push(&amd, &a.image, &repo, &[]).await?;
    image::push(&amd, &b.image, &repo.with_tag("arm"), &[]).await?;
    for (index_type, entry_type, tag) in [
        (media::OCI_INDEX, media::OCI_MANIFEST, "oci"),
        (media::DOCKER_LIST, media::DOCKER_MANIFEST, "list"),
    ] {
        let (am, bm) = if entry_type == media::OCI_MANIFEST {
            (a.image.manifest.clone(), b.image.manifest.clone())
        } else {
            // A list must point at Docker manifests: re-dress both images.
            let mut out = Vec::new();
            for img in [&a.image, &b.image] {
                let mut doc: serde_json::Value = serde_json::from_slice(&img.manifest.bytes)?;
                doc["mediaType"] = media::DOCKER_MANIFEST.into();
                let m = RawManifest::new(serde_json::to_vec(&doc)?.into(), Some(media::DOCKER_MANIFEST))?;
                amd.put_manifest(&repo.with_digest(m.digest.clone()), &m).await?;
                out.push(m);
            }
            (out[0].clone(), out[1].clone())
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [
                {"mediaType": entry_type, "digest": am.digest, "size": am.bytes.len(), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": entry_type, "digest": bm.digest, "size": bm.bytes.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ]
        });
        // Pretty-printed on purpose: the registry must get (and give back) these exact bytes.
        let raw = RawManifest::new(serde_json::to_vec_pretty(&index)?.into(), Some(index_type))?;
        let r = repo.with_tag(tag);
        amd.put_manifest(&r, &raw).await?;
        let got = amd.get_manifest(&r).await?;
        assert_eq!((got.media_type.as_str(), &got.bytes), (index_type, &raw.bytes));
        let (m, pinned) = amd.resolve(&r).await?;
        assert_eq!(m.digest, am.digest);
        assert_eq!(pinned.digest.as_ref(), Some(&am.digest));
        let (m, _) = arm.resolve(&r).await?;
        assert_eq!(m.digest, bm.digest);
        let s390 = client_with(
            &[],
            ClientOptions {
                platform: podci_registry::Platform::parse("linux/s390x")?,
                ..Default::default()
            },
        );
        let e = s390.resolve(&r).await.err().ok_or("s390x resolved")?;
        assert!(e.to_string().contains("linux/arm64/v8"), "{e}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lax_202_to_single_post_falls_back_to_put() -> TestResult {
    let Some(reg) = RealRegistry::start(RegistryAuth::None) else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    // docker-registry ignores a body on POST ?digest= and answers 202: the client must
    // then PUT the blob to the (absolute, ?_state=) Location.
    let client = client_with(
        &[],
        ClientOptions {
            single_post_limit: 1 << 20,
            ..Default::default()
        },
    );
    let img = sample_image(&client, work.path(), "lax").await;
    let r = reference(&reg.host, "lax/app:v1");
    let rep = image::push(&client, &img.image, &r, &[]).await?;
    assert_eq!(rep.blobs_uploaded, 3);
    pull_and_compare(&client, &r, &img.image).await
}
