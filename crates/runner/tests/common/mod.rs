//! Helpers shared by the runner's integration tests (`mod common;` in each test file).

use std::path::Path;
use std::process::Command;

/// Writes `files` (path relative to `dir`, content) and commits them as the first commit
/// of a new git repository on `main` in `dir`: the project a fake GitLab hands out.
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    ] {
        let ok = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .expect("git runs")
            .success();
        assert!(ok, "git {args:?}");
    }
}
