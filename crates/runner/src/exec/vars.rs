//! User variables of a local pipeline: the user's file (`<config dir>/podci/variables.yml`,
//! like group variables), the project's file (`.podci/variables.yml`, like project
//! variables) and `--variable KEY=VALUE` (like variables of a manually run pipeline);
//! later sources win.
//!
//! A file is a YAML mapping of names to either a value or GitLab's flags:
//!
//! ```yaml
//! DEPLOY_ENV: staging
//! DEPLOY_TOKEN: {value: "s3cr3t-t0ken", masked: true, protected: false}
//! KUBECONFIG: {value: "apiVersion: v1 ...", file: true}
//! ```

use std::path::{Path, PathBuf};

use podci_model::eval::{Variable, VariableLevel};
use podci_model::yaml::{self, Value};

/// A problem with a variables file or option.
#[derive(Debug, thiserror::Error)]
pub enum VarsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not the expected YAML.
    #[error(
        "{path}: {message}; expected a mapping of NAME: value or NAME: {{value: ..., masked: true, file: false, protected: false, raw: false}}"
    )]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `--variable` without `=`.
    #[error("--variable {0:?}: use KEY=VALUE")]
    Option(String),
}

/// The user's variables file: `$XDG_CONFIG_HOME/podci/variables.yml` or
/// `~/.config/podci/variables.yml`.
pub fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("podci").join("variables.yml"))
}

/// Reads one variables file; a missing file is no variables.
pub fn read_file(path: &Path, level: VariableLevel) -> Result<Vec<Variable>, VarsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(VarsError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse(&text, level).map_err(|message| VarsError::Format {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses the text of a variables file.
pub fn parse(text: &str, level: VariableLevel) -> Result<Vec<Variable>, String> {
    let docs = yaml::load_documents(text, 0, yaml::Limits::default()).map_err(|e| e.to_string())?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok(Vec::new());
    };
    if doc.is_null() {
        return Ok(Vec::new());
    }
    let map = doc
        .as_map()
        .ok_or_else(|| format!("the file is a {}, not a mapping", doc.kind_name()))?;
    let mut out = Vec::new();
    for (key, node) in map.iter() {
        let mut v = Variable::plain(key, "", level);
        // Variables given to a pipeline are not in .gitlab-ci.yml: GitLab treats them as
        // not public, so they never reach places others can read.
        v.public = false;
        match &node.value {
            Value::Map(m) => {
                v.value = m
                    .get("value")
                    .and_then(|n| n.scalar_to_string())
                    .ok_or_else(|| format!("variable {key}: `value` is missing"))?;
                let flag = |name: &str| m.get(name).and_then(|n| n.as_bool()).unwrap_or(false);
                v.masked = flag("masked");
                v.protected = flag("protected");
                v.file = flag("file");
                v.raw = flag("raw");
            }
            _ => {
                v.value = node
                    .scalar_to_string()
                    .ok_or_else(|| format!("variable {key}: the value is a {}", node.kind_name()))?;
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// `--variable KEY=VALUE`.
pub fn parse_option(s: &str) -> Result<Variable, VarsError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| VarsError::Option(s.to_string()))?;
    if k.is_empty() {
        return Err(VarsError::Option(s.to_string()));
    }
    let mut var = Variable::plain(k, v, VariableLevel::Pipeline);
    var.public = false;
    Ok(var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flags_are_read() {
        let v = parse(
            "A: 1\nB: {value: s3cr3t-value, masked: true, protected: true}\nC: {value: x, file: true}\n",
            VariableLevel::Project,
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].key.as_str(), v[0].value.as_str()), ("A", "1"));
        assert!(v[1].masked && v[1].protected && !v[1].file);
        assert!(v[2].file && !v[2].masked);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(parse("- a\n- b\n", VariableLevel::Project).is_err());
        assert!(parse("A: {masked: true}\n", VariableLevel::Project).is_err());
        assert!(parse("A: [1, 2]\n", VariableLevel::Project).is_err());
        assert!(parse("", VariableLevel::Project).unwrap().is_empty());
    }

    #[test]
    fn option_needs_equals() {
        assert!(parse_option("NOPE").is_err());
        assert!(parse_option("=x").is_err());
        let v = parse_option("K=a=b").unwrap();
        assert_eq!((v.key.as_str(), v.value.as_str()), ("K", "a=b"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s, VariableLevel::Project);
        }

        #[test]
        fn plain_values_round_trip(key in "[A-Z_][A-Z0-9_]{0,12}", value in "[a-zA-Z0-9 ._/-]{0,30}") {
            let text = format!("{key}: {}\n", serde_json::to_string(&value).unwrap());
            let v = parse(&text, VariableLevel::Project).unwrap();
            prop_assert_eq!(v.len(), 1);
            prop_assert_eq!(&v[0].value, &value);
        }
    }
}
