//! Behaviours docker-registry is lax about, against the strict registry in
//! `common/strict.rs`: 201 on single POST, relative Locations with a query, 416 and
//! resume, OCI-Chunk-Min-Length, an upload Location on another host (no credentials
//! sent there), 429 with Retry-After, DENIED, tag pagination.

mod common;

use std::time::Instant;

use common::TestResult;
use common::strict::{self, StrictConfig};
use podci_registry::image::{self, Location};
use podci_registry::{
    AppendOptions, AuthEnv, Client, ClientOptions, Credential, CredentialStore, LayerSpec, Reference,
};

fn client(host: Option<(&str, &str, &str)>, opts: ClientOptions) -> Client {
    let mut store = CredentialStore::with_env(AuthEnv::default());
    if let Some((h, u, p)) = host {
        store.insert(
            h,
            Credential::Basic {
                username: u.into(),
                password: p.into(),
            },
        );
    }
    Client::with_credentials(opts, store).unwrap_or_else(|e| panic!("{e}"))
}

async fn image(c: &Client, work: &std::path::Path, size: usize) -> podci_registry::append::Appended {
    let d = work.join("src");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("noise.bin"), common::noise(size, 7)).unwrap_or_else(|e| panic!("{e}"));
    let opts = AppendOptions {
        layers: vec![LayerSpec {
            source: d,
            dest: "/n".into(),
        }],
        layer_options: podci_registry::LayerOptions {
            gzip_level: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    podci_registry::append(c, None, &opts, work)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn r(host: &str, repo: &str) -> Reference {
    format!("{host}/{repo}").parse().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn single_post_relative_location_and_query_strings() -> TestResult {
    let reg = strict::start(StrictConfig::default()).await;
    let work = tempfile::tempdir()?;
    let c = client(
        None,
        ClientOptions {
            single_post_limit: 64 * 1024,
            ..Default::default()
        },
    );
    let img = image(&c, work.path(), 200_000).await;
    let target = r(reg.host(), "s/app:v1");
    let rep = image::push(&c, &img.image, &target, &[]).await?;
    assert_eq!(rep.blobs_uploaded, 2);
    let log = reg.log();
    // The small config went in one POST answered 201; the layer through POST + PUT to a
    // relative Location whose own query (?state=) was kept alongside &digest=.
    assert!(
        log.iter()
            .any(|l| l.method == "POST" && l.uri.contains("digest=sha256") && l.status == 201),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.method == "PUT"
            && l.uri.starts_with("/upload/")
            && l.uri.contains("state=")
            && l.uri.contains("digest=")
            && l.status == 201),
        "{log:?}"
    );
    assert!(reg.has_blob("s/app", img.image.layers[0].desc.digest.as_str()));
    assert_eq!(c.get_manifest(&target).await?.bytes, img.image.manifest.bytes);
    Ok(())
}

#[tokio::test]
async fn chunked_upload_resumes_after_416_from_server_range() -> TestResult {
    let reg = strict::start(StrictConfig {
        lose_patch: Some(2),
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(
        None,
        ClientOptions {
            chunk_size: Some(50_000),
            ..Default::default()
        },
    );
    let img = image(&c, work.path(), 300_000).await;
    let target = r(reg.host(), "chunk/app:v1");
    image::push(&c, &img.image, &target, &[]).await?;
    let log = reg.log();
    assert!(
        log.iter().any(|l| l.method == "PATCH" && l.status == 416),
        "the lost chunk must cause a 416: {log:?}"
    );
    assert!(reg.has_blob("chunk/app", img.image.layers[0].desc.digest.as_str()));
    Ok(())
}

#[tokio::test]
async fn chunks_honour_min_length() -> TestResult {
    let reg = strict::start(StrictConfig {
        chunk_min: Some(120_000),
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(
        None,
        ClientOptions {
            chunk_size: Some(10_000),
            ..Default::default()
        },
    );
    let img = image(&c, work.path(), 400_000).await;
    image::push(&c, &img.image, &r(reg.host(), "min/app:v1"), &[]).await?;
    let sizes = reg
        .state
        .patch_sizes
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    assert!(sizes.len() >= 3, "{sizes:?}");
    let (last, rest) = sizes.split_last().ok_or("no patches")?;
    assert!(rest.iter().all(|s| *s == 120_000), "{sizes:?}");
    assert!(*last <= 120_000);
    Ok(())
}

#[tokio::test]
async fn no_credentials_to_an_upload_location_on_another_host() -> TestResult {
    let reg = strict::start(StrictConfig {
        basic: Some(("u".into(), "secret".into())),
        uploads_elsewhere: true,
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(
        Some((reg.host(), "u", "secret")),
        ClientOptions {
            chunk_size: Some(64 * 1024),
            ..Default::default()
        },
    );
    let img = image(&c, work.path(), 150_000).await;
    let target = r(reg.host(), "elsewhere/app:v1");
    image::push(&c, &img.image, &target, &[]).await?;
    let log = reg.log();
    let other: Vec<_> = log.iter().filter(|l| l.host == reg.state.other_host).collect();
    assert!(!other.is_empty(), "uploads went to the other host: {log:?}");
    assert!(
        other.iter().all(|l| !l.auth),
        "Authorization leaked to another host: {other:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.host == reg.host() && l.status != 401)
            .all(|l| l.auth),
        "{log:?}"
    );
    assert!(reg.has_blob("elsewhere/app", img.image.layers[0].desc.digest.as_str()));
    Ok(())
}

#[tokio::test]
async fn retries_429_after_retry_after() -> TestResult {
    let reg = strict::start(StrictConfig {
        throttle_puts: 2,
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(
        None,
        ClientOptions {
            parallel: 1,
            ..Default::default()
        },
    );
    let img = image(&c, work.path(), 10_000).await;
    let start = Instant::now();
    image::push(&c, &img.image, &r(reg.host(), "slow/app:v1"), &[]).await?;
    let log = reg.log();
    assert_eq!(log.iter().filter(|l| l.status == 429).count(), 2, "{log:?}");
    // Retry-After: 1 twice means at least two seconds of waiting.
    assert!(
        start.elapsed().as_millis() >= 1900,
        "Retry-After not honoured: {:?}",
        start.elapsed()
    );

    // 5xx without Retry-After: exponential backoff, then success.
    let reg = strict::start(StrictConfig {
        fail_manifest_puts: 2,
        ..Default::default()
    })
    .await;
    image::push(&c, &img.image, &r(reg.host(), "flaky/app:v1"), &[]).await?;
    let log = reg.log();
    assert_eq!(log.iter().filter(|l| l.status == 503).count(), 2, "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.method == "PUT" && l.uri.contains("/manifests/") && l.status == 201)
    );

    let reg = strict::start(StrictConfig {
        throttle_puts: 100,
        ..Default::default()
    })
    .await;
    let c = client(
        None,
        ClientOptions {
            max_attempts: 2,
            max_backoff: std::time::Duration::from_millis(10),
            ..Default::default()
        },
    );
    let e = image::push(&c, &img.image, &r(reg.host(), "slow/app:v1"), &[])
        .await
        .err()
        .ok_or("pushed through 429s")?;
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(e.to_string().contains("after 2 attempts"), "{e}");
    Ok(())
}

#[tokio::test]
async fn denied_and_unknown_are_clear_errors() -> TestResult {
    let reg = strict::start(StrictConfig {
        denied_prefix: Some("locked/".into()),
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(None, ClientOptions::default());
    let img = image(&c, work.path(), 1000).await;
    let e = image::push(&c, &img.image, &r(reg.host(), "locked/app:v1"), &[])
        .await
        .err()
        .ok_or("denied push worked")?;
    assert_eq!(e.registry_codes(), vec!["DENIED"]);
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 403") && msg.contains("lack permission"),
        "{msg}"
    );
    let e = c
        .get_manifest(&r(reg.host(), "open/app:none"))
        .await
        .err()
        .ok_or("found")?;
    assert_eq!(e.registry_codes(), vec!["MANIFEST_UNKNOWN"]);
    Ok(())
}

#[tokio::test]
async fn tag_pagination_follows_link() -> TestResult {
    let reg = strict::start(StrictConfig::default()).await;
    let work = tempfile::tempdir()?;
    let c = client(None, ClientOptions::default());
    let img = image(&c, work.path(), 1000).await;
    let tags: Vec<String> = (1..=7).map(|i| format!("t{i}")).collect();
    image::push(&c, &img.image, &r(reg.host(), "p/app:t0"), &tags).await?;
    let got = c.list_tags(&r(reg.host(), "p/app"), Some(3)).await?;
    assert_eq!(got.len(), 8, "{got:?}");
    let pages = reg.log().iter().filter(|l| l.uri.contains("/tags/list")).count();
    assert_eq!(pages, 3);
    Ok(())
}

#[tokio::test]
async fn registry_to_registry_streams_and_same_registry_mounts() -> TestResult {
    let a = strict::start(StrictConfig::default()).await;
    let b = strict::start(StrictConfig::default()).await;
    let work = tempfile::tempdir()?;
    let c = client(None, ClientOptions::default());
    let img = image(&c, work.path(), 100_000).await;
    let src = r(a.host(), "src/app:v1");
    image::push(&c, &img.image, &src, &[]).await?;
    // Across registries: the layer is streamed from A to B.
    let rep = image::copy(
        &c,
        &Location::Registry(src.clone()),
        &Location::Registry(r(b.host(), "dst/app:v1")),
        &[],
    )
    .await?;
    assert_eq!(rep.blobs_uploaded, 2);
    assert!(b.has_blob("dst/app", img.image.layers[0].desc.digest.as_str()));
    // Within A: mounted, never downloaded.
    let before = a.log().len();
    let rep = image::copy(
        &c,
        &Location::Registry(src),
        &Location::Registry(r(a.host(), "other/app:v1")),
        &[],
    )
    .await?;
    assert_eq!(rep.blobs_mounted, 1, "{rep:?}");
    let blob_gets = a.log()[before..]
        .iter()
        .filter(|l| {
            l.method == "GET"
                && l.uri.contains("/blobs/sha256")
                && !l.uri.contains(img.image.config_desc.digest.hex())
        })
        .count();
    assert_eq!(
        blob_gets,
        0,
        "base layers must not be downloaded: {:?}",
        &a.log()[before..]
    );
    Ok(())
}

#[tokio::test]
async fn no_credentials_follow_a_blob_redirect_to_another_host() -> TestResult {
    let reg = strict::start(StrictConfig {
        basic: Some(("u".into(), "secret".into())),
        redirect_blobs: true,
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(Some((reg.host(), "u", "secret")), ClientOptions::default());
    let img = image(&c, work.path(), 50_000).await;
    let target = r(reg.host(), "redir/app:v1");
    image::push(&c, &img.image, &target, &[]).await?;
    let out = work.path().join("pulled");
    image::copy(
        &c,
        &Location::Registry(target),
        &Location::OciLayout {
            dir: out.clone(),
            tag: None,
        },
        &[],
    )
    .await?;
    let blob = std::fs::read(
        out.join("blobs/sha256")
            .join(img.image.layers[0].desc.digest.hex()),
    )?;
    assert_eq!(podci_registry::Digest::of(&blob), img.image.layers[0].desc.digest);
    let log = reg.log();
    let redirected: Vec<_> = log.iter().filter(|l| l.uri.starts_with("/blobdata/")).collect();
    assert!(
        redirected.len() >= 2,
        "config and layer fetched from storage: {log:?}"
    );
    assert!(
        redirected
            .iter()
            .all(|l| !l.auth && l.host == reg.state.other_host),
        "{redirected:?}"
    );
    assert!(log.iter().any(|l| l.status == 307 && l.auth), "{log:?}");
    Ok(())
}

#[tokio::test]
async fn corrupted_blobs_are_refused_on_pull() -> TestResult {
    let reg = strict::start(StrictConfig {
        corrupt_blobs: true,
        ..Default::default()
    })
    .await;
    let work = tempfile::tempdir()?;
    let c = client(None, ClientOptions::default());
    let img = image(&c, work.path(), 20_000).await;
    let target = r(reg.host(), "bad/app:v1");
    image::push(&c, &img.image, &target, &[]).await?;
    let out = work.path().join("pulled");
    let e = image::copy(
        &c,
        &Location::Registry(target),
        &Location::OciLayout {
            dir: out.clone(),
            tag: None,
        },
        &[],
    )
    .await
    .err()
    .ok_or("a corrupted blob was accepted")?;
    assert!(matches!(e, podci_registry::Error::DigestMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains(img.image.config_desc.digest.as_str()),
        "{e}"
    );
    assert!(
        !out.join("blobs/sha256")
            .join(img.image.layers[0].desc.digest.hex())
            .exists()
    );
    Ok(())
}
