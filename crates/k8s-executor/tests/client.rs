//! `client_for` against the fake API server over HTTPS with a bearer token: `host`,
//! `bearer_token` and `ca_file` from `[runners.kubernetes]` are what the client uses, a
//! wrong token or an untrusted certificate fails, and the token never shows in an error.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use podci_fake_kube::{FakeKube, Options, TokenGrant};
use podci_k8s::{ClientError, KubernetesConfig, client_for};

const TOKEN: &str = "podci-test-token-7f3a9c";

async fn tls_fake() -> FakeKube {
    let mut tokens = BTreeMap::new();
    tokens.insert(TOKEN.to_string(), TokenGrant::admin());
    FakeKube::start(Options {
        tls: true,
        tokens,
        ..Default::default()
    })
    .await
    .expect("fake server starts")
}

fn config(host: &str, token: &str, ca_file: &str) -> KubernetesConfig {
    let mut c = KubernetesConfig::from_toml_str("namespace = \"ci-jobs\"").expect("config");
    c.host = host.into();
    c.bearer_token = token.into();
    c.ca_file = ca_file.into();
    c
}

/// The error of a `client_for` that must fail (`kube::Client` is not `Debug`).
fn fail_with(r: Result<kube::Client, ClientError>, why: &str) -> ClientError {
    match r {
        Ok(_) => panic!("client_for succeeded, expected: {why}"),
        Err(e) => e,
    }
}

fn ca_file(fake: &FakeKube) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), fake.ca_pem().expect("TLS server has a CA")).expect("write CA");
    f
}

#[tokio::test]
async fn host_token_and_ca_file_reach_the_server() {
    let fake = tls_fake().await;
    let ca = ca_file(&fake);
    let cfg = config(&fake.url(), TOKEN, &ca.path().display().to_string());
    let client = client_for(&cfg).await.expect("client");
    fake.control().reset_requests();
    // The default namespace comes from the config's namespace.
    let pods: Api<Pod> = Api::default_namespaced(client);
    let list = pods
        .list(&Default::default())
        .await
        .expect("list pods with the token");
    assert!(list.items.is_empty());
    let reqs = fake.control().requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.split('?').next().unwrap_or(r)).collect();
    assert_eq!(paths, vec!["GET /api/v1/namespaces/ci-jobs/pods"], "{reqs:?}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_not_echoed() {
    let fake = tls_fake().await;
    let ca = ca_file(&fake);
    let wrong = "wrong-secret-token-1234";
    let cfg = config(&fake.url(), wrong, &ca.path().display().to_string());
    let client = client_for(&cfg)
        .await
        .expect("client is built; the server decides");
    let pods: Api<Pod> = Api::default_namespaced(client);
    let err = pods.list(&Default::default()).await.expect_err("401");
    let text = format!("{err} {err:?}");
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 401), "{text}");
    assert!(!text.contains(wrong), "the token leaked into the error: {text}");
}

#[tokio::test]
async fn without_the_ca_file_the_self_signed_server_is_not_trusted() {
    let fake = tls_fake().await;
    let cfg = config(&fake.url(), TOKEN, "");
    let client = client_for(&cfg).await.expect("client");
    let pods: Api<Pod> = Api::default_namespaced(client);
    let err = pods.list(&Default::default()).await.expect_err("TLS must fail");
    let text = format!("{err} {err:?}");
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no HTTP answer expected: {text}"
    );
    assert!(!text.contains(TOKEN), "the token leaked into the error: {text}");
}

#[tokio::test]
async fn bad_ca_file_and_host_are_reported_by_key_without_the_token() {
    let missing = config("https://127.0.0.1:1", TOKEN, "/nonexistent/ca.pem");
    let err = fail_with(client_for(&missing).await, "missing CA file");
    assert!(matches!(err, ClientError::File { key: "ca_file", .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/ca.pem") && !text.contains(TOKEN),
        "{text}"
    );

    let not_pem = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(not_pem.path(), "not a certificate").expect("write");
    let cfg = config(
        "https://127.0.0.1:1",
        TOKEN,
        &not_pem.path().display().to_string(),
    );
    let err = fail_with(client_for(&cfg).await, "no PEM block");
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");

    let cfg = config("https://bad host", TOKEN, "");
    let err = fail_with(client_for(&cfg).await, "invalid host");
    assert!(matches!(err, ClientError::InvalidHost { .. }), "{err}");
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn empty_host_uses_the_kubeconfig_and_the_token_overrides_it() {
    let fake = tls_fake().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kc = dir.path().join("kubeconfig");
    // The kubeconfig carries a token the server rejects; bearer_token must win.
    std::fs::write(&kc, fake.kubeconfig_for("stale-token", "default")).expect("write kubeconfig");
    // SAFETY: this test binary's other tests do not read KUBECONFIG or HOME.
    unsafe {
        std::env::set_var("KUBECONFIG", &kc);
    }
    let cfg = config("", TOKEN, "");
    let client = client_for(&cfg).await.expect("client from the kubeconfig");
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.list(&Default::default())
        .await
        .expect("kubeconfig's server and CA, config's token");
    let cfg = config("", "", "");
    let client = client_for(&cfg).await.expect("client from the kubeconfig");
    let pods: Api<Pod> = Api::default_namespaced(client);
    let err = pods.list(&Default::default()).await.expect_err("stale token");
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 401), "{err}");
}
