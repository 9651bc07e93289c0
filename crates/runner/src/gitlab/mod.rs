//! GitLab's runner API, as GitLab Runner speaks it (`network/gitlab.go`).
//!
//! Owns: registration (`POST /runners`, `/runners/verify`, `DELETE /runners`), the job
//! request long poll, job state updates (`PUT /jobs/:id`), trace patches
//! (`PATCH /jobs/:id/trace`), artifacts upload and download, retries with backoff and
//! `Retry-After`, and per-endpoint metrics. What to do with a job (trace buffering,
//! keep-alives, the final update loop) lives in [`trace`] and the job manager.
//!
//! Tokens travel only in headers and JSON bodies; nothing here formats a token into a
//! log line or an error (only [`short_token`], the first 8 characters GitLab Runner shows).

pub mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use podci_model::payload::JobPayload;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::metrics::Metrics;

/// The features this runner announces in `info.features` (GitLab Runner's names).
pub const FEATURES: &[&str] = &[
    "variables",
    "image",
    "services",
    "artifacts",
    "cache",
    "fallback_cache_keys",
    "shared",
    "upload_multiple_artifacts",
    "upload_raw_artifacts",
    "session",
    "terminal",
    "refspecs",
    "masking",
    "proxy",
    "raw_variables",
    "artifacts_exclude",
    "multi_build_steps",
    "trace_reset",
    "trace_checksum",
    "trace_size",
    "vault_secrets",
    "cancelable",
    "return_exit_code",
    "service_variables",
    "service_multiple_aliases",
    "image_executor_opts",
    "service_executor_opts",
    "cancel_gracefully",
    "two_phase_job_commit",
    "job_inputs",
];

/// The first 8 characters of a token, GitLab Runner's way of naming a runner in logs
/// without revealing its token (for `glrt-` tokens, the part after the prefix).
pub fn short_token(token: &str) -> String {
    let t = token.strip_prefix("glrt-").unwrap_or(token);
    let t = t.strip_prefix("t1_").unwrap_or(t);
    t.chars().take(8).collect()
}

/// A failed API call, with what a user can do about it. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused, reset, timed out, or a truncated body.
    #[error("{endpoint}: no answer from GitLab ({message}); check the url in config.toml and the network")]
    Transport {
        /// Endpoint name.
        endpoint: &'static str,
        /// What happened.
        message: String,
    },
    /// GitLab rejected the token.
    #[error(
        "{endpoint}: GitLab answered 403 Forbidden: the token is invalid or the runner was deleted; register again"
    )]
    Forbidden {
        /// Endpoint name.
        endpoint: &'static str,
    },
    /// Any other unexpected status.
    #[error("{endpoint}: GitLab answered {status}: {body}")]
    Status {
        /// Endpoint name.
        endpoint: &'static str,
        /// HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The answer was not the JSON GitLab sends.
    #[error("{endpoint}: GitLab's answer is not valid JSON: {message}")]
    Decode {
        /// Endpoint name.
        endpoint: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{endpoint}: {path}: {source}")]
    File {
        /// Endpoint name.
        endpoint: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The artifacts archive is larger than GitLab accepts.
    #[error(
        "artifacts upload: 413 Request Entity Too Large: the archive exceeds the project's maximum artifacts size"
    )]
    TooLarge,
}

/// One answer, body read in full (so that a connection dropped mid-body counts as a
/// failure, not a success).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Retry-After` in seconds (GitLab sends seconds, never a date).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned()
    }
}

/// How often and how long to retry a transient failure.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First wait.
    pub min: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
}

impl Backoff {
    /// For calls whose failure loses nothing but time (GitLab Runner: 5 attempts).
    pub const DEFAULT: Backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
        attempts: 5,
    };

    /// The wait before attempt `n` (1-based retry count), with jitter so that many jobs
    /// failing together do not retry together.
    pub fn wait(&self, n: u32) -> Duration {
        let base = self.min.saturating_mul(1u32 << n.min(16).saturating_sub(1));
        let base = base.min(self.max);
        let jitter = jitter_fraction();
        base.mul_f64(0.5 + jitter / 2.0)
    }
}

/// A cheap pseudo-random fraction in [0, 1) for jitter (no RNG dependency needed).
fn jitter_fraction() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// What `POST /jobs/request` gave.
#[derive(Debug)]
pub enum JobRequest {
    /// A job (201).
    Job(Box<JobPayload>),
    /// No job now (204); echo `last_update` next time.
    NoJob {
        /// `X-GitLab-Last-Update`.
        last_update: Option<String>,
    },
    /// Try again later (409, 429, 503), after the given wait when GitLab named one.
    Later(Option<Duration>),
}

/// What a trace patch gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Patch {
    /// Accepted (202): the server now holds `size` bytes.
    Accepted {
        /// End of the server's trace (`Range: 0-SIZE`).
        size: Option<u64>,
        /// `Job-Status`.
        job_status: Option<String>,
        /// `X-GitLab-Trace-Update-Interval`.
        interval: Option<Duration>,
    },
    /// 416: the server holds `size` bytes; resend from there.
    Rewind {
        /// End of the server's trace.
        size: u64,
    },
    /// 403/404: the job is no longer this runner's.
    Gone,
    /// 408/429/5xx: GitLab is busy; send again, not before `retry_after` when it named one.
    Busy {
        /// HTTP status.
        status: u16,
        /// `Retry-After`.
        retry_after: Option<Duration>,
        /// The start of the answer's body.
        body: String,
    },
}

/// What a job state update gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// 200: recorded.
    Ok {
        /// `Job-Status`.
        job_status: Option<String>,
    },
    /// 202: not yet (the server still processes the trace); ask again after `interval`.
    NotYet {
        /// `X-GitLab-Trace-Update-Interval` or `Retry-After`.
        interval: Option<Duration>,
    },
    /// 412: the server's trace does not match the checksum; resend the whole trace.
    ResendTrace,
    /// 403/404/409: the job is no longer this runner's (or already finished).
    Gone,
}

/// Registration answer.
#[derive(Debug, Deserialize)]
pub struct Registered {
    /// Runner id.
    pub id: u64,
    /// The runner authentication token.
    pub token: String,
    /// Expiry, when GitLab set one.
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

/// A final or intermediate job state.
#[derive(Debug, Clone, Serialize)]
pub struct JobState {
    /// `running`, `success` or `failed`.
    pub state: &'static str,
    /// For `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The script's exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `{checksum, bytesize}` of the whole trace, on the final update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
}

/// `output` of the final update.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// `crc32:%08x`.
    pub checksum: String,
    /// Trace size in bytes.
    pub bytesize: u64,
}

/// Options of an artifacts upload.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// File name GitLab shows (`artifacts.zip`).
    pub filename: String,
    /// `artifact_format`: `zip`, `gzip`, `raw`.
    pub format: String,
    /// `artifact_type`: `archive`, `junit`, ...
    pub kind: String,
    /// `expire_in`.
    pub expire_in: Option<String>,
}

/// A client of one GitLab instance.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    origin: String,
    metrics: Arc<Metrics>,
    runner: Arc<str>,
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

fn request_id() -> String {
    let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("podci-{:x}-{n:x}", std::process::id())
}

/// `scheme://host:port` of a URL, to decide whether a redirect leaves GitLab.
fn origin_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => String::new(),
    }
}

impl Client {
    /// A client for `url` (the instance, e.g. `https://gitlab.example.com/`). `runner`
    /// labels metrics (the short token).
    pub fn new(url: &str, runner: &str, metrics: Arc<Metrics>) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("podci ", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by hand: a JOB-TOKEN must not follow a redirect to
            // object storage on another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(
                std::env::var("PODCI_API_TIMEOUT")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(70),
            ))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ApiError::Transport {
                endpoint: "client",
                message: e.to_string(),
            })?;
        let base = url.trim_end_matches('/');
        Ok(Client {
            http,
            api: format!("{base}/api/v4"),
            origin: origin_of(base),
            metrics,
            runner: runner.into(),
        })
    }

    /// One attempt; records metrics; reads the whole body.
    async fn once(&self, endpoint: &'static str, req: reqwest::RequestBuilder) -> Result<Answer, ApiError> {
        let start = Instant::now();
        let result = async {
            let resp = req.header("X-Request-Id", request_id()).send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers,
                body,
            })
        }
        .await;
        let status = match &result {
            Ok(a) => a.status.to_string(),
            Err(_) => "error".to_string(),
        };
        self.metrics
            .api_request(&self.runner, endpoint, &status, start.elapsed());
        result.map_err(|e| ApiError::Transport {
            endpoint,
            message: transport_message(&e),
        })
    }

    /// Retries transient failures (no answer, 408/429/5xx) with backoff, honouring
    /// `Retry-After`. `make` builds the request anew for each attempt.
    async fn retrying(
        &self,
        endpoint: &'static str,
        backoff: Backoff,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.once(endpoint, make()).await;
            let wait = match &result {
                Ok(a) if matches!(a.status, 408 | 429 | 500 | 502 | 503 | 504) => {
                    a.retry_after().unwrap_or_else(|| backoff.wait(attempt))
                }
                Ok(_) => return result,
                Err(_) => backoff.wait(attempt),
            };
            if attempt >= backoff.attempts {
                return match result {
                    Ok(a) => Err(status_error(endpoint, &a)),
                    Err(e) => Err(e),
                };
            }
            tokio::time::sleep(wait.min(backoff.max.max(Duration::from_secs(60)))).await;
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.api))
    }

    /// `POST /runners` with a registration token (legacy registration).
    pub async fn register(
        &self,
        registration_token: &str,
        description: &str,
        tags: &[String],
        run_untagged: bool,
        locked: bool,
    ) -> Result<Registered, ApiError> {
        let body = json!({
            "token": registration_token,
            "description": description,
            "tag_list": tags.join(","),
            "run_untagged": run_untagged,
            "locked": locked,
            "paused": false,
            "access_level": "not_protected",
            "maximum_timeout": serde_json::Value::Null,
            "info": info(),
        });
        let a = self
            .retrying("register_runner", Backoff::DEFAULT, || {
                self.post("/runners").json(&body)
            })
            .await?;
        match a.status {
            201 => decode("register_runner", &a),
            403 => Err(ApiError::Forbidden {
                endpoint: "register_runner",
            }),
            _ => Err(status_error("register_runner", &a)),
        }
    }

    /// `POST /runners/verify`: whether `token` is valid for this runner manager.
    pub async fn verify(&self, token: &str, system_id: &str) -> Result<(), ApiError> {
        let body = json!({"token": token, "system_id": system_id, "info": info()});
        let a = self
            .retrying("verify_runner", Backoff::DEFAULT, || {
                self.post("/runners/verify").json(&body)
            })
            .await?;
        match a.status {
            200 => Ok(()),
            403 => Err(ApiError::Forbidden {
                endpoint: "verify_runner",
            }),
            _ => Err(status_error("verify_runner", &a)),
        }
    }

    /// `DELETE /runners`.
    pub async fn unregister(&self, token: &str) -> Result<(), ApiError> {
        let body = json!({ "token": token });
        let a = self
            .retrying("unregister_runner", Backoff::DEFAULT, || {
                self.http.delete(format!("{}/runners", self.api)).json(&body)
            })
            .await?;
        match a.status {
            200 | 204 => Ok(()),
            403 => Err(ApiError::Forbidden {
                endpoint: "unregister_runner",
            }),
            _ => Err(status_error("unregister_runner", &a)),
        }
    }

    /// `POST /jobs/request`: one long poll. No retry here: the caller polls again anyway.
    pub async fn request_job(
        &self,
        token: &str,
        system_id: &str,
        last_update: Option<&str>,
    ) -> Result<JobRequest, ApiError> {
        let mut body = json!({"token": token, "system_id": system_id, "info": info()});
        if let Some(l) = last_update {
            body["last_update"] = json!(l);
        }
        let a = self
            .once("request_job", self.post("/jobs/request").json(&body))
            .await?;
        match a.status {
            201 => {
                let job: JobPayload = decode("request_job", &a)?;
                Ok(JobRequest::Job(Box::new(job)))
            }
            204 => Ok(JobRequest::NoJob {
                last_update: a.header("x-gitlab-last-update").map(str::to_string),
            }),
            403 => Err(ApiError::Forbidden {
                endpoint: "request_job",
            }),
            409 | 429 | 502 | 503 | 504 => Ok(JobRequest::Later(a.retry_after())),
            _ => Err(status_error("request_job", &a)),
        }
    }

    /// `PUT /jobs/:id` with `state`. Transient failures are retried here with `backoff`.
    pub async fn update_job(
        &self,
        id: u64,
        job_token: &str,
        state: &JobState,
        backoff: Backoff,
    ) -> Result<Update, ApiError> {
        let mut body = serde_json::to_value(state).map_err(|e| ApiError::Decode {
            endpoint: "update_job",
            message: e.to_string(),
        })?;
        body["token"] = json!(job_token);
        let url = format!("{}/jobs/{id}", self.api);
        let a = self
            .retrying("update_job", backoff, || {
                self.http.put(&url).header("JOB-TOKEN", job_token).json(&body)
            })
            .await?;
        match a.status {
            200 => Ok(Update::Ok {
                job_status: a.header("job-status").map(str::to_string),
            }),
            202 => Ok(Update::NotYet {
                interval: trace_interval(&a).or_else(|| a.retry_after()),
            }),
            412 => Ok(Update::ResendTrace),
            403 | 404 | 409 => Ok(Update::Gone),
            _ => Err(status_error("update_job", &a)),
        }
    }

    /// `PATCH /jobs/:id/trace` with bytes `[offset, offset + chunk.len())`. One attempt:
    /// the trace loop decides what to resend.
    pub async fn patch_trace(
        &self,
        id: u64,
        job_token: &str,
        offset: u64,
        chunk: Bytes,
    ) -> Result<Patch, ApiError> {
        let end = (offset + chunk.len() as u64).saturating_sub(1);
        let req = self
            .http
            .patch(format!("{}/jobs/{id}/trace", self.api))
            .header("JOB-TOKEN", job_token)
            .header("Content-Range", format!("{offset}-{end}"))
            .header("Content-Type", "text/plain")
            .body(chunk);
        let a = self.once("patch_trace", req).await?;
        let size = a.header("range").and_then(parse_range_end);
        match a.status {
            202 => Ok(Patch::Accepted {
                size,
                job_status: a.header("job-status").map(str::to_string),
                interval: trace_interval(&a),
            }),
            416 => match size {
                Some(size) => Ok(Patch::Rewind { size }),
                None => Err(status_error("patch_trace", &a)),
            },
            403 | 404 => Ok(Patch::Gone),
            408 | 429 | 500 | 502 | 503 | 504 => Ok(Patch::Busy {
                status: a.status,
                retry_after: a.retry_after(),
                body: a.body_text(),
            }),
            _ => Err(status_error("patch_trace", &a)),
        }
    }

    /// `POST /jobs/:id/artifacts`: uploads `file` as multipart field `file`, streamed.
    pub async fn upload_artifacts(
        &self,
        id: u64,
        job_token: &str,
        file: &std::path::Path,
        opts: &UploadOptions,
    ) -> Result<(), ApiError> {
        const EP: &str = "upload_artifacts";
        let mut url = reqwest::Url::parse(&format!("{}/jobs/{id}/artifacts", self.api)).map_err(|e| {
            ApiError::Transport {
                endpoint: EP,
                message: e.to_string(),
            }
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("artifact_format", &opts.format);
            q.append_pair("artifact_type", &opts.kind);
            if let Some(e) = &opts.expire_in {
                q.append_pair("expire_in", e);
            }
        }
        let mut target = url.to_string();
        let mut redirects = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let with_token = origin_of(&target) == self.origin;
            let (content_type, body) =
                multipart_body(file, &opts.filename)
                    .await
                    .map_err(|source| ApiError::File {
                        endpoint: EP,
                        path: file.display().to_string(),
                        source,
                    })?;
            let mut req = self
                .http
                .post(&target)
                .header("Content-Type", content_type)
                .body(body);
            if with_token {
                req = req.header("JOB-TOKEN", job_token);
            }
            let result = self.once(EP, req).await;
            let retry = match &result {
                Ok(a) => match a.status {
                    200 | 201 => return Ok(()),
                    307 | 308 if redirects < 5 => {
                        redirects += 1;
                        match a.header("location") {
                            Some(l) => {
                                target = resolve(&target, l);
                                attempt -= 1;
                                continue;
                            }
                            None => return Err(status_error(EP, a)),
                        }
                    }
                    413 => return Err(ApiError::TooLarge),
                    403 => return Err(ApiError::Forbidden { endpoint: EP }),
                    408 | 429 | 500 | 502 | 503 | 504 => a.retry_after(),
                    _ => return Err(status_error(EP, a)),
                },
                Err(_) => None,
            };
            if attempt >= Backoff::DEFAULT.attempts {
                return match result {
                    Ok(a) => Err(status_error(EP, &a)),
                    Err(e) => Err(e),
                };
            }
            tokio::time::sleep(retry.unwrap_or_else(|| Backoff::DEFAULT.wait(attempt))).await;
        }
    }

    /// `GET /jobs/:id/artifacts` with the dependency's job token, into `dest`. A redirect to
    /// another host (object storage) is followed without the token.
    pub async fn download_artifacts(
        &self,
        id: u64,
        job_token: &str,
        dest: &std::path::Path,
    ) -> Result<u64, ApiError> {
        const EP: &str = "download_artifacts";
        let mut target = format!("{}/jobs/{id}/artifacts", self.api);
        let mut redirects = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.get(&target);
            if origin_of(&target) == self.origin {
                req = req.header("JOB-TOKEN", job_token);
            }
            let result = self.once(EP, req).await;
            let retry = match &result {
                Ok(a) => match a.status {
                    200 => {
                        tokio::fs::write(dest, &a.body)
                            .await
                            .map_err(|source| ApiError::File {
                                endpoint: EP,
                                path: dest.display().to_string(),
                                source,
                            })?;
                        return Ok(a.body.len() as u64);
                    }
                    301 | 302 | 303 | 307 | 308 if redirects < 5 => {
                        redirects += 1;
                        match a.header("location") {
                            Some(l) => {
                                target = resolve(&target, l);
                                attempt -= 1;
                                continue;
                            }
                            None => return Err(status_error(EP, a)),
                        }
                    }
                    403 => return Err(ApiError::Forbidden { endpoint: EP }),
                    408 | 429 | 500 | 502 | 503 | 504 => a.retry_after(),
                    _ => return Err(status_error(EP, a)),
                },
                Err(_) => None,
            };
            if attempt >= Backoff::DEFAULT.attempts {
                return match result {
                    Ok(a) => Err(status_error(EP, &a)),
                    Err(e) => Err(e),
                };
            }
            tokio::time::sleep(retry.unwrap_or_else(|| Backoff::DEFAULT.wait(attempt))).await;
        }
    }
}

fn resolve(base: &str, location: &str) -> String {
    match reqwest::Url::parse(base).and_then(|b| b.join(location)) {
        Ok(u) => u.to_string(),
        Err(_) => location.to_string(),
    }
}

/// A multipart/form-data body with one field `file`, streamed from disk.
async fn multipart_body(file: &std::path::Path, filename: &str) -> std::io::Result<(String, reqwest::Body)> {
    use futures::StreamExt;
    let boundary = format!("podci-{:016x}", (jitter_fraction() * u64::MAX as f64) as u64);
    let safe_name: String = filename
        .chars()
        .map(|c| {
            if c == '"' || c == '\r' || c == '\n' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let f = tokio::fs::File::open(file).await?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(tokio_util::io::ReaderStream::new(f))
        .chain(futures::stream::once(async move { Ok(tail) }));
    Ok((
        format!("multipart/form-data; boundary={boundary}"),
        reqwest::Body::wrap_stream(stream),
    ))
}

fn trace_interval(a: &Answer) -> Option<Duration> {
    a.header("x-gitlab-trace-update-interval")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// `Range: 0-123` -> 123.
pub fn parse_range_end(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let (start, end) = v.split_once('-')?;
    start.trim().parse::<u64>().ok()?;
    end.trim().parse().ok()
}

fn decode<T: serde::de::DeserializeOwned>(endpoint: &'static str, a: &Answer) -> Result<T, ApiError> {
    serde_json::from_slice(&a.body).map_err(|e| ApiError::Decode {
        endpoint,
        message: e.to_string(),
    })
}

fn status_error(endpoint: &'static str, a: &Answer) -> ApiError {
    ApiError::Status {
        endpoint,
        status: a.status,
        body: a.body_text(),
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's Display names the URL; ours never carry tokens, but keep the cause chain.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// `info` as GitLab Runner sends it on every runner call.
fn info() -> serde_json::Value {
    let features: serde_json::Map<String, serde_json::Value> =
        FEATURES.iter().map(|f| (f.to_string(), json!(true))).collect();
    json!({
        "name": "podci",
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "podci",
        "platform": std::env::consts::OS,
        "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        "executor": "shell",
        "shell": "bash",
        "features": features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_token_hides_the_secret_part() {
        assert_eq!(short_token("glrt-t1_abcdefghijklmnop"), "abcdefgh");
        assert_eq!(short_token("xyz"), "xyz");
    }

    #[test]
    fn range_headers() {
        assert_eq!(parse_range_end("0-123"), Some(123));
        assert_eq!(parse_range_end("bytes 0-5"), Some(5));
        assert_eq!(parse_range_end("x-5"), None);
        assert_eq!(parse_range_end("5"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 10,
        };
        assert!(b.wait(1) <= Duration::from_millis(100));
        assert!(b.wait(3) >= Duration::from_millis(200));
        assert!(b.wait(30) <= Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn range_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_range_end(&s);
        }

        #[test]
        fn range_parser_reads_what_gitlab_writes(a in 0u64..1 << 40, b in 0u64..1 << 40) {
            prop_assert_eq!(parse_range_end(&format!("{a}-{b}")), Some(b));
        }
    }
}
