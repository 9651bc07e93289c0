//! The [`FileSource`] behind `podci.load(..., include_dir=...)`: `include:local` files
//! from one project directory. The CLI has a richer one (remote fetches, project and
//! component mappings) in the runner binary, which a library cannot depend on; until it
//! moves into a shared crate, other include forms report podci-model's own hints.

use std::path::{Component, Path, PathBuf};

use podci_model::source::{FetchError, FileSource};

/// Project files under `root`.
#[derive(Debug, Clone)]
pub struct DirSource {
    /// The repository root that `include:local` paths are relative to.
    pub root: PathBuf,
}

/// `rel` under `base`, or `None` when it would climb out of it.
fn contained(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel.trim_start_matches('/'));
    let escapes = rel.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::Prefix(_) | Component::RootDir
        )
    });
    (!escapes).then(|| base.join(rel))
}

impl FileSource for DirSource {
    fn local(&self, path: &str) -> Result<String, FetchError> {
        let Some(full) = contained(&self.root, path) else {
            return Err(FetchError::NotFound);
        };
        match std::fs::read(&full) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| FetchError::Failed(format!("{} is not UTF-8", full.display()))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Err(FetchError::NotFound)
            }
            Err(e) => Err(FetchError::Failed(format!("{}: {e}", full.display()))),
        }
    }

    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        let mut out = Vec::new();
        // Skip directories that are never part of a project's tracked files but can be huge.
        let walker = walkdir::WalkDir::new(&self.root).into_iter().filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            !(e.depth() > 0
                && e.file_type().is_dir()
                && (n == ".git" || n == "target" || n == "node_modules"))
        });
        for entry in walker {
            let entry = entry.map_err(|e| FetchError::Failed(e.to_string()))?;
            if entry.file_type().is_file()
                && let Ok(rel) = entry.path().strip_prefix(&self.root)
            {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        out.sort();
        Ok(out)
    }
}
