//! GitLab Runner's `config.toml`, read with GitLab Runner's key names.
//!
//! Owns: the global keys (`concurrent`, `check_interval`, `listen_address`, ...), each
//! `[[runners]]` entry with its `[runners.cache]` (local or S3), and adding/removing
//! runners when `podci register`/`unregister` edit the file. `[runners.kubernetes]` is kept
//! as a raw TOML table: podci-k8s parses that section itself.
//!
//! The file is walked by hand rather than through serde so that every unknown key can be
//! named (a warning, as a typo in a key silently changes behaviour otherwise) and every
//! invalid value is an error that carries its full key path (`runners[0].limit`).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

#[cfg(test)]
mod tests;

/// Why a `config.toml` cannot be used. Each message names the file and the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message (line and column included).
        message: String,
    },
    /// A value of the wrong type or out of range.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Key path, e.g. `runners[0].cache.s3.Insecure`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Which executor runs a runner's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Local processes.
    Shell,
    /// One Pod per job (podci-k8s).
    Kubernetes,
    /// Accepted for compatibility with existing files; podci has no docker executor.
    Docker,
}

impl ExecutorKind {
    /// The name as written in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Kubernetes => "kubernetes",
            ExecutorKind::Docker => "docker",
        }
    }

    /// Parses a name from `config.toml` or `--executor`.
    pub fn parse(s: &str) -> Option<ExecutorKind> {
        match s {
            "shell" => Some(ExecutorKind::Shell),
            "kubernetes" => Some(ExecutorKind::Kubernetes),
            "docker" => Some(ExecutorKind::Docker),
            _ => None,
        }
    }
}

/// `[session_server]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionServer {
    /// `listen_address`.
    pub listen_address: Option<String>,
    /// `advertise_address`.
    pub advertise_address: Option<String>,
    /// `session_timeout` in seconds (GitLab Runner's default 1800).
    pub session_timeout: u64,
}

/// `[runners.cache.s3]`. `SecretKey` is a secret: it is kept out of `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `ServerAddress` (`host[:port]`, no scheme).
    pub server_address: String,
    /// `AccessKey`.
    pub access_key: String,
    /// `SecretKey`.
    pub secret_key: String,
    /// `BucketName`.
    pub bucket_name: String,
    /// `BucketLocation` (region).
    pub bucket_location: String,
    /// `Insecure`: plain HTTP.
    pub insecure: bool,
    /// `AuthenticationType` (`access-key` or `iam`).
    pub authentication_type: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("server_address", &self.server_address)
            .field("access_key", &self.access_key)
            .field("secret_key", &"[MASKED]")
            .field("bucket_name", &self.bucket_name)
            .field("bucket_location", &self.bucket_location)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// `[runners.cache]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// `Type`: `s3`, `local` (podci's name for a directory/PVC), or empty (no remote cache).
    pub kind: String,
    /// `Path`: prefix of object names.
    pub path: String,
    /// `Shared`: caches are shared between runners (no `runner/<token8>/` prefix).
    pub shared: bool,
    /// `MaxUploadedArchiveSize` in bytes (0: unlimited).
    pub max_uploaded_archive_size: u64,
    /// `[runners.cache.s3]`, when present.
    pub s3: Option<S3Config>,
}

/// One `[[runners]]` entry. `token` is a secret and is kept out of `Debug`.
#[derive(Clone, PartialEq)]
pub struct RunnerConfig {
    /// `name` (description).
    pub name: String,
    /// `url`: the GitLab instance.
    pub url: String,
    /// `id` as GitLab returned it at registration.
    pub id: u64,
    /// `token`: the runner authentication token.
    pub token: String,
    /// `executor`.
    pub executor: ExecutorKind,
    /// `limit`: jobs this runner runs at once (0: only `concurrent` limits).
    pub limit: usize,
    /// `request_concurrency`: job requests in flight at once (default 1).
    pub request_concurrency: usize,
    /// `output_limit` in KiB (default 4096).
    pub output_limit: usize,
    /// `environment`: `KEY=value` entries added to every job.
    pub environment: Vec<String>,
    /// `builds_dir`.
    pub builds_dir: Option<String>,
    /// `cache_dir`.
    pub cache_dir: Option<String>,
    /// `shell`.
    pub shell: Option<String>,
    /// `pre_get_sources_script`.
    pub pre_get_sources_script: Option<String>,
    /// `pre_build_script`.
    pub pre_build_script: Option<String>,
    /// `post_build_script`.
    pub post_build_script: Option<String>,
    /// `[runners.cache]`.
    pub cache: Option<CacheConfig>,
    /// `[runners.kubernetes]`, unparsed: podci-k8s owns its keys.
    pub kubernetes: Option<Table>,
}

impl std::fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &crate::gitlab::short_token(&self.token))
            .field("executor", &self.executor)
            .field("limit", &self.limit)
            .field("request_concurrency", &self.request_concurrency)
            .field("output_limit", &self.output_limit)
            .finish_non_exhaustive()
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            name: String::new(),
            url: String::new(),
            id: 0,
            token: String::new(),
            executor: ExecutorKind::Shell,
            limit: 0,
            request_concurrency: 1,
            output_limit: 4096,
            environment: Vec::new(),
            builds_dir: None,
            cache_dir: None,
            shell: None,
            pre_get_sources_script: None,
            pre_build_script: None,
            post_build_script: None,
            cache: None,
            kubernetes: None,
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `concurrent`: jobs at once across all runners (default 1).
    pub concurrent: usize,
    /// `check_interval` in seconds between job requests per runner (default 3).
    pub check_interval: u64,
    /// `log_level`.
    pub log_level: Option<String>,
    /// `log_format`.
    pub log_format: Option<String>,
    /// `listen_address` for `/metrics` and `/health`.
    pub listen_address: Option<String>,
    /// `shutdown_timeout` in seconds (default 30).
    pub shutdown_timeout: u64,
    /// `[session_server]`.
    pub session_server: Option<SessionServer>,
    /// `[[runners]]`.
    pub runners: Vec<RunnerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrent: 1,
            check_interval: 3,
            log_level: None,
            log_format: None,
            listen_address: None,
            shutdown_timeout: 30,
            session_server: None,
            runners: Vec::new(),
        }
    }
}

/// A parsed file and what in it was not understood.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// One line per unknown key, naming its path.
    pub warnings: Vec<String>,
}

/// GitLab Runner keys podci reads but does not act on: accepted without a warning, since
/// a file written for GitLab Runner carries them.
const GLOBAL_IGNORED: &[&str] = &["sentry_dsn", "connection_max_age"];
const RUNNER_IGNORED: &[&str] = &[
    "token_obtained_at",
    "token_expires_at",
    "tls-ca-file",
    "tls-cert-file",
    "tls-key-file",
    "clone_url",
    "debug_trace_disabled",
    "unhealthy_requests_limit",
    "unhealthy_interval",
    "custom_build_dir",
    "feature_flags",
    "docker",
    "referees",
    "autoscaler",
    "machine",
    "custom",
    "ssh",
    "parallels",
    "virtualbox",
    "instance",
];

/// Walks one table, checking types and recording which keys were read.
struct Walker<'a> {
    file: &'a str,
    warnings: &'a mut Vec<String>,
}

impl Walker<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn unknown(&mut self, table: &Table, prefix: &str, known: &[&str], ignored: &[&str]) {
        for k in table.keys() {
            if known.contains(&k.as_str()) || ignored.contains(&k.as_str()) {
                continue;
            }
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            self.warnings
                .push(format!("{}: unknown key `{path}` ignored", self.file));
        }
    }

    fn string(&self, t: &Table, prefix: &str, key: &str) -> Result<Option<String>, ConfigError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.invalid(
                &join(prefix, key),
                format!("expected a string, found {}", kind(v)),
            )),
        }
    }

    fn bool(&self, t: &Table, prefix: &str, key: &str) -> Result<Option<bool>, ConfigError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.invalid(
                &join(prefix, key),
                format!("expected true or false, found {}", kind(v)),
            )),
        }
    }

    /// A non-negative integer no larger than `max`.
    fn uint(&self, t: &Table, prefix: &str, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 && (*i as u64) <= max => Ok(Some(*i as u64)),
            Some(Value::Integer(i)) => Err(self.invalid(
                &join(prefix, key),
                format!("{i} is out of range: expected an integer from 0 to {max}"),
            )),
            Some(v) => Err(self.invalid(
                &join(prefix, key),
                format!("expected an integer, found {}", kind(v)),
            )),
        }
    }

    fn strings(&self, t: &Table, prefix: &str, key: &str) -> Result<Vec<String>, ConfigError> {
        match t.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(self.invalid(
                        &format!("{}[{i}]", join(prefix, key)),
                        format!("expected a string, found {}", kind(v)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.invalid(
                &join(prefix, key),
                format!("expected an array of strings, found {}", kind(v)),
            )),
        }
    }

    fn table<'t>(&self, t: &'t Table, prefix: &str, key: &str) -> Result<Option<&'t Table>, ConfigError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(v) => Err(self.invalid(&join(prefix, key), format!("expected a table, found {}", kind(v)))),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    v.type_str()
}

/// Upper bound for counts (`concurrent`, `limit`): a typo like `1000000000` should be an
/// error, not a runner that tries to start a billion jobs.
const MAX_COUNT: u64 = 100_000;

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses `text`; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Loaded, ConfigError> {
        let root: Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut warnings = Vec::new();
        let mut w = Walker {
            file,
            warnings: &mut warnings,
        };
        let mut c = Config::default();
        if let Some(n) = w.uint(&root, "", "concurrent", MAX_COUNT)? {
            if n == 0 {
                return Err(w.invalid("concurrent", "must be at least 1"));
            }
            c.concurrent = n as usize;
        }
        if let Some(n) = w.uint(&root, "", "check_interval", 86_400)? {
            // GitLab Runner treats 0 as its default of 3 s.
            c.check_interval = if n == 0 { 3 } else { n };
        }
        c.log_level = w.string(&root, "", "log_level")?;
        if let Some(l) = &c.log_level
            && !["debug", "info", "warn", "error", "fatal", "panic"].contains(&l.as_str())
        {
            return Err(w.invalid(
                "log_level",
                format!("`{l}` is not one of debug, info, warn, error, fatal, panic"),
            ));
        }
        c.log_format = w.string(&root, "", "log_format")?;
        if let Some(l) = &c.log_format
            && !["runner", "text", "json"].contains(&l.as_str())
        {
            return Err(w.invalid("log_format", format!("`{l}` is not one of runner, text, json")));
        }
        c.listen_address = w.string(&root, "", "listen_address")?.filter(|s| !s.is_empty());
        if let Some(n) = w.uint(&root, "", "shutdown_timeout", 86_400)? {
            c.shutdown_timeout = n;
        }
        if let Some(s) = w.table(&root, "", "session_server")? {
            c.session_server = Some(SessionServer {
                listen_address: w.string(s, "session_server", "listen_address")?,
                advertise_address: w.string(s, "session_server", "advertise_address")?,
                session_timeout: w
                    .uint(s, "session_server", "session_timeout", 86_400)?
                    .unwrap_or(1800),
            });
            w.unknown(
                s,
                "session_server",
                &["listen_address", "advertise_address", "session_timeout"],
                &[],
            );
        }
        match root.get("runners") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let prefix = format!("runners[{i}]");
                    let Value::Table(t) = item else {
                        return Err(w.invalid(&prefix, format!("expected a table, found {}", kind(item))));
                    };
                    c.runners.push(parse_runner(&mut w, t, &prefix)?);
                }
            }
            Some(v) => {
                return Err(w.invalid(
                    "runners",
                    format!("expected [[runners]] entries, found {}", kind(v)),
                ));
            }
        }
        w.unknown(
            &root,
            "",
            &[
                "concurrent",
                "check_interval",
                "log_level",
                "log_format",
                "listen_address",
                "shutdown_timeout",
                "session_server",
                "runners",
            ],
            GLOBAL_IGNORED,
        );
        Ok(Loaded { config: c, warnings })
    }
}

fn parse_runner(w: &mut Walker<'_>, t: &Table, prefix: &str) -> Result<RunnerConfig, ConfigError> {
    let mut r = RunnerConfig {
        name: w.string(t, prefix, "name")?.unwrap_or_default(),
        ..RunnerConfig::default()
    };
    r.url = w.string(t, prefix, "url")?.ok_or_else(|| {
        w.invalid(
            &join(prefix, "url"),
            "missing: the GitLab instance URL is required",
        )
    })?;
    if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
        return Err(w.invalid(
            &join(prefix, "url"),
            format!("`{}` is not an http:// or https:// URL", r.url),
        ));
    }
    r.token = w.string(t, prefix, "token")?.ok_or_else(|| {
        w.invalid(
            &join(prefix, "token"),
            "missing: run `podci register` to obtain one",
        )
    })?;
    r.id = w.uint(t, prefix, "id", u64::MAX >> 1)?.unwrap_or(0);
    if let Some(e) = w.string(t, prefix, "executor")? {
        r.executor = ExecutorKind::parse(&e).ok_or_else(|| {
            w.invalid(
                &join(prefix, "executor"),
                format!("`{e}` is not supported: use shell or kubernetes"),
            )
        })?;
    } else {
        return Err(w.invalid(&join(prefix, "executor"), "missing: set shell or kubernetes"));
    }
    r.limit = w.uint(t, prefix, "limit", MAX_COUNT)?.unwrap_or(0) as usize;
    if let Some(n) = w.uint(t, prefix, "request_concurrency", MAX_COUNT)? {
        // GitLab Runner raises 0 to 1.
        r.request_concurrency = n.max(1) as usize;
    }
    if let Some(n) = w.uint(t, prefix, "output_limit", 1 << 30)? {
        r.output_limit = if n == 0 { 4096 } else { n as usize };
    }
    r.environment = w.strings(t, prefix, "environment")?;
    for (i, e) in r.environment.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(w.invalid(
                &format!("{}[{i}]", join(prefix, "environment")),
                format!("`{e}` is not KEY=value"),
            ));
        }
    }
    r.builds_dir = w.string(t, prefix, "builds_dir")?;
    r.cache_dir = w.string(t, prefix, "cache_dir")?;
    r.shell = w.string(t, prefix, "shell")?;
    r.pre_get_sources_script = w.string(t, prefix, "pre_get_sources_script")?;
    r.pre_build_script = w.string(t, prefix, "pre_build_script")?;
    r.post_build_script = w.string(t, prefix, "post_build_script")?;
    if let Some(ct) = w.table(t, prefix, "cache")? {
        r.cache = Some(parse_cache(w, ct, &join(prefix, "cache"))?);
    }
    r.kubernetes = w.table(t, prefix, "kubernetes")?.cloned();
    if r.executor == ExecutorKind::Kubernetes && r.kubernetes.is_none() {
        r.kubernetes = Some(Table::new());
    }
    w.unknown(
        t,
        prefix,
        &[
            "name",
            "url",
            "id",
            "token",
            "executor",
            "limit",
            "request_concurrency",
            "output_limit",
            "environment",
            "builds_dir",
            "cache_dir",
            "shell",
            "pre_get_sources_script",
            "pre_build_script",
            "post_build_script",
            "cache",
            "kubernetes",
        ],
        RUNNER_IGNORED,
    );
    Ok(r)
}

fn parse_cache(w: &mut Walker<'_>, t: &Table, prefix: &str) -> Result<CacheConfig, ConfigError> {
    let mut c = CacheConfig {
        kind: w.string(t, prefix, "Type")?.unwrap_or_default(),
        path: w.string(t, prefix, "Path")?.unwrap_or_default(),
        shared: w.bool(t, prefix, "Shared")?.unwrap_or(false),
        max_uploaded_archive_size: w
            .uint(t, prefix, "MaxUploadedArchiveSize", u64::MAX >> 1)?
            .unwrap_or(0),
        s3: None,
    };
    if !["", "s3", "local", "gcs", "azure"].contains(&c.kind.as_str()) {
        return Err(w.invalid(
            &join(prefix, "Type"),
            format!("`{}` is not a cache type: use s3 or local", c.kind),
        ));
    }
    if let Some(s) = w.table(t, prefix, "s3")? {
        let p = join(prefix, "s3");
        let s3 = S3Config {
            server_address: w.string(s, &p, "ServerAddress")?.unwrap_or_default(),
            access_key: w.string(s, &p, "AccessKey")?.unwrap_or_default(),
            secret_key: w.string(s, &p, "SecretKey")?.unwrap_or_default(),
            bucket_name: w.string(s, &p, "BucketName")?.unwrap_or_default(),
            bucket_location: w.string(s, &p, "BucketLocation")?.unwrap_or_default(),
            insecure: w.bool(s, &p, "Insecure")?.unwrap_or(false),
            authentication_type: w.string(s, &p, "AuthenticationType")?,
        };
        w.unknown(
            s,
            &p,
            &[
                "ServerAddress",
                "AccessKey",
                "SecretKey",
                "BucketName",
                "BucketLocation",
                "Insecure",
                "AuthenticationType",
            ],
            &[
                "SessionToken",
                "ServerSideEncryption",
                "ServerSideEncryptionKeyID",
                "DualStack",
                "PathStyle",
                "UploadRoleARN",
                "RoleARN",
                "Accelerate",
            ],
        );
        c.s3 = Some(s3);
    }
    if c.kind == "s3" {
        let s3 = c.s3.as_ref();
        if s3.is_none_or(|s| s.bucket_name.is_empty()) {
            return Err(w.invalid(
                &join(prefix, "s3.BucketName"),
                "missing: Type = \"s3\" needs [runners.cache.s3] with BucketName",
            ));
        }
    }
    w.unknown(
        t,
        prefix,
        &["Type", "Path", "Shared", "MaxUploadedArchiveSize", "s3"],
        &["gcs", "azure"],
    );
    Ok(c)
}

/// Edits the file's TOML while keeping everything podci does not model (other sections,
/// `[runners.kubernetes]`, unknown keys) as it was.
pub struct Document {
    path: PathBuf,
    root: Table,
}

impl Document {
    /// Opens `path`; a missing file is an empty document with GitLab Runner's defaults.
    pub fn open(path: &Path) -> Result<Document, ConfigError> {
        let root = match std::fs::read_to_string(path) {
            Ok(text) => text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.display().to_string(),
                message: e.to_string().trim_end().to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut t = Table::new();
                t.insert("concurrent".into(), Value::Integer(1));
                t.insert("check_interval".into(), Value::Integer(0));
                t
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Document {
            path: path.to_path_buf(),
            root,
        })
    }

    /// Appends a `[[runners]]` entry.
    pub fn add_runner(&mut self, runner: Table) {
        let entry = self
            .root
            .entry("runners")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(Value::Table(runner));
        } else {
            *entry = Value::Array(vec![Value::Table(runner)]);
        }
    }

    /// Removes the runners `keep` rejects; returns how many were removed.
    pub fn remove_runners(&mut self, mut remove: impl FnMut(&Table) -> bool) -> usize {
        let Some(Value::Array(a)) = self.root.get_mut("runners") else {
            return 0;
        };
        let before = a.len();
        a.retain(|v| !matches!(v, Value::Table(t) if remove(t)));
        before - a.len()
    }

    /// Writes the file (0600: it holds runner tokens), atomically.
    pub fn save(&self) -> Result<(), ConfigError> {
        let text = toml::to_string(&self.root).map_err(|e| ConfigError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        let tmp = self.path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| ConfigError::Write {
            path: self.path.clone(),
            source,
        })
    }
}
