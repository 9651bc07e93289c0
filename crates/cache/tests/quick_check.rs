//! The unchanged-push quick check (podci_cache::quick): its own walk must fingerprint a
//! tree exactly as the collected entries do, an untouched tree is `Unchanged`, and every
//! kind of change — content (even at the same size and mtime), added and removed
//! entries, modes, symlink targets, changes within the racy window — causes a new upload.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use common::{sample_tree, settle};
use filetime::FileTime;
use podci_cache::paths::PathSet;
use podci_cache::quick::{is_trusted, quick_fingerprint};
use podci_cache::{Cache, Format, PushResult, Selection, Store};

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

/// A change to make to the tree, with what it is called in failure messages.
type Change<'a> = Box<dyn Fn() + 'a>;

const PATHS: &[&str] = &[".m2", "bin", "target"];

fn push(cache: &Cache, dir: &Path) -> PushResult {
    rt().block_on(cache.push("k", &sel(PATHS), dir)).unwrap().result
}

fn uploaded(r: &PushResult) -> bool {
    matches!(r, PushResult::Stored { uploaded: true, .. })
}

fn bigger_tree(root: &Path) {
    sample_tree(root);
    for i in 0..300 {
        let p = root.join(format!(".m2/repository/g{}/a{i}/1.0/a{i}.pom", i % 13));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("<project>{i}</project>")).unwrap();
    }
}

#[test]
fn quick_walk_fingerprints_exactly_like_the_collected_entries() {
    let d = tempfile::tempdir().unwrap();
    bigger_tree(d.path());
    let cases: &[(&[&str], &[&str])] = &[
        (PATHS, &[]),
        (&[".m2/repository", "bin/run", "missing", "../outside"], &[]),
        (&["."], &["target/**", "bin/run.sh"]),
        (&["target/repo-link", "bin/dangling"], &[]),
    ];
    for (paths, exclude) in cases {
        let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let set = PathSet::with_untracked(&paths, &exclude, false, d.path()).unwrap();
        let t = SystemTime::now();
        let collected = set.collect(d.path()).unwrap();
        let full = podci_cache::cache::fingerprint(d.path(), &collected.files, Format::TarZstd, t);
        let quick = quick_fingerprint(d.path(), &set, Format::TarZstd, t)
            .unwrap_or_else(|| panic!("quick walk of {paths:?}"));
        assert_eq!(quick.fingerprint, full, "{paths:?} minus {exclude:?}");
        assert_eq!(quick.entries, collected.files.len() as u64, "{paths:?}");
        assert_eq!(quick.warnings, collected.warnings, "{paths:?}");
        // the tree was just written: both say so
        assert!(!is_trusted(&full), "a fresh tree must be racy");
    }
    // globs, and paths inside other paths, have no quick walk
    for paths in [
        &["**/*.pom"][..],
        &[".m2", ".m2/repository"],
        &["bin", "bin"],
        &[".", "bin"],
    ] {
        let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
        let set = PathSet::new(&paths, &[]).unwrap();
        assert!(
            quick_fingerprint(d.path(), &set, Format::TarZstd, SystemTime::now()).is_none(),
            "{paths:?}"
        );
    }
    // the format is part of the fingerprint
    let set = PathSet::new(&["bin".into()], &[]).unwrap();
    let c = set.collect(d.path()).unwrap();
    let t = SystemTime::now();
    assert_ne!(
        podci_cache::cache::fingerprint(d.path(), &c.files, Format::TarZstd, t),
        podci_cache::cache::fingerprint(d.path(), &c.files, Format::Zip, t)
    );
}

#[test]
fn untouched_tree_is_unchanged_and_every_change_uploads() {
    let (src, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = src.path();
    bigger_tree(d);
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    settle();
    let first = push(&cache, d);
    assert!(uploaded(&first), "{first:?}");
    let PushResult::Stored { digest, .. } = first else {
        unreachable!()
    };
    assert_eq!(push(&cache, d), PushResult::Unchanged { digest });

    // Each change, made on a settled tree so the previous fingerprint is trusted.
    let pom = d.join(".m2/repository/g3/a3/1.0/a3.pom");
    let changes: Vec<(&str, Change)> = vec![
        (
            "content changed, same size, mtime set back to the old one",
            Box::new(|| {
                let old = FileTime::from_last_modification_time(&fs::metadata(&pom).unwrap());
                fs::write(&pom, "<project>X</project>").unwrap();
                filetime::set_file_mtime(&pom, old).unwrap();
            }),
        ),
        (
            "file added",
            Box::new(|| fs::write(d.join(".m2/repository/g3/a3/1.0/new.jar"), "jar").unwrap()),
        ),
        (
            "file removed",
            Box::new(|| fs::remove_file(d.join(".m2/repository/g3/a3/1.0/new.jar")).unwrap()),
        ),
        (
            "mode changed",
            Box::new(|| {
                fs::set_permissions(d.join("bin/run.sh"), fs::Permissions::from_mode(0o700)).unwrap()
            }),
        ),
        (
            "symlink retargeted",
            Box::new(|| {
                fs::remove_file(d.join("bin/run")).unwrap();
                std::os::unix::fs::symlink("run.sh.orig", d.join("bin/run")).unwrap();
            }),
        ),
        (
            "empty directory added",
            Box::new(|| fs::create_dir(d.join("target/empty-dir/sub")).unwrap()),
        ),
    ];
    for (what, change) in changes {
        change();
        settle();
        let r = push(&cache, d);
        assert!(uploaded(&r), "{what}: expected a new upload, got {r:?}");
        let PushResult::Stored { digest, .. } = r else {
            unreachable!()
        };
        assert_eq!(
            push(&cache, d),
            PushResult::Unchanged { digest },
            "{what}: the settled tree must be unchanged afterwards"
        );
    }
}

#[test]
fn a_change_within_the_racy_window_is_not_missed() {
    let (src, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = src.path();
    bigger_tree(d);
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    settle();
    assert!(uploaded(&push(&cache, d)));
    // Written just before the push: the push's fingerprint is racy...
    let f = d.join("bin/run.sh");
    fs::write(&f, "#!/bin/sh\necho A\n").unwrap();
    let stamp = FileTime::from_last_modification_time(&fs::metadata(&f).unwrap());
    let r = push(&cache, d);
    assert!(uploaded(&r), "{r:?}");
    // ...so a second write in the same timestamp tick, same size, is still seen.
    fs::write(&f, "#!/bin/sh\necho B\n").unwrap();
    filetime::set_file_mtime(&f, stamp).unwrap();
    let r2 = push(&cache, d);
    assert!(uploaded(&r2), "same-tick rewrite missed: {r2:?}");
    // An untouched racy tree is archived again, but the object is not uploaded twice.
    let r3 = push(&cache, d);
    assert!(
        matches!(
            r3,
            PushResult::Stored { uploaded: false, .. } | PushResult::Unchanged { .. }
        ),
        "{r3:?}"
    );
}

#[test]
fn globs_and_excludes_use_the_collected_fingerprint() {
    let (src, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = src.path();
    bigger_tree(d);
    let cache = Cache::new(Store::dir(store.path()).unwrap());
    let s = Selection {
        paths: vec![".m2/**/*.pom".into(), "bin".into()],
        exclude: vec!["bin/run.sh".into()],
        untracked: false,
    };
    settle();
    let rt = rt();
    let first = rt.block_on(cache.push("g", &s, d)).unwrap().result;
    assert!(uploaded(&first), "{first:?}");
    let again = rt.block_on(cache.push("g", &s, d)).unwrap().result;
    assert!(matches!(again, PushResult::Unchanged { .. }), "{again:?}");
    // a change to an excluded file is no change to the cache
    fs::write(d.join("bin/run.sh"), "#!/bin/sh\necho other\n").unwrap();
    settle();
    let excluded = rt.block_on(cache.push("g", &s, d)).unwrap().result;
    assert!(matches!(excluded, PushResult::Unchanged { .. }), "{excluded:?}");
    fs::write(
        d.join(".m2/repository/g1/a1/1.0/a1.pom"),
        "<project>changed</project>",
    )
    .unwrap();
    settle();
    let changed = rt.block_on(cache.push("g", &s, d)).unwrap().result;
    assert!(uploaded(&changed), "{changed:?}");
}
