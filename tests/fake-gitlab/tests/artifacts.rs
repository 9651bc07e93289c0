//! Artifacts uploads spoken by hand over HTTP: one per type, GitLab's type/format pairs
//! and messages, dotenv variables in the payload of the job that depends on the uploader.

use std::io::Write;

use podci_fake_gitlab::{FakeGitlab, Options};
use serde_json::{Value, json};

const TOKEN: &str = "glrt-t1_fake-runner-token";

async fn take_job(c: &reqwest::Client, url: &str) -> Value {
    let r = c
        .post(format!("{url}/api/v4/jobs/request"))
        .json(&json!({"token": TOKEN, "info": {"features": {"two_phase_job_commit": true}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    let r = c
        .put(format!("{url}/api/v4/jobs/{}", job["id"]))
        .header("JOB-TOKEN", job["token"].as_str().unwrap())
        .json(&json!({"state": "running"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    job
}

async fn upload(c: &reqwest::Client, url: &str, job: &Value, query: &str, data: Vec<u8>) -> (u16, Value) {
    let boundary = "b0undary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend(data);
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let r = c
        .post(format!("{url}/api/v4/jobs/{}/artifacts?{query}", job["id"]))
        .header("JOB-TOKEN", job["token"].as_str().unwrap())
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

async fn finish(c: &reqwest::Client, url: &str, job: &Value) {
    let r = c
        .put(format!("{url}/api/v4/jobs/{}", job["id"]))
        .header("JOB-TOKEN", job["token"].as_str().unwrap())
        .json(&json!({"state": "success", "output": {"checksum": "crc32:00000000", "bytesize": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn uploads_by_type_and_dotenv_variables_for_dependents() {
    let fake = FakeGitlab::start(Options {
        max_artifacts_size: 1000,
        ..Options::default()
    })
    .await
    .unwrap();
    let ci = "stages: [a, b]\nvariables: {FROM_YAML: yaml}\nfirst:\n  stage: a\n  script: [x]\n  artifacts: {reports: {dotenv: a.env}}\nsecond:\n  stage: b\n  script: [y]\nthird:\n  stage: b\n  dependencies: []\n  script: [z]\n";
    fake.create_pipeline(ci, None, &[("PROJECT_WINS", "project", false)])
        .unwrap();
    let (c, url) = (reqwest::Client::new(), fake.url().to_string());
    let job = take_job(&c, &url).await;
    // Type and format must pair as in GitLab.
    let (s, m) = upload(
        &c,
        &url,
        &job,
        "artifact_type=dotenv&artifact_format=zip",
        gz("A=1"),
    )
    .await;
    assert_eq!(
        (s, m["message"].as_str()),
        (
            400,
            Some("Validation failed: Invalid file format with specified file type")
        )
    );
    let (s, _) = upload(&c, &url, &job, "artifact_type=bogus&artifact_format=zip", vec![1]).await;
    assert_eq!(s, 400);
    // A bad line: GitLab's message, nothing stored.
    let (s, m) = upload(
        &c,
        &url,
        &job,
        "artifact_type=dotenv&artifact_format=gzip",
        gz("A=1\nnope\n"),
    )
    .await;
    assert_eq!((s, m["message"].as_str()), (400, Some("Invalid Format")));
    // Too large for the instance.
    let (s, _) = upload(
        &c,
        &url,
        &job,
        "artifact_type=archive&artifact_format=zip",
        vec![0; 2000],
    )
    .await;
    assert_eq!(s, 413);
    let env = gz("FROM_YAML=dotenv\nPROJECT_WINS=dotenv\nNEW=1\n");
    let (s, _) = upload(
        &c,
        &url,
        &job,
        "artifact_type=dotenv&artifact_format=gzip&expire_in=1+week",
        env.clone(),
    )
    .await;
    assert_eq!(s, 201);
    // The same file again is fine; another one of the same type is not.
    let (s, _) = upload(&c, &url, &job, "artifact_type=dotenv&artifact_format=gzip", env).await;
    assert_eq!(s, 201);
    let (s, m) = upload(
        &c,
        &url,
        &job,
        "artifact_type=dotenv&artifact_format=gzip",
        gz("B=2"),
    )
    .await;
    assert_eq!(
        (s, m["message"].as_str()),
        (400, Some("another artifact of the same type already exists"))
    );
    let (s, _) = upload(
        &c,
        &url,
        &job,
        "artifact_type=junit&artifact_format=gzip",
        gz("<testsuites/>"),
    )
    .await;
    assert_eq!(s, 201);
    let stored = &fake.jobs()[0];
    let types: Vec<_> = stored
        .uploads
        .iter()
        .map(|u| {
            (
                u.artifact_type.as_str(),
                u.artifact_format.as_str(),
                u.expire_in.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [("dotenv", "gzip", Some("1 week")), ("junit", "gzip", None)]
    );
    finish(&c, &url, &job).await;

    // `second` depends on `first` (earlier stage): it gets the dotenv variables after its
    // own YAML ones, but the project's variable wins.
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2 {
        let j = take_job(&c, &url).await;
        let vars: Vec<(String, String)> = j["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["key"].as_str().unwrap().to_string(),
                    v["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        seen.insert(j["job_info"]["name"].as_str().unwrap().to_string(), vars);
    }
    let last = |job: &str, key: &str| {
        seen[job]
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(last("second", "FROM_YAML").as_deref(), Some("dotenv"));
    assert_eq!(last("second", "NEW").as_deref(), Some("1"));
    assert_eq!(last("second", "PROJECT_WINS").as_deref(), Some("project"));
    // `dependencies: []`: no artifacts, no dotenv variables.
    assert_eq!(last("third", "NEW"), None);
    assert_eq!(last("third", "FROM_YAML").as_deref(), Some("yaml"));
}
