//! Where included files come from.
//!
//! podci-model does no I/O: the caller implements [`FileSource`]. The CLI reads local files
//! from the repository and fetches `remote:` over HTTPS; tests and the browser previewer
//! use [`MemorySource`]. Forms that need a GitLab server (`project:`, `template:`,
//! `component:`) resolve only when the caller maps them to a local directory; otherwise
//! the error names the option that does.

use std::collections::BTreeMap;

/// Why a file could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The file does not exist where it was looked for.
    #[error("not found")]
    NotFound,
    /// This source cannot resolve that kind of include offline; `hint` says how to map it.
    #[error("{hint}")]
    Unavailable {
        /// What the user can do about it.
        hint: String,
    },
    /// Reading or fetching failed.
    #[error("{0}")]
    Failed(String),
}

/// Supplies the content of included files.
pub trait FileSource {
    /// A file of the project, by its path relative to the repository root (no leading `/`).
    fn local(&self, path: &str) -> Result<String, FetchError>;

    /// All file paths of the project (relative, `/`-separated), for `*`/`**` includes.
    fn local_files(&self) -> Result<Vec<String>, FetchError>;

    /// `include: remote:` (an `http(s)://` URL).
    fn remote(&self, url: &str) -> Result<String, FetchError> {
        let _ = url;
        Err(FetchError::Unavailable {
            hint: "remote includes are not fetched by this source; run podci with network access \
                   (without --offline) or map the URL to a file with --remote URL=FILE"
                .into(),
        })
    }

    /// `include: project:` with `file:` and optional `ref:`.
    fn project(&self, project: &str, reference: Option<&str>, file: &str) -> Result<String, FetchError> {
        let _ = (reference, file);
        Err(FetchError::Unavailable {
            hint: format!(
                "project includes need a GitLab server; map the project to a local checkout with \
                 --project {project}=DIR"
            ),
        })
    }

    /// `include: template:` (GitLab's bundled templates).
    fn template(&self, name: &str) -> Result<String, FetchError> {
        let _ = name;
        Err(FetchError::Unavailable {
            hint: "GitLab templates are not bundled with podci; point --templates DIR at a copy of \
                   GitLab's lib/gitlab/ci/templates"
                .into(),
        })
    }

    /// `include: component:` (`host/group/project/name@version`).
    fn component(&self, address: &str) -> Result<String, FetchError> {
        let project = component_project(address).unwrap_or(address);
        Err(FetchError::Unavailable {
            hint: format!(
                "CI/CD components need a GitLab server; map the component project to a local \
                 checkout with --component {project}=DIR"
            ),
        })
    }
}

/// `host/group/project` of a component address `host/group/project/name@version`.
pub fn component_project(address: &str) -> Option<&str> {
    let path = address.split('@').next()?;
    let (project, _name) = path.rsplit_once('/')?;
    Some(project)
}

/// The component name of `host/group/project/name@version`.
pub fn component_name(address: &str) -> Option<&str> {
    let path = address.split('@').next()?;
    Some(path.rsplit_once('/')?.1)
}

/// Files held in memory: the project's files, plus optional mappings for the other forms.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    /// Project files by path relative to the root.
    pub files: BTreeMap<String, String>,
    /// `remote:` URLs to content.
    pub remotes: BTreeMap<String, String>,
    /// `(project, file)` to content (ref ignored).
    pub projects: BTreeMap<(String, String), String>,
    /// Template name to content.
    pub templates: BTreeMap<String, String>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a project file.
    pub fn with_file(mut self, path: &str, content: &str) -> Self {
        self.files
            .insert(path.trim_start_matches('/').to_string(), content.to_string());
        self
    }
}

impl FileSource for MemorySource {
    fn local(&self, path: &str) -> Result<String, FetchError> {
        self.files
            .get(path.trim_start_matches('/'))
            .cloned()
            .ok_or(FetchError::NotFound)
    }

    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        Ok(self.files.keys().cloned().collect())
    }

    fn remote(&self, url: &str) -> Result<String, FetchError> {
        match self.remotes.get(url) {
            Some(c) => Ok(c.clone()),
            None if self.remotes.is_empty() => Err(FetchError::Unavailable {
                hint: "remote includes are not available in memory; add the file's content to the source"
                    .into(),
            }),
            None => Err(FetchError::NotFound),
        }
    }

    fn project(&self, project: &str, _reference: Option<&str>, file: &str) -> Result<String, FetchError> {
        let key = (project.to_string(), file.trim_start_matches('/').to_string());
        self.projects.get(&key).cloned().ok_or(FetchError::NotFound)
    }

    fn template(&self, name: &str) -> Result<String, FetchError> {
        self.templates.get(name).cloned().ok_or(FetchError::NotFound)
    }
}

/// A source with no files at all (a pipeline without includes).
pub struct NoFiles;

impl FileSource for NoFiles {
    fn local(&self, _path: &str) -> Result<String, FetchError> {
        Err(FetchError::NotFound)
    }

    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        Ok(Vec::new())
    }
}
