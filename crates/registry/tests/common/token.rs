//! A token server in the shape distribution's token auth expects: `GET /token` with Basic
//! credentials and `scope`s, `POST /token` with a refresh token (Docker's identity token),
//! answering ES256 JWTs whose header carries the signing certificate (`x5c`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;

pub const SERVICE: &str = "podci-test-registry";
pub const ISSUER: &str = "podci-test-issuer";

#[derive(Clone, Debug)]
pub struct Request {
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub refresh: bool,
}

pub struct TokenServer {
    pub realm: String,
    pub cert: PathBuf,
    pub requests: Arc<Mutex<Vec<Request>>>,
    _dir: tempfile::TempDir,
}

struct St {
    key: p256::ecdsa::SigningKey,
    cert_der_b64: String,
    /// user -> (password, allowed actions)
    users: HashMap<String, (String, Vec<String>)>,
    /// refresh token -> user
    refresh: HashMap<String, String>,
    requests: Arc<Mutex<Vec<Request>>>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    /// `users`: (name, password, actions granted such as ["pull", "push"]).
    /// `refresh`: (refresh token, user).
    pub async fn start(users: &[(&str, &str, &[&str])], refresh: &[(&str, &str)]) -> TokenServer {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key_pem = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let ec = super::run(
            "openssl",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        );
        let pk8 = super::run_stdin("openssl", &["pkcs8", "-topk8", "-nocrypt"], ec.as_bytes());
        std::fs::write(&key_pem, &pk8).unwrap_or_else(|e| panic!("{e}"));
        let kp = key_pem.display().to_string();
        let cp = cert.display().to_string();
        super::run(
            "openssl",
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                &kp,
                "-out",
                &cp,
                "-days",
                "2",
                "-subj",
                "/CN=podci-test-token",
            ],
        );
        let der = dir.path().join("cert.der");
        let dp = der.display().to_string();
        super::run("openssl", &["x509", "-in", &cp, "-outform", "DER", "-out", &dp]);
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&String::from_utf8_lossy(&pk8))
            .unwrap_or_else(|e| panic!("{e}"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let st = Arc::new(St {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(&der).unwrap_or_default()),
            users: users
                .iter()
                .map(|(u, p, a)| {
                    (
                        u.to_string(),
                        (p.to_string(), a.iter().map(|s| s.to_string()).collect()),
                    )
                })
                .collect(),
            refresh: refresh
                .iter()
                .map(|(t, u)| (t.to_string(), u.to_string()))
                .collect(),
            requests: requests.clone(),
        });
        let app = axum::Router::new()
            .route("/token", get(get_token).post(post_token))
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            realm: format!("http://127.0.0.1:{port}/token"),
            cert,
            requests,
            _dir: dir,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn issue(st: &St, user: Option<&str>, scopes: &[String]) -> Response {
    let allowed: Vec<String> = match user {
        Some(u) => st.users.get(u).map(|x| x.1.clone()).unwrap_or_default(),
        None => vec![],
    };
    let mut access = Vec::new();
    for s in scopes {
        let mut parts = s.splitn(3, ':');
        let (Some(t), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| allowed.iter().any(|x| x == a))
            .collect();
        access.push(serde_json::json!({"type": t, "name": name, "actions": granted}));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [st.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user.unwrap_or(""), "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = st.key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64url(&sig.to_bytes()));
    axum::Json(serde_json::json!({"token": token, "access_token": token, "expires_in": 300})).into_response()
}

async fn get_token(
    State(st): State<Arc<St>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let user = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(h) => {
            let Some(decoded) = h
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let (u, p) = decoded.split_once(':').unwrap_or((&decoded, ""));
            match st.users.get(u) {
                Some((pw, _)) if pw == p => Some(u.to_string()),
                _ => return StatusCode::UNAUTHORIZED.into_response(),
            }
        }
    };
    if let Ok(mut r) = st.requests.lock() {
        r.push(Request {
            user: user.clone(),
            scopes: scopes.clone(),
            refresh: false,
        });
    }
    issue(&st, user.as_deref(), &scopes)
}

async fn post_token(State(st): State<Arc<St>>, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.replace('+', " ")
                    .replace("%3A", ":")
                    .replace("%2C", ",")
                    .replace("%2F", "/"),
            )
        })
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let Some(user) = form.get("refresh_token").and_then(|t| st.refresh.get(t)).cloned() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let scopes: Vec<String> = form
        .get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Ok(mut r) = st.requests.lock() {
        r.push(Request {
            user: Some(user.clone()),
            scopes: scopes.clone(),
            refresh: true,
        });
    }
    issue(&st, Some(&user), &scopes)
}
