//! The pipeline context of a local checkout: branch or tag, commit, author, changed files
//! and the default branch, read with `git` (the CLI, so that every repository layout git
//! understands works). Outside a repository everything falls back to GitLab-like
//! defaults so that a plain directory still runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What git says about the project directory.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    /// The repository's top directory.
    pub toplevel: PathBuf,
    /// The project directory relative to `toplevel` (empty or ending in `/`).
    pub prefix: String,
    /// `HEAD`'s commit, `None` in a repository without commits.
    pub sha: Option<String>,
    /// `HEAD`'s parent.
    pub before_sha: Option<String>,
    /// The checked-out branch.
    pub branch: Option<String>,
    /// A tag pointing at `HEAD` (used when no branch is checked out).
    pub tag: Option<String>,
    /// Full commit message.
    pub message: String,
    /// `Name <email>`.
    pub author: String,
    /// ISO 8601 commit time.
    pub timestamp: String,
    /// `origin`'s default branch, else `init.defaultBranch`, else `main`.
    pub default_branch: String,
}

/// Runs git in `dir`; its trimmed stdout on success.
pub fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// Reads the repository that contains `dir`; `None` outside any repository or without git.
pub fn read(dir: &Path) -> Option<Repo> {
    // Fails outside a repository (or without git): then there is no repository.
    let toplevel = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    let prefix = git(dir, &["rev-parse", "--show-prefix"]).unwrap_or_default();
    let sha = git(dir, &["rev-parse", "--verify", "-q", "HEAD"]);
    let before_sha = sha
        .as_ref()
        .and_then(|_| git(dir, &["rev-parse", "--verify", "-q", "HEAD~1"]));
    let branch = git(dir, &["symbolic-ref", "--short", "-q", "HEAD"]);
    let tag = match (&branch, &sha) {
        (None, Some(_)) => git(dir, &["describe", "--tags", "--exact-match", "HEAD"]),
        _ => None,
    };
    let (message, author, timestamp) = match &sha {
        Some(_) => {
            let raw = git(dir, &["log", "-1", "--format=%an <%ae>%x00%cI%x00%B"]).unwrap_or_default();
            let mut parts = raw.splitn(3, '\0');
            let author = parts.next().unwrap_or_default().to_string();
            let ts = parts.next().unwrap_or_default().to_string();
            let msg = parts.next().unwrap_or_default().to_string();
            (msg, author, ts)
        }
        None => Default::default(),
    };
    let default_branch = git(
        dir,
        &["symbolic-ref", "--short", "-q", "refs/remotes/origin/HEAD"],
    )
    .and_then(|r| r.strip_prefix("origin/").map(str::to_string))
    .or_else(|| git(dir, &["config", "init.defaultBranch"]))
    .unwrap_or_else(|| "main".to_string());
    Some(Repo {
        toplevel,
        prefix,
        sha,
        before_sha,
        branch,
        tag,
        message,
        author,
        timestamp,
        default_branch,
    })
}

/// Files changed on this branch: against the merge base with `compare_to` when that ref
/// exists and is not `HEAD`, else in `HEAD`'s own commit. Paths are relative to the
/// project directory (files outside it are left out). `None` when git cannot tell.
pub fn changed_files(dir: &Path, repo: &Repo, compare_to: &str) -> Option<Vec<String>> {
    let head = repo.sha.as_deref()?;
    let base = git(
        dir,
        &["rev-parse", "--verify", "-q", &format!("{compare_to}^{{commit}}")],
    )
    .filter(|b| b != head)
    .and_then(|b| git(dir, &["merge-base", &b, head]))
    .or_else(|| repo.before_sha.clone())?;
    let out = git(dir, &["diff", "--name-only", "--relative", &base, head])?;
    Some(
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Files tracked at `HEAD` under the project directory (for `rules:exists`).
pub fn tracked_files(dir: &Path) -> Vec<String> {
    git(dir, &["ls-files"])
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}
