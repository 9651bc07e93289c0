//! GitLab Runner's `cache.zip`: archives made by Info-ZIP `zip` restore with podci, and
//! archives podci writes are read back by `unzip`, including GitLab Runner's object
//! layout in a directory store (`<key>/cache.zip`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{have, only, sample_tree, snapshot};
use podci_cache::{Cache, Format, Layout, PushResult, Selection, Store};

const PATHS: &[&str] = &[".m2/repository", "bin", "target"];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What GitLab Runner's zip keeps: content, modes, symlinks, file mtimes.
fn comparable(root: &Path) -> std::collections::BTreeMap<String, String> {
    only(&snapshot(root), PATHS)
}

#[test]
fn zip_made_by_the_zip_tool_restores_with_podci() {
    if !have("zip") {
        return;
    }
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    // GitLab Runner's local cache layout: <cache dir>/<key>/cache.zip
    let obj = store.path().join("maven/main/cache.zip");
    fs::create_dir_all(obj.parent().unwrap()).unwrap();
    // -y keeps symlinks as links, -X drops nothing GitLab needs; -r recurses
    run(Command::new("zip")
        .current_dir(src.path())
        .arg("-r")
        .arg("-q")
        .arg("-y")
        .arg(&obj)
        .args(PATHS));
    let cache = Cache::new(Store::dir(store.path()).unwrap()).with_layout(Layout::GitlabRunner);
    let rep = rt().block_on(cache.pull(&["maven/main".into()], dst.path()));
    assert_eq!(rep.hit.as_deref(), Some("maven/main"), "{:?}", rep.warnings);
    assert_eq!(comparable(dst.path()), comparable(src.path()));
}

#[test]
fn zip_written_by_podci_is_read_by_unzip() {
    if !have("unzip") {
        return;
    }
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap()).with_layout(Layout::GitlabRunner);
    let sel = Selection {
        paths: PATHS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let rep = rt().block_on(cache.push("maven/main", &sel, src.path())).unwrap();
    assert!(matches!(rep.result, PushResult::Stored { .. }));
    let obj = store.path().join("maven/main/cache.zip");
    run(Command::new("unzip").arg("-tq").arg(&obj));
    run(Command::new("unzip")
        .arg("-q")
        .arg(&obj)
        .arg("-d")
        .arg(dst.path()));
    assert_eq!(comparable(dst.path()), comparable(src.path()));
    // the extra fields GitLab Runner writes are there: `zipinfo -v` names them
    let info = Command::new("zipinfo").arg("-v").arg(&obj).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("0x5455"), "extended timestamp field missing");
    assert!(text.contains("0x7875"), "unix uid/gid field missing");
}

#[test]
fn podci_zip_round_trips_through_podci_and_content_addressed_store() {
    let (src, dst, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    sample_tree(src.path());
    let cache = Cache::new(Store::dir(store.path()).unwrap()).with_format(Format::Zip);
    let sel = Selection {
        paths: PATHS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    rt().block_on(async {
        cache.push("z", &sel, src.path()).await.unwrap();
        let rep = cache.pull(&["z".into()], dst.path()).await;
        assert_eq!(rep.hit.as_deref(), Some("z"), "{:?}", rep.warnings);
    });
    assert_eq!(comparable(dst.path()), comparable(src.path()));
}

#[test]
fn zip_with_escaping_entries_is_refused() {
    if !have("zip") {
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let work = outer.path().join("a/b");
    fs::create_dir_all(&work).unwrap();
    fs::write(outer.path().join("a/evil.txt"), "x").unwrap();
    let archive = outer.path().join("evil.zip");
    // Info-ZIP stores ../ names as given when asked to
    run(Command::new("zip")
        .current_dir(&work)
        .arg("-q")
        .arg(&archive)
        .arg("../evil.txt"));
    let listing = Command::new("unzip").arg("-Z1").arg(&archive).output().unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    let target = outer.path().join("target");
    fs::create_dir_all(&target).unwrap();
    let res = podci_cache::cache::extract_file(&archive, &target, None);
    if names.contains("../") {
        assert!(
            matches!(res, Err(podci_cache::Error::UnsafeEntry { .. })),
            "{res:?}"
        );
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
    } else {
        // this zip build stripped the ../ itself; the entry lands inside the target
        res.unwrap();
        assert!(target.join("evil.txt").exists());
    }
    // an absolute symlink made by zip -y is refused
    let link_dir = outer.path().join("l");
    fs::create_dir_all(&link_dir).unwrap();
    std::os::unix::fs::symlink("/etc", link_dir.join("etc")).unwrap();
    let archive2 = outer.path().join("link.zip");
    run(Command::new("zip")
        .current_dir(&link_dir)
        .arg("-q")
        .arg("-y")
        .arg(&archive2)
        .arg("etc"));
    let target2 = outer.path().join("target2");
    let err = podci_cache::cache::extract_file(&archive2, &target2, None).unwrap_err();
    assert!(matches!(err, podci_cache::Error::UnsafeEntry { .. }), "{err}");
    assert_eq!(fs::read_dir(&target2).unwrap().count(), 0);
}
