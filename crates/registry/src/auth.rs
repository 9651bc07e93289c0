//! Registry authentication: parsing `WWW-Authenticate` challenges and finding credentials
//! where the tools users already have put them (Docker's `config.json` with `auths`,
//! `credHelpers`, `credsStore` and identity tokens; podman's `auth.json`; GitLab's
//! `DOCKER_AUTH_CONFIG` and `CI_REGISTRY_USER`/`CI_REGISTRY_PASSWORD`), plus explicit
//! credentials. Nothing here logs or formats a secret.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::error::{Error, Result};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A username and password (or personal access token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token server.
    IdentityToken(String),
}

// Debug must never print a secret.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

impl Credential {
    /// The `Authorization: Basic` value, when these are basic credentials.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic` (lowercased).
    pub scheme: String,
    /// Parameters with lowercased keys (`realm`, `service`, `scope`, `error`).
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Parses one challenge such as
    /// `Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"`.
    /// Returns `None` for input that is not a challenge.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.find(|c: char| c.is_whitespace()) {
            Some(i) => (&header[..i], &header[i..]),
            None => (header, ""),
        };
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        let mut params = HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c.is_whitespace() || c == ',' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.next() != Some('=') || key.is_empty() {
                return None;
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n)
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return None;
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            params.insert(key.to_ascii_lowercase(), value);
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    /// The scopes the server asked for, if any.
    pub fn scopes(&self) -> Vec<String> {
        self.params
            .get("scope")
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where credentials are looked up. Built from the process environment by
/// [`AuthEnv::from_process`]; tests build it explicitly so they never touch the real
/// environment.
#[derive(Debug, Clone, Default)]
pub struct AuthEnv {
    /// Directory holding Docker's `config.json` (`$DOCKER_CONFIG` or `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// Podman/containers `auth.json` files, tried in order.
    pub podman_auth_files: Vec<PathBuf>,
    /// Variables of interest (`DOCKER_AUTH_CONFIG`, `CI_REGISTRY`, `CI_REGISTRY_USER`,
    /// `CI_REGISTRY_PASSWORD`).
    pub vars: HashMap<String, String>,
    /// Extra directory searched first for `docker-credential-*` helpers.
    pub helper_dir: Option<PathBuf>,
}

impl AuthEnv {
    /// Reads the locations the Docker, podman and GitLab tooling use.
    pub fn from_process() -> AuthEnv {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let docker_config_dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".docker")));
        let mut podman_auth_files = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
            podman_auth_files.push(PathBuf::from(f));
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            podman_auth_files.push(PathBuf::from(d).join("containers/auth.json"));
        }
        if let Some(h) = &home {
            podman_auth_files.push(h.join(".config/containers/auth.json"));
        }
        let vars = [
            "DOCKER_AUTH_CONFIG",
            "CI_REGISTRY",
            "CI_REGISTRY_USER",
            "CI_REGISTRY_PASSWORD",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
        AuthEnv {
            docker_config_dir,
            podman_auth_files,
            vars,
            helper_dir: None,
        }
    }
}

/// Resolves credentials for a registry host from explicit entries and [`AuthEnv`].
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    explicit: HashMap<String, Credential>,
    env: AuthEnv,
}

/// The part of Docker's / podman's config files we read.
#[derive(Debug, Default, serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Strips scheme and path so that `https://index.docker.io/v1/` and `index.docker.io`
/// compare equal, as Docker does.
pub fn normalize_host(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => k,
    }
}

impl AuthEntry {
    fn credential(&self, host: &str) -> Result<Option<Credential>> {
        if let Some(t) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(t.clone())));
        }
        if let Some(a) = self.auth.as_ref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::Credentials(format!(
                        "the \"auth\" entry for {host} is not base64 of user:password"
                    ))
                })?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| {
                Error::Credentials(format!(
                    "the \"auth\" entry for {host} has no ':' between user and password"
                ))
            })?;
            return Ok(Some(Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            })),
            _ => Ok(None),
        }
    }
}

impl DockerConfig {
    fn parse(text: &str, origin: &str) -> Result<DockerConfig> {
        serde_json::from_str(text).map_err(|e| Error::Credentials(format!("{origin}: {e}")))
    }

    fn find_auth(&self, host: &str) -> Result<Option<Credential>> {
        for (k, entry) in &self.auths {
            if normalize_host(k) == host
                && let Some(c) = entry.credential(host)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

impl CredentialStore {
    /// A store reading the process environment.
    pub fn from_env() -> CredentialStore {
        Self::with_env(AuthEnv::from_process())
    }

    /// A store reading the given environment.
    pub fn with_env(env: AuthEnv) -> CredentialStore {
        CredentialStore {
            explicit: HashMap::new(),
            env,
        }
    }

    /// Sets credentials for a host, taking precedence over every file and variable.
    pub fn insert(&mut self, host: &str, cred: Credential) {
        self.explicit.insert(normalize_host(host), cred);
    }

    /// Finds credentials for `host` (a registry `host[:port]`). Order: explicit,
    /// `DOCKER_AUTH_CONFIG`, `CI_REGISTRY_*` (only for `$CI_REGISTRY`), Docker's
    /// `credHelpers`, `auths`, `credsStore`, then podman's `auth.json`.
    pub fn lookup(&self, host: &str) -> Result<Option<Credential>> {
        let host = normalize_host(host);
        if let Some(c) = self.explicit.get(&host) {
            return Ok(Some(c.clone()));
        }
        if let Some(text) = self.env.vars.get("DOCKER_AUTH_CONFIG") {
            let cfg = DockerConfig::parse(text, "DOCKER_AUTH_CONFIG")?;
            if let Some(c) = self.lookup_in_config(&cfg, &host)? {
                return Ok(Some(c));
            }
        }
        if let (Some(reg), Some(u), Some(p)) = (
            self.env.vars.get("CI_REGISTRY"),
            self.env.vars.get("CI_REGISTRY_USER"),
            self.env.vars.get("CI_REGISTRY_PASSWORD"),
        ) && normalize_host(reg) == host
        {
            return Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        if let Some(dir) = &self.env.docker_config_dir {
            let path = dir.join("config.json");
            if let Some(cfg) = read_config(&path)?
                && let Some(c) = self.lookup_in_config(&cfg, &host)?
            {
                return Ok(Some(c));
            }
        }
        for path in &self.env.podman_auth_files {
            if let Some(cfg) = read_config(path)?
                && let Some(c) = self.lookup_in_config(&cfg, &host)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn lookup_in_config(&self, cfg: &DockerConfig, host: &str) -> Result<Option<Credential>> {
        for (k, helper) in &cfg.cred_helpers {
            if normalize_host(k) == host {
                return self.run_helper(helper, host);
            }
        }
        if let Some(c) = cfg.find_auth(host)? {
            return Ok(Some(c));
        }
        if let Some(store) = cfg.creds_store.as_ref().filter(|s| !s.is_empty()) {
            return self.run_helper(store, host);
        }
        Ok(None)
    }

    /// Runs `docker-credential-<helper> get` with the server URL on stdin, as Docker does.
    fn run_helper(&self, helper: &str, host: &str) -> Result<Option<Credential>> {
        if !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::Credentials(format!(
                "credential helper name {helper:?} is not a plain name"
            )));
        }
        let name = format!("docker-credential-{helper}");
        let program = self
            .env
            .helper_dir
            .as_ref()
            .map(|d| d.join(&name))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(&name));
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Credentials(format!("cannot run {name}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // Helpers are keyed by the server URL; Hub is stored under its legacy URL.
            let server = if host == "docker.io" {
                "https://index.docker.io/v1/"
            } else {
                host
            };
            stdin
                .write_all(server.as_bytes())
                .map_err(|e| Error::Credentials(format!("writing to {name}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Credentials(format!("waiting for {name}: {e}")))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout);
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            return Err(Error::Credentials(format!(
                "{name} get failed with {}",
                out.status
            )));
        }
        #[derive(serde::Deserialize)]
        struct HelperOut {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let parsed: HelperOut = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Credentials(format!("{name} printed something that is not JSON: {e}")))?;
        if parsed.username == "<token>" {
            return Ok(Some(Credential::IdentityToken(parsed.secret)));
        }
        Ok(Some(Credential::Basic {
            username: parsed.username,
            password: parsed.secret,
        }))
    }
}

fn read_config(path: &Path) -> Result<Option<DockerConfig>> {
    match std::fs::read_to_string(path) {
        Ok(text) => DockerConfig::parse(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Stores basic credentials in a Docker `config.json` (creating it with mode 0600), as
/// `docker login` does without a credential store.
pub fn save_docker_login(config_dir: &Path, host: &str, username: &str, password: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(config_dir).map_err(Error::io(config_dir))?;
    let path = config_dir.join("config.json");
    let mut doc: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(t) => {
            serde_json::from_str(&t).map_err(|e| Error::Credentials(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| Error::Credentials(format!("{} is not a JSON object", path.display())))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| Error::Credentials(format!("\"auths\" in {} is not an object", path.display())))?;
    auths.insert(
        host.to_string(),
        serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))}),
    );
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Credentials(e.to_string()))?;
    let tmp = config_dir.join(".config.json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        f.write_all(&text).map_err(Error::io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        let c = c.unwrap_or_else(|| panic!("no challenge"));
        assert_eq!(c.scheme, "bearer");
        assert_eq!(
            c.params.get("realm").map(String::as_str),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(
            c.params.get("service").map(String::as_str),
            Some("registry.docker.io")
        );
        assert_eq!(
            c.scopes(),
            vec!["repository:samalba/my-app:pull,push".to_string()]
        );
    }

    #[test]
    fn parses_basic_and_escapes() {
        let c = Challenge::parse(r#"Basic realm="Registry \"Realm\"""#).unwrap_or_else(|| panic!("none"));
        assert_eq!(c.scheme, "basic");
        assert_eq!(
            c.params.get("realm").map(String::as_str),
            Some("Registry \"Realm\"")
        );
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
        assert!(Challenge::parse("").is_none());
    }

    proptest! {
        #[test]
        fn challenge_parser_never_panics(s in ".{0,200}") {
            let _ = Challenge::parse(&s);
        }

        #[test]
        fn challenge_roundtrips(realm in "[ -~]{0,40}", service in "[a-z0-9.:]{1,20}") {
            let esc = realm.replace('\\', "\\\\").replace('"', "\\\"");
            let h = format!("Bearer realm=\"{esc}\", service={service}");
            let c = Challenge::parse(&h).ok_or_else(|| TestCaseError::fail("no parse"))?;
            prop_assert_eq!(c.params.get("realm"), Some(&realm));
            prop_assert_eq!(c.params.get("service"), Some(&service));
        }
    }

    fn env_with(dir: &Path, vars: &[(&str, &str)]) -> AuthEnv {
        AuthEnv {
            docker_config_dir: Some(dir.join("docker")),
            podman_auth_files: vec![dir.join("podman/auth.json")],
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            helper_dir: Some(dir.join("bin")),
        }
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn docker_config_auths_identity_tokens_and_helpers() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("docker"))?;
        std::fs::create_dir_all(dir.path().join("bin"))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            dir.path().join("docker/config.json"),
            format!(
                r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{b64}"}},
                    "tok.example":{{"identitytoken":"refresh-me"}},
                    "https://index.docker.io/v1/":{{"username":"hub","password":"hubpw"}}}},
                  "credHelpers":{{"helped.example":"fake"}},
                  "credsStore":"fake"}}"#
            ),
        )?;
        let helper = dir.path().join("bin/docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$server\" = helped.example ]; then echo '{\"Username\":\"h\",\"Secret\":\"hs\"}';\nelif [ \"$server\" = store.example ]; then echo '{\"Username\":\"<token>\",\"Secret\":\"idt\"}';\nelse echo 'credentials not found in native keychain'; exit 1; fi\n",
        )?;
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let store = CredentialStore::with_env(env_with(dir.path(), &[]));
        assert_eq!(store.lookup("reg.example:5000")?, basic("alice", "s3cret"));
        assert_eq!(
            store.lookup("tok.example")?,
            Some(Credential::IdentityToken("refresh-me".into()))
        );
        assert_eq!(store.lookup("docker.io")?, basic("hub", "hubpw"));
        assert_eq!(store.lookup("helped.example")?, basic("h", "hs"));
        assert_eq!(
            store.lookup("store.example")?,
            Some(Credential::IdentityToken("idt".into()))
        );
        assert_eq!(store.lookup("nothing.example")?, None);
        Ok(())
    }

    #[test]
    fn gitlab_variables_and_podman_and_precedence() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("podman"))?;
        std::fs::write(
            dir.path().join("podman/auth.json"),
            r#"{"auths":{"pod.example":{"auth":"cDpwdw=="}}}"#,
        )?;
        let dac = r#"{"auths":{"dac.example":{"username":"d","password":"dp"}}}"#;
        let mut store = CredentialStore::with_env(env_with(
            dir.path(),
            &[
                ("DOCKER_AUTH_CONFIG", dac),
                ("CI_REGISTRY", "gitlab.example:5050"),
                ("CI_REGISTRY_USER", "gitlab-ci-token"),
                ("CI_REGISTRY_PASSWORD", "jobtoken"),
            ],
        ));
        assert_eq!(store.lookup("dac.example")?, basic("d", "dp"));
        assert_eq!(
            store.lookup("gitlab.example:5050")?,
            basic("gitlab-ci-token", "jobtoken")
        );
        assert_eq!(store.lookup("other.example")?, None);
        assert_eq!(store.lookup("pod.example")?, basic("p", "pw"));
        store.insert(
            "pod.example",
            Credential::Basic {
                username: "x".into(),
                password: "y".into(),
            },
        );
        assert_eq!(store.lookup("pod.example")?, basic("x", "y"));
        Ok(())
    }

    #[test]
    fn secrets_are_not_in_debug_or_errors() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let env = AuthEnv {
            vars: [(
                "DOCKER_AUTH_CONFIG".to_string(),
                r#"{"auths":{"h":{"auth":"hunter2-not-b64!"}}}"#.to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let e = CredentialStore::with_env(env)
            .lookup("h")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not base64"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        Ok(())
    }

    #[test]
    fn login_saves_a_private_config() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = save_docker_login(dir.path(), "reg.example", "u", "pw")?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path)?.permissions());
        assert_eq!(mode & 0o777, 0o600);
        let store = CredentialStore::with_env(AuthEnv {
            docker_config_dir: Some(dir.path().into()),
            ..Default::default()
        });
        assert_eq!(store.lookup("reg.example")?, basic("u", "pw"));
        Ok(())
    }
}
