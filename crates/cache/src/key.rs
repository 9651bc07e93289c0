//! Cache keys as GitLab computes them, and the cache specification a job carries.
//!
//! Two halves of GitLab do this work: the server turns `cache:key` (a string, or
//! `files` + `prefix`) into a string, adds the `-protected`/`-non_protected` suffix and
//! sends it in the job payload; the runner then expands variables in it, falls back to
//! `$CI_JOB_NAME/$CI_COMMIT_REF_NAME` when it is empty, and sanitizes it. This module does
//! both halves so that a local pipeline (no GitLab server) gets the same keys.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::error::{Error, Result, io};

/// At most this many `key:files` entries: GitLab refuses more.
pub const MAX_KEY_FILES: usize = 2;
/// At most this many `fallback_keys`: GitLab refuses more.
pub const MAX_FALLBACK_KEYS: usize = 5;

/// `cache:policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Restore only.
    Pull,
    /// Save only.
    Push,
    /// Restore before the job, save after it (GitLab's default).
    #[default]
    PullPush,
}

impl Policy {
    /// Whether the job restores the cache before its script.
    pub fn pulls(self) -> bool {
        matches!(self, Policy::Pull | Policy::PullPush)
    }
    /// Whether the job saves the cache after its script.
    pub fn pushes(self) -> bool {
        matches!(self, Policy::Push | Policy::PullPush)
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pull" => Ok(Policy::Pull),
            "push" => Ok(Policy::Push),
            "pull-push" | "" => Ok(Policy::PullPush),
            other => Err(format!(
                "unknown cache policy {other:?}; use pull, push or pull-push"
            )),
        }
    }
}

/// `cache:when` / `artifacts:when`: which job results save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only when the job succeeded (GitLab's default).
    #[default]
    OnSuccess,
    /// Only when the job failed.
    OnFailure,
    /// Whatever the result.
    Always,
}

impl When {
    /// Whether a job that ended with `succeeded` saves.
    pub fn matches(self, succeeded: bool) -> bool {
        match self {
            When::OnSuccess => succeeded,
            When::OnFailure => !succeeded,
            When::Always => true,
        }
    }
}

impl std::str::FromStr for When {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on_success" | "" => Ok(When::OnSuccess),
            "on_failure" => Ok(When::OnFailure),
            "always" => Ok(When::Always),
            other => Err(format!(
                "unknown `when` {other:?}; use on_success, on_failure or always"
            )),
        }
    }
}

/// One entry of a job's `cache` as the runner receives it (payload `cache[]`), with the
/// key already computed by the server (or by [`server_key`] for local pipelines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CacheSpec {
    /// The key before variable expansion; empty means the runner's default.
    #[serde(default)]
    pub key: String,
    /// Keys tried in order when `key` has no cache.
    #[serde(default)]
    pub fallback_keys: Vec<String>,
    /// Glob patterns relative to the project directory.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Also cache every file git does not track.
    #[serde(default)]
    pub untracked: bool,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub when: When,
}

/// What the runner knows about the job when it turns a [`CacheSpec`] into store keys.
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    /// Job variables, used for `$VAR` expansion in keys.
    pub variables: HashMap<String, String>,
    /// `CI_JOB_NAME`, for the default key.
    pub job_name: String,
    /// `CI_COMMIT_REF_NAME`, for the default key.
    pub ref_name: String,
}

impl JobContext {
    fn get(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }
}

/// The keys a runner tries, in order: the key, then each fallback key, then the
/// `CACHE_FALLBACK_KEY` variable, all expanded and sanitized. Keys that do not survive
/// sanitizing are dropped from the fallbacks with a warning, but refuse the main key.
pub fn runner_keys(spec: &CacheSpec, ctx: &JobContext) -> Result<Vec<String>> {
    let mut raw = expand_variables(&spec.key, |n| ctx.get(n));
    if raw.is_empty() {
        raw = format!("{}/{}", ctx.job_name, ctx.ref_name);
    }
    let main = sanitize_key(&raw)?;
    let mut keys = vec![main];
    let extra = ctx.get("CACHE_FALLBACK_KEY").map(str::to_owned);
    for fallback in spec
        .fallback_keys
        .iter()
        .take(MAX_FALLBACK_KEYS)
        .chain(extra.iter())
    {
        let expanded = expand_variables(fallback, |n| ctx.get(n));
        match sanitize_key(&expanded) {
            Ok(k) if !keys.contains(&k) => keys.push(k),
            Ok(_) => {}
            Err(e) => tracing::warn!("skipping fallback cache key: {e}"),
        }
    }
    Ok(keys)
}

/// GitLab Runner's key sanitizing: `%2F`/`%2E` are decoded, `\` becomes `/`, `.` and `..`
/// segments are resolved inside a virtual root (so a key can never climb out of the
/// project's namespace), trailing whitespace is trimmed from the last segments, and a key
/// that ends up empty is refused.
pub fn sanitize_key(key: &str) -> Result<String> {
    let mut current = decode_key(key);
    // Trimming can turn "x/. " into "x/.", which GitLab Runner's later `path.Join`
    // cleans away; resolving again until nothing changes gives that final object path.
    loop {
        let next = resolve_and_trim(&current);
        if next == current {
            break;
        }
        current = next;
    }
    if current.is_empty() {
        return Err(Error::InvalidKey(key.to_owned()));
    }
    Ok(current)
}

fn resolve_and_trim(decoded: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    while let Some(last) = parts.last_mut() {
        *last = last.trim_end();
        if last.is_empty() {
            parts.pop();
        } else {
            break;
        }
    }
    parts.join("/")
}

fn decode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut rest = key;
    while let Some(c) = rest.chars().next() {
        let lower = rest.get(..3).map(str::to_ascii_lowercase);
        match lower.as_deref() {
            Some("%2f") => {
                out.push('/');
                rest = &rest[3..];
            }
            Some("%2e") => {
                out.push('.');
                rest = &rest[3..];
            }
            _ => {
                out.push(if c == '\\' { '/' } else { c });
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Expand `$NAME` and `${NAME}` the way GitLab Runner does (Go's `os.Expand`): unknown
/// variables become empty, a `$` not followed by a name stays, `${` without `}` is dropped.
pub fn expand_variables<'a>(s: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&s[start..i]);
            let (name, width) = shell_name(&s[i + 1..]);
            if name.is_none() && width == 0 {
                out.push('$');
            } else if let Some(name) = name {
                out.push_str(lookup(name).unwrap_or(""));
            }
            i += 1 + width;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[start..]);
    out
}

/// Go's `getShellName`: the variable name after a `$` and how many bytes it spans.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for (i, &c) in b.iter().enumerate().skip(1) {
            if c == b'}' {
                if i == 1 {
                    return (None, 2); // "${}" is bad syntax: eaten
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1); // no closing brace: "${" eaten
    }
    if is_special(b[0]) {
        return (Some(&s[0..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if n == 0 { (None, 0) } else { (Some(&s[..n]), n) }
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

/// `cache:key` in `.gitlab-ci.yml`: a string, or `files` (+ `prefix`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyConfig {
    /// `key: some-$VAR`
    Literal(String),
    /// `key: {files: [...], prefix: ...}`
    Files {
        files: Vec<String>,
        #[serde(default)]
        prefix: Option<String>,
    },
}

/// What the GitLab server adds to keys: the separated-caches suffix and the index bumped
/// by "Clear runner caches".
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerKeyOptions {
    /// `Some(true)` on a protected ref, `Some(false)` otherwise, `None` when the project
    /// has separated caches turned off.
    pub protected: Option<bool>,
    /// `cache:unprotect: true` forces the `non_protected` suffix.
    pub unprotect: bool,
    /// The project's jobs cache index (0 = never cleared).
    pub jobs_cache_index: u64,
}

/// Compute the key the GitLab server would send for cache entry number `index` of a job,
/// plus its fallback keys with the same suffixes.
///
/// `key:files` hashes the files' git blob ids at the pipeline commit (SHA-1 of the sorted
/// unique ids joined by `-`), read here from the checkout in `project_dir`; patterns with
/// `*` are expanded. With no file found the digest is `default`. Without a prefix the
/// cache's index is the prefix, as on GitLab.
pub fn server_key(
    key: Option<&KeyConfig>,
    fallback_keys: &[String],
    index: usize,
    opts: ServerKeyOptions,
    project_dir: &Path,
) -> Result<(String, Vec<String>)> {
    let base = match key {
        None => "default".to_owned(),
        Some(KeyConfig::Literal(s)) => s.clone(),
        Some(KeyConfig::Files { files, prefix }) => {
            if files.len() > MAX_KEY_FILES {
                return Err(Error::InvalidPattern {
                    pattern: files.join(", "),
                    reason: format!("cache:key:files takes at most {MAX_KEY_FILES} files"),
                });
            }
            let digest = files_digest(project_dir, files)?.unwrap_or_else(|| "default".into());
            let prefix = prefix.clone().unwrap_or_else(|| index.to_string());
            if prefix.is_empty() {
                digest
            } else {
                format!("{prefix}-{digest}")
            }
        }
    };
    let decorate = |k: &str| {
        let mut k = k.to_owned();
        if opts.jobs_cache_index > 0 {
            k = format!("{k}-{}", opts.jobs_cache_index);
        }
        match opts.protected {
            None => k,
            Some(p) if p && !opts.unprotect => format!("{k}-protected"),
            Some(_) => format!("{k}-non_protected"),
        }
    };
    let fallbacks = fallback_keys
        .iter()
        .take(MAX_FALLBACK_KEYS)
        .map(|k| decorate(k))
        .collect();
    Ok((decorate(&base), fallbacks))
}

/// The `key:files` digest: `None` when no listed file exists.
pub fn files_digest(project_dir: &Path, patterns: &[String]) -> Result<Option<String>> {
    let mut files: Vec<String> = Vec::new();
    for pattern in patterns.iter().filter(|p| !p.is_empty()) {
        if pattern.contains('*') {
            let set = crate::paths::PathSet::new(std::slice::from_ref(pattern), &[])?;
            for f in set.collect(project_dir)?.files {
                files.push(f.rel);
            }
        } else {
            files.push(pattern.clone());
        }
    }
    files.sort();
    files.dedup();
    let mut ids = Vec::new();
    for f in files {
        let path = project_dir.join(&f);
        match std::fs::read(&path) {
            Ok(content) => ids.push(git_blob_id(&content)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read key file", path)(e)),
        }
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(None);
    }
    Ok(Some(hex::encode(Sha1::digest(ids.join("-").as_bytes()))))
}

/// The id git gives a file's content (`git hash-object`).
pub fn git_blob_id(content: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitize_follows_gitlab_runner() {
        assert_eq!(sanitize_key("main").unwrap(), "main");
        assert_eq!(sanitize_key("build/main").unwrap(), "build/main");
        assert_eq!(sanitize_key("build%2Fmain").unwrap(), "build/main");
        assert_eq!(sanitize_key("build%2fmain%2E%2e/x").unwrap(), "build/main../x");
        assert_eq!(sanitize_key("a\\b").unwrap(), "a/b");
        assert_eq!(sanitize_key("../../etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(sanitize_key("a/b/../c").unwrap(), "a/c");
        assert_eq!(sanitize_key("key  / ").unwrap(), "key");
        assert_eq!(sanitize_key("  lead").unwrap(), "  lead");
        assert!(matches!(sanitize_key(".."), Err(Error::InvalidKey(_))));
        assert!(matches!(sanitize_key("."), Err(Error::InvalidKey(_))));
        assert!(matches!(sanitize_key("%2e%2E"), Err(Error::InvalidKey(_))));
        assert!(matches!(sanitize_key(""), Err(Error::InvalidKey(_))));
        assert!(matches!(sanitize_key("/ /"), Err(Error::InvalidKey(_))));
    }

    #[test]
    fn expansion_follows_go_os_expand() {
        let vars: HashMap<&str, &str> = [("A", "x"), ("REF", "main"), ("1", "one")].into();
        let f = |n: &str| vars.get(n).copied();
        assert_eq!(expand_variables("$A-${REF}", f), "x-main");
        assert_eq!(expand_variables("$MISSING.", f), ".");
        assert_eq!(expand_variables("cost $", f), "cost $");
        assert_eq!(expand_variables("a$/b", f), "a$/b");
        assert_eq!(expand_variables("${A", f), "A");
        assert_eq!(expand_variables("x${}y", f), "xy");
        assert_eq!(expand_variables("$1$A", f), "onex");
        assert_eq!(expand_variables("héllo $A é", f), "héllo x é");
    }

    #[test]
    fn runner_keys_default_fallbacks_and_global_fallback() {
        let ctx = JobContext {
            variables: [
                ("CI_COMMIT_REF_SLUG".into(), "feat".into()),
                ("CACHE_FALLBACK_KEY".into(), "global".into()),
            ]
            .into(),
            job_name: "build".into(),
            ref_name: "feat/x".into(),
        };
        let spec = CacheSpec {
            fallback_keys: vec!["$CI_COMMIT_REF_SLUG".into(), "..".into(), "main".into()],
            ..Default::default()
        };
        assert_eq!(
            runner_keys(&spec, &ctx).unwrap(),
            ["build/feat/x", "feat", "main", "global"]
        );
        let spec = CacheSpec {
            key: "m2-$CI_COMMIT_REF_SLUG".into(),
            ..Default::default()
        };
        assert_eq!(runner_keys(&spec, &ctx).unwrap(), ["m2-feat", "global"]);
        let spec = CacheSpec {
            key: "..".into(),
            ..Default::default()
        };
        assert!(runner_keys(&spec, &ctx).is_err());
    }

    #[test]
    fn git_blob_id_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(git_blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn server_keys_files_prefix_and_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pom.xml"), "hello\n").unwrap();
        let files = KeyConfig::Files {
            files: vec!["pom.xml".into(), "missing.lock".into()],
            prefix: None,
        };
        let digest = hex::encode(Sha1::digest(b"ce013625030ba8dba906f756967f9e9ca394464a"));
        let opts = ServerKeyOptions {
            protected: Some(true),
            ..Default::default()
        };
        let (k, fb) = server_key(Some(&files), &["main".into()], 1, opts, dir.path()).unwrap();
        assert_eq!(k, format!("1-{digest}-protected"));
        assert_eq!(fb, ["main-protected"]);

        let files = KeyConfig::Files {
            files: vec!["nothing".into()],
            prefix: Some("mvn".into()),
        };
        let opts = ServerKeyOptions {
            protected: Some(true),
            unprotect: true,
            jobs_cache_index: 3,
        };
        let (k, _) = server_key(Some(&files), &[], 0, opts, dir.path()).unwrap();
        assert_eq!(k, "mvn-default-3-non_protected");

        let (k, _) = server_key(None, &[], 0, ServerKeyOptions::default(), dir.path()).unwrap();
        assert_eq!(k, "default");
        let three = KeyConfig::Files {
            files: vec!["a".into(), "b".into(), "c".into()],
            prefix: None,
        };
        assert!(server_key(Some(&three), &[], 0, ServerKeyOptions::default(), dir.path()).is_err());
    }

    #[test]
    fn policy_and_when() {
        assert!(Policy::Pull.pulls() && !Policy::Pull.pushes());
        assert!(!Policy::Push.pulls() && Policy::Push.pushes());
        assert!(When::OnSuccess.matches(true) && !When::OnSuccess.matches(false));
        assert!(When::OnFailure.matches(false) && !When::OnFailure.matches(true));
        assert!(When::Always.matches(false));
        assert_eq!("pull-push".parse::<Policy>().unwrap(), Policy::PullPush);
        assert!("sometimes".parse::<When>().is_err());
    }

    proptest! {
        #[test]
        fn sanitized_keys_never_escape_or_hold_dot_segments(key in "[a-z./%2FfEe\\\\ ]{0,24}") {
            if let Ok(k) = sanitize_key(&key) {
                prop_assert!(!k.is_empty());
                prop_assert!(!k.starts_with('/'));
                for seg in k.split('/') {
                    prop_assert!(seg != "." && seg != ".." && !seg.is_empty());
                }
                // sanitizing is idempotent
                prop_assert_eq!(sanitize_key(&k).unwrap(), k.clone());
            }
        }

        #[test]
        fn expansion_never_panics_and_is_identity_without_dollar(s in "\\PC{0,40}") {
            let out = expand_variables(&s, |_| Some("v"));
            if !s.contains('$') { prop_assert_eq!(out, s); }
        }
    }
}
