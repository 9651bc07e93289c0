//! The docker executor: each step of a job runs in a fresh container of the job's image,
//! through the Docker engine API on its unix socket (hyper over a tokio `UnixStream`; no
//! docker CLI, no docker.sock inside jobs).
//!
//! The job's directories are bind-mounted at the same paths, so `CI_PROJECT_DIR`, caches
//! and artifacts work as with the shell executor. A step's script goes into a private
//! file in the job's tmp directory (never into the container's command line or
//! environment) and the container runs GitLab Runner's shell detection on it. The image
//! must exist locally or be pullable; otherwise the job fails with
//! `image_pull_failure` and the engine's message, within [`PULL_TIMEOUT`]. Cancel and
//! timeout kill the container; every container is removed when its step ends.
//!
//! Services (`services:`) run as containers for the whole job. They share one network
//! namespace with the job's containers, as the containers of a Kubernetes Pod do, so that
//! this works on engines without a bridge (`--network none`): a service listens on
//! `localhost`, and its aliases (GitLab's names derived from the image, and `alias`) are
//! mapped to 127.0.0.1 in the shared `/etc/hosts`. Services get the job's public variables
//! and their own `variables`; they are removed when the job ends.

use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use podci_model::payload::JobPayload;
use podci_model::schedule::FailureReason;
use podci_model::script::Shell;
use serde_json::json;

use super::{Executor, JobDirs, Session, StageError, StepEnd, StepRun};

/// How long an image pull may take before the job fails.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs jobs in containers (see the module documentation).
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    /// Path of the engine's unix socket.
    pub socket: PathBuf,
    /// Image for jobs without `image:`.
    pub default_image: String,
    /// `HostConfig.NetworkMode` (`none` on engines started without a bridge); empty: the
    /// engine's default.
    pub network: String,
}

impl DockerExecutor {
    /// The engine at `DOCKER_HOST` (`unix://PATH`) or `/var/run/docker.sock`; default
    /// image from `PODCI_DOCKER_IMAGE` (else `alpine:latest`), network mode from
    /// `PODCI_DOCKER_NETWORK`.
    pub fn from_env() -> DockerExecutor {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        DockerExecutor {
            socket,
            default_image: std::env::var("PODCI_DOCKER_IMAGE").unwrap_or_else(|_| "alpine:latest".into()),
            network: std::env::var("PODCI_DOCKER_NETWORK").unwrap_or_default(),
        }
    }
}

/// A response: status and the whole body.
struct Reply {
    status: u16,
    body: Bytes,
}

impl Reply {
    fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// One HTTP/1.1 request on a new connection to the engine.
async fn send(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot reach the Docker engine at {}: {e}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("Docker engine handshake failed: {e}"))?;
    tokio::spawn(async move {
        // The connection ends with the request; its error is the request's error.
        let _ = conn.await;
    });
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://docker/v1.41{path}"))
        .header("Host", "docker")
        .header("Content-Type", "application/json")
        .body(text)
        .map_err(|e| format!("bad Docker API request {path}: {e}"))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("Docker API {method} {path} failed: {e}"))
}

async fn call(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, String> {
    let resp = send(socket, method, path, body).await?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("Docker API {method} {path}: {e}"))?
        .to_bytes();
    Ok(Reply { status, body })
}

/// Percent-encodes a query or path value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `name[:tag]` -> (`name`, `tag`), keeping a registry port and a digest intact.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

impl DockerExecutor {
    async fn ensure_image(&self, image: &str, policy: &[String]) -> Result<(), StageError> {
        let pull_err = |m: String| StageError {
            reason: FailureReason::Other("image_pull_failure".into()),
            message: m,
        };
        let always = policy.iter().any(|p| p == "always");
        if !always {
            let r = call(&self.socket, "GET", &format!("/images/{}/json", enc(image)), None)
                .await
                .map_err(StageError::system)?;
            if r.status == 200 {
                return Ok(());
            }
            if policy.iter().all(|p| p == "never") && !policy.is_empty() {
                return Err(pull_err(format!(
                    "image {image} is not present locally and pull_policy is never"
                )));
            }
        }
        let (name, tag) = split_tag(image);
        let mut path = format!("/images/create?fromImage={}", enc(name));
        if !tag.is_empty() {
            path.push_str(&format!("&tag={}", enc(tag)));
        }
        let pulled = tokio::time::timeout(PULL_TIMEOUT, call(&self.socket, "POST", &path, None)).await;
        let r = match pulled {
            Err(_) => {
                return Err(pull_err(format!(
                    "pulling image {image} took longer than {}s",
                    PULL_TIMEOUT.as_secs()
                )));
            }
            Ok(r) => r.map_err(StageError::system)?,
        };
        // The pull answers 200 with a stream of JSON progress lines; a failure is a line
        // with `error` (or a non-200 status before the stream starts).
        let failed = String::from_utf8_lossy(&r.body)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        match (r.status, failed) {
            (200, None) => Ok(()),
            (200, Some(e)) => Err(pull_err(format!("failed to pull image {image}: {e}"))),
            (_, _) => Err(pull_err(format!("failed to pull image {image}: {}", r.message()))),
        }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &str {
        "docker"
    }

    fn shell(&self) -> Shell {
        Shell::Detect
    }

    fn prepare<'a, 'p>(
        &'a self,
        payload: &'p JobPayload,
        _dirs: &'p JobDirs,
    ) -> BoxFuture<'p, Result<Box<dyn Session + 'a>, StageError>>
    where
        'a: 'p,
    {
        async move {
            let (image, policy) = match &payload.image {
                Some(i) if !i.name.is_empty() => (i.name.clone(), i.pull_policy.clone().unwrap_or_default()),
                _ => (self.default_image.clone(), Vec::new()),
            };
            self.ensure_image(&image, &policy).await?;
            let entrypoint = payload.image.as_ref().and_then(|i| i.entrypoint.clone());
            let services = self.start_services(payload).await?;
            Ok(Box::new(DockerSession {
                exec: self,
                image,
                entrypoint,
                steps: 0,
                services,
            }) as Box<dyn Session + 'a>)
        }
        .boxed()
    }
}

struct DockerSession<'e> {
    exec: &'e DockerExecutor,
    image: String,
    entrypoint: Option<Vec<String>>,
    steps: u32,
    /// Service container ids; the first one owns the network namespace.
    services: Vec<String>,
}

/// GitLab's host names for a service: `alias` (several may be given, separated by commas or
/// blanks) and two derived from the image name without tag: `/` as `__` and as `-`.
pub fn service_aliases(name: &str, alias: Option<&str>) -> Vec<String> {
    let (path, _) = split_tag(name);
    let path = path.split('@').next().unwrap_or(path);
    let mut out: Vec<String> = Vec::new();
    for a in alias
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .chain([path.replace('/', "__"), path.replace('/', "-")])
    {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

impl DockerExecutor {
    /// Creates and starts the job's services; on failure removes those already started.
    async fn start_services(&self, payload: &JobPayload) -> Result<Vec<String>, StageError> {
        let mut ids: Vec<String> = Vec::new();
        let hosts: Vec<String> = payload
            .services
            .iter()
            .flat_map(|s| service_aliases(&s.name, s.alias.as_deref()))
            .map(|a| format!("{a}:127.0.0.1"))
            .collect();
        for svc in &payload.services {
            let started = self.start_service(payload, svc, ids.first(), &hosts).await;
            match started {
                Ok(id) => ids.push(id),
                Err(e) => {
                    remove_containers(&self.socket, &ids).await;
                    return Err(e);
                }
            }
        }
        Ok(ids)
    }

    async fn start_service(
        &self,
        payload: &JobPayload,
        svc: &podci_model::payload::Service,
        netns: Option<&String>,
        hosts: &[String],
    ) -> Result<String, StageError> {
        self.ensure_image(&svc.name, svc.pull_policy.as_deref().unwrap_or_default())
            .await?;
        let mut env: Vec<String> = payload
            .variables
            .iter()
            .filter(|v| v.public && !v.file)
            .map(|v| format!("{}={}", v.key, v.value))
            .collect();
        env.extend(svc.variables.iter().map(|v| format!("{}={}", v.key, v.value)));
        let mut host = json!({});
        match netns {
            Some(owner) => host["NetworkMode"] = json!(format!("container:{owner}")),
            None => {
                if !self.network.is_empty() {
                    host["NetworkMode"] = json!(self.network);
                }
                // Host entries live with the namespace owner; joiners share its /etc/hosts.
                host["ExtraHosts"] = json!(hosts);
            }
        }
        let mut body = json!({
            "Image": svc.name,
            "Env": env,
            "Tty": false,
            "HostConfig": host,
            "Labels": {"podci.job": "1", "podci.service": "1"},
        });
        if let Some(cmd) = &svc.command {
            body["Cmd"] = json!(cmd);
        }
        if let Some(ep) = &svc.entrypoint {
            body["Entrypoint"] = json!(ep);
        }
        let r = call(&self.socket, "POST", "/containers/create", Some(body))
            .await
            .map_err(StageError::system)?;
        let id = (r.status == 201)
            .then(|| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .flatten()
            .and_then(|v| v.get("Id").and_then(|i| i.as_str()).map(str::to_string))
            .ok_or_else(|| {
                StageError::system(format!(
                    "cannot create service container {}: {}",
                    svc.name,
                    r.message()
                ))
            })?;
        let r = call(&self.socket, "POST", &format!("/containers/{id}/start"), None)
            .await
            .map_err(StageError::system)?;
        if r.status != 204 && r.status != 304 {
            remove_containers(&self.socket, std::slice::from_ref(&id)).await;
            return Err(StageError::system(format!(
                "cannot start service {}: {}",
                svc.name,
                r.message()
            )));
        }
        Ok(id)
    }
}

/// Force-removes containers (and their anonymous volumes), ignoring errors.
async fn remove_containers(socket: &std::path::Path, ids: &[String]) {
    for id in ids {
        let _ = call(socket, "DELETE", &format!("/containers/{id}?force=1&v=1"), None).await;
    }
}

/// GitLab Runner's shell detection, running a script file instead of stdin.
fn detect_cmd(script: &str) -> String {
    let q = podci_model::script::quote(script);
    format!(
        "for s in /usr/local/bin/bash /usr/bin/bash /bin/bash /usr/local/bin/sh /usr/bin/sh /bin/sh /busybox/sh; do \
         if [ -x \"$s\" ]; then exec \"$s\" {q}; fi; done; echo 'shell not found'; exit 1"
    )
}

impl Session for DockerSession<'_> {
    fn run_step<'a>(
        &'a mut self,
        step: StepRun<'a>,
        output: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<StepEnd, StageError>> {
        async move {
            self.steps += 1;
            let file = step.dirs.tmp.join(format!(".podci-step-{}.sh", self.steps));
            super::shell::write_private(&file, step.script.as_bytes())
                .map_err(|e| StageError::system(format!("cannot write the step script: {e}")))?;
            let res = self.run_container(&step, &file, output).await;
            let _ = std::fs::remove_file(&file);
            res
        }
        .boxed()
    }

    fn cleanup(self: Box<Self>) -> BoxFuture<'static, ()> {
        let socket = self.exec.socket.clone();
        let ids = self.services;
        async move { remove_containers(&socket, &ids).await }.boxed()
    }
}

impl DockerSession<'_> {
    async fn run_container(
        &self,
        step: &StepRun<'_>,
        script: &std::path::Path,
        output: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<StepEnd, StageError> {
        let sock = &self.exec.socket;
        let root = step.dirs.root.to_string_lossy().into_owned();
        let mut host = json!({ "Binds": [format!("{root}:{root}")] });
        if let Some(owner) = self.services.first() {
            host["NetworkMode"] = json!(format!("container:{owner}"));
        } else if !self.exec.network.is_empty() {
            host["NetworkMode"] = json!(self.exec.network);
        }
        let mut body = json!({
            "Image": self.image,
            "Cmd": ["sh", "-c", detect_cmd(&script.to_string_lossy())],
            "WorkingDir": step.dirs.project.to_string_lossy(),
            "Tty": false,
            "HostConfig": host,
            "Labels": {"podci.job": "1"},
        });
        // GitLab Runner overrides the entrypoint only when the job says so.
        if let Some(ep) = &self.entrypoint {
            body["Entrypoint"] = json!(ep);
        }
        let r = call(sock, "POST", "/containers/create", Some(body))
            .await
            .map_err(StageError::system)?;
        if r.status != 201 {
            return Err(StageError::system(format!(
                "cannot create a container of {}: {}",
                self.image,
                r.message()
            )));
        }
        let id = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v.get("Id").and_then(|i| i.as_str()).map(str::to_string))
            .ok_or_else(|| StageError::system("the Docker engine returned no container id"))?;
        let res = self.follow(&id, step, output).await;
        let _ = call(sock, "DELETE", &format!("/containers/{id}?force=1&v=1"), None).await;
        res
    }

    async fn follow(
        &self,
        id: &str,
        step: &StepRun<'_>,
        output: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<StepEnd, StageError> {
        let sock = &self.exec.socket;
        // Attach to the log stream before starting, so no output is missed.
        let logs = send(
            sock,
            "POST",
            &format!("/containers/{id}/attach?stream=1&stdout=1&stderr=1&logs=1"),
            None,
        )
        .await
        .map_err(StageError::system)?;
        let r = call(sock, "POST", &format!("/containers/{id}/start"), None)
            .await
            .map_err(StageError::system)?;
        if r.status != 204 && r.status != 304 {
            return Err(StageError::system(format!(
                "cannot start the container: {}",
                r.message()
            )));
        }
        let mut body = logs.into_body();
        let mut demux = Demux::default();
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline = step.timeout.map_or(far, |t| tokio::time::Instant::now() + t);
        let mut killed: Option<StepEnd> = None;
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            demux.feed(data, output);
                        }
                    }
                    Some(Err(_)) | None => break,
                },
                _ = step.cancel.cancelled(), if killed.is_none() => {
                    killed = Some(StepEnd::Killed);
                    let _ = call(sock, "POST", &format!("/containers/{id}/kill"), None).await;
                }
                _ = tokio::time::sleep_until(deadline), if killed.is_none() => {
                    killed = Some(StepEnd::TimedOut);
                    let _ = call(sock, "POST", &format!("/containers/{id}/kill"), None).await;
                }
            }
        }
        let w = call(sock, "POST", &format!("/containers/{id}/wait"), None)
            .await
            .map_err(StageError::system)?;
        let code = serde_json::from_slice::<serde_json::Value>(&w.body)
            .ok()
            .and_then(|v| v.get("StatusCode").and_then(|c| c.as_i64()))
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1);
        Ok(killed.unwrap_or(StepEnd::Exited(code)))
    }
}

/// Docker's multiplexed stream without a TTY: 8-byte headers (stream, 0, 0, 0, size BE).
#[derive(Default)]
struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    fn feed(&mut self, data: &[u8], output: &mut (dyn FnMut(&[u8]) + Send)) {
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.len() < 8 {
                return;
            }
            let size = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + size {
                return;
            }
            output(&self.buf[8..8 + size]);
            self.buf.drain(..8 + size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_aliases_as_gitlab_names_them() {
        assert_eq!(
            service_aliases("tutum/wordpress:latest", Some("db, blog  wp")),
            vec!["db", "blog", "wp", "tutum__wordpress", "tutum-wordpress"]
        );
        assert_eq!(service_aliases("postgres:16", None), vec!["postgres"]);
    }

    #[test]
    fn tags_split_like_docker() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(split_tag("localhost:5000/app"), ("localhost:5000/app", "latest"));
        assert_eq!(split_tag("localhost:5000/app:v1"), ("localhost:5000/app", "v1"));
        assert_eq!(split_tag("app@sha256:abc"), ("app@sha256:abc", ""));
    }

    #[test]
    fn demux_reassembles_frames() {
        let mut d = Demux::default();
        let mut got = Vec::new();
        let mut out = |b: &[u8]| got.extend_from_slice(b);
        let frame = |s: u8, t: &[u8]| {
            let mut v = vec![s, 0, 0, 0];
            v.extend_from_slice(&(t.len() as u32).to_be_bytes());
            v.extend_from_slice(t);
            v
        };
        let mut all = frame(1, b"hello ");
        all.extend(frame(2, b"world"));
        for chunk in all.chunks(3) {
            d.feed(chunk, &mut out);
        }
        assert_eq!(got, b"hello world");
    }
}
