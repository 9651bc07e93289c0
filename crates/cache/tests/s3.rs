//! The S3 store against a real S3 server (moto) started on 127.0.0.1 by each test:
//! push/pull, content addressing, multipart uploads, faults, GitLab Runner's object
//! layout, and artifacts.

mod common;
#[path = "common/moto.rs"]
mod moto;

use std::process::Command;
use std::sync::Arc;

use common::{only, random_files, sample_tree, snapshot};
use moto::{Moto, moto};
use object_store::{ObjectStore, ObjectStoreExt};
use podci_cache::{Cache, Layout, PushResult, S3Config, Selection, Store};

fn config(m: &Moto, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: Some(format!("http://127.0.0.1:{}", m.port)),
        region: "us-east-1".into(),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
        virtual_host_style: false,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sel(paths: &[&str]) -> Selection {
    Selection {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn s3_push_pull_dedupe_multipart_and_faults() {
    let Some(m) = moto("caches") else { return };
    let (src, dst, spool) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    // incompressible, so the archive crosses the multipart threshold
    random_files(src.path(), 12, 48 << 20, 3);
    // so that the third push finds a trusted fingerprint and is `Unchanged`
    common::settle();
    let store = Store::s3(&config(&m, "caches", "podci/cache"))
        .unwrap()
        .with_spool_dir(spool.path());
    let cache = Cache::new(store.clone());
    rt().block_on(async {
        let rep = cache
            .push("maven/main", &sel(&["data", "bin", ".m2"]), src.path())
            .await
            .unwrap();
        let PushResult::Stored {
            digest,
            size,
            uploaded,
            ..
        } = rep.result
        else {
            panic!("{:?}", rep.result)
        };
        assert!(
            uploaded && size > 40 << 20,
            "multipart-sized archive expected, got {size}"
        );
        let again = cache
            .push("other", &sel(&["data", "bin", ".m2"]), src.path())
            .await
            .unwrap();
        assert!(
            matches!(again.result, PushResult::Stored { uploaded: false, .. }),
            "{:?}",
            again.result
        );
        let same = cache
            .push("maven/main", &sel(&["data", "bin", ".m2"]), src.path())
            .await
            .unwrap();
        assert_eq!(
            same.result,
            PushResult::Unchanged {
                digest: digest.clone()
            }
        );

        let pulled = cache
            .pull(&["missing".into(), "maven/main".into()], dst.path())
            .await;
        assert_eq!(pulled.hit.as_deref(), Some("maven/main"), "{:?}", pulled.warnings);
        let keys: Vec<_> = cache.list().await.unwrap().into_iter().map(|k| k.key).collect();
        assert_eq!(keys, ["maven/main", "other"]);
        // objects are where the layout says, with the full size
        let blobs = store.list("blobs").await.unwrap();
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].size, size);

        // corrupt the object: a pull is a miss and leaves the target alone
        let raw = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("caches")
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{}", m.port))
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let loc =
            object_store::path::Path::from(format!("podci/cache/{}", podci_cache::cache::blob_path(&digest)));
        let mut opts = object_store::PutOptions::default();
        opts.attributes.insert(
            object_store::Attribute::ContentType,
            "application/octet-stream".into(),
        );
        raw.put_opts(&loc, b"truncated".to_vec().into(), opts)
            .await
            .unwrap();
        let dst2 = tempfile::tempdir().unwrap();
        let miss = cache.pull(&["maven/main".into()], dst2.path()).await;
        assert!(miss.hit.is_none());
        assert!(
            miss.warnings[0].contains("treated as a miss"),
            "{:?}",
            miss.warnings
        );
        assert_eq!(std::fs::read_dir(dst2.path()).unwrap().count(), 0);
        raw.delete(&loc).await.unwrap();
        let gone = cache.pull(&["maven/main".into()], dst2.path()).await;
        assert!(
            gone.hit.is_none() && gone.warnings[0].contains("missing"),
            "{:?}",
            gone.warnings
        );
    });
    assert_eq!(
        only(&snapshot(dst.path()), &["data", "bin", ".m2"]),
        only(&snapshot(src.path()), &["data", "bin", ".m2"])
    );
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "spool files must be cleaned up"
    );
}

#[test]
fn s3_gitlab_runner_layout_interoperates() {
    let Some(m) = moto("runner-cache") else {
        return;
    };
    if !common::have("zip") {
        return;
    }
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(src.path());
    let zipfile = src.path().join("cache.zip");
    let ok = Command::new("zip")
        .current_dir(src.path())
        .args(["-r", "-q", "-y"])
        .arg(&zipfile)
        .args(["bin", ".m2"])
        .status()
        .unwrap();
    assert!(ok.success());
    // GitLab Runner's object: [Path/]runner/<token8>/project/<id>/<key>
    let prefix = "gl/runner/abcd1234/project/42";
    let cfg = config(&m, "runner-cache", prefix);
    let raw: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("runner-cache")
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{}", m.port))
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap(),
    );
    rt().block_on(async {
        let mut opts = object_store::PutOptions::default();
        opts.attributes.insert(
            object_store::Attribute::ContentType,
            "application/octet-stream".into(),
        );
        let body = std::fs::read(&zipfile).unwrap();
        raw.put_opts(
            &object_store::path::Path::from(format!("{prefix}/build/main-protected")),
            body.into(),
            opts,
        )
        .await
        .unwrap();
        let cache = Cache::new(Store::s3(&cfg).unwrap()).with_layout(Layout::GitlabRunner);
        let rep = cache.pull(&["build/main-protected".into()], dst.path()).await;
        assert_eq!(
            rep.hit.as_deref(),
            Some("build/main-protected"),
            "{:?}",
            rep.warnings
        );

        // and what podci pushes in this layout is a zip GitLab Runner (unzip) reads
        let pushed = cache
            .push("build/feature-non_protected", &sel(&["bin"]), src.path())
            .await
            .unwrap();
        assert!(matches!(pushed.result, PushResult::Stored { .. }));
        let obj = raw
            .get(&object_store::path::Path::from(format!(
                "{prefix}/build/feature-non_protected"
            )))
            .await
            .unwrap();
        let bytes = obj.bytes().await.unwrap();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        let check = tempfile::tempdir().unwrap();
        let zp = check.path().join("c.zip");
        std::fs::write(&zp, &bytes).unwrap();
        if common::have("unzip") {
            assert!(
                Command::new("unzip")
                    .arg("-tq")
                    .arg(&zp)
                    .status()
                    .unwrap()
                    .success()
            );
        }
    });
    assert_eq!(
        only(&snapshot(dst.path()), &["bin", ".m2"]),
        only(&snapshot(src.path()), &["bin", ".m2"])
    );
}

#[test]
fn s3_artifacts_with_dotenv_and_reports() {
    let Some(m) = moto("artifacts") else { return };
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(src.path());
    std::fs::write(
        src.path().join("build.env"),
        "IMAGE_TAG=1.2.3\nDIGEST = sha256:abc \n",
    )
    .unwrap();
    std::fs::write(src.path().join("junit.xml"), "<testsuites/>").unwrap();
    let arts = podci_cache::Artifacts::new(Store::s3(&config(&m, "artifacts", "")).unwrap());
    let spec = podci_cache::ArtifactSpec {
        name: "package".into(),
        paths: vec!["target".into()],
        exclude: vec!["target/classes/**".into()],
        expire_in: Some("1 week".into()),
        reports: [
            ("dotenv".to_string(), vec!["build.env".to_string()]),
            ("junit".to_string(), vec!["junit.xml".to_string()]),
        ]
        .into(),
        ..Default::default()
    };
    rt().block_on(async {
        // on_success artifacts are not stored for a failed job
        assert!(arts.upload(7, &spec, src.path(), false).await.unwrap().is_none());
        let (manifest, _) = arts.upload(7, &spec, src.path(), true).await.unwrap().unwrap();
        assert_eq!(manifest.reports.len(), 2);
        let week = manifest.expires_at.unwrap() - manifest.created;
        assert!((604_799..=604_801).contains(&week));
        let vars = arts.download(&[7], dst.path()).await.unwrap();
        assert_eq!(
            vars,
            [
                ("IMAGE_TAG".to_string(), "1.2.3".to_string()),
                ("DIGEST".to_string(), "sha256:abc".to_string())
            ]
        );
        assert!(
            arts.download(&[8], dst.path()).await.is_err(),
            "a missing dependency fails"
        );
    });
    assert!(dst.path().join("target/repo-link").is_symlink());
    assert!(!dst.path().join("target/classes/com/example/App.class").exists());
    assert!(dst.path().join("target/classes").is_dir());
}
