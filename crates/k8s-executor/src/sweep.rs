//! The orphan sweeper: Pods and Secrets that a runner which died left behind.
//!
//! Owns the rule for "orphan": labelled `app.kubernetes.io/managed-by=podci` and
//! `podci.dev/runner=<this runner>`, with a `podci.dev/deadline` annotation in the past.
//! The deadline is written at creation as job timeout + start and cleanup allowances, so
//! no live job of any runner can still own such an object.

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams};

use crate::pod::{DEADLINE_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, RUNNER_LABEL, sanitize_label_value};

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Pods deleted (grace 0).
    pub pods: Vec<String>,
    /// Secrets deleted.
    pub secrets: Vec<String>,
}

fn expired(meta: &ObjectMeta, now: jiff::Timestamp) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(DEADLINE_ANNOTATION))
        .and_then(|d| d.parse::<jiff::Timestamp>().ok())
        .is_some_and(|d| d < now)
}

/// Deletes this runner's expired Pods and Secrets in `namespace`.
pub async fn sweep_orphans(
    client: kube::Client,
    namespace: &str,
    runner_short_token: &str,
    now: jiff::Timestamp,
) -> Result<SweepReport, kube::Error> {
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{RUNNER_LABEL}={}",
        sanitize_label_value(runner_short_token)
    );
    let lp = ListParams::default().labels(&selector);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let mut report = SweepReport::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for p in pods.list(&lp).await?.items {
        if expired(&p.metadata, now)
            && let Some(name) = p.metadata.name
        {
            match pods.delete(&name, &dp).await {
                Ok(_) => report.pods.push(name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    for s in secrets.list(&lp).await?.items {
        if expired(&s.metadata, now)
            && let Some(name) = s.metadata.name
        {
            match secrets.delete(&name, &dp).await {
                Ok(_) => report.secrets.push(name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(report)
}
