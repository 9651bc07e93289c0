//! Helpers shared by the integration tests: sample trees and a full tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use filetime::FileTime;

/// What a tree looks like, entry by entry: kind, content/target, mode, mtime (seconds).
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let desc = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("dir {:o}", m.mode() & 0o7777)
        } else {
            let data = fs::read(e.path()).unwrap();
            let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
            format!(
                "file {:o} mtime={} len={} sum={sum}",
                m.mode() & 0o7777,
                m.mtime(),
                data.len()
            )
        };
        out.insert(rel, desc);
    }
    out
}

/// A small Maven-like tree with the cases archives get wrong: modes, symlinks (file,
/// directory, dangling-inside), empty files and dirs, deep and long names, old mtimes.
pub fn sample_tree(root: &Path) {
    let files: &[(&str, &[u8], u32)] = &[
        (
            ".m2/repository/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.jar",
            b"PK\x03\x04jar bytes",
            0o644,
        ),
        (
            ".m2/repository/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.pom",
            b"<project/>",
            0o644,
        ),
        (
            ".m2/repository/org/apache/commons/commons-lang3/3.14.0/_remote.repositories",
            b"",
            0o600,
        ),
        (".m2/settings.xml", b"<settings/>", 0o640),
        ("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("target/classes/com/example/App.class", b"\xca\xfe\xba\xbe", 0o644),
    ];
    for (rel, data, mode) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    let long = format!("target/{}/{}.txt", "d".repeat(120), "n".repeat(150));
    fs::create_dir_all(root.join(&long).parent().unwrap()).unwrap();
    fs::write(root.join(&long), vec![7u8; 300_000]).unwrap();
    fs::create_dir_all(root.join("target/empty-dir")).unwrap();
    std::os::unix::fs::symlink("run.sh", root.join("bin/run")).unwrap();
    std::os::unix::fs::symlink("../.m2/repository", root.join("target/repo-link")).unwrap();
    std::os::unix::fs::symlink("missing-but-inside", root.join("bin/dangling")).unwrap();
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.unwrap();
        let t = FileTime::from_unix_time(1_600_000_000 + e.depth() as i64 * 1000, 0);
        filetime::set_symlink_file_times(e.path(), t, t).unwrap();
    }
}

/// Make `n` files of pseudo-random (incompressible) content totalling about `bytes`.
pub fn random_files(root: &Path, n: usize, bytes: usize, seed: u64) {
    let mut x = seed | 1;
    for i in 0..n {
        let p = root.join(format!("data/d{}/f{i}.bin", i % 7));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut buf = vec![0u8; bytes / n];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(p, buf).unwrap();
    }
}

/// The snapshot of `sub` entries only (paths under a prefix).
pub fn only(snap: &BTreeMap<String, String>, prefixes: &[&str]) -> BTreeMap<String, String> {
    snap.iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether `program` can be run; in CI its absence is a failure.
pub fn have(program: &str) -> bool {
    let ok = std::process::Command::new(program).arg("-h").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is required when CI is set"
        );
        eprintln!("\n\n*** SKIPPED: {program} is not installed ***\n");
    }
    ok
}

/// Wait until everything written so far is older than the quick check's racy window,
/// so that a push's fingerprint is trusted and a later push can be `Unchanged` (ctime
/// cannot be set back, so waiting is the only way).
pub fn settle() {
    std::thread::sleep(podci_cache::quick::RACY_MARGIN + std::time::Duration::from_millis(150));
}
