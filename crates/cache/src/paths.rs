//! Which files a cache or artifact holds: `paths` and `exclude` with GitLab's glob rules,
//! and `untracked` through git.
//!
//! GitLab Runner (commands/helpers/file_archiver.go) globs each `paths` pattern relative
//! to the project directory with doublestar rules (`*` stays inside one path segment,
//! `**` crosses them), adds a matched directory with everything under it, skips patterns
//! that point outside the project directory with a warning, and applies `exclude`
//! patterns to each entry on its own (excluding `dir` does not exclude `dir/file`).

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result, io};

/// The kind of a collected entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One file, directory or symlink to archive, relative to the project directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the project directory, `/`-separated, no leading `./`.
    pub rel: String,
    pub kind: EntryKind,
    /// `lstat` of the entry, taken while collecting.
    pub meta: Metadata,
}

/// The outcome of collecting: entries in archive order, and warnings for the job log.
#[derive(Debug, Default)]
pub struct Collected {
    /// Sorted by path; parents come before their children.
    pub files: Vec<Entry>,
    /// Patterns that matched nothing or pointed outside the project.
    pub warnings: Vec<String>,
}

/// Compiled `paths` + `exclude` patterns.
#[derive(Debug)]
pub struct PathSet {
    includes: Vec<Include>,
    exclude: GlobSet,
    untracked: bool,
}

#[derive(Debug)]
enum Include {
    /// A pattern without glob characters: the path itself.
    Literal(String),
    /// A glob: walk `base` and match each path against `glob`.
    Glob {
        base: String,
        pattern: String,
        glob: globset::GlobMatcher,
    },
    /// A pattern that escapes the project directory; reported as a warning.
    Outside(String),
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn compile(pattern: &str) -> Result<Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::InvalidPattern {
            pattern: pattern.to_owned(),
            reason: e.kind().to_string(),
        })
}

/// Clean a pattern lexically against the project root: strip `./`, resolve `..`, turn
/// an absolute path inside `project_dir` into a relative one. `None` when it escapes.
fn normalize(pattern: &str, project_dir: Option<&Path>) -> Option<String> {
    let p = Path::new(pattern);
    let rel: PathBuf = if p.is_absolute() {
        let root = project_dir?;
        p.strip_prefix(root).ok()?.to_path_buf()
    } else {
        p.to_path_buf()
    };
    let mut parts: Vec<String> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

impl PathSet {
    /// Compile `paths` and `exclude` (no untracked files).
    pub fn new(paths: &[String], exclude: &[String]) -> Result<Self> {
        Self::build(paths, exclude, false, None)
    }

    /// Compile with `untracked`, resolving absolute patterns against `project_dir`.
    pub fn with_untracked(
        paths: &[String],
        exclude: &[String],
        untracked: bool,
        project_dir: &Path,
    ) -> Result<Self> {
        Self::build(paths, exclude, untracked, Some(project_dir))
    }

    fn build(paths: &[String], exclude: &[String], untracked: bool, root: Option<&Path>) -> Result<Self> {
        let mut includes = Vec::new();
        for raw in paths.iter().filter(|p| !p.trim().is_empty()) {
            let Some(clean) = normalize(raw, root) else {
                includes.push(Include::Outside(raw.clone()));
                continue;
            };
            if !has_meta(&clean) {
                includes.push(Include::Literal(clean));
                continue;
            }
            let segs: Vec<&str> = clean.split('/').collect();
            let lit = segs.iter().take_while(|s| !has_meta(s)).count();
            let base = segs[..lit].join("/");
            let glob = compile(&clean)?.compile_matcher();
            includes.push(Include::Glob {
                base,
                pattern: raw.clone(),
                glob,
            });
        }
        let mut ex = GlobSetBuilder::new();
        for raw in exclude.iter().filter(|p| !p.trim().is_empty()) {
            let clean = normalize(raw, root).unwrap_or_else(|| raw.clone());
            ex.add(compile(&clean)?);
        }
        let exclude = ex.build().map_err(|e| Error::InvalidPattern {
            pattern: exclude.join(", "),
            reason: e.to_string(),
        })?;
        Ok(PathSet {
            includes,
            exclude,
            untracked,
        })
    }

    /// The literal roots (`Err` for a pattern outside the project) and the exclude set,
    /// when there is no glob and no `untracked`: then [`crate::quick`] can fingerprint
    /// the selection with its own walk instead of [`PathSet::collect`].
    pub(crate) fn literal_plan(&self) -> Option<(Vec<std::result::Result<&str, &str>>, &GlobSet)> {
        if self.untracked {
            return None;
        }
        let mut roots = Vec::with_capacity(self.includes.len());
        for inc in &self.includes {
            match inc {
                Include::Literal(rel) => roots.push(Ok(rel.as_str())),
                Include::Outside(raw) => roots.push(Err(raw.as_str())),
                Include::Glob { .. } => return None,
            }
        }
        Some((roots, &self.exclude))
    }

    /// Walk `project_dir` and return every entry to archive, sorted.
    pub fn collect(&self, project_dir: &Path) -> Result<Collected> {
        let mut out: BTreeMap<String, Entry> = BTreeMap::new();
        let mut warnings = Vec::new();
        for inc in &self.includes {
            match inc {
                Include::Outside(p) => warnings.push(format!(
                    "{p}: path is not a subpath of the project directory {}; skipped",
                    project_dir.display()
                )),
                Include::Literal(rel) => {
                    let full = if rel.is_empty() {
                        project_dir.to_path_buf()
                    } else {
                        project_dir.join(rel)
                    };
                    match std::fs::symlink_metadata(&full) {
                        Ok(_) => add_tree(project_dir, rel, &mut out)?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            warnings.push(format!("{rel}: no matching files"))
                        }
                        Err(e) => return Err(io("stat", full)(e)),
                    }
                }
                Include::Glob { base, pattern, glob } => {
                    let before = out.len();
                    let start = if base.is_empty() {
                        project_dir.to_path_buf()
                    } else {
                        project_dir.join(base)
                    };
                    if start.is_dir() {
                        let mut it = walkdir::WalkDir::new(&start).follow_links(false).into_iter();
                        while let Some(item) = it.next() {
                            let item = item.map_err(|e| walk_err(&start, e))?;
                            let Some(rel) = rel_of(project_dir, item.path()) else {
                                continue;
                            };
                            if rel.is_empty() || !glob.is_match(&rel) {
                                continue;
                            }
                            if item.file_type().is_dir() {
                                add_tree(project_dir, &rel, &mut out)?;
                                it.skip_current_dir();
                            } else {
                                add_one(project_dir, rel, &mut out)?;
                            }
                        }
                    }
                    if out.len() == before {
                        warnings.push(format!("{pattern}: no matching files"));
                    }
                }
            }
        }
        if self.untracked {
            for rel in untracked_files(project_dir)? {
                add_one(project_dir, rel, &mut out)?;
            }
        }
        let files = out
            .into_values()
            .filter(|e| !self.exclude.is_match(&e.rel))
            .collect();
        Ok(Collected { files, warnings })
    }
}

fn walk_err(start: &Path, e: walkdir::Error) -> Error {
    let path = e.path().unwrap_or(start).to_path_buf();
    Error::Io {
        op: "walk",
        path,
        source: e.into(),
    }
}

fn rel_of(root: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(root).ok()?;
    let s = rel.to_str()?;
    Some(s.to_owned())
}

fn kind_of(meta: &Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    }
}

fn add_one(root: &Path, rel: String, out: &mut BTreeMap<String, Entry>) -> Result<()> {
    if out.contains_key(&rel) {
        return Ok(());
    }
    let full = root.join(&rel);
    let meta = std::fs::symlink_metadata(&full).map_err(io("stat", &full))?;
    let kind = kind_of(&meta);
    out.insert(rel.clone(), Entry { rel, kind, meta });
    Ok(())
}

/// Add `rel` and, when it is a directory (not a symlink to one), everything under it.
fn add_tree(root: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) -> Result<()> {
    let start = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    if !rel.is_empty() && !out.contains_key(rel) {
        let meta = std::fs::symlink_metadata(&start).map_err(io("stat", &start))?;
        let kind = kind_of(&meta);
        out.insert(
            rel.to_owned(),
            Entry {
                rel: rel.to_owned(),
                kind,
                meta,
            },
        );
    }
    if std::fs::symlink_metadata(&start)
        .map_err(io("stat", &start))?
        .is_dir()
    {
        add_children(&start, rel, out)?;
    }
    Ok(())
}

/// Recursive walk with `read_dir`: `DirEntry::metadata` stats relative to the open
/// directory (`fstatat`), which saves resolving every long path again; on a 20,000-file
/// Maven tree the path walk was most of an unchanged push's time.
fn add_children(dir: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) -> Result<()> {
    let mut subdirs = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io("read directory", dir))? {
        let item = item.map_err(io("read directory", dir))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!("skipping non-UTF-8 file name in {}", dir.display());
            continue;
        };
        let r = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = item.metadata().map_err(io("stat", item.path()))?;
        let kind = kind_of(&meta);
        if kind == EntryKind::Dir {
            subdirs.push((item.path(), r.clone()));
        }
        out.entry(r.clone()).or_insert(Entry { rel: r, kind, meta });
    }
    for (path, r) in subdirs {
        add_children(&path, &r, out)?;
    }
    Ok(())
}

/// Files git does not track, ignored ones included, as GitLab Runner lists them
/// (`git ls-files -o -z`).
pub fn untracked_files(project_dir: &Path) -> Result<Vec<String>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(project_dir)
        .args(["ls-files", "-o", "-z"])
        .output()
        .map_err(|e| Error::Git(format!("could not run git: {e}; install git or drop `untracked`")))?;
    if !out.status.success() {
        return Err(Error::Git(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in [
            ".m2/repository/org/a/1.0/a-1.0.jar",
            ".m2/repository/org/a/1.0/a-1.0.pom",
            ".m2/settings.xml",
            "target/classes/App.class",
            "target/app.jar",
            "target/app.o",
            "src/main.c",
            "deep/x/y/z.o",
        ] {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        std::os::unix::fs::symlink("target/app.jar", d.path().join("latest.jar")).unwrap();
        d
    }

    fn rels(set: &PathSet, d: &Path) -> Vec<String> {
        set.collect(d).unwrap().files.into_iter().map(|e| e.rel).collect()
    }

    #[test]
    fn directory_literal_takes_the_subtree() {
        let d = tree();
        let set = PathSet::new(&[".m2/repository/".into()], &[]).unwrap();
        assert_eq!(
            rels(&set, d.path()),
            [
                ".m2/repository",
                ".m2/repository/org",
                ".m2/repository/org/a",
                ".m2/repository/org/a/1.0",
                ".m2/repository/org/a/1.0/a-1.0.jar",
                ".m2/repository/org/a/1.0/a-1.0.pom"
            ]
        );
    }

    #[test]
    fn star_stays_in_segment_and_double_star_crosses() {
        let d = tree();
        let set = PathSet::new(&["*.o".into()], &[]).unwrap();
        assert!(rels(&set, d.path()).is_empty());
        let set = PathSet::new(&["**/*.o".into()], &[]).unwrap();
        assert_eq!(rels(&set, d.path()), ["deep/x/y/z.o", "target/app.o"]);
        let set = PathSet::new(&["target/*.jar".into(), "latest.jar".into()], &[]).unwrap();
        let got = set.collect(d.path()).unwrap();
        let kinds: Vec<_> = got.files.iter().map(|e| (e.rel.as_str(), e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("latest.jar", EntryKind::Symlink),
                ("target/app.jar", EntryKind::File)
            ]
        );
    }

    #[test]
    fn exclude_is_per_entry_and_not_recursive() {
        let d = tree();
        let set = PathSet::new(
            &["target".into()],
            &["target/*.o".into(), "target/classes".into()],
        )
        .unwrap();
        assert_eq!(
            rels(&set, d.path()),
            ["target", "target/app.jar", "target/classes/App.class"]
        );
        let set = PathSet::new(&["target".into()], &["target/classes/**".into()]).unwrap();
        assert_eq!(
            rels(&set, d.path()),
            ["target", "target/app.jar", "target/app.o", "target/classes"]
        );
    }

    #[test]
    fn escaping_patterns_are_skipped_with_a_warning() {
        let d = tree();
        let set = PathSet::with_untracked(
            &[
                "../outside".into(),
                "/etc/passwd".into(),
                "src/../src/main.c".into(),
            ],
            &[],
            false,
            d.path(),
        )
        .unwrap();
        let got = set.collect(d.path()).unwrap();
        assert_eq!(
            got.files.iter().map(|e| e.rel.as_str()).collect::<Vec<_>>(),
            ["src/main.c"]
        );
        assert_eq!(got.warnings.len(), 2, "{:?}", got.warnings);
        assert!(got.warnings[0].contains("not a subpath"));
        let abs = format!("{}/src/main.c", d.path().display());
        let set = PathSet::with_untracked(&[abs], &[], false, d.path()).unwrap();
        assert_eq!(rels(&set, d.path()), ["src/main.c"]);
    }

    #[test]
    fn missing_paths_warn() {
        let d = tree();
        let set = PathSet::new(&["nope".into(), "nope/**".into()], &[]).unwrap();
        let got = set.collect(d.path()).unwrap();
        assert!(got.files.is_empty());
        assert_eq!(got.warnings.len(), 2);
    }

    #[test]
    fn untracked_uses_git() {
        if Command::new("git").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "git is required in CI");
            eprintln!("SKIPPED: git is not installed");
            return;
        }
        let d = tree();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(d.path())
                .args(args)
                .output()
                .unwrap();
            assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        };
        git(&["init", "-q"]);
        git(&["add", "src/main.c", ".m2", "target", "deep"]);
        let set = PathSet::with_untracked(&[], &[], true, d.path()).unwrap();
        assert_eq!(rels(&set, d.path()), ["latest.jar"]);
    }
}
