//! Reading manifests: files (YAML multi-document or JSON, `List` objects flattened),
//! directories of them (sorted, not recursive, as `kubectl apply -f DIR`), and
//! kustomization directories, which are rendered by `kubectl kustomize DIR` so that every
//! kustomize feature works exactly as users know it (no partial re-implementation).

use super::DeployError;
use podci_model::yaml::{Limits, load_documents};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One object read from a manifest source.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file it came from, or `DIR (kustomize)`.
    pub source: String,
    /// 1-based document index within the source.
    pub document: usize,
    pub object: Value,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or("")
    }
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }
}

const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Read every path in order.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<Manifest>, DeployError> {
    if paths.is_empty() {
        return Err(DeployError::NoPaths);
    }
    let mut out = Vec::new();
    for p in paths {
        read_path(p, &mut out)?;
    }
    Ok(out)
}

fn read_path(path: &Path, out: &mut Vec<Manifest>) -> Result<(), DeployError> {
    let meta = std::fs::metadata(path).map_err(|source| DeployError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        let text = std::fs::read_to_string(path).map_err(|source| DeployError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        out.extend(parse_manifests(&text, path)?);
        return Ok(());
    }
    if KUSTOMIZATION_FILES.iter().any(|f| path.join(f).is_file()) {
        let text = kustomize(path)?;
        let label = PathBuf::from(format!("{} (kustomize)", path.display()));
        out.extend(parse_manifests(&text, &label)?);
        return Ok(());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| DeployError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DeployError::EmptyDir {
            path: path.to_path_buf(),
        });
    }
    for f in files {
        read_path(&f, out)?;
    }
    Ok(())
}

fn kustomize(dir: &Path) -> Result<String, DeployError> {
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DeployError::Kustomize {
            dir: dir.to_path_buf(),
            message: format!("cannot run kubectl ({e}); install kubectl to deploy kustomizations"),
        })?;
    if !output.status.success() {
        return Err(DeployError::Kustomize {
            dir: dir.to_path_buf(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| DeployError::Kustomize {
        dir: dir.to_path_buf(),
        message: "its output is not UTF-8".into(),
    })
}

/// Parse one source's text (YAML documents or JSON) into objects; `path` names it in
/// errors. Empty documents are skipped; `kind: List` (or `*List`) objects are flattened.
pub fn parse_manifests(text: &str, path: &Path) -> Result<Vec<Manifest>, DeployError> {
    let limits = Limits {
        max_size: 64 << 20,
        max_depth: 200,
    };
    let perr = |document: usize, message: String| DeployError::Parse {
        path: path.to_path_buf(),
        document,
        message,
    };
    let docs: Vec<Value> = load_documents(text, 0, limits)
        .map_err(|e| {
            let at = e
                .position()
                .map(|(l, c)| format!(" at line {l} column {c}"))
                .unwrap_or_default();
            perr(1, format!("not valid YAML or JSON{at}: {e}"))
        })?
        .iter()
        .map(|n| n.to_json())
        .collect();
    let source = path.display().to_string();
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let document = i + 1;
        if doc.is_null() {
            continue;
        }
        if !doc.is_object() {
            return Err(perr(
                document,
                "a manifest must be a mapping with apiVersion, kind and metadata".into(),
            ));
        }
        let is_list = doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) && doc["items"].is_array();
        let items = if is_list {
            doc["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![doc]
        };
        for object in items {
            check_object(&object).map_err(|m| perr(document, m))?;
            out.push(Manifest {
                source: source.clone(),
                document,
                object,
            });
        }
    }
    Ok(out)
}

fn check_object(o: &Value) -> Result<(), String> {
    if !o.is_object() {
        return Err("a manifest must be a mapping with apiVersion, kind and metadata".into());
    }
    let field = |k: &str| o[k].as_str().filter(|s| !s.is_empty());
    if field("apiVersion").is_none() {
        return Err("apiVersion is missing".into());
    }
    let Some(kind) = field("kind") else {
        return Err("kind is missing".into());
    };
    match o["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() => Ok(()),
        _ => Err(format!(
            "{kind} has no metadata.name (server-side apply needs a name; generateName is not enough)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn multi_document_yaml_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n- {apiVersion: v1, kind: Service, metadata: {name: c}}\n";
        let m = parse_manifests(text, Path::new("x.yaml")).unwrap();
        let names: Vec<_> = m
            .iter()
            .map(|m| (m.kind().to_string(), m.name().to_string(), m.document))
            .collect();
        assert_eq!(
            names,
            [
                ("ConfigMap".into(), "a".into(), 1),
                ("Secret".into(), "b".into(), 3),
                ("Service".into(), "c".into(), 3)
            ]
        );
    }

    #[test]
    fn json_and_errors_name_the_document() {
        let m = parse_manifests(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}"#,
            Path::new("x.json"),
        )
        .unwrap();
        assert_eq!(m[0].name(), "j");
        let e = parse_manifests("kind: ConfigMap\nmetadata: {name: a}\n", Path::new("bad.yaml")).unwrap_err();
        assert_eq!(e.to_string(), "bad.yaml: document 1: apiVersion is missing");
        let e = parse_manifests(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {generateName: x-}\n",
            Path::new("g.yaml"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("g.yaml: document 2: Pod has no metadata.name"),
            "{e}"
        );
        let e = parse_manifests("key: [unclosed\n", Path::new("s.yaml")).unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
    }

    proptest! {
        /// Arbitrary text never panics the reader: it parses or gives an error.
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_manifests(&text, Path::new("p.yaml"));
        }

        /// Any set of named ConfigMaps written as documents reads back in order.
        #[test]
        fn documents_round_trip(names in proptest::collection::vec("[a-z][a-z0-9-]{0,20}[a-z0-9]", 1..6)) {
            let text: Vec<String> = names.iter().map(|n| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n")).collect();
            let m = parse_manifests(&text.join("---\n"), Path::new("p.yaml")).unwrap();
            let got: Vec<&str> = m.iter().map(|m| m.name()).collect();
            prop_assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
