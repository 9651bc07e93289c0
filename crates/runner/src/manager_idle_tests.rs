//! No per-job state outlives its job (issue 9: an idle runner's memory must not grow with
//! the number of jobs it ran). The manager runs 200 jobs through the real shell executor
//! against the fake GitLab server, in two batches of 100 on the same manager; afterwards
//! the job slots, metric series, runtime tasks, payloads and build directories must be
//! what they were after the first batch, or gone.

use std::collections::BTreeSet;
use std::sync::Weak;

use super::*;
use crate::config::{ExecutorKind, RunnerConfig};
use podci_fake_gitlab::{FakeGitlab, Options, Status};

/// Hands each job to the real executor, keeping only a weak handle on its payload: once
/// the job is over, nothing may hold the payload any more.
struct Watching {
    inner: Arc<dyn Executor>,
    payloads: Arc<Mutex<Vec<Weak<JobPayload>>>>,
}

impl Executor for Watching {
    fn run(&self, req: ExecRequest) -> BoxFuture<Outcome> {
        self.payloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&req.payload));
        self.inner.run(req)
    }
}

struct WatchingFactory {
    payloads: Arc<Mutex<Vec<Weak<JobPayload>>>>,
}

impl ExecutorFactory for WatchingFactory {
    fn executor(&self, runner: &RunnerConfig) -> Result<Arc<dyn Executor>, String> {
        Ok(Arc::new(Watching {
            inner: crate::executors::factory().executor(runner)?,
            payloads: self.payloads.clone(),
        }))
    }
}

/// `name{labels}` of every sample: which series exist, not their values.
fn series(metrics: &Metrics) -> BTreeSet<String> {
    metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

/// Waits until `cond` holds, for at most `limit`.
async fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn pipeline(batch: usize, jobs: usize) -> String {
    (0..jobs)
        .map(|i| format!("b{batch}job{i}:\n  script: echo batch {batch} job {i}\n"))
        .collect()
}

#[test]
fn two_hundred_jobs_leave_no_per_job_state_behind() {
    // The fake server runs on a runtime of its own, so that the runner's runtime counts
    // only the runner's tasks.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let fake = server_rt
        .block_on(FakeGitlab::start(Options::default()))
        .expect("fake GitLab starts");
    let builds = tempfile::tempdir().expect("builds dir");
    let cfg = Config {
        concurrent: 10,
        check_interval: 1,
        runners: vec![RunnerConfig {
            name: "idle".into(),
            url: fake.url().into(),
            token: "glrt-t1_fake-runner-token".into(),
            executor: ExecutorKind::Shell,
            request_concurrency: 4,
            output_limit: 4096,
            builds_dir: Some(builds.path().display().to_string()),
            ..RunnerConfig::default()
        }],
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runner runtime");
    rt.block_on(async {
        let metrics = Arc::new(Metrics::default());
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let manager = Manager::new(
            metrics.clone(),
            Arc::new(WatchingFactory {
                payloads: payloads.clone(),
            }),
            "s_idle".into(),
        )
        .trace_interval(Duration::from_millis(50));
        let slots = manager.slots.clone();
        let stop = Stop::default();
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(manager.run(cfg, rx, stop.clone()));

        // After each batch: every job final, and the runner counts none running.
        let mut after = Vec::new();
        for batch in 0..2 {
            fake.create_pipeline(&pipeline(batch, 100), None, &[])
                .expect("pipeline");
            assert!(
                fake.wait_all_final(Duration::from_secs(120)).await,
                "batch {batch}: not every job reached a final state"
            );
            assert!(
                eventually(Duration::from_secs(10), || metrics.jobs_activity().0 == 0).await,
                "batch {batch}: the runner still counts running jobs"
            );
            let all_dropped = || {
                payloads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .all(|w| w.upgrade().is_none())
            };
            assert!(
                eventually(Duration::from_secs(10), all_dropped).await,
                "batch {batch}: a finished job's payload is still referenced"
            );
            after.push((
                tokio::runtime::Handle::current().metrics().num_alive_tasks(),
                series(&metrics),
            ));
        }
        stop.requests.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), task).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "manager did not stop cleanly");

        let jobs = fake.jobs();
        assert_eq!(jobs.len(), 200);
        for j in &jobs {
            assert_eq!(j.status, Status::Success, "{}", j.name);
            assert_eq!(j.final_recorded, 1, "{}", j.name);
        }
        assert_eq!(payloads.lock().unwrap_or_else(|p| p.into_inner()).len(), 200);

        // Slot accounting: nothing running, and its maps keyed by runner, not by job.
        let (running, per_runner) = &*slots.state.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(*running, 0);
        assert!(
            per_runner.len() <= 1 && per_runner.values().all(|&n| n == 0),
            "{per_runner:?}"
        );
        let ids = slots.ids.lock().unwrap_or_else(|p| p.into_inner());
        assert!(ids.len() <= 1 && ids.values().all(|s| s.is_empty()), "{ids:?}");

        // A hundred more jobs add no metric series (labels are per runner, endpoint and
        // status, never per job) and no tasks: a task left behind per job would add 100;
        // pooled connections (each a task) may differ by a few.
        let ((tasks1, series1), (tasks2, series2)) = (&after[0], &after[1]);
        assert_eq!(series1, series2, "metric series grew with the job count");
        assert!(
            series2.len() < 100,
            "{} metric series for 200 jobs",
            series2.len()
        );
        assert!(
            *tasks2 < tasks1 + 20,
            "runtime tasks grew from {tasks1} to {tasks2} over 100 jobs"
        );
    });

    // Every job's build directory is removed when the job ends.
    let left: Vec<_> = std::fs::read_dir(builds.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build directories left behind: {left:?}");
    drop(fake);
    server_rt.shutdown_background();
}
