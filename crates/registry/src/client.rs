//! The distribution-protocol client: ping and authentication (anonymous, Basic, Bearer
//! tokens cached per registry and scope set), blob and manifest transfer with retries,
//! chunked and monolithic uploads, cross-repository mounts and tag listing.
//!
//! Redirects are followed by hand so that `Authorization` only ever goes to the
//! registry's own host: a redirect to blob storage or an upload `Location` on another host
//! is requested without it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::auth::{Challenge, Credential, CredentialStore};
use crate::digest::Digest;
use crate::error::{Error, RegistryErrorEntry, Result};
use crate::manifest::{Descriptor, Platform, RawManifest, media, select_platform};
use crate::reference::Reference;

/// Tunables of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) reached over plain HTTP. Loopback hosts always are.
    pub insecure_registries: Vec<String>,
    /// How many blobs move at once.
    pub parallel: usize,
    /// Upload in PATCH chunks of this size instead of one PUT.
    pub chunk_size: Option<u64>,
    /// Attempts per request on 429, 5xx and connection errors.
    pub max_attempts: u32,
    /// Upper bound for one wait between attempts.
    pub max_backoff: Duration,
    /// Blobs up to this size go in a single POST (`?digest=`), saving a round trip.
    pub single_post_limit: u64,
    /// Platform picked from an index.
    pub platform: Platform,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            parallel: 4,
            chunk_size: None,
            max_attempts: 5,
            max_backoff: Duration::from_secs(30),
            single_post_limit: 0,
            platform: Platform::host(),
        }
    }
}

/// Where a blob's bytes come from when it has to be uploaded or copied.
#[derive(Clone, Debug)]
pub enum BlobSource {
    /// A byte range of a local file (a layout blob, a layer inside a tarball).
    File { path: PathBuf, offset: u64 },
    /// Bytes in memory (configs and manifests).
    Bytes(Bytes),
    /// The blob lives in a registry repository; it is mounted when possible and streamed
    /// otherwise.
    Registry { repo: Reference },
}

/// What pushing one blob did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The target already had it (HEAD answered 200).
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

enum Cached {
    None,
    Token(String),
    Challenge(Challenge),
}

/// True if the space-separated scope set `have` grants every action of `want`.
fn scopes_cover(have: &str, want: &[String]) -> bool {
    let granted: Vec<(&str, Vec<&str>)> = have
        .split(' ')
        .filter_map(|s| {
            s.rsplit_once(':')
                .map(|(res, acts)| (res, acts.split(',').collect()))
        })
        .collect();
    want.iter().all(|w| match w.rsplit_once(':') {
        Some((res, acts)) => acts
            .split(',')
            .all(|a| granted.iter().any(|(r, g)| *r == res && g.contains(&a))),
        None => false,
    })
}

#[derive(Default)]
struct RegistryAuth {
    challenge: Option<Challenge>,
    tokens: HashMap<String, (String, Instant)>,
}

struct Inner {
    http: reqwest::Client,
    creds: CredentialStore,
    opts: ClientOptions,
    auth: Mutex<HashMap<String, RegistryAuth>>,
    token_fetches: std::sync::atomic::AtomicU64,
    fetch_lock: tokio::sync::Mutex<()>,
}

/// An OCI registry client; cheap to clone, share one per process so tokens are reused.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

enum ReqBody {
    Empty,
    Bytes(Bytes),
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// Streamed from another registry; boxed, it is much larger than the others.
    Remote(Box<(Reference, Descriptor)>),
}

type SharedHasher = Arc<Mutex<Sha256>>;

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}
fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

fn authority(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

fn header_str<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Parses a `Range: 0-N` (or `bytes=0-N`) answer into the next offset.
fn range_end(v: &str) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=");
    let (_, end) = v.split_once('-')?;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    header_str(resp, "retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Client {
    /// A client reading credentials from the process environment.
    pub fn new(opts: ClientOptions) -> Result<Client> {
        Self::with_credentials(opts, CredentialStore::from_env())
    }

    /// A client with an explicit credential store.
    pub fn with_credentials(opts: ClientOptions, creds: CredentialStore) -> Result<Client> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("podci-registry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|source| Error::Http {
                url: String::new(),
                source,
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                creds,
                opts,
                auth: Mutex::new(HashMap::new()),
                token_fetches: Default::default(),
                fetch_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// How many tokens this client fetched so far (for tests of the cache).
    pub fn token_fetches(&self) -> u64 {
        self.inner
            .token_fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn base_url(&self, registry: &str) -> String {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let plain = is_loopback(host) || self.inner.opts.insecure_registries.iter().any(|r| r == registry);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    fn url(&self, registry: &str, path: &str) -> Result<Url> {
        let s = format!("{}{path}", self.base_url(registry));
        Url::parse(&s).map_err(|e| Error::InvalidReference {
            input: s,
            reason: e.to_string(),
        })
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, HashMap<String, RegistryAuth>> {
        // A poisoned lock only means another task panicked mid-update of a cache.
        self.inner.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scope_key(scopes: &[String]) -> String {
        let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
        s.sort_unstable();
        s.dedup();
        s.join(" ")
    }

    /// The Authorization value to send to `registry` for `scopes`, fetching a token if
    /// the registry uses Bearer auth and none is cached.
    async fn auth_header(&self, registry: &str, scopes: &[String]) -> Result<Option<String>> {
        let challenge = match self.cached_auth(registry, scopes) {
            Cached::None => return Ok(None),
            Cached::Token(t) => return Ok(Some(format!("Bearer {t}"))),
            Cached::Challenge(ch) => ch,
        };
        match challenge.scheme.as_str() {
            "basic" => Ok(self.inner.creds.lookup(registry)?.and_then(|c| c.basic_header())),
            "bearer" => {
                // One fetch at a time, so parallel uploads starting together share a token.
                let _guard = self.inner.fetch_lock.lock().await;
                if let Cached::Token(t) = self.cached_auth(registry, scopes) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (tok, ttl) = self.fetch_token(registry, &challenge, scopes).await?;
                let mut map = self.lock_auth();
                map.entry(registry.to_string())
                    .or_default()
                    .tokens
                    .insert(Self::scope_key(scopes), (tok.clone(), Instant::now() + ttl));
                Ok(Some(format!("Bearer {tok}")))
            }
            other => Err(Error::Auth {
                registry: registry.to_string(),
                reason: format!("unsupported authentication scheme {other:?}"),
            }),
        }
    }

    /// A cached token whose scope set covers `scopes` (a push token also serves pulls of
    /// the same repository), or the registry's challenge if none does.
    fn cached_auth(&self, registry: &str, scopes: &[String]) -> Cached {
        let map = self.lock_auth();
        let Some(state) = map.get(registry) else {
            return Cached::None;
        };
        let Some(ch) = state.challenge.clone() else {
            return Cached::None;
        };
        if ch.scheme == "bearer" {
            let now = Instant::now();
            for (key, (tok, exp)) in &state.tokens {
                if *exp > now && scopes_cover(key, scopes) {
                    return Cached::Token(tok.clone());
                }
            }
        }
        Cached::Challenge(ch)
    }

    async fn fetch_token(
        &self,
        registry: &str,
        ch: &Challenge,
        scopes: &[String],
    ) -> Result<(String, Duration)> {
        let auth_err = |reason: String| Error::Auth {
            registry: registry.to_string(),
            reason,
        };
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| auth_err("the Bearer challenge has no realm".into()))?;
        let mut url =
            Url::parse(realm).map_err(|e| auth_err(format!("token realm {realm:?} is not a URL: {e}")))?;
        let service = ch.params.get("service").cloned().unwrap_or_default();
        let mut sorted: Vec<&String> = scopes.iter().collect();
        sorted.sort();
        sorted.dedup();
        self.inner
            .token_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cred = self.inner.creds.lookup(registry)?;
        let resp = match &cred {
            Some(Credential::IdentityToken(refresh)) => {
                let scope = sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
                let form = [
                    ("grant_type", "refresh_token"),
                    ("service", service.as_str()),
                    ("client_id", "podci"),
                    ("scope", scope.as_str()),
                    ("refresh_token", refresh.as_str()),
                ];
                // Form-encode through Url to avoid another dependency.
                let mut enc = Url::parse("http://form.invalid/").map_err(|e| auth_err(e.to_string()))?;
                enc.query_pairs_mut().extend_pairs(form.iter());
                let body = enc.query().unwrap_or_default().to_string();
                self.inner
                    .http
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", &service);
                    }
                    for s in &sorted {
                        q.append_pair("scope", s);
                    }
                }
                let mut req = self.inner.http.get(url.clone());
                if let Some(h) = cred.as_ref().and_then(|c| c.basic_header()) {
                    req = req.header(header::AUTHORIZATION, h);
                }
                req.send().await
            }
        };
        let resp = resp.map_err(|source| Error::Http {
            url: realm.clone(),
            source,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let hint = if cred.is_none() {
                " (no credentials found for this registry)"
            } else {
                ""
            };
            return Err(auth_err(format!(
                "token server {realm} answered HTTP {}{hint}",
                status.as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResp {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResp = resp
            .json()
            .await
            .map_err(|e| auth_err(format!("token server answer is not JSON: {e}")))?;
        let tok = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_err("token server answered without a token".into()))?;
        // Renew a little early so a token does not expire between check and use.
        let ttl = Duration::from_secs(body.expires_in.unwrap_or(60).max(60).saturating_sub(10));
        Ok((tok, ttl))
    }

    fn remember_challenge(&self, registry: &str, resp: &Response, scopes: &[String]) -> Option<Challenge> {
        let ch = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .find(|c| c.scheme == "bearer" || c.scheme == "basic")?;
        let mut map = self.lock_auth();
        let st = map.entry(registry.to_string()).or_default();
        st.tokens.remove(&Self::scope_key(scopes));
        st.challenge = Some(ch.clone());
        Some(ch)
    }

    async fn make_body(&self, body: &ReqBody) -> Result<(reqwest::Body, Option<SharedHasher>, u64)> {
        match body {
            ReqBody::Empty => Ok((reqwest::Body::from(Bytes::new()), None, 0)),
            ReqBody::Bytes(b) => Ok((reqwest::Body::from(b.clone()), None, b.len() as u64)),
            ReqBody::File { path, offset, len } => {
                let mut f = tokio::fs::File::open(path).await.map_err(Error::io(path))?;
                f.seek(std::io::SeekFrom::Start(*offset))
                    .await
                    .map_err(Error::io(path))?;
                let hasher: SharedHasher = Arc::new(Mutex::new(Sha256::new()));
                let h = hasher.clone();
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(f.take(*len), 256 * 1024).map(move |chunk| {
                        if let Ok(c) = &chunk {
                            h.lock().unwrap_or_else(|p| p.into_inner()).update(c);
                        }
                        chunk
                    });
                Ok((reqwest::Body::wrap_stream(stream), Some(hasher), *len))
            }
            ReqBody::Remote(remote) => {
                let (repo, desc) = &**remote;
                // Boxed: fetching the source goes through `execute` again.
                let resp = Box::pin(self.blob_response(repo, &desc.digest)).await?;
                let hasher: SharedHasher = Arc::new(Mutex::new(Sha256::new()));
                let h = hasher.clone();
                let stream = resp.bytes_stream().map(move |chunk| match chunk {
                    Ok(c) => {
                        h.lock().unwrap_or_else(|p| p.into_inner()).update(&c);
                        Ok(c)
                    }
                    Err(e) => Err(std::io::Error::other(e)),
                });
                Ok((reqwest::Body::wrap_stream(stream), Some(hasher), desc.size))
            }
        }
    }

    /// Sends one request with authentication, retries on 429/5xx (honouring
    /// `Retry-After`) and one re-authentication on 401. Returns the final response,
    /// whatever its status, plus the hasher of a streamed body.
    // The request's parts are passed separately because the body is rebuilt per attempt.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        registry: &str,
        scopes: &[String],
        operation: &str,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: ReqBody,
    ) -> Result<(Response, Option<SharedHasher>)> {
        let own_host = authority(&self.url(registry, "/")?);
        let send_auth = authority(&url) == own_host;
        let mut reauthed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let auth = if send_auth {
                self.auth_header(registry, scopes).await?
            } else {
                None
            };
            let (req_body, hasher, len) = self.make_body(&body).await?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = auth {
                let mut v = HeaderValue::from_str(&a).map_err(|_| Error::Auth {
                    registry: registry.to_string(),
                    reason: "credentials contain characters not allowed in an HTTP header".into(),
                })?;
                v.set_sensitive(true);
                req = req.header(header::AUTHORIZATION, v);
            }
            if matches!(method, Method::PUT | Method::PATCH | Method::POST) {
                req = req.header(header::CONTENT_LENGTH, len);
            }
            let result = req.body(req_body).send().await;
            let resp = match result {
                Ok(r) => r,
                Err(source) => {
                    if attempt < self.inner.opts.max_attempts
                        && (source.is_connect() || source.is_timeout() || source.is_request())
                    {
                        tracing::debug!(%operation, attempt, "transport error, retrying: {source}");
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(Error::Http {
                        url: redact(&url),
                        source,
                    });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && send_auth && !reauthed {
                reauthed = true;
                if let Some(ch) = self.remember_challenge(registry, &resp, scopes) {
                    tracing::debug!(%registry, scheme = %ch.scheme, "authenticating");
                    if ch.scheme == "basic" && self.inner.creds.lookup(registry)?.is_none() {
                        return Ok((resp, hasher));
                    }
                    attempt -= 1;
                    continue;
                }
                return Ok((resp, hasher));
            }
            let transient =
                status == StatusCode::TOO_MANY_REQUESTS || matches!(status.as_u16(), 500 | 502 | 503 | 504);
            if transient {
                if attempt < self.inner.opts.max_attempts {
                    let wait = self.backoff(attempt, retry_after(&resp));
                    tracing::debug!(%operation, status = status.as_u16(), ?wait, "transient failure, retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let errors = read_errors(resp).await;
                if errors.is_empty() {
                    return Err(Error::RetriesExhausted {
                        registry: registry.to_string(),
                        operation: operation.to_string(),
                        attempts: attempt,
                        status: status.as_u16(),
                    });
                }
                return Err(Error::Registry {
                    registry: registry.to_string(),
                    operation: operation.to_string(),
                    status: status.as_u16(),
                    errors,
                });
            }
            return Ok((resp, hasher));
        }
    }

    fn backoff(&self, attempt: u32, server: Option<Duration>) -> Duration {
        let d = server.unwrap_or_else(|| Duration::from_millis(200u64.saturating_mul(1 << attempt.min(8))));
        d.min(self.inner.opts.max_backoff)
    }

    async fn error_from(&self, registry: &str, operation: &str, resp: Response) -> Error {
        let status = resp.status().as_u16();
        let mut errors = read_errors(resp).await;
        if errors.is_empty() && status == 401 {
            errors.push(RegistryErrorEntry {
                code: "UNAUTHORIZED".into(),
                message: "authentication required".into(),
            });
        }
        Error::Registry {
            registry: registry.to_string(),
            operation: operation.to_string(),
            status,
            errors,
        }
    }

    /// Checks that the registry answers and that the configured credentials are accepted
    /// (`GET /v2/`, authenticating if asked to).
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let url = self.url(registry, "/v2/")?;
        let (resp, _) = self
            .execute(
                registry,
                &[],
                "ping",
                Method::GET,
                url,
                HeaderMap::new(),
                ReqBody::Empty,
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.error_from(registry, "ping (GET /v2/)", resp).await)
        }
    }

    /// Authenticates ahead of parallel work so that concurrent requests share one token.
    pub async fn authorize(&self, registry: &str, scopes: &[String]) -> Result<()> {
        let known = self.lock_auth().get(registry).is_some();
        if !known {
            // A bare ping to learn the challenge, without fetching a scope-less token.
            let url = self.url(registry, "/v2/")?;
            let resp = self
                .inner
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|source| Error::Http {
                    url: url.to_string(),
                    source,
                })?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                self.remember_challenge(registry, &resp, scopes);
            } else {
                self.lock_auth().entry(registry.to_string()).or_default();
            }
        }
        self.auth_header(registry, scopes).await.map(|_| ())
    }

    /// `HEAD` a blob: its size if the repository has it.
    pub async fn blob_exists(&self, repo: &Reference, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&repo.registry, &format!("/v2/{}/blobs/{digest}", repo.repository))?;
        let scopes = [pull_scope(&repo.repository)];
        let (resp, _) = self
            .execute(
                &repo.registry,
                &scopes,
                "blob HEAD",
                Method::HEAD,
                url,
                HeaderMap::new(),
                ReqBody::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                header_str(&resp, "content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            // Some registries answer HEAD for a foreign repo with 401/403 rather than 404.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(None),
            _ => Err(self.error_from(&repo.registry, "blob HEAD", resp).await),
        }
    }

    /// A streaming GET of a blob, following redirects (without credentials to other hosts).
    async fn blob_response(&self, repo: &Reference, digest: &Digest) -> Result<Response> {
        let mut url = self.url(&repo.registry, &format!("/v2/{}/blobs/{digest}", repo.repository))?;
        let scopes = [pull_scope(&repo.repository)];
        for _ in 0..6 {
            let (resp, _) = self
                .execute(
                    &repo.registry,
                    &scopes,
                    "blob GET",
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    ReqBody::Empty,
                )
                .await?;
            if resp.status().is_redirection() {
                let loc = header_str(&resp, "location")
                    .ok_or_else(|| self.protocol(&repo.registry, "blob GET", "redirect without Location"))?;
                url = url.join(loc).map_err(|e| {
                    self.protocol(&repo.registry, "blob GET", &format!("bad redirect Location: {e}"))
                })?;
                continue;
            }
            if resp.status().is_success() {
                return Ok(resp);
            }
            return Err(self
                .error_from(&repo.registry, &format!("GET blob {digest}"), resp)
                .await);
        }
        Err(self.protocol(&repo.registry, "blob GET", "too many redirects"))
    }

    fn protocol(&self, registry: &str, operation: &str, reason: &str) -> Error {
        Error::Protocol {
            registry: registry.into(),
            operation: operation.into(),
            reason: reason.into(),
        }
    }

    /// Fetches a small blob (a config) into memory, verifying its digest and size.
    pub async fn get_blob_bytes(&self, repo: &Reference, desc: &Descriptor) -> Result<Bytes> {
        const LIMIT: u64 = 16 * 1024 * 1024;
        if desc.size > LIMIT {
            return Err(Error::InvalidContent {
                what: format!("blob {}", desc.digest),
                reason: "too large to load into memory".into(),
            });
        }
        let resp = self.blob_response(repo, &desc.digest).await?;
        let bytes = resp.bytes().await.map_err(|source| Error::Http {
            url: format!("blob {}", desc.digest),
            source,
        })?;
        verify(
            &format!("blob {}", desc.digest),
            &desc.digest,
            &Digest::of(&bytes),
        )?;
        Ok(bytes)
    }

    /// Streams a blob to a file, verifying the digest on the way; the file is only
    /// created under its final name once verified.
    pub async fn get_blob_to_file(&self, repo: &Reference, desc: &Descriptor, path: &Path) -> Result<()> {
        let tmp = path.with_extension("partial");
        let resp = self.blob_response(repo, &desc.digest).await?;
        let mut file = tokio::fs::File::create(&tmp).await.map_err(Error::io(&tmp))?;
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| Error::Http {
                url: format!("blob {}", desc.digest),
                source,
            })?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(Error::io(&tmp))?;
        }
        file.flush().await.map_err(Error::io(&tmp))?;
        drop(file);
        let got = Digest::from_hasher(hasher);
        if got != desc.digest {
            let _ = tokio::fs::remove_file(&tmp).await;
            return verify(&format!("blob {}", desc.digest), &desc.digest, &got);
        }
        tokio::fs::rename(&tmp, path).await.map_err(Error::io(path))
    }

    /// Fetches a manifest or index by tag or digest; a digest reference is verified.
    pub async fn get_manifest(&self, r: &Reference) -> Result<RawManifest> {
        let url = self.url(
            &r.registry,
            &format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref()),
        )?;
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(media::ACCEPT_ALL));
        let scopes = [pull_scope(&r.repository)];
        let (resp, _) = self
            .execute(
                &r.registry,
                &scopes,
                "manifest GET",
                Method::GET,
                url,
                h,
                ReqBody::Empty,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(&r.registry, &format!("GET manifest {r}"), resp)
                .await);
        }
        let ct = header_str(&resp, "content-type").map(str::to_string);
        let bytes = resp.bytes().await.map_err(|source| Error::Http {
            url: r.to_string(),
            source,
        })?;
        let raw = RawManifest::new(bytes, ct.as_deref())?;
        if let Some(d) = &r.digest {
            verify(&format!("manifest {r}"), d, &raw.digest)?;
        }
        Ok(raw)
    }

    /// Resolves a reference to an image manifest, descending through an index to the
    /// configured platform. Returns the manifest and the reference pinned to its digest.
    pub async fn resolve(&self, r: &Reference) -> Result<(RawManifest, Reference)> {
        let top = self.get_manifest(r).await?;
        if !top.is_index() {
            let pinned = r.with_digest(top.digest.clone());
            return Ok((top, pinned));
        }
        let desc = select_platform(&top.index()?, &self.inner.opts.platform, &r.to_string())?;
        let pinned = r.with_digest(desc.digest.clone());
        let m = self.get_manifest(&pinned).await?;
        Ok((m, pinned))
    }

    /// Pushes a manifest byte-exact with its media type under a tag or digest.
    pub async fn put_manifest(&self, r: &Reference, m: &RawManifest) -> Result<Digest> {
        let url = self.url(
            &r.registry,
            &format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref()),
        )?;
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type)
                .map_err(|_| self.protocol(&r.registry, "manifest PUT", "media type not a header value"))?,
        );
        let scopes = [push_scope(&r.repository)];
        let (resp, _) = self
            .execute(
                &r.registry,
                &scopes,
                "manifest PUT",
                Method::PUT,
                url,
                h,
                ReqBody::Bytes(m.bytes.clone()),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(&r.registry, &format!("PUT manifest {r}"), resp)
                .await);
        }
        if let Some(d) = header_str(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok()) {
            verify(&format!("manifest {r}"), &m.digest, &d)?;
        }
        Ok(m.digest.clone())
    }

    /// Lists a repository's tags, following `Link` pagination.
    pub async fn list_tags(&self, repo: &Reference, page_size: Option<usize>) -> Result<Vec<String>> {
        let mut path = format!("/v2/{}/tags/list", repo.repository);
        if let Some(n) = page_size {
            path.push_str(&format!("?n={n}"));
        }
        let mut url = self.url(&repo.registry, &path)?;
        let scopes = [pull_scope(&repo.repository)];
        let mut tags = Vec::new();
        for _ in 0..10_000 {
            let (resp, _) = self
                .execute(
                    &repo.registry,
                    &scopes,
                    "tags list",
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    ReqBody::Empty,
                )
                .await?;
            if !resp.status().is_success() {
                return Err(self
                    .error_from(&repo.registry, &format!("list tags of {}", repo.repository), resp)
                    .await);
            }
            let next = header_str(&resp, "link").and_then(parse_next_link);
            #[derive(serde::Deserialize)]
            struct Tags {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let body: Tags = resp.json().await.map_err(|e| Error::InvalidContent {
                what: "tag list".into(),
                reason: e.to_string(),
            })?;
            tags.extend(body.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    url = url
                        .join(&n)
                        .map_err(|e| self.protocol(&repo.registry, "tags list", &format!("bad Link: {e}")))?
                }
                None => return Ok(tags),
            }
        }
        Err(self.protocol(&repo.registry, "tags list", "pagination does not end"))
    }

    /// Pushes one blob unless the repository has it: HEAD, then a cross-repository mount
    /// when the source is another repository of the same registry, then an upload
    /// (single POST, one PUT, or PATCH chunks) streamed from the source.
    pub async fn push_blob(
        &self,
        target: &Reference,
        desc: &Descriptor,
        source: &BlobSource,
    ) -> Result<PushOutcome> {
        if self.blob_exists(target, &desc.digest).await?.is_some() {
            return Ok(PushOutcome::Existed);
        }
        let reg = &target.registry;
        let mut scopes = vec![push_scope(&target.repository)];
        let mut path = format!("/v2/{}/blobs/uploads/", target.repository);
        let mount_from = match source {
            BlobSource::Registry { repo }
                if repo.registry == *reg && repo.repository != target.repository =>
            {
                scopes.push(pull_scope(&repo.repository));
                path.push_str(&format!("?mount={}&from={}", desc.digest, repo.repository));
                true
            }
            _ => false,
        };
        let single_post = !mount_from
            && desc.size <= self.inner.opts.single_post_limit
            && matches!(source, BlobSource::Bytes(_));
        let (body, mut headers) = if single_post {
            path.push_str(&format!("?digest={}", desc.digest));
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            (self.body_for(source, desc), h)
        } else {
            (ReqBody::Empty, HeaderMap::new())
        };
        let url = self.url(reg, &path)?;
        let (resp, _) = self
            .execute(
                reg,
                &scopes,
                "blob upload start",
                Method::POST,
                url.clone(),
                headers.clone(),
                body,
            )
            .await?;
        headers.clear();
        match resp.status() {
            StatusCode::CREATED => {
                return Ok(if mount_from {
                    PushOutcome::Mounted
                } else {
                    PushOutcome::Uploaded
                });
            }
            StatusCode::ACCEPTED => {}
            _ => {
                return Err(self
                    .error_from(reg, &format!("start upload of {}", desc.digest), resp)
                    .await);
            }
        }
        let loc = header_str(&resp, "location")
            .ok_or_else(|| self.protocol(reg, "blob upload start", "202 without Location"))?;
        let location = url
            .join(loc)
            .map_err(|e| self.protocol(reg, "blob upload start", &format!("bad Location: {e}")))?;
        let min_chunk = header_str(&resp, "oci-chunk-min-length").and_then(|v| v.parse::<u64>().ok());
        let chunk = self.inner.opts.chunk_size.map(|c| c.max(min_chunk.unwrap_or(0)));
        match (chunk, source) {
            (Some(c), BlobSource::File { path, offset }) if c < desc.size => {
                self.upload_chunked(target, desc, location, path, *offset, c, &scopes)
                    .await?
            }
            _ => {
                self.upload_monolithic(target, desc, location, source, &scopes)
                    .await?
            }
        }
        Ok(PushOutcome::Uploaded)
    }

    fn body_for(&self, source: &BlobSource, desc: &Descriptor) -> ReqBody {
        match source {
            BlobSource::File { path, offset } => ReqBody::File {
                path: path.clone(),
                offset: *offset,
                len: desc.size,
            },
            BlobSource::Bytes(b) => ReqBody::Bytes(b.clone()),
            BlobSource::Registry { repo } => ReqBody::Remote(Box::new((repo.clone(), desc.clone()))),
        }
    }

    async fn upload_monolithic(
        &self,
        target: &Reference,
        desc: &Descriptor,
        mut location: Url,
        source: &BlobSource,
        scopes: &[String],
    ) -> Result<()> {
        location
            .query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let (resp, hasher) = self
            .execute(
                &target.registry,
                scopes,
                "blob upload",
                Method::PUT,
                location,
                h,
                self.body_for(source, desc),
            )
            .await?;
        if let Some(h) = hasher {
            let got = Digest::from_hasher(h.lock().unwrap_or_else(|p| p.into_inner()).clone());
            verify(
                &format!("blob {} read from its source", desc.digest),
                &desc.digest,
                &got,
            )?;
        }
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self
                .error_from(&target.registry, &format!("upload blob {}", desc.digest), resp)
                .await);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_chunked(
        &self,
        target: &Reference,
        desc: &Descriptor,
        mut location: Url,
        path: &Path,
        base: u64,
        chunk: u64,
        scopes: &[String],
    ) -> Result<()> {
        let reg = &target.registry;
        let mut offset = 0u64;
        let mut rewinds = 0;
        while offset < desc.size {
            let len = chunk.min(desc.size - offset);
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let range = format!("{}-{}", offset, offset + len - 1);
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range).map_err(|_| self.protocol(reg, "PATCH", "range"))?,
            );
            let body = ReqBody::File {
                path: path.to_path_buf(),
                offset: base + offset,
                len,
            };
            let (resp, _) = self
                .execute(
                    reg,
                    scopes,
                    "blob chunk PATCH",
                    Method::PATCH,
                    location.clone(),
                    h,
                    body,
                )
                .await?;
            match resp.status() {
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT => {
                    let next = header_str(&resp, "range")
                        .and_then(range_end)
                        .unwrap_or(offset + len);
                    if let Some(l) = header_str(&resp, "location") {
                        location = location
                            .join(l)
                            .map_err(|e| self.protocol(reg, "PATCH", &format!("bad Location: {e}")))?;
                    }
                    offset = next;
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    rewinds += 1;
                    if rewinds > 10 {
                        return Err(self.protocol(
                            reg,
                            "blob chunk PATCH",
                            "the server keeps refusing chunk ranges (416)",
                        ));
                    }
                    // The server says how much it has: resume right after that.
                    let server_end = match header_str(&resp, "range").and_then(range_end) {
                        Some(e) => Some(e),
                        None => self.upload_status(reg, scopes, &location).await?,
                    };
                    if let Some(l) = header_str(&resp, "location") {
                        location = location
                            .join(l)
                            .map_err(|e| self.protocol(reg, "PATCH", &format!("bad Location: {e}")))?;
                    }
                    offset = server_end.unwrap_or(0);
                    tracing::debug!(offset, "resuming chunked upload after 416");
                }
                _ => {
                    return Err(self
                        .error_from(reg, &format!("upload chunk {range} of {}", desc.digest), resp)
                        .await);
                }
            }
            if offset > desc.size {
                return Err(self.protocol(
                    reg,
                    "blob chunk PATCH",
                    "server reports more bytes than the blob has",
                ));
            }
        }
        // The file is hashed once more before committing: it comes from page cache, and a
        // file changed under us must not be committed under the old digest.
        let mut hasher = Sha256::new();
        let mut f = tokio::fs::File::open(path).await.map_err(Error::io(path))?;
        f.seek(std::io::SeekFrom::Start(base))
            .await
            .map_err(Error::io(path))?;
        let mut f = f.take(desc.size);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).await.map_err(Error::io(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        verify(
            &format!("blob {} read from {}", desc.digest, path.display()),
            &desc.digest,
            &Digest::from_hasher(hasher),
        )?;
        location
            .query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let (resp, _) = self
            .execute(
                reg,
                scopes,
                "blob upload finish",
                Method::PUT,
                location,
                HeaderMap::new(),
                ReqBody::Empty,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(reg, &format!("finish upload of {}", desc.digest), resp)
                .await);
        }
        Ok(())
    }

    async fn upload_status(&self, reg: &str, scopes: &[String], location: &Url) -> Result<Option<u64>> {
        let (resp, _) = self
            .execute(
                reg,
                scopes,
                "upload status",
                Method::GET,
                location.clone(),
                HeaderMap::new(),
                ReqBody::Empty,
            )
            .await?;
        Ok(header_str(&resp, "range").and_then(range_end))
    }
}

fn verify(what: &str, expected: &Digest, actual: &Digest) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

fn redact(url: &Url) -> String {
    // Upload locations can carry state tokens; the path is enough for a message.
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

async fn read_errors(resp: Response) -> Vec<RegistryErrorEntry> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<RegistryErrorEntry>,
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    serde_json::from_slice::<Body>(&bytes[..bytes.len().min(1 << 20)])
        .map(|b| b.errors)
        .unwrap_or_default()
}

/// Extracts the target of `Link: <url>; rel="next"`.
pub fn parse_next_link(v: &str) -> Option<String> {
    v.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                p.trim().replace(' ', "").eq_ignore_ascii_case("rel=\"next\"")
                    || p.trim().eq_ignore_ascii_case("rel=next")
            })
            .then(|| target.to_string())
    })
}

pub(crate) fn push_scopes(target: &Reference, sources: &[&Reference]) -> Vec<String> {
    let mut s = vec![push_scope(&target.repository)];
    for r in sources {
        if r.registry == target.registry && r.repository != target.repository {
            s.push(pull_scope(&r.repository));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn link_header() {
        assert_eq!(
            parse_next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(parse_next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn scope_cover() {
        let have = "repository:a:pull,push repository:b:pull";
        assert!(scopes_cover(have, &["repository:a:pull".into()]));
        assert!(scopes_cover(
            have,
            &["repository:a:pull,push".into(), "repository:b:pull".into()]
        ));
        assert!(!scopes_cover(have, &["repository:b:push".into()]));
        assert!(!scopes_cover(have, &["repository:c:pull".into()]));
        assert!(scopes_cover(have, &[]));
    }

    #[test]
    fn ranges() {
        assert_eq!(range_end("0-99"), Some(100));
        assert_eq!(range_end("bytes=0-0"), Some(1));
        assert_eq!(range_end("junk"), None);
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("registry.example:5000"));
    }

    proptest! {
        #[test]
        fn link_parser_never_panics(s in ".{0,120}") {
            let _ = parse_next_link(&s);
        }
        #[test]
        fn range_parser_never_panics(s in ".{0,40}") {
            let _ = range_end(&s);
        }
    }
}
