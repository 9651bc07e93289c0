//! The fake server's protocol, spoken by hand over HTTP: what a runner sees.

use podci_fake_gitlab::{FakeGitlab, Options, Status};
use serde_json::{Value, json};

const TOKEN: &str = "glrt-t1_fake-runner-token";

fn features() -> Value {
    json!({"features": {"two_phase_job_commit": true, "trace_checksum": true}})
}

async fn request(c: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    c.post(format!("{url}/api/v4/jobs/request"))
        .json(&json!({"token": token, "info": features()}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn jobs_in_stage_order_with_trace_and_checksum_rules() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    fake.create_pipeline(
        "stages: [a, b]\nfirst:\n  stage: a\n  script: [echo 1]\nsecond:\n  stage: b\n  script: [echo 2]\n",
        None,
        &[],
    )
    .unwrap();
    let c = reqwest::Client::new();
    let url = fake.url();
    assert_eq!(request(&c, url, "glrt-wrong").await.status(), 403);
    let r = request(&c, url, TOKEN).await;
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["job_info"]["name"], "first");
    // The second stage waits for the first.
    let r = request(&c, url, TOKEN).await;
    assert_eq!(r.status(), 204);
    assert!(r.headers().contains_key("x-gitlab-last-update"));
    let (id, jt) = (
        job["id"].as_u64().unwrap(),
        job["token"].as_str().unwrap().to_string(),
    );
    let put = |body: Value| {
        c.put(format!("{url}/api/v4/jobs/{id}"))
            .header("JOB-TOKEN", &jt)
            .json(&body)
            .send()
    };
    assert_eq!(put(json!({"state": "running"})).await.unwrap().status(), 200);
    let patch = |range: &str, body: &'static str| {
        c.patch(format!("{url}/api/v4/jobs/{id}/trace"))
            .header("JOB-TOKEN", &jt)
            .header("Content-Range", range)
            .body(body)
            .send()
    };
    let r = patch("0-5", "hello\n").await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-6");
    assert_eq!(r.headers()["job-status"], "running");
    // A patch that does not start at the stored end: 416 and where to resume.
    let r = patch("3-5", "lo\n").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["range"], "0-6");
    // A wrong checksum: 412, and the server starts the trace over.
    let r = put(json!({"state": "success", "output": {"checksum": "crc32:00000000", "bytesize": 6}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(patch("0-5", "hello\n").await.unwrap().status(), 202);
    let crc = format!("crc32:{:08x}", crc32fast::hash(b"hello\n"));
    let r = put(json!({"state": "success", "output": {"checksum": crc, "bytesize": 6}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Recorded once: a repeat is refused.
    let r = put(json!({"state": "success", "output": {"checksum": crc, "bytesize": 6}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let jobs = fake.jobs();
    assert_eq!(
        (
            jobs[0].status,
            jobs[0].final_recorded,
            jobs[0].checksum_mismatches
        ),
        (Status::Success, 1, 1)
    );
    // Now the second stage is handed out.
    let job: Value = request(&c, url, TOKEN).await.json().await.unwrap();
    assert_eq!(job["job_info"]["name"], "second");
}

#[tokio::test]
async fn unconfirmed_jobs_return_to_the_queue() {
    let fake = FakeGitlab::start(Options {
        ack_timeout: std::time::Duration::from_millis(100),
        ..Options::default()
    })
    .await
    .unwrap();
    fake.create_pipeline("only:\n  script: [x]\n", None, &[]).unwrap();
    let c = reqwest::Client::new();
    assert_eq!(request(&c, fake.url(), TOKEN).await.status(), 201);
    assert_eq!(request(&c, fake.url(), TOKEN).await.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(request(&c, fake.url(), TOKEN).await.status(), 201);
    assert_eq!(fake.jobs()[0].handed_out, 2);
}

#[tokio::test]
async fn faults_are_injected_at_the_configured_rate() {
    let fake = FakeGitlab::start(Options {
        fault_rate: 0.5,
        seed: 3,
        faults: vec![podci_fake_gitlab::Fault::Status500],
        ..Options::default()
    })
    .await
    .unwrap();
    let c = reqwest::Client::new();
    let mut errors = 0;
    for _ in 0..200 {
        if request(&c, fake.url(), TOKEN).await.status() == 500 {
            errors += 1;
        }
    }
    assert!((70..130).contains(&errors), "{errors} of 200");
    assert_eq!(fake.injected().get("Status500").copied(), Some(errors));
}
