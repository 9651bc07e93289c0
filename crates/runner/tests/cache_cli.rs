//! `podci cache` and `podci artifacts` end to end through the binary, on a directory store.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn podci(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podci {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cache_push_pull_ls_prune() {
    let (project, restored, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let s = store.path().to_str().unwrap();
    fs::create_dir_all(project.path().join(".m2/repository/org/x")).unwrap();
    fs::write(
        project.path().join(".m2/repository/org/x/x-1.jar"),
        vec![1u8; 10_000],
    )
    .unwrap();
    std::os::unix::fs::symlink("x-1.jar", project.path().join(".m2/repository/org/x/latest.jar")).unwrap();
    // A tree modified within 2 s of a push is "racy" (git's rule): that push's stat
    // fingerprint is not trusted. Wait it out so the second push can be "unchanged".
    std::thread::sleep(std::time::Duration::from_millis(2200));

    let push = podci(
        &[
            "cache",
            "push",
            "--store",
            s,
            "--key",
            "maven/main",
            "--path",
            ".m2/repository",
        ],
        project.path(),
    );
    assert!(
        stderr(&push).contains("Saved cache \"maven/main\""),
        "{}",
        stderr(&push)
    );
    let again = podci(
        &[
            "cache",
            "push",
            "--store",
            s,
            "--key",
            "maven/main",
            "--path",
            ".m2/repository",
        ],
        project.path(),
    );
    assert!(stderr(&again).contains("unchanged"), "{}", stderr(&again));
    let nofsync = podci(
        &[
            "cache",
            "push",
            "--no-fsync",
            "--store",
            s,
            "--key",
            "nofsync",
            "--path",
            ".m2/repository",
        ],
        project.path(),
    );
    assert!(
        stderr(&nofsync).contains("already stored"),
        "same content, same object: {}",
        stderr(&nofsync)
    );
    let skipped = podci(
        &[
            "cache", "push", "--store", s, "--key", "k2", "--path", ".m2", "--policy", "pull",
        ],
        project.path(),
    );
    assert!(stderr(&skipped).contains("policy is pull"));
    let failed = podci(
        &[
            "cache",
            "push",
            "--store",
            s,
            "--key",
            "k2",
            "--path",
            ".m2",
            "--job-status",
            "failed",
        ],
        project.path(),
    );
    assert!(stderr(&failed).contains("does not match"));

    let pull = podci(
        &[
            "cache",
            "pull",
            "--store",
            s,
            "--key",
            "feature",
            "--fallback-key",
            "maven/main",
        ],
        restored.path(),
    );
    assert!(
        stderr(&pull).contains("Restored cache \"maven/main\""),
        "{}",
        stderr(&pull)
    );
    assert_eq!(
        fs::read(restored.path().join(".m2/repository/org/x/x-1.jar"))
            .unwrap()
            .len(),
        10_000
    );
    assert!(
        restored
            .path()
            .join(".m2/repository/org/x/latest.jar")
            .is_symlink()
    );
    let miss = podci(&["cache", "pull", "--store", s, "--key", "nope"], restored.path());
    assert!(stderr(&miss).contains("cache miss"));

    let ls = podci(&["cache", "ls", "--store", s], project.path());
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(listing.starts_with("maven/main\tblake3:"), "{listing}");
    assert_eq!(listing.lines().count(), 2);

    let prune = podci(
        &[
            "cache",
            "prune",
            "--store",
            s,
            "--older-than",
            "7d",
            "--grace",
            "0",
        ],
        project.path(),
    );
    assert!(String::from_utf8_lossy(&prune.stdout).contains("pruned 0 keys"));
    let prune_all = podci(
        &[
            "cache",
            "prune",
            "--store",
            s,
            "--older-than",
            "0",
            "--grace",
            "0",
        ],
        project.path(),
    );
    assert!(String::from_utf8_lossy(&prune_all.stdout).contains("pruned 2 keys, 0 artifact sets, 1 objects"));

    // a bad key is a clear error with a non-zero exit
    let bad = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["cache", "push", "--store", s, "--key", "..", "--path", ".m2"])
        .current_dir(project.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("empty after sanitizing"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn artifacts_upload_download_with_dotenv() {
    let (project, next, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let s = store.path().to_str().unwrap();
    fs::create_dir_all(project.path().join("target")).unwrap();
    fs::write(project.path().join("target/app.jar"), "jar").unwrap();
    fs::write(project.path().join("target/app.o"), "obj").unwrap();
    fs::write(project.path().join("build.env"), "VERSION=1.0.0\n").unwrap();
    let up = podci(
        &[
            "artifacts",
            "upload",
            "--store",
            s,
            "--job-id",
            "41",
            "--path",
            "target",
            "--exclude",
            "target/*.o",
            "--expire-in",
            "1 week",
            "--report",
            "dotenv=build.env",
        ],
        project.path(),
    );
    assert!(stderr(&up).contains("1 dotenv variable(s)"), "{}", stderr(&up));
    let down = podci(
        &["artifacts", "download", "--store", s, "--job-id", "41"],
        next.path(),
    );
    assert_eq!(String::from_utf8_lossy(&down.stdout), "VERSION=1.0.0\n");
    assert!(next.path().join("target/app.jar").is_file());
    assert!(!next.path().join("target/app.o").exists());
    let missing = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["artifacts", "download", "--store", s, "--job-id", "99"])
        .current_dir(next.path())
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("missing or expired"));
}
