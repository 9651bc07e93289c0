//! The reliability test through the real binary and the shell executor: 1,000 jobs
//! while 20% of API calls fail in injected ways (5xx, 429/503 with Retry-After, dropped
//! connections before and after the server applied the call, 416 trace rewinds, 412 and
//! 202 on the final update, slow answers). Every job must reach its final state exactly
//! once, with the trace the job printed and a CRC32 equal to the server's.

use std::process::{Command, Stdio};
use std::time::Duration;

use podci_fake_gitlab::{FakeGitlab, Options, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_jobs_with_twenty_percent_api_failures() {
    let fake = FakeGitlab::start(Options {
        fault_rate: 0.2,
        seed: 7,
        ack_timeout: Duration::from_secs(3),
        ..Options::default()
    })
    .await
    .unwrap();
    let yaml: String = (0..1000)
        .map(|i| {
            if i % 50 == 7 {
                format!("job{i}:\n  script: [echo out {i}, exit 4]\n")
            } else {
                format!("job{i}:\n  script: [echo out {i}]\n")
            }
        })
        .collect();
    fake.create_pipeline(&yaml, None, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 50\ncheck_interval = 1\n[[runners]]\nname = \"r\"\nurl = \"{}\"\ntoken = \"glrt-t1_fake-runner-token\"\nexecutor = \"shell\"\nrequest_concurrency = 8\nbuilds_dir = \"{}\"\n",
            fake.url(),
            dir.path().join("builds").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_podci"))
        .args(["run", "--config"])
        .arg(&config)
        .env("PODCI_TRACE_INTERVAL_MS", "200")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = fake.wait_all_final(Duration::from_secs(600)).await;
    // Taken before stopping: the server's view of every job that never ended.
    let report = fake.unfinished_report();
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(done, "not every job reached a final state:\n{report}");
    assert!(status.success());
    let jobs = fake.jobs();
    assert_eq!(jobs.len(), 1000);
    let mut handed_twice = 0;
    for j in &jobs {
        let i: usize = j.name.trim_start_matches("job").parse().unwrap();
        let trace = String::from_utf8_lossy(&j.trace).into_owned();
        assert_eq!(j.final_recorded, 1, "{}", j.describe());
        assert_eq!(
            j.checksum.as_deref(),
            Some(j.trace_checksum().as_str()),
            "{}",
            j.describe()
        );
        assert!(trace.contains(&format!("\nout {i}\n")), "{}: {trace}", j.name);
        if i % 50 == 7 {
            assert_eq!(
                (j.status, j.exit_code),
                (Status::Failed, Some(4)),
                "{}: {trace}",
                j.name
            );
        } else {
            assert_eq!(j.status, Status::Success, "{}: {trace}", j.name);
            assert!(trace.ends_with("Job succeeded\x1b[0;m\n"), "{}: {trace}", j.name);
        }
        if j.handed_out > 1 {
            handed_twice += 1;
        }
    }
    let injected = fake.injected();
    let total: u64 = injected.values().sum();
    eprintln!(
        "{} API calls, {total} injected faults {injected:?}; {handed_twice} jobs handed out again after a lost answer",
        fake.calls()
    );
    assert!(total as f64 >= fake.calls() as f64 * 0.15);
}
