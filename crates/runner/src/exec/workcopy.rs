//! Working copies: one snapshot of the project per pipeline (`HEAD` through `git archive`,
//! plus uncommitted changes with `--with-dirty`; the plain directory outside git), then a
//! private copy of that snapshot for every job, so jobs never see each other's files or
//! change the user's checkout.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use super::git::{self, Repo};

/// Directories never copied from a plain (non-git) project.
const SKIP: &[&str] = &[".git", ".podci"];

/// Fills `dest` with the project at `HEAD` (and its dirty files when `with_dirty`).
pub fn snapshot(project: &Path, repo: Option<&Repo>, with_dirty: bool, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let Some(repo) = repo.filter(|r| r.sha.is_some()) else {
        return copy_tree(project, dest, true);
    };
    let tree = format!("HEAD:{}", repo.prefix);
    // From the top directory: in a subdirectory git archive would keep only the paths
    // below the current directory *inside* the tree, i.e. nothing.
    let out = Command::new("git")
        .arg("-C")
        .arg(&repo.toplevel)
        .args(["archive", "--format=tar", &tree])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        // A project directory that is new (not in HEAD) has no tree: copy it as it is.
        if msg.contains("not a valid object name") || msg.contains("does not exist") {
            return copy_tree(project, dest, true);
        }
        return Err(io::Error::other(format!(
            "git archive {tree} failed: {}",
            msg.trim()
        )));
    }
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    archive.set_preserve_permissions(true);
    archive.unpack(dest)?;
    if with_dirty {
        if let Some(list) = git::git(project, &["ls-files", "-m", "-o", "--exclude-standard"]) {
            for rel in list
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with(".podci/logs/"))
            {
                let from = project.join(rel);
                // `-m` also lists deleted files; those are removed below.
                if std::fs::symlink_metadata(&from).is_err() {
                    continue;
                }
                let to = dest.join(rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                copy_entry(&from, &to)?;
            }
        }
        if let Some(list) = git::git(project, &["ls-files", "-d"]) {
            for rel in list.lines().filter(|l| !l.is_empty()) {
                let _ = std::fs::remove_file(dest.join(rel));
            }
        }
    }
    Ok(())
}

fn copy_entry(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        let _ = std::fs::remove_file(to);
        std::os::unix::fs::symlink(target, to)
    } else if meta.is_dir() {
        copy_tree(from, to, false)
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Copies the tree under `from` into `to` (files, modes, symlinks as links).
pub fn copy_tree(from: &Path, to: &Path, skip_meta: bool) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let walker = walkdir::WalkDir::new(from)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(skip_meta && e.depth() == 1 && SKIP.iter().any(|s| e.file_name() == *s)));
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(target, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
