//! Prometheus metrics and the `/metrics` + `/health` endpoints at `listen_address`.
//!
//! Owns: the counters the runner keeps (jobs by state, API requests by endpoint and
//! status with durations, trace bytes, errors) and their text exposition. Names follow
//! GitLab Runner's (`gitlab_runner_*`) where it has one, so existing dashboards work;
//! podci-only series are `podci_*`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Histogram buckets GitLab Runner uses for API request durations (seconds).
const BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// All of the runner's metrics.
#[derive(Default)]
pub struct Metrics {
    api_statuses: Mutex<BTreeMap<(String, String, String), u64>>,
    api_durations: Mutex<BTreeMap<(String, String), Histogram>>,
    jobs_running: Mutex<BTreeMap<(String, String), i64>>,
    jobs_total: Mutex<BTreeMap<String, u64>>,
    failed_jobs: Mutex<BTreeMap<(String, String), u64>>,
    trace_bytes: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    concurrent: AtomicI64,
    limit: Mutex<BTreeMap<String, i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Records one API call.
    pub fn api_request(&self, runner: &str, endpoint: &str, status: &str, took: Duration) {
        *lock(&self.api_statuses)
            .entry((runner.to_string(), endpoint.to_string(), status.to_string()))
            .or_default() += 1;
        let mut d = lock(&self.api_durations);
        let h = d.entry((runner.to_string(), endpoint.to_string())).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.count += 1;
    }

    /// A job started (`delta` 1) or ended (`delta` -1) on `runner` with `executor`.
    pub fn job_running(&self, runner: &str, executor: &str, delta: i64) {
        *lock(&self.jobs_running)
            .entry((runner.to_string(), executor.to_string()))
            .or_default() += delta;
        if delta > 0 {
            *lock(&self.jobs_total).entry(runner.to_string()).or_default() += 1;
        }
    }

    /// Jobs running now and jobs started since the runner started, over all runners:
    /// what the idle watcher ([`crate::idle`]) needs to tell a quiet runner from a busy one.
    pub fn jobs_activity(&self) -> (u64, u64) {
        let running: i64 = lock(&self.jobs_running).values().sum();
        let started: u64 = lock(&self.jobs_total).values().sum();
        (u64::try_from(running).unwrap_or(0), started)
    }

    /// A job ended with a failure.
    pub fn job_failed(&self, runner: &str, reason: &str) {
        *lock(&self.failed_jobs)
            .entry((runner.to_string(), reason.to_string()))
            .or_default() += 1;
    }

    /// Trace bytes sent.
    pub fn trace_bytes(&self, n: u64) {
        self.trace_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// An error worth counting (`level`: warning, error).
    pub fn error(&self, level: &str) {
        *lock(&self.errors).entry(level.to_string()).or_default() += 1;
    }

    /// The configured limits, for dashboards.
    pub fn set_limits(&self, concurrent: usize, limits: &[(String, usize)]) {
        self.concurrent.store(concurrent as i64, Ordering::Relaxed);
        let mut l = lock(&self.limit);
        l.clear();
        for (r, n) in limits {
            l.insert(r.clone(), *n as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP gitlab_runner_version_info Runner version.\n# TYPE gitlab_runner_version_info gauge\ngitlab_runner_version_info{{name=\"podci\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            o,
            "# HELP gitlab_runner_concurrent The current value of concurrent setting\n# TYPE gitlab_runner_concurrent gauge\ngitlab_runner_concurrent {}",
            self.concurrent.load(Ordering::Relaxed)
        );
        o.push_str("# HELP gitlab_runner_limit The current value of limit setting\n# TYPE gitlab_runner_limit gauge\n");
        for (r, n) in lock(&self.limit).iter() {
            let _ = writeln!(o, "gitlab_runner_limit{{runner=\"{r}\"}} {n}");
        }
        o.push_str("# HELP gitlab_runner_jobs The current number of running builds.\n# TYPE gitlab_runner_jobs gauge\n");
        for ((r, e), n) in lock(&self.jobs_running).iter() {
            let _ = writeln!(
                o,
                "gitlab_runner_jobs{{runner=\"{r}\",executor=\"{e}\",state=\"running\"}} {n}"
            );
        }
        o.push_str("# HELP gitlab_runner_jobs_total Total number of handled jobs\n# TYPE gitlab_runner_jobs_total counter\n");
        for (r, n) in lock(&self.jobs_total).iter() {
            let _ = writeln!(o, "gitlab_runner_jobs_total{{runner=\"{r}\"}} {n}");
        }
        o.push_str("# HELP gitlab_runner_failed_jobs_total Total number of failed jobs\n# TYPE gitlab_runner_failed_jobs_total counter\n");
        for ((r, f), n) in lock(&self.failed_jobs).iter() {
            let _ = writeln!(
                o,
                "gitlab_runner_failed_jobs_total{{runner=\"{r}\",failure_reason=\"{f}\"}} {n}"
            );
        }
        o.push_str("# HELP gitlab_runner_api_request_statuses_total The total number of api requests, partitioned by runner, endpoint and status.\n# TYPE gitlab_runner_api_request_statuses_total counter\n");
        for ((r, e, s), n) in lock(&self.api_statuses).iter() {
            let _ = writeln!(
                o,
                "gitlab_runner_api_request_statuses_total{{runner=\"{r}\",endpoint=\"{e}\",status=\"{s}\"}} {n}"
            );
        }
        o.push_str("# HELP gitlab_runner_api_request_duration_seconds Latency histogram of API requests made by GitLab Runner\n# TYPE gitlab_runner_api_request_duration_seconds histogram\n");
        for ((r, e), h) in lock(&self.api_durations).iter() {
            for (b, c) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    o,
                    "gitlab_runner_api_request_duration_seconds_bucket{{runner=\"{r}\",endpoint=\"{e}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                o,
                "gitlab_runner_api_request_duration_seconds_bucket{{runner=\"{r}\",endpoint=\"{e}\",le=\"+Inf\"}} {}\ngitlab_runner_api_request_duration_seconds_sum{{runner=\"{r}\",endpoint=\"{e}\"}} {}\ngitlab_runner_api_request_duration_seconds_count{{runner=\"{r}\",endpoint=\"{e}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            o,
            "# HELP podci_trace_bytes_total Trace bytes sent to GitLab.\n# TYPE podci_trace_bytes_total counter\npodci_trace_bytes_total {}",
            self.trace_bytes.load(Ordering::Relaxed)
        );
        o.push_str("# HELP gitlab_runner_errors_total The number of caught errors.\n# TYPE gitlab_runner_errors_total counter\n");
        for (l, n) in lock(&self.errors).iter() {
            let _ = writeln!(o, "gitlab_runner_errors_total{{level=\"{l}\"}} {n}");
        }
        o
    }
}

/// Serves `/metrics` and `/health` on `addr` until `stop` fires. GitLab Runner accepts
/// `:9252` meaning all interfaces.
pub async fn serve(
    addr: &str,
    metrics: std::sync::Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    use axum::routing::get;
    let addr = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/health", get(|| async { "OK\n" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_gitlab_runner_names() {
        let m = Metrics::default();
        m.api_request("abcd1234", "request_job", "204", Duration::from_millis(300));
        m.api_request("abcd1234", "request_job", "204", Duration::from_millis(50));
        m.job_running("abcd1234", "shell", 1);
        m.job_failed("abcd1234", "script_failure");
        m.trace_bytes(42);
        let t = m.render();
        for line in [
            "gitlab_runner_api_request_statuses_total{runner=\"abcd1234\",endpoint=\"request_job\",status=\"204\"} 2",
            "gitlab_runner_api_request_duration_seconds_bucket{runner=\"abcd1234\",endpoint=\"request_job\",le=\"0.1\"} 1",
            "gitlab_runner_api_request_duration_seconds_count{runner=\"abcd1234\",endpoint=\"request_job\"} 2",
            "gitlab_runner_jobs{runner=\"abcd1234\",executor=\"shell\",state=\"running\"} 1",
            "gitlab_runner_jobs_total{runner=\"abcd1234\"} 1",
            "gitlab_runner_failed_jobs_total{runner=\"abcd1234\",failure_reason=\"script_failure\"} 1",
            "podci_trace_bytes_total 42",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
    }

    #[test]
    fn activity_counts_running_and_started_jobs_over_all_runners() {
        let m = Metrics::default();
        assert_eq!(m.jobs_activity(), (0, 0));
        m.job_running("aaaa", "shell", 1);
        m.job_running("bbbb", "kubernetes", 1);
        assert_eq!(m.jobs_activity(), (2, 2));
        m.job_running("aaaa", "shell", -1);
        m.job_running("bbbb", "kubernetes", -1);
        assert_eq!(m.jobs_activity(), (0, 2));
    }
}
