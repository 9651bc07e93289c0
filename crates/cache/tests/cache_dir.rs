//! Cache push/pull against a directory store (what a PVC is): round trips, content
//! addressing, unchanged pushes, fallbacks, faults, unsafe archives, concurrency.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::{only, random_files, sample_tree, snapshot};
use podci_cache::cache::blob_path;
use podci_cache::{Cache, PushResult, Selection, Store};

fn sel(paths: &[&str]) -> Selection {
    Selection {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn round_trip_keeps_content_modes_symlinks_and_mtimes() {
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        let rep = cache
            .push(
                "maven/main",
                &sel(&[".m2/repository", "bin", "target"]),
                src.path(),
            )
            .await
            .unwrap();
        let PushResult::Stored { uploaded, stats, .. } = rep.result else {
            panic!("{:?}", rep.result)
        };
        assert!(uploaded);
        assert!(stats.entries > 10);
        let pulled = cache.pull(&["maven/main".into()], dst.path()).await;
        assert_eq!(pulled.hit.as_deref(), Some("maven/main"), "{:?}", pulled.warnings);
    });
    let want = only(&snapshot(src.path()), &[".m2/repository", "bin", "target"]);
    let got = snapshot(dst.path());
    // .m2 itself is created as a parent, not restored from the archive
    assert_eq!(only(&got, &[".m2/repository", "bin", "target"]), want);
    assert!(
        !got.keys().any(|k| k.contains(".podci-staging")),
        "staging left behind"
    );
}

#[test]
fn identical_content_is_stored_once_and_unchanged_pushes_are_skipped() {
    let (src, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(src.path());
    // so that the third push finds a trusted fingerprint and is `Unchanged`
    common::settle();
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        let a = cache.push("a", &sel(&["bin", ".m2"]), src.path()).await.unwrap();
        let b = cache.push("b", &sel(&["bin", ".m2"]), src.path()).await.unwrap();
        let (
            PushResult::Stored {
                digest: da,
                uploaded: ua,
                ..
            },
            PushResult::Stored {
                digest: db,
                uploaded: ub,
                ..
            },
        ) = (a.result, b.result)
        else {
            panic!("expected two stores")
        };
        assert_eq!(da, db, "archives of the same tree must be byte-identical");
        assert!(ua && !ub, "the second key must reuse the object");
        assert_eq!(
            fs::read_dir(store.path().join("blobs/blake3")).unwrap().count(),
            1
        );

        let again = cache.push("a", &sel(&["bin", ".m2"]), src.path()).await.unwrap();
        assert_eq!(again.result, PushResult::Unchanged { digest: da.clone() });

        // touching one file's content (and mtime) makes it a real push again
        fs::write(src.path().join("bin/run.sh"), "#!/bin/sh\necho changed\n").unwrap();
        let changed = cache.push("a", &sel(&["bin", ".m2"]), src.path()).await.unwrap();
        assert!(
            matches!(changed.result, PushResult::Stored { uploaded: true, .. }),
            "{:?}",
            changed.result
        );

        let keys = cache.list().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    });
}

#[test]
fn pull_then_push_of_an_untouched_tree_uploads_nothing() {
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        let first = cache.push("k", &sel(&[".m2", "bin"]), src.path()).await.unwrap();
        let PushResult::Stored { digest, .. } = first.result else {
            panic!("{:?}", first.result)
        };
        assert!(cache.pull(&["k".into()], dst.path()).await.hit.is_some());
        // The restored tree has new inodes and ctimes, so the quick check cannot vouch
        // for it: it is archived again, to the same bytes, and not uploaded.
        let rep = cache.push("k", &sel(&[".m2", "bin"]), dst.path()).await.unwrap();
        assert!(
            matches!(&rep.result, PushResult::Stored { uploaded: false, digest: d, .. } if *d == digest),
            "{:?}",
            rep.result
        );
    });
}

#[test]
fn fallback_keys_are_tried_in_order_and_misses_are_warnings() {
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        cache.push("main", &sel(&["bin"]), src.path()).await.unwrap();
        let rep = cache
            .pull(&["feature".into(), "..".into(), "main".into()], dst.path())
            .await;
        assert_eq!(rep.hit.as_deref(), Some("main"));
        assert_eq!(rep.warnings.len(), 2, "{:?}", rep.warnings);
        let none = cache.pull(&["nothing".into()], dst.path()).await;
        assert!(none.hit.is_none());
        let empty = cache.push("e", &sel(&["no/such/dir"]), src.path()).await.unwrap();
        assert_eq!(empty.result, PushResult::NothingToCache);
    });
    assert!(dst.path().join("bin/run.sh").is_file());
}

/// Corrupt the stored blob in `how`, then check that a pull is a miss with a warning and
/// leaves the target exactly as it was.
fn assert_fault_is_a_clean_miss(how: fn(&Path)) {
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    random_files(src.path(), 40, 4 << 20, 7);
    sample_tree(src.path());
    fs::create_dir_all(dst.path().join("bin")).unwrap();
    fs::write(dst.path().join("bin/run.sh"), "old").unwrap();
    let before = snapshot(dst.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        let rep = cache.push("k", &sel(&["data", "bin"]), src.path()).await.unwrap();
        let PushResult::Stored { digest, .. } = rep.result else {
            panic!()
        };
        how(&store.path().join(blob_path(&digest)));
        let pulled = cache.pull(&["k".into()], dst.path()).await;
        assert!(pulled.hit.is_none(), "a damaged archive must be a miss");
        assert_eq!(pulled.warnings.len(), 1);
        assert!(
            pulled.warnings[0].contains("treated as a miss"),
            "{:?}",
            pulled.warnings
        );
    });
    assert_eq!(
        snapshot(dst.path()),
        before,
        "a failed pull must not change the target"
    );
}

#[test]
fn truncated_archive_is_a_miss() {
    assert_fault_is_a_clean_miss(|blob| {
        let len = fs::metadata(blob).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(blob)
            .unwrap()
            .set_len(len * 2 / 3)
            .unwrap();
    });
}

#[test]
fn flipped_byte_is_a_miss() {
    assert_fault_is_a_clean_miss(|blob| {
        let mut data = fs::read(blob).unwrap();
        let i = data.len() - 100;
        data[i] ^= 0x40;
        fs::write(blob, data).unwrap();
    });
}

#[test]
fn missing_object_is_a_miss() {
    assert_fault_is_a_clean_miss(|blob| fs::remove_file(blob).unwrap());
}

#[test]
fn garbage_object_is_a_miss() {
    assert_fault_is_a_clean_miss(|blob| fs::write(blob, b"this is not an archive at all").unwrap());
}

/// A hostile tar.zst with one bad entry among good ones.
fn hostile_tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, "good/first.txt", &b"hello"[..]).unwrap();
    build(&mut b);
    let tar = b.into_inner().unwrap();
    zstd::encode_all(&tar[..], 3).unwrap()
}

fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, ty: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_old();
    // write the name bytes directly: the tar crate refuses `..` in set_path
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(ty);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn unsafe_archives_are_refused_and_write_nothing() {
    type Case = (&'static str, Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Box::new(|b| raw_entry(b, "../escaped.txt", tar::EntryType::Regular, None, b"x")),
        ),
        (
            "nested dotdot",
            Box::new(|b| raw_entry(b, "good/../../escaped.txt", tar::EntryType::Regular, None, b"x")),
        ),
        (
            "absolute",
            Box::new(|b| {
                raw_entry(
                    b,
                    "/tmp/podci-abs-escape.txt",
                    tar::EntryType::Regular,
                    None,
                    b"x",
                )
            }),
        ),
        (
            "absolute symlink",
            Box::new(|b| raw_entry(b, "link", tar::EntryType::Symlink, Some("/etc"), b"")),
        ),
        (
            "climbing symlink",
            Box::new(|b| raw_entry(b, "good/link", tar::EntryType::Symlink, Some("../../.."), b"")),
        ),
        (
            "write through symlink",
            Box::new(|b| {
                raw_entry(b, "sub/link", tar::EntryType::Symlink, Some(".."), b"");
                raw_entry(b, "sub/link/x", tar::EntryType::Regular, None, b"x");
            }),
        ),
        (
            "symlink chain",
            Box::new(|b| {
                raw_entry(b, "s/l1", tar::EntryType::Symlink, Some("."), b"");
                raw_entry(b, "s/l2", tar::EntryType::Symlink, Some("l1/../.."), b"");
            }),
        ),
        (
            "hardlink outside",
            Box::new(|b| raw_entry(b, "hl", tar::EntryType::Link, Some("../outside"), b"")),
        ),
    ];
    for (name, build) in cases {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("project");
        fs::create_dir_all(&target).unwrap();
        fs::write(outer.path().join("outside"), "secret").unwrap();
        let archive = outer.path().join("evil.tar.zst");
        fs::write(&archive, hostile_tar(build)).unwrap();
        let err = podci_cache::cache::extract_file(&archive, &target, None).unwrap_err();
        assert!(
            matches!(err, podci_cache::Error::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("nothing was extracted"), "{name}: {err}");
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "{name}: target must stay empty"
        );
        assert!(!outer.path().join("escaped.txt").exists(), "{name}");
        assert!(!Path::new("/tmp/podci-abs-escape.txt").exists(), "{name}");
    }
}

#[test]
fn restore_replaces_a_symlink_in_the_target_instead_of_following_it() {
    let (src, outer, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let target = outer.path().join("project");
    let elsewhere = outer.path().join("elsewhere");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, target.join("bin")).unwrap();
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        cache.push("k", &sel(&["bin"]), src.path()).await.unwrap();
        assert!(cache.pull(&["k".into()], &target).await.hit.is_some());
    });
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing may be written through the symlink"
    );
    assert!(target.join("bin/run.sh").is_file());
}

#[test]
fn concurrent_writers_leave_one_complete_winner_and_readers_never_see_a_torn_archive() {
    let (a, b, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    random_files(a.path(), 20, 8 << 20, 1);
    random_files(b.path(), 20, 8 << 20, 2);
    fs::write(a.path().join("data/who"), "a").unwrap();
    fs::write(b.path().join("data/who"), "b").unwrap();
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    let runtime = rt();
    runtime.block_on(async {
        cache.push("shared", &sel(&["data"]), a.path()).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (cache, stop) = (cache.clone(), stop.clone());
            tokio::spawn(async move {
                let mut pulls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || pulls == 0 {
                    let dst = tempfile::tempdir().unwrap();
                    let rep = cache.pull(&["shared".into()], dst.path()).await;
                    assert_eq!(
                        rep.hit.as_deref(),
                        Some("shared"),
                        "reader saw a broken cache: {:?}",
                        rep.warnings
                    );
                    let who = fs::read_to_string(dst.path().join("data/who")).unwrap();
                    assert!(who == "a" || who == "b");
                    let files = walkdir::WalkDir::new(dst.path().join("data"))
                        .into_iter()
                        .filter(|e| e.as_ref().unwrap().file_type().is_file())
                        .count();
                    assert_eq!(files, 21, "a restored cache must be complete");
                    pulls += 1;
                }
                pulls
            })
        };
        let data = sel(&["data"]);
        let (ra, rb) = tokio::join!(
            cache.push("shared", &data, b.path()),
            cache.push("shared", &data, a.path())
        );
        ra.unwrap();
        rb.unwrap();
        for _ in 0..3 {
            let (x, y) = tokio::join!(
                cache.push("shared", &data, b.path()),
                cache.push("shared", &data, a.path())
            );
            x.unwrap();
            y.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.await.unwrap() >= 1);
        // the winner is one of the two trees, complete
        let dst = tempfile::tempdir().unwrap();
        assert!(cache.pull(&["shared".into()], dst.path()).await.hit.is_some());
        let who = fs::read_to_string(dst.path().join("data/who")).unwrap();
        let src = if who == "a" { a.path() } else { b.path() };
        assert_eq!(
            only(&snapshot(dst.path()), &["data/"]),
            only(&snapshot(src), &["data/"])
        );
    });
}

/// The child half of `kill_during_upload_leaves_the_store_consistent`.
#[test]
fn child_push_for_kill_test() {
    let (Some(src), Some(store)) = (
        std::env::var_os("PODCI_KILL_SRC"),
        std::env::var_os("PODCI_KILL_STORE"),
    ) else {
        return;
    };
    let cache = Cache::new(Store::dir(store).unwrap());
    rt().block_on(async {
        let _ = cache.push("k", &sel(&["data"]), Path::new(&src)).await;
    });
    // reaching here means the parent was too slow to kill us
    std::process::exit(3);
}

#[test]
fn kill_during_upload_leaves_the_store_consistent() {
    let (old, big, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(old.path());
    fs::create_dir_all(old.path().join("data")).unwrap();
    fs::write(old.path().join("data/version"), "old").unwrap();
    random_files(big.path(), 60, 600 << 20, 9);
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    let runtime = rt();
    let first = runtime
        .block_on(cache.push("k", &sel(&["data"]), old.path()))
        .unwrap();
    let PushResult::Stored {
        digest: old_digest, ..
    } = first.result
    else {
        panic!()
    };

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_push_for_kill_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PODCI_KILL_SRC", big.path())
        .env("PODCI_KILL_STORE", store.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until the child is writing its archive
    let tmp = store.path().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let growing = fs::read_dir(&tmp)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.metadata().map(|m| m.len() > (20 << 20)).unwrap_or(false));
        if growing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child never started writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "child finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());

    // the key still points at the old, complete archive
    let dst = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let rep = cache.pull(&["k".into()], dst.path()).await;
        assert_eq!(rep.hit.as_deref(), Some("k"), "{:?}", rep.warnings);
        let keys = cache.list().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].digest, old_digest);
    });
    assert_eq!(
        fs::read_to_string(dst.path().join("data/version")).unwrap(),
        "old"
    );
    // only the old blob is visible; the partial file sits in tmp/ until pruned
    assert_eq!(
        fs::read_dir(store.path().join("blobs/blake3")).unwrap().count(),
        1
    );
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
    let pruned = runtime.block_on(cache.prune(u64::MAX, 0)).unwrap();
    assert_eq!(pruned.blobs_deleted, 0);
    // temp files younger than an hour survive a prune (they may be a live upload)
    assert_eq!(pruned.temp_files_deleted, 0);
    assert_eq!(Store::dir(store.path()).unwrap().sweep_temp(0).unwrap(), 1);
}

#[test]
fn prune_removes_old_keys_and_unreferenced_objects() {
    let (src, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(src.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    rt().block_on(async {
        cache.push("keep", &sel(&["bin"]), src.path()).await.unwrap();
        cache.push("old", &sel(&[".m2"]), src.path()).await.unwrap();
        // age the "old" pointer by rewriting its created time
        let p = store.path().join("keys/old.json");
        let mut ptr: podci_cache::Pointer = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        ptr.created -= 10 * 86_400;
        fs::File::create(&p)
            .unwrap()
            .write_all(&serde_json::to_vec(&ptr).unwrap())
            .unwrap();

        let rep = cache.prune(7 * 86_400, 0).await.unwrap();
        assert_eq!(rep.keys_deleted, ["old"]);
        assert_eq!(rep.blobs_deleted, 1);
        let keys: Vec<_> = cache.list().await.unwrap().into_iter().map(|k| k.key).collect();
        assert_eq!(keys, ["keep"]);
        let dst = tempfile::tempdir().unwrap();
        assert!(cache.pull(&["keep".into()], dst.path()).await.hit.is_some());
    });
}

#[test]
fn untracked_and_exclude_select_files() {
    if !common::have("git") {
        return;
    }
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let git = |args: &[&str]| {
        assert!(
            std::process::Command::new("git")
                .arg("-C")
                .arg(src.path())
                .args(args)
                .status()
                .unwrap()
                .success()
        )
    };
    git(&["init", "-q"]);
    git(&["add", "bin", ".m2"]);
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    let s = Selection {
        paths: vec![],
        exclude: vec!["target/classes/**".into()],
        untracked: true,
    };
    rt().block_on(async {
        cache.push("u", &s, src.path()).await.unwrap();
        assert!(cache.pull(&["u".into()], dst.path()).await.hit.is_some());
    });
    assert!(dst.path().join("target/repo-link").is_symlink());
    assert!(
        !dst.path().join("bin").exists(),
        "tracked files are not untracked"
    );
    assert!(
        !dst.path().join("target/classes/com/example/App.class").exists(),
        "excluded"
    );
}
