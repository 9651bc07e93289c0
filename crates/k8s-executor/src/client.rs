//! The `kube::Client` a `[runners.kubernetes]` section asks for.
//!
//! Owns: turning `host`, `bearer_token`, `ca_file`, `cert_file`/`key_file` and `context`
//! into a client, as GitLab Runner's `getKubeClientConfig` does. An empty `host` means
//! "wherever this process runs": the in-cluster ServiceAccount when inside a Pod,
//! otherwise the kubeconfig (`KUBECONFIG` or `~/.kube/config`, `context` if set).
//! A set `host` is used as given, with the bearer token and, when `ca_file` is set, only
//! that CA trusted. The token is a secret: it never appears in an error or a log line.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesConfig;

/// Why no client could be built; each names what to fix in `[runners.kubernetes]`.
/// No variant carries the bearer token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `host` is not a URL.
    #[error("[runners.kubernetes] host {host:?} is not a valid URL: {reason}")]
    InvalidHost { host: String, reason: String },
    /// `ca_file` (or `cert_file`/`key_file`) cannot be read or holds no PEM data.
    #[error("[runners.kubernetes] {key} {path:?} cannot be used: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// Only one of `cert_file` and `key_file` is set.
    #[error("[runners.kubernetes] cert_file and key_file must be set together")]
    HalfClientCert,
    /// `host` is empty and neither the in-cluster ServiceAccount nor a kubeconfig works.
    #[error(
        "[runners.kubernetes] host is empty and no cluster was found: not running in a Pod with a ServiceAccount, and the kubeconfig cannot be used ({0}); set host, bearer_token and ca_file"
    )]
    NoCluster(String),
    /// The client itself could not be set up (TLS configuration, for example).
    #[error("cannot set up the Kubernetes client for {host}: {reason}")]
    Build { host: String, reason: String },
}

/// A client for the cluster `config` names (see the module documentation).
///
/// A set `bearer_token` is sent on every request; with an empty `host` it overrides the
/// kubeconfig's or ServiceAccount's credentials, as in GitLab Runner.
pub async fn client_for(config: &KubernetesConfig) -> Result<kube::Client, ClientError> {
    let mut kc = if config.host.trim().is_empty() {
        inferred(config).await?
    } else {
        explicit(config)?
    };
    if !config.bearer_token.is_empty() {
        kc.auth_info.token = Some(config.bearer_token.clone().into());
        kc.auth_info.token_file = None;
    }
    if !config.namespace.is_empty() {
        kc.default_namespace = config.namespace.clone();
    }
    let host = kc.cluster_url.to_string();
    kube::Client::try_from(kc).map_err(|e| ClientError::Build {
        host,
        reason: scrub(&e.to_string(), &config.bearer_token),
    })
}

/// `host` empty: the kubeconfig's context if one is named, else in-cluster first.
async fn inferred(config: &KubernetesConfig) -> Result<kube::Config, ClientError> {
    let scrub_err = |e: &dyn std::fmt::Display| scrub(&e.to_string(), &config.bearer_token);
    if !config.context.is_empty() {
        let opts = KubeConfigOptions {
            context: Some(config.context.clone()),
            ..Default::default()
        };
        return kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| ClientError::NoCluster(scrub_err(&e)));
    }
    match kube::Config::incluster() {
        Ok(c) => Ok(c),
        Err(_) => {
            let kubeconfig = Kubeconfig::read().map_err(|e| ClientError::NoCluster(scrub_err(&e)))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| ClientError::NoCluster(scrub_err(&e)))
        }
    }
}

/// `host` set: that URL, trusting `ca_file` when given (else the system's roots).
fn explicit(config: &KubernetesConfig) -> Result<kube::Config, ClientError> {
    let host = config.host.trim();
    // GitLab Runner accepts `host = "10.0.0.1:6443"`; Kubernetes clients assume HTTPS.
    let url = if host.contains("://") {
        host.to_string()
    } else {
        format!("https://{host}")
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::InvalidHost {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
    if uri.host().is_none() {
        return Err(ClientError::InvalidHost {
            host: host.to_string(),
            reason: "it names no host".into(),
        });
    }
    let mut kc = kube::Config::new(uri);
    if !config.ca_file.is_empty() {
        let path = Path::new(&config.ca_file);
        kc.root_cert = Some(read_pem_certs("ca_file", path)?);
    }
    match (config.cert_file.is_empty(), config.key_file.is_empty()) {
        (true, true) => {}
        (false, false) => {
            // Read once here so that a missing file is reported by its key name.
            for (key, p) in [("cert_file", &config.cert_file), ("key_file", &config.key_file)] {
                std::fs::metadata(p).map_err(|e| ClientError::File {
                    key,
                    path: PathBuf::from(p),
                    reason: e.to_string(),
                })?;
            }
            kc.auth_info.client_certificate = Some(config.cert_file.clone());
            kc.auth_info.client_key = Some(config.key_file.clone());
        }
        _ => return Err(ClientError::HalfClientCert),
    }
    Ok(kc)
}

/// The DER certificates of a PEM file.
fn read_pem_certs(key: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, ClientError> {
    let err = |reason: String| ClientError::File {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<Vec<u8>> = pem_blocks(&text)
        .map_err(err)?
        .into_iter()
        .filter(|(label, _)| label == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(err("no PEM CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// `(label, DER bytes)` of every PEM block; a small parser so that no PEM crate is needed.
fn pem_blocks(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use base64::Engine;
    let text = std::str::from_utf8(text).map_err(|_| "it is not PEM text".to_string())?;
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l.trim() == end {
                closed = true;
                break;
            }
            b64.push_str(l.trim());
        }
        if !closed {
            return Err(format!("the {label} block has no END line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| format!("the {label} block is not valid base64: {e}"))?;
        out.push((label.to_string(), der));
    }
    Ok(out)
}

/// An error text with the token removed, should a library ever echo it.
fn scrub(text: &str, token: &str) -> String {
    if token.len() >= 4 {
        text.replace(token, "[MASKED]")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_decoded_and_labelled() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nBQY=\n-----END PRIVATE KEY-----\n";
        let blocks = pem_blocks(pem).expect("parses");
        assert_eq!(
            blocks,
            vec![
                ("CERTIFICATE".to_string(), vec![1, 2, 3, 4]),
                ("PRIVATE KEY".to_string(), vec![5, 6])
            ]
        );
        assert!(pem_blocks(b"-----BEGIN CERTIFICATE-----\nAQID\n").is_err());
        assert!(pem_blocks(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err());
    }

    #[test]
    fn host_without_scheme_is_https_and_garbage_is_rejected() {
        let mut c = KubernetesConfig {
            host: "10.1.2.3:6443".into(),
            ..Default::default()
        };
        let kc = explicit(&c).expect("valid");
        assert_eq!(kc.cluster_url.to_string(), "https://10.1.2.3:6443/");
        c.host = "https://exa mple".into();
        assert!(matches!(explicit(&c), Err(ClientError::InvalidHost { .. })));
        c.host = "https://k8s.example:6443".into();
        c.cert_file = "/nonexistent/cert.pem".into();
        assert!(matches!(explicit(&c), Err(ClientError::HalfClientCert)));
    }

    #[test]
    fn scrub_removes_the_token() {
        assert_eq!(scrub("bad token s3cr3t!", "s3cr3t"), "bad token [MASKED]!");
    }

    proptest::proptest! {
        #[test]
        fn pem_parser_never_panics(s in ".{0,200}") {
            let text = format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n");
            let _ = pem_blocks(text.as_bytes());
            let _ = pem_blocks(s.as_bytes());
        }
    }
}
