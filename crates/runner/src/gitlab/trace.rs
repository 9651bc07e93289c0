//! One running job's conversation with GitLab: trace patches, keep-alives, cancellation
//! signals, and the final update.
//!
//! Owns: the job's trace buffer (already-masked bytes, capped at `output_limit` with
//! GitLab Runner's notice), the offset GitLab has acknowledged, rewinding on 416 and
//! restarting from zero on 412, and the final `PUT` that is retried until GitLab records
//! it (or says the job is no longer this runner's). The CRC32 sent with the final update
//! is computed over exactly the bytes patched.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{ApiError, Backoff, Client, JobState, Output, Patch, Update};

/// GitLab accepts at most 1 MiB per patch.
pub const MAX_PATCH: usize = 1 << 20;

/// Default `X-GitLab-Trace-Update-Interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);

/// A `PUT` with state running is sent when nothing else reached GitLab for this long.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// A job's trace: masked bytes, capped at `limit`.
#[derive(Debug)]
pub struct TraceBuffer {
    data: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl TraceBuffer {
    /// A buffer holding at most `limit` bytes of output (the notice comes on top).
    pub fn new(limit: usize) -> TraceBuffer {
        TraceBuffer {
            data: Vec::new(),
            limit,
            truncated: false,
        }
    }

    /// Appends output; past the limit, appends GitLab Runner's notice once and drops the
    /// rest. Returns how many bytes were kept.
    pub fn write(&mut self, chunk: &[u8]) -> usize {
        if self.truncated {
            return 0;
        }
        let room = self.limit.saturating_sub(self.data.len());
        if chunk.len() <= room {
            self.data.extend_from_slice(chunk);
            return chunk.len();
        }
        self.data.extend_from_slice(&chunk[..room]);
        self.truncated = true;
        self.data.extend_from_slice(
            format!(
                "\n\x1b[33;1mJob's log exceeded limit of {} bytes.\nJob execution will continue but no more output will be collected.\x1b[0;m\n",
                self.limit
            )
            .as_bytes(),
        );
        room
    }

    /// Everything so far.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

/// The handle executors write a job's (already masked) output to.
#[derive(Clone, Debug)]
pub struct TraceWriter {
    buf: Arc<Mutex<TraceBuffer>>,
}

impl TraceWriter {
    /// A writer over a fresh buffer of `limit` bytes.
    pub fn new(limit: usize) -> TraceWriter {
        TraceWriter {
            buf: Arc::new(Mutex::new(TraceBuffer::new(limit))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TraceBuffer> {
        // A writer that panicked mid-append leaves a consistent Vec; keep going.
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends output.
    pub fn write(&self, chunk: &[u8]) {
        self.lock().write(chunk);
    }

    /// A copy of the whole trace.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().bytes().to_vec()
    }

    fn len(&self) -> usize {
        self.lock().bytes().len()
    }

    fn slice(&self, from: usize, max: usize) -> Bytes {
        let b = self.lock();
        let end = b.bytes().len().min(from.saturating_add(max));
        Bytes::copy_from_slice(b.bytes().get(from..end).unwrap_or_default())
    }
}

/// Signals from GitLab to the running job.
#[derive(Clone, Debug, Default)]
pub struct JobSignals {
    /// `Job-Status: canceling`: stop the script, run after_script.
    pub canceling: CancellationToken,
    /// `canceled`/`failed`/403: stop everything now; the job is no longer ours.
    pub abort: CancellationToken,
}

/// How the final update ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// GitLab recorded the final state.
    Recorded,
    /// GitLab says the job is no longer this runner's (already finished or canceled).
    Gone,
}

/// One job's session with GitLab.
pub struct JobSession {
    client: Client,
    id: u64,
    token: String,
    trace: TraceWriter,
    sent: usize,
    interval: Duration,
    last_contact: Instant,
    signals: JobSignals,
    keepalive: Duration,
    /// GitLab said the job is no longer ours (403/404): nothing more is sent.
    gone: bool,
    /// A busy answer's `Retry-After`: no patch before this.
    not_before: Option<Instant>,
}

impl JobSession {
    /// A session for job `id`; `token` is the job token.
    pub fn new(
        client: Client,
        id: u64,
        token: String,
        trace: TraceWriter,
        signals: JobSignals,
    ) -> JobSession {
        JobSession {
            client,
            id,
            token,
            trace,
            sent: 0,
            interval: DEFAULT_INTERVAL,
            last_contact: Instant::now(),
            signals,
            keepalive: KEEPALIVE,
            gone: false,
            not_before: None,
        }
    }

    /// Sets the initial patch interval (tests use a short one); the keep-alive period is
    /// ten intervals (GitLab Runner's 3 s and 30 s), so that an idle job learns of a
    /// cancellation as promptly as the interval allows.
    pub fn with_interval(mut self, interval: Duration) -> JobSession {
        self.interval = interval;
        self.keepalive = interval.saturating_mul(10).min(KEEPALIVE);
        self
    }

    fn job_status(&mut self, status: Option<&str>) {
        match status {
            Some("canceling") => self.signals.canceling.cancel(),
            // The job already ended on GitLab's side: stop, and send no final state
            // (GitLab Runner's abort), which GitLab would refuse anyway.
            Some("canceled") | Some("failed") => {
                self.gone = true;
                self.signals.abort.cancel();
            }
            _ => {}
        }
    }

    /// Sends every unsent byte. Stops at the first failure (the caller retries later).
    pub async fn flush(&mut self) -> Result<(), ApiError> {
        loop {
            let len = self.trace.len();
            if self.sent >= len {
                return Ok(());
            }
            let chunk = self.trace.slice(self.sent, MAX_PATCH);
            let n = chunk.len();
            match self
                .client
                .patch_trace(self.id, &self.token, self.sent as u64, chunk)
                .await?
            {
                Patch::Accepted {
                    size,
                    job_status,
                    interval,
                } => {
                    self.last_contact = Instant::now();
                    // GitLab reports the end of what it holds; trust it unless it claims
                    // more than was sent.
                    let end = self.sent + n;
                    self.sent = size.map(|s| (s as usize).min(end)).unwrap_or(end);
                    if let Some(i) = interval {
                        self.interval = i;
                    }
                    self.job_status(job_status.as_deref());
                }
                Patch::Rewind { size } => {
                    self.last_contact = Instant::now();
                    self.sent = (size as usize).min(len);
                }
                Patch::Gone => {
                    self.gone = true;
                    self.signals.abort.cancel();
                    return Ok(());
                }
                Patch::Busy {
                    status,
                    retry_after,
                    body,
                } => {
                    self.not_before = retry_after.map(|d| Instant::now() + d);
                    return Err(ApiError::Status {
                        endpoint: "patch_trace",
                        status,
                        body,
                    });
                }
            }
        }
    }

    /// How long a busy GitLab asked to be left alone (`Retry-After`), from now.
    fn retry_after(&self) -> Duration {
        self.not_before
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Streams the trace every interval and keeps the job alive until `done` fires.
    pub async fn stream_until(&mut self, done: CancellationToken) {
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = self.signals.abort.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if self.retry_after().is_zero()
                && let Err(e) = self.flush().await
            {
                tracing::warn!(job = self.id, "trace update failed, will retry: {e}");
            }
            if self.last_contact.elapsed() >= self.keepalive {
                let running = JobState {
                    state: "running",
                    failure_reason: None,
                    exit_code: None,
                    output: None,
                };
                let once = Backoff {
                    attempts: 1,
                    ..Backoff::DEFAULT
                };
                match self.client.update_job(self.id, &self.token, &running, once).await {
                    Ok(Update::Ok { job_status }) => {
                        self.last_contact = Instant::now();
                        self.job_status(job_status.as_deref());
                    }
                    Ok(Update::Gone) => {
                        self.gone = true;
                        self.signals.abort.cancel();
                    }
                    Ok(_) => self.last_contact = Instant::now(),
                    Err(e) => tracing::warn!(job = self.id, "keep-alive failed: {e}"),
                }
            }
        }
    }

    /// Sends the rest of the trace and the final state, retrying until GitLab records it.
    /// `deadline` bounds the whole effort (GitLab Runner: about an hour of retries).
    pub async fn finish(
        &mut self,
        state: &'static str,
        failure_reason: Option<String>,
        exit_code: Option<i32>,
        deadline: Duration,
    ) -> Result<Finished, ApiError> {
        let started = Instant::now();
        let backoff = Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_secs(60),
            attempts: u32::MAX,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // A busy GitLab's Retry-After holds for the last patches too.
            let busy = self.retry_after();
            if !busy.is_zero() {
                tokio::time::sleep(busy).await;
            }
            let step = async {
                self.flush().await?;
                // A local abort (timeout, shutdown) still reports; only GitLab's "not
                // yours any more" ends the conversation.
                if self.gone {
                    return Ok(Update::Gone);
                }
                let data = self.trace.snapshot();
                let final_state = JobState {
                    state,
                    failure_reason: failure_reason.clone(),
                    exit_code,
                    output: Some(Output {
                        checksum: format!("crc32:{:08x}", crc32fast::hash(&data)),
                        bytesize: data.len() as u64,
                    }),
                };
                let once = Backoff {
                    attempts: 1,
                    ..Backoff::DEFAULT
                };
                self.client
                    .update_job(self.id, &self.token, &final_state, once)
                    .await
            }
            .await;
            let wait = match step {
                Ok(Update::Ok { .. }) => return Ok(Finished::Recorded),
                Ok(Update::Gone) => return Ok(Finished::Gone),
                Ok(Update::NotYet { interval }) => {
                    attempt = 0;
                    interval.unwrap_or(self.interval).min(Duration::from_secs(60))
                }
                Ok(Update::ResendTrace) => {
                    self.sent = 0;
                    Duration::ZERO
                }
                Err(e) if started.elapsed() >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(job = self.id, "final update failed, retrying: {e}");
                    backoff.wait(attempt).max(self.retry_after())
                }
            };
            if started.elapsed() >= deadline {
                return Err(ApiError::Status {
                    endpoint: "update_job",
                    status: 202,
                    body: "GitLab did not accept the final state in time".into(),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_limit_cuts_once_with_gitlab_runners_notice() {
        let mut b = TraceBuffer::new(10);
        assert_eq!(b.write(b"This is the long message"), 10);
        assert_eq!(b.write(b"more"), 0);
        let s = String::from_utf8(b.bytes().to_vec()).unwrap();
        assert_eq!(
            s,
            "This is th\n\x1b[33;1mJob's log exceeded limit of 10 bytes.\nJob execution will continue but no more output will be collected.\x1b[0;m\n"
        );
        let mut b = TraceBuffer::new(10);
        b.write(b"0123456789");
        assert_eq!(b.bytes(), b"0123456789");
    }
}
