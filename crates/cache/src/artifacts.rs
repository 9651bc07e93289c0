//! Job artifacts: archive a job's `artifacts:paths` (with `exclude`, `untracked`,
//! `when`, `expire_in`), keep its reports, and hand both to the jobs that depend on it.
//!
//! A job's artifacts are one archive blob plus one blob per report file, described by
//! the manifest `artifacts/<job id>.json`. `reports:dotenv` files are parsed with
//! GitLab's rules at upload time, so a dependent job gets their variables without
//! downloading anything else.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::archive::Format;
use crate::cache::{Cache, PushResult, Selection, blob_path};
use crate::error::{Error, Result};
use crate::key::When;
use crate::store::{Store, now_secs};

/// GitLab's default `dotenv_size` plan limit, in bytes.
pub const DOTENV_MAX_BYTES: usize = 5 * 1024;
/// GitLab's default `dotenv_variables` plan limit.
pub const DOTENV_MAX_VARIABLES: usize = 20;

/// A job's `artifacts:` as the runner receives it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArtifactSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub untracked: bool,
    #[serde(default)]
    pub when: When,
    /// GitLab duration text (`1 week`, `3 hrs 30 min`, `never`); `None` keeps them.
    #[serde(default)]
    pub expire_in: Option<String>,
    /// `reports:` type (`dotenv`, `junit`, ...) -> paths.
    #[serde(default)]
    pub reports: BTreeMap<String, Vec<String>>,
}

/// One stored report file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFile {
    pub report_type: String,
    pub path: String,
    pub digest: String,
    pub size: u64,
}

/// What is stored for one job's artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactManifest {
    pub job_id: u64,
    pub name: String,
    /// The archive of `paths`; `None` when no path matched.
    pub archive: Option<String>,
    pub format: Format,
    pub when: When,
    pub expire_in: Option<String>,
    /// Seconds since the epoch; `None` never expires.
    pub expires_at: Option<u64>,
    pub created: u64,
    /// Variables from `reports:dotenv`, in file order (later duplicates win).
    pub dotenv: Vec<(String, String)>,
    pub reports: Vec<ReportFile>,
}

impl ArtifactManifest {
    /// Every blob this manifest keeps alive.
    pub fn digests(&self) -> Vec<String> {
        self.archive
            .iter()
            .cloned()
            .chain(self.reports.iter().map(|r| r.digest.clone()))
            .collect()
    }
}

pub(crate) fn manifest_path(job_id: u64) -> String {
    format!("artifacts/{job_id}.json")
}

pub(crate) async fn list_manifests(store: &Store) -> Result<Vec<ArtifactManifest>> {
    let mut out = Vec::new();
    for obj in store.list("artifacts").await? {
        let Some(data) = store.get_small(&obj.path).await? else {
            continue;
        };
        match serde_json::from_slice(&data) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!("skipping unreadable artifact manifest {}: {e}", obj.path),
        }
    }
    Ok(out)
}

/// Parse GitLab's `expire_in`: a number and unit, repeated (`1 week`, `2 days 4 hrs`,
/// `30 mins`, `3600` = seconds). `never` -> `Ok(None)`.
pub fn parse_expire_in(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "never" {
        return Ok(None);
    }
    let mut total: u64 = 0;
    let mut rest = t.as_str();
    let mut any = false;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .count();
        if digits == 0 {
            return Err(format!("{s:?}: expected a number at {rest:?}"));
        }
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: bad number {:?}", &rest[..digits]))?;
        rest = rest[digits..].trim_start();
        let ulen = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..ulen];
        rest = rest[ulen..].trim_start_matches([',', ' ']);
        let secs = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
            "mo" | "mos" | "month" | "months" => 2_592_000.0,
            "y" | "yr" | "yrs" | "year" | "years" => 31_536_000.0,
            other => return Err(format!("{s:?}: unknown unit {other:?}")),
        };
        total = total.saturating_add((n * secs) as u64);
        rest = rest.strip_prefix("and").unwrap_or(rest);
        any = true;
    }
    if !any {
        return Err(format!("{s:?}: empty duration"));
    }
    Ok(Some(total))
}

/// Parse a `reports:dotenv` file with GitLab's rules: a UTF-8 BOM is dropped, every line
/// must be `KEY=VALUE` (split at the first `=`, both sides trimmed), at most
/// [`DOTENV_MAX_VARIABLES`] distinct keys and [`DOTENV_MAX_BYTES`] bytes.
pub fn parse_dotenv(file: &str, content: &[u8]) -> Result<Vec<(String, String)>> {
    let err = |line: usize, reason: String| Error::Dotenv {
        file: file.to_owned(),
        line,
        reason,
    };
    if content.len() >= DOTENV_MAX_BYTES {
        return Err(err(
            0,
            format!(
                "file is {} bytes; GitLab accepts less than {DOTENV_MAX_BYTES}",
                content.len()
            ),
        ));
    }
    let text = String::from_utf8_lossy(content);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut vars: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.split_once('=') else {
            return Err(err(i + 1, "invalid format: expected KEY=VALUE".into()));
        };
        let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(i + 1, format!("invalid variable name {k:?}")));
        }
        if let Some(slot) = vars.iter_mut().find(|(ek, _)| *ek == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    }
    if vars.len() > DOTENV_MAX_VARIABLES {
        return Err(err(
            0,
            format!(
                "{} variables; GitLab accepts at most {DOTENV_MAX_VARIABLES}",
                vars.len()
            ),
        ));
    }
    Ok(vars)
}

/// Artifacts in a store.
#[derive(Debug, Clone)]
pub struct Artifacts {
    cache: Cache,
}

impl Artifacts {
    pub fn new(store: Store) -> Self {
        Artifacts {
            cache: Cache::new(store),
        }
    }

    fn store(&self) -> &Store {
        self.cache.store()
    }

    /// Store job `job_id`'s artifacts; `Ok(None)` when `when` does not match the result.
    pub async fn upload(
        &self,
        job_id: u64,
        spec: &ArtifactSpec,
        project_dir: &Path,
        job_succeeded: bool,
    ) -> Result<Option<(ArtifactManifest, Vec<String>)>> {
        if !spec.when.matches(job_succeeded) {
            return Ok(None);
        }
        let expires_at = match &spec.expire_in {
            None => None,
            Some(text) => parse_expire_in(text)
                .map_err(|reason| Error::Config(format!("artifacts:expire_in {reason}")))?
                .map(|s| now_secs().saturating_add(s)),
        };
        // The archive goes through the cache machinery under a per-job key, which gives
        // content addressing; the key pointer itself is dropped afterwards.
        let mut warnings = Vec::new();
        let mut archive = None;
        if !spec.paths.is_empty() || spec.untracked {
            let sel = Selection {
                paths: spec.paths.clone(),
                exclude: spec.exclude.clone(),
                untracked: spec.untracked,
            };
            let tmp_key = format!("artifacts-upload/{job_id}");
            let rep = self.cache.push(&tmp_key, &sel, project_dir).await?;
            warnings = rep.warnings;
            archive = match rep.result {
                PushResult::Stored { digest, .. } | PushResult::Unchanged { digest } => Some(digest),
                PushResult::NothingToCache => None,
            };
            self.store()
                .delete(&format!("keys/{}.json", crate::cache::encode_key(&rep.key)))
                .await?;
        }
        let mut dotenv = Vec::new();
        let mut reports = Vec::new();
        for (ty, paths) in &spec.reports {
            let set = crate::paths::PathSet::with_untracked(paths, &[], false, project_dir)?;
            let found = set.collect(project_dir)?;
            warnings.extend(found.warnings);
            for e in found
                .files
                .iter()
                .filter(|e| e.kind == crate::paths::EntryKind::File)
            {
                let full = project_dir.join(&e.rel);
                let data = std::fs::read(&full).map_err(crate::error::io("read report", &full))?;
                if ty == "dotenv" {
                    for (k, v) in parse_dotenv(&e.rel, &data)? {
                        if let Some(slot) = dotenv.iter_mut().find(|(ek, _): &&mut (String, String)| *ek == k)
                        {
                            slot.1 = v;
                        } else {
                            dotenv.push((k, v));
                        }
                    }
                }
                let digest = format!("blake3:{}", blake3::hash(&data).to_hex());
                let size = data.len() as u64;
                if !self.store().exists(&blob_path(&digest)).await? {
                    self.store().put_small(&blob_path(&digest), data).await?;
                }
                reports.push(ReportFile {
                    report_type: ty.clone(),
                    path: e.rel.clone(),
                    digest,
                    size,
                });
            }
        }
        let manifest = ArtifactManifest {
            job_id,
            name: spec.name.clone(),
            archive,
            format: Format::TarZstd,
            when: spec.when,
            expire_in: spec.expire_in.clone(),
            expires_at,
            created: now_secs(),
            dotenv,
            reports,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Metadata {
            path: manifest_path(job_id),
            source: e,
        })?;
        self.store().put_small(&manifest_path(job_id), json).await?;
        Ok(Some((manifest, warnings)))
    }

    /// The manifest of job `job_id`, if its artifacts exist and have not expired.
    pub async fn manifest(&self, job_id: u64) -> Result<Option<ArtifactManifest>> {
        let path = manifest_path(job_id);
        let Some(data) = self.store().get_small(&path).await? else {
            return Ok(None);
        };
        let m: ArtifactManifest =
            serde_json::from_slice(&data).map_err(|e| Error::Metadata { path, source: e })?;
        if m.expires_at.is_some_and(|t| t <= now_secs()) {
            return Ok(None);
        }
        Ok(Some(m))
    }

    /// Restore the artifacts of `job_ids` (a job's dependencies, in order) into
    /// `project_dir` and return their dotenv variables (later jobs win). Unlike a cache
    /// miss, missing or damaged artifacts fail: the job depends on them.
    pub async fn download(&self, job_ids: &[u64], project_dir: &Path) -> Result<Vec<(String, String)>> {
        let mut vars: Vec<(String, String)> = Vec::new();
        for &id in job_ids {
            let m = self
                .manifest(id)
                .await?
                .ok_or_else(|| Error::Corrupt(format!("artifacts of job {id} are missing or expired")))?;
            if let Some(digest) = &m.archive {
                let fetched = self.store().fetch(&blob_path(digest)).await?.ok_or_else(|| {
                    Error::Corrupt(format!("artifact archive {digest} of job {id} is missing"))
                })?;
                let (path, dir, d) = (
                    fetched.path().to_path_buf(),
                    project_dir.to_path_buf(),
                    digest.clone(),
                );
                tokio::task::spawn_blocking(move || crate::cache::extract_file(&path, &dir, Some(&d)))
                    .await
                    .map_err(|e| Error::Config(format!("extract task failed: {e}")))??;
            }
            for (k, v) in m.dotenv {
                if let Some(slot) = vars.iter_mut().find(|(ek, _)| *ek == k) {
                    slot.1 = v;
                } else {
                    vars.push((k, v));
                }
            }
        }
        Ok(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expire_in_forms() {
        assert_eq!(parse_expire_in("never").unwrap(), None);
        assert_eq!(parse_expire_in("42").unwrap(), Some(42));
        assert_eq!(parse_expire_in("1 week").unwrap(), Some(604_800));
        assert_eq!(
            parse_expire_in("2 days 4 hrs").unwrap(),
            Some(2 * 86_400 + 4 * 3600)
        );
        assert_eq!(
            parse_expire_in("3 hrs and 30 mins").unwrap(),
            Some(3 * 3600 + 1800)
        );
        assert_eq!(parse_expire_in("1 month").unwrap(), Some(2_592_000));
        assert_eq!(parse_expire_in("1.5 hours").unwrap(), Some(5400));
        assert!(parse_expire_in("soon").is_err());
        assert!(parse_expire_in("3 fortnights").is_err());
        assert!(parse_expire_in("").is_err());
    }

    #[test]
    fn dotenv_rules() {
        let v = parse_dotenv("b.env", b"\xEF\xBB\xBFA=1\nB = two words \nA=3\nC=x=y\nD=\n").unwrap();
        assert_eq!(
            v,
            [
                ("A".into(), "3".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into()),
                ("D".into(), "".into())
            ]
        );
        let e = parse_dotenv("b.env", b"A=1\n\nB=2\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse_dotenv("b.env", b"export A=1\n").is_err());
        let many: String = (0..21).map(|i| format!("V{i}=x\n")).collect();
        assert!(
            parse_dotenv("b.env", many.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("at most 20")
        );
        assert!(parse_dotenv("b.env", &vec![b'a'; 6000]).is_err());
    }

    proptest! {
        #[test]
        fn dotenv_never_panics(s in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_dotenv("x", &s);
        }

        #[test]
        fn dotenv_round_trips(pairs in proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,8}", "[a-z0-9 =]{0,10}", 0..15)) {
            let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let got = parse_dotenv("x", text.as_bytes()).unwrap();
            let want: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.clone(), v.trim().to_owned())).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn expire_in_sums_units(d in 0u64..100, h in 0u64..100) {
            prop_assert_eq!(parse_expire_in(&format!("{d} days {h} hours")).unwrap(), Some(d * 86_400 + h * 3600));
        }
    }
}
