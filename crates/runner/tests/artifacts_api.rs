//! The artifacts calls of podci's GitLab client against small HTTP servers in this
//! process: a 307 on upload is followed with the whole multipart body sent again and
//! without the JOB-TOKEN when it leaves GitLab's origin (object storage), a 413 is the
//! "too large" error, and a download sends the dependency's JOB-TOKEN and follows a 302.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use podci::gitlab::{ApiError, Client, UploadOptions};

#[derive(Default)]
struct Seen {
    requests: Vec<(String, Option<String>, Vec<u8>)>,
}

type Shared = Arc<Mutex<Seen>>;

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn record(seen: &Shared, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
    let token = headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock()
        .unwrap()
        .requests
        .push((uri.to_string(), token, body.to_vec()));
}

#[tokio::test]
async fn upload_follows_307_to_storage_without_the_token_and_413_is_too_large() {
    let storage_seen: Shared = Arc::default();
    let storage = serve(
        axum::Router::new()
            .route(
                "/upload",
                axum::routing::post(
                    |State(s): State<Shared>, uri: Uri, h: HeaderMap, b: Bytes| async move {
                        record(&s, &uri, &h, &b);
                        StatusCode::CREATED
                    },
                ),
            )
            .with_state(storage_seen.clone()),
    )
    .await;
    let gitlab_seen: Shared = Arc::default();
    let loc = format!("{storage}/upload?signed=1");
    let gitlab = serve(
        axum::Router::new()
            .route(
                "/api/v4/jobs/{id}/artifacts",
                axum::routing::post(move |State(s): State<Shared>, uri: Uri, h: HeaderMap, b: Bytes| {
                    let loc = loc.clone();
                    async move {
                        record(&s, &uri, &h, &b);
                        if uri.path().contains("/jobs/2/") {
                            return (
                                StatusCode::PAYLOAD_TOO_LARGE,
                                r#"{"message":"file size has reached maximum size limit"}"#,
                            )
                                .into_response();
                        }
                        let mut r: Response = StatusCode::TEMPORARY_REDIRECT.into_response();
                        r.headers_mut().insert("Location", loc.parse().unwrap());
                        r
                    }
                }),
            )
            .with_state(gitlab_seen.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.gz");
    std::fs::write(&file, b"gzip bytes of a report").unwrap();
    let client = Client::new(&gitlab, "test", Arc::default()).unwrap();
    let opts = UploadOptions {
        filename: "junit.xml.gz".into(),
        format: "gzip".into(),
        kind: "junit".into(),
        expire_in: Some("1 week".into()),
    };
    client
        .upload_artifacts(1, "glcbt-job-token", &file, &opts)
        .await
        .unwrap();
    let g = gitlab_seen.lock().unwrap().requests.clone();
    assert_eq!(g.len(), 1);
    assert_eq!(
        g[0].0,
        "/api/v4/jobs/1/artifacts?artifact_format=gzip&artifact_type=junit&expire_in=1+week"
    );
    assert_eq!(g[0].1.as_deref(), Some("glcbt-job-token"));
    let s = storage_seen.lock().unwrap().requests.clone();
    assert_eq!(s.len(), 1, "the redirect was followed once");
    assert_eq!(s[0].0, "/upload?signed=1");
    assert_eq!(s[0].1, None, "the job token must not leave GitLab");
    let body = String::from_utf8_lossy(&s[0].2);
    assert!(
        body.contains("name=\"file\"; filename=\"junit.xml.gz\"")
            && body.contains("\r\n\r\ngzip bytes of a report\r\n--"),
        "{body}"
    );

    let err = client
        .upload_artifacts(2, "glcbt-job-token", &file, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::TooLarge), "{err}");
    assert!(err.to_string().contains("413"), "{err}");
}

#[tokio::test]
async fn download_sends_the_dependency_token_and_follows_302() {
    let storage_seen: Shared = Arc::default();
    let storage = serve(
        axum::Router::new()
            .route(
                "/blob",
                axum::routing::get(|State(s): State<Shared>, uri: Uri, h: HeaderMap| async move {
                    record(&s, &uri, &h, b"");
                    "zip bytes"
                }),
            )
            .with_state(storage_seen.clone()),
    )
    .await;
    let loc = format!("{storage}/blob");
    let gitlab = serve(axum::Router::new().route(
        "/api/v4/jobs/{id}/artifacts",
        axum::routing::get(move |h: HeaderMap| {
            let loc = loc.clone();
            async move {
                if h.get("job-token").and_then(|v| v.to_str().ok()) != Some("glcbt-dep-token") {
                    return StatusCode::FORBIDDEN.into_response();
                }
                let mut r: Response = StatusCode::FOUND.into_response();
                r.headers_mut().insert("Location", loc.parse().unwrap());
                r
            }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dep.zip");
    let client = Client::new(&gitlab, "test", Arc::default()).unwrap();
    let n = client
        .download_artifacts(7, "glcbt-dep-token", &dest)
        .await
        .unwrap();
    assert_eq!(n, 9);
    assert_eq!(std::fs::read(&dest).unwrap(), b"zip bytes");
    assert_eq!(storage_seen.lock().unwrap().requests[0].1, None);
    let err = client
        .download_artifacts(7, "glcbt-wrong", &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Forbidden { .. }), "{err}");
}
