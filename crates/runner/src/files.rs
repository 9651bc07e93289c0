//! The CLI's [`FileSource`]: project files from a directory, `remote:` over HTTPS, and
//! user mappings for `project:`, `template:` and `component:` includes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use podci_model::source::{FetchError, FileSource, component_name, component_project};

/// Reads includes for one project directory.
#[derive(Debug, Default)]
pub struct DirSource {
    /// The project's root directory (local includes are relative to it).
    pub root: PathBuf,
    /// `group/project` -> local checkout.
    pub projects: BTreeMap<String, PathBuf>,
    /// `host/group/project` -> local checkout of a component project.
    pub components: BTreeMap<String, PathBuf>,
    /// A copy of GitLab's `lib/gitlab/ci/templates`.
    pub templates: Option<PathBuf>,
    /// URL -> local file, used instead of fetching.
    pub remotes: BTreeMap<String, PathBuf>,
    /// Never fetch over the network.
    pub offline: bool,
}

/// Joins `rel` under `base`, refusing paths that climb out of it.
fn contained(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::Prefix(_) | Component::RootDir
        )
    }) {
        return None;
    }
    Some(base.join(rel))
}

fn read(path: Option<PathBuf>) -> Result<String, FetchError> {
    let Some(path) = path else {
        return Err(FetchError::NotFound);
    };
    match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| FetchError::Failed(format!("{} is not UTF-8", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FetchError::NotFound),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Err(FetchError::NotFound),
        Err(e) => Err(FetchError::Failed(format!("{}: {e}", path.display()))),
    }
}

impl FileSource for DirSource {
    fn local(&self, path: &str) -> Result<String, FetchError> {
        read(contained(&self.root, path))
    }

    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        let mut out = Vec::new();
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

    fn remote(&self, url: &str) -> Result<String, FetchError> {
        if let Some(p) = self.remotes.get(url) {
            return read(Some(p.clone()));
        }
        if self.offline {
            return Err(FetchError::Unavailable {
                hint: format!("--offline is set; map the URL to a file with --remote {url}=FILE"),
            });
        }
        fetch_https(url)
    }

    fn project(&self, project: &str, reference: Option<&str>, file: &str) -> Result<String, FetchError> {
        let _ = reference;
        match self.projects.get(project) {
            Some(dir) => read(contained(dir, file)),
            None => Err(FetchError::Unavailable {
                hint: format!(
                    "project includes need a GitLab server; map the project to a local checkout with \
                     --project {project}=DIR"
                ),
            }),
        }
    }

    fn template(&self, name: &str) -> Result<String, FetchError> {
        match &self.templates {
            Some(dir) => read(contained(dir, name)),
            None => Err(FetchError::Unavailable {
                hint: "GitLab templates are not bundled with podci; point --templates DIR at a copy of \
                       GitLab's lib/gitlab/ci/templates"
                    .into(),
            }),
        }
    }

    fn component(&self, address: &str) -> Result<String, FetchError> {
        let project = component_project(address).unwrap_or(address);
        let Some(dir) = self.components.get(project) else {
            return Err(FetchError::Unavailable {
                hint: format!(
                    "CI/CD components need a GitLab server; map the component project to a local \
                     checkout with --component {project}=DIR"
                ),
            });
        };
        let name = component_name(address).unwrap_or_default();
        // GitLab looks for templates/<name>.yml, then templates/<name>/template.yml.
        read(contained(dir, &format!("templates/{name}.yml")))
            .or_else(|_| read(contained(dir, &format!("templates/{name}/template.yml"))))
    }
}

fn fetch_https(url: &str) -> Result<String, FetchError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| FetchError::Failed(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .map_err(|e| FetchError::Failed(format!("{e}")))?;
    let status = resp.status();
    if status.as_u16() == 404 {
        return Err(FetchError::NotFound);
    }
    if !status.is_success() {
        return Err(FetchError::Failed(format!("HTTP code `{}`", status.as_u16())));
    }
    resp.text().map_err(|e| FetchError::Failed(e.to_string()))
}

/// Parses `KEY=PATH` option values.
pub fn parse_mapping(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => {
            Ok((k.trim_end_matches('/').to_string(), PathBuf::from(v)))
        }
        _ => Err(format!("expected NAME=PATH, got `{s}`")),
    }
}
