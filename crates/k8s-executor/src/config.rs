//! The `[runners.kubernetes]` section of GitLab Runner's `config.toml`.
//!
//! Owns the key names and defaults (GitLab Runner's `common/config.go`, `KubernetesConfig`,
//! and `docs/executors/kubernetes/_index.md`), parsing from a TOML string or table, and
//! reporting keys it does not know by their full dotted name, so that a typo such as
//! `privileged_mode` is not silently ignored the way GitLab Runner ignores it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not TOML or a value has the wrong type.
    #[error("invalid [runners.kubernetes] configuration: {0}")]
    Toml(String),
    /// The section holds keys GitLab Runner's Kubernetes executor does not have.
    #[error("unknown key(s) in [runners.kubernetes]: {}; check their spelling against GitLab Runner's documentation", .0.join(", "))]
    UnknownKeys(Vec<String>),
    /// A value is syntactically fine but cannot work.
    #[error("invalid value for {key}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
    },
}

/// How step scripts are started in the build container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// GitLab Runner's default since 14.0: the script is written to the scripts volume and
    /// started through the build shell's stdin (`pods/attach`); output is tee'd to the logs
    /// volume and read back with offsets, so a dropped connection loses nothing.
    #[default]
    Attach,
    /// The legacy strategy (`FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`): each step is a
    /// `pods/exec` of the shell. Output still goes through the log file, so a dropped exec
    /// stream is resumed the same way.
    Exec,
}

/// `[runners.kubernetes]`. Field names are GitLab Runner's TOML keys.
///
/// `Debug` is written by hand so that `bearer_token` prints as `[REDACTED]` (or `""`
/// when unset): a configuration is the kind of value that ends up in a log line.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct KubernetesConfig {
    /// API server URL; empty means in-cluster or the kubeconfig.
    pub host: String,
    /// Kubeconfig context.
    pub context: String,
    pub cert_file: String,
    pub key_file: String,
    pub ca_file: String,
    /// A token for the API server; a secret (never logged).
    pub bearer_token: String,
    pub bearer_token_overwrite_allowed: bool,
    /// Default job image when the job names none.
    pub image: String,
    pub namespace: String,
    /// Regex a `KUBERNETES_NAMESPACE_OVERWRITE` value must match; empty forbids.
    pub namespace_overwrite_allowed: String,
    pub namespace_per_job: bool,
    pub privileged: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub runtime_class_name: Option<String>,
    pub service_account: String,
    /// Regex a `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE` value must match; empty forbids.
    pub service_account_overwrite_allowed: String,
    pub automount_service_account_token: Option<bool>,
    pub image_pull_secrets: Vec<String>,
    pub use_service_account_image_pull_secrets: bool,
    /// `always`, `never`, `if-not-present`: one or a list.
    pub pull_policy: StringOrList,
    pub allowed_pull_policies: Vec<String>,
    pub allowed_images: Vec<String>,
    pub allowed_services: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,

    pub cpu_limit: String,
    pub cpu_limit_overwrite_max_allowed: String,
    pub cpu_request: String,
    pub cpu_request_overwrite_max_allowed: String,
    pub memory_limit: String,
    pub memory_limit_overwrite_max_allowed: String,
    pub memory_request: String,
    pub memory_request_overwrite_max_allowed: String,
    pub ephemeral_storage_limit: String,
    pub ephemeral_storage_limit_overwrite_max_allowed: String,
    pub ephemeral_storage_request: String,
    pub ephemeral_storage_request_overwrite_max_allowed: String,
    pub service_cpu_limit: String,
    pub service_cpu_limit_overwrite_max_allowed: String,
    pub service_cpu_request: String,
    pub service_cpu_request_overwrite_max_allowed: String,
    pub service_memory_limit: String,
    pub service_memory_limit_overwrite_max_allowed: String,
    pub service_memory_request: String,
    pub service_memory_request_overwrite_max_allowed: String,
    pub service_ephemeral_storage_limit: String,
    pub service_ephemeral_storage_limit_overwrite_max_allowed: String,
    pub service_ephemeral_storage_request: String,
    pub service_ephemeral_storage_request_overwrite_max_allowed: String,
    pub helper_cpu_limit: String,
    pub helper_cpu_limit_overwrite_max_allowed: String,
    pub helper_cpu_request: String,
    pub helper_cpu_request_overwrite_max_allowed: String,
    pub helper_memory_limit: String,
    pub helper_memory_limit_overwrite_max_allowed: String,
    pub helper_memory_request: String,
    pub helper_memory_request_overwrite_max_allowed: String,
    pub helper_ephemeral_storage_limit: String,
    pub helper_ephemeral_storage_limit_overwrite_max_allowed: String,
    pub helper_ephemeral_storage_request: String,
    pub helper_ephemeral_storage_request_overwrite_max_allowed: String,

    pub node_selector: BTreeMap<String, String>,
    pub node_selector_overwrite_allowed: String,
    /// `"key=value" = "NoSchedule"` or `"key" = "NoExecute"`; an empty effect matches all.
    pub node_tolerations: BTreeMap<String, String>,
    pub node_tolerations_overwrite_allowed: String,
    /// Passed through as Kubernetes' own `affinity` (snake_case keys are converted).
    pub affinity: Option<toml::Table>,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_labels_overwrite_allowed: String,
    pub pod_annotations: BTreeMap<String, String>,
    /// Regex the keys of `KUBERNETES_POD_ANNOTATIONS_*` must match; empty forbids.
    pub pod_annotations_overwrite_allowed: String,
    pub pod_security_context: PodSecurityContext,
    pub build_container_security_context: ContainerSecurityContext,
    pub helper_container_security_context: ContainerSecurityContext,
    pub service_container_security_context: ContainerSecurityContext,
    pub init_permissions_container_security_context: ContainerSecurityContext,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub volumes: Volumes,
    pub host_aliases: Vec<HostAlias>,
    pub dns_policy: String,
    pub scheduler_name: String,
    pub priority_class_name: String,
    pub helper_image: String,
    pub helper_image_flavor: String,
    /// Seconds between Pod status checks. podci follows a watch instead; kept for compatibility.
    pub poll_interval: u64,
    /// Seconds a Pod may take to start before the job fails.
    pub poll_timeout: u64,
    /// Grace period of the Pod (`terminationGracePeriodSeconds`).
    #[serde(rename = "terminationGracePeriodSeconds")]
    pub termination_grace_period_seconds: Option<i64>,
    pub pod_termination_grace_period_seconds: Option<i64>,
    /// Grace period when deleting resources after the job; podci's default is 0.
    pub cleanup_grace_period_seconds: Option<i64>,
    /// How long cleanup may take, a Go duration (`5m`).
    pub cleanup_resources_timeout: String,
    pub print_pod_warning_events: Option<bool>,
    pub logs_base_dir: String,
    pub scripts_base_dir: String,
    /// Not a TOML key: picked with [`KubernetesConfig::with_feature_flags`].
    #[serde(skip)]
    pub strategy: Strategy,
}

impl std::fmt::Debug for KubernetesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured without `..`: a new field fails to compile until it is listed here,
        // so no field (secret or not) can be skipped or printed unredacted by accident.
        let KubernetesConfig {
            host,
            context,
            cert_file,
            key_file,
            ca_file,
            bearer_token,
            bearer_token_overwrite_allowed,
            image,
            namespace,
            namespace_overwrite_allowed,
            namespace_per_job,
            privileged,
            allow_privilege_escalation,
            runtime_class_name,
            service_account,
            service_account_overwrite_allowed,
            automount_service_account_token,
            image_pull_secrets,
            use_service_account_image_pull_secrets,
            pull_policy,
            allowed_pull_policies,
            allowed_images,
            allowed_services,
            allowed_users,
            allowed_groups,
            cpu_limit,
            cpu_limit_overwrite_max_allowed,
            cpu_request,
            cpu_request_overwrite_max_allowed,
            memory_limit,
            memory_limit_overwrite_max_allowed,
            memory_request,
            memory_request_overwrite_max_allowed,
            ephemeral_storage_limit,
            ephemeral_storage_limit_overwrite_max_allowed,
            ephemeral_storage_request,
            ephemeral_storage_request_overwrite_max_allowed,
            service_cpu_limit,
            service_cpu_limit_overwrite_max_allowed,
            service_cpu_request,
            service_cpu_request_overwrite_max_allowed,
            service_memory_limit,
            service_memory_limit_overwrite_max_allowed,
            service_memory_request,
            service_memory_request_overwrite_max_allowed,
            service_ephemeral_storage_limit,
            service_ephemeral_storage_limit_overwrite_max_allowed,
            service_ephemeral_storage_request,
            service_ephemeral_storage_request_overwrite_max_allowed,
            helper_cpu_limit,
            helper_cpu_limit_overwrite_max_allowed,
            helper_cpu_request,
            helper_cpu_request_overwrite_max_allowed,
            helper_memory_limit,
            helper_memory_limit_overwrite_max_allowed,
            helper_memory_request,
            helper_memory_request_overwrite_max_allowed,
            helper_ephemeral_storage_limit,
            helper_ephemeral_storage_limit_overwrite_max_allowed,
            helper_ephemeral_storage_request,
            helper_ephemeral_storage_request_overwrite_max_allowed,
            node_selector,
            node_selector_overwrite_allowed,
            node_tolerations,
            node_tolerations_overwrite_allowed,
            affinity,
            pod_labels,
            pod_labels_overwrite_allowed,
            pod_annotations,
            pod_annotations_overwrite_allowed,
            pod_security_context,
            build_container_security_context,
            helper_container_security_context,
            service_container_security_context,
            init_permissions_container_security_context,
            cap_add,
            cap_drop,
            volumes,
            host_aliases,
            dns_policy,
            scheduler_name,
            priority_class_name,
            helper_image,
            helper_image_flavor,
            poll_interval,
            poll_timeout,
            termination_grace_period_seconds,
            pod_termination_grace_period_seconds,
            cleanup_grace_period_seconds,
            cleanup_resources_timeout,
            print_pod_warning_events,
            logs_base_dir,
            scripts_base_dir,
            strategy,
        } = self;
        let token: &dyn std::fmt::Debug = if bearer_token.is_empty() {
            &""
        } else {
            &"[REDACTED]"
        };
        f.debug_struct("KubernetesConfig")
            .field("host", host)
            .field("context", context)
            .field("cert_file", cert_file)
            .field("key_file", key_file)
            .field("ca_file", ca_file)
            .field("bearer_token", token)
            .field("bearer_token_overwrite_allowed", bearer_token_overwrite_allowed)
            .field("image", image)
            .field("namespace", namespace)
            .field("namespace_overwrite_allowed", namespace_overwrite_allowed)
            .field("namespace_per_job", namespace_per_job)
            .field("privileged", privileged)
            .field("allow_privilege_escalation", allow_privilege_escalation)
            .field("runtime_class_name", runtime_class_name)
            .field("service_account", service_account)
            .field(
                "service_account_overwrite_allowed",
                service_account_overwrite_allowed,
            )
            .field("automount_service_account_token", automount_service_account_token)
            .field("image_pull_secrets", image_pull_secrets)
            .field(
                "use_service_account_image_pull_secrets",
                use_service_account_image_pull_secrets,
            )
            .field("pull_policy", pull_policy)
            .field("allowed_pull_policies", allowed_pull_policies)
            .field("allowed_images", allowed_images)
            .field("allowed_services", allowed_services)
            .field("allowed_users", allowed_users)
            .field("allowed_groups", allowed_groups)
            .field("cpu_limit", cpu_limit)
            .field("cpu_limit_overwrite_max_allowed", cpu_limit_overwrite_max_allowed)
            .field("cpu_request", cpu_request)
            .field(
                "cpu_request_overwrite_max_allowed",
                cpu_request_overwrite_max_allowed,
            )
            .field("memory_limit", memory_limit)
            .field(
                "memory_limit_overwrite_max_allowed",
                memory_limit_overwrite_max_allowed,
            )
            .field("memory_request", memory_request)
            .field(
                "memory_request_overwrite_max_allowed",
                memory_request_overwrite_max_allowed,
            )
            .field("ephemeral_storage_limit", ephemeral_storage_limit)
            .field(
                "ephemeral_storage_limit_overwrite_max_allowed",
                ephemeral_storage_limit_overwrite_max_allowed,
            )
            .field("ephemeral_storage_request", ephemeral_storage_request)
            .field(
                "ephemeral_storage_request_overwrite_max_allowed",
                ephemeral_storage_request_overwrite_max_allowed,
            )
            .field("service_cpu_limit", service_cpu_limit)
            .field(
                "service_cpu_limit_overwrite_max_allowed",
                service_cpu_limit_overwrite_max_allowed,
            )
            .field("service_cpu_request", service_cpu_request)
            .field(
                "service_cpu_request_overwrite_max_allowed",
                service_cpu_request_overwrite_max_allowed,
            )
            .field("service_memory_limit", service_memory_limit)
            .field(
                "service_memory_limit_overwrite_max_allowed",
                service_memory_limit_overwrite_max_allowed,
            )
            .field("service_memory_request", service_memory_request)
            .field(
                "service_memory_request_overwrite_max_allowed",
                service_memory_request_overwrite_max_allowed,
            )
            .field("service_ephemeral_storage_limit", service_ephemeral_storage_limit)
            .field(
                "service_ephemeral_storage_limit_overwrite_max_allowed",
                service_ephemeral_storage_limit_overwrite_max_allowed,
            )
            .field(
                "service_ephemeral_storage_request",
                service_ephemeral_storage_request,
            )
            .field(
                "service_ephemeral_storage_request_overwrite_max_allowed",
                service_ephemeral_storage_request_overwrite_max_allowed,
            )
            .field("helper_cpu_limit", helper_cpu_limit)
            .field(
                "helper_cpu_limit_overwrite_max_allowed",
                helper_cpu_limit_overwrite_max_allowed,
            )
            .field("helper_cpu_request", helper_cpu_request)
            .field(
                "helper_cpu_request_overwrite_max_allowed",
                helper_cpu_request_overwrite_max_allowed,
            )
            .field("helper_memory_limit", helper_memory_limit)
            .field(
                "helper_memory_limit_overwrite_max_allowed",
                helper_memory_limit_overwrite_max_allowed,
            )
            .field("helper_memory_request", helper_memory_request)
            .field(
                "helper_memory_request_overwrite_max_allowed",
                helper_memory_request_overwrite_max_allowed,
            )
            .field("helper_ephemeral_storage_limit", helper_ephemeral_storage_limit)
            .field(
                "helper_ephemeral_storage_limit_overwrite_max_allowed",
                helper_ephemeral_storage_limit_overwrite_max_allowed,
            )
            .field(
                "helper_ephemeral_storage_request",
                helper_ephemeral_storage_request,
            )
            .field(
                "helper_ephemeral_storage_request_overwrite_max_allowed",
                helper_ephemeral_storage_request_overwrite_max_allowed,
            )
            .field("node_selector", node_selector)
            .field("node_selector_overwrite_allowed", node_selector_overwrite_allowed)
            .field("node_tolerations", node_tolerations)
            .field(
                "node_tolerations_overwrite_allowed",
                node_tolerations_overwrite_allowed,
            )
            .field("affinity", affinity)
            .field("pod_labels", pod_labels)
            .field("pod_labels_overwrite_allowed", pod_labels_overwrite_allowed)
            .field("pod_annotations", pod_annotations)
            .field(
                "pod_annotations_overwrite_allowed",
                pod_annotations_overwrite_allowed,
            )
            .field("pod_security_context", pod_security_context)
            .field(
                "build_container_security_context",
                build_container_security_context,
            )
            .field(
                "helper_container_security_context",
                helper_container_security_context,
            )
            .field(
                "service_container_security_context",
                service_container_security_context,
            )
            .field(
                "init_permissions_container_security_context",
                init_permissions_container_security_context,
            )
            .field("cap_add", cap_add)
            .field("cap_drop", cap_drop)
            .field("volumes", volumes)
            .field("host_aliases", host_aliases)
            .field("dns_policy", dns_policy)
            .field("scheduler_name", scheduler_name)
            .field("priority_class_name", priority_class_name)
            .field("helper_image", helper_image)
            .field("helper_image_flavor", helper_image_flavor)
            .field("poll_interval", poll_interval)
            .field("poll_timeout", poll_timeout)
            .field(
                "termination_grace_period_seconds",
                termination_grace_period_seconds,
            )
            .field(
                "pod_termination_grace_period_seconds",
                pod_termination_grace_period_seconds,
            )
            .field("cleanup_grace_period_seconds", cleanup_grace_period_seconds)
            .field("cleanup_resources_timeout", cleanup_resources_timeout)
            .field("print_pod_warning_events", print_pod_warning_events)
            .field("logs_base_dir", logs_base_dir)
            .field("scripts_base_dir", scripts_base_dir)
            .field("strategy", strategy)
            .finish()
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            host: String::new(),
            context: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            bearer_token: String::new(),
            bearer_token_overwrite_allowed: false,
            image: String::new(),
            namespace: "default".into(),
            namespace_overwrite_allowed: String::new(),
            namespace_per_job: false,
            privileged: None,
            allow_privilege_escalation: None,
            runtime_class_name: None,
            service_account: String::new(),
            service_account_overwrite_allowed: String::new(),
            automount_service_account_token: None,
            image_pull_secrets: Vec::new(),
            use_service_account_image_pull_secrets: false,
            pull_policy: StringOrList::default(),
            allowed_pull_policies: Vec::new(),
            allowed_images: Vec::new(),
            allowed_services: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            cpu_limit: String::new(),
            cpu_limit_overwrite_max_allowed: String::new(),
            cpu_request: String::new(),
            cpu_request_overwrite_max_allowed: String::new(),
            memory_limit: String::new(),
            memory_limit_overwrite_max_allowed: String::new(),
            memory_request: String::new(),
            memory_request_overwrite_max_allowed: String::new(),
            ephemeral_storage_limit: String::new(),
            ephemeral_storage_limit_overwrite_max_allowed: String::new(),
            ephemeral_storage_request: String::new(),
            ephemeral_storage_request_overwrite_max_allowed: String::new(),
            service_cpu_limit: String::new(),
            service_cpu_limit_overwrite_max_allowed: String::new(),
            service_cpu_request: String::new(),
            service_cpu_request_overwrite_max_allowed: String::new(),
            service_memory_limit: String::new(),
            service_memory_limit_overwrite_max_allowed: String::new(),
            service_memory_request: String::new(),
            service_memory_request_overwrite_max_allowed: String::new(),
            service_ephemeral_storage_limit: String::new(),
            service_ephemeral_storage_limit_overwrite_max_allowed: String::new(),
            service_ephemeral_storage_request: String::new(),
            service_ephemeral_storage_request_overwrite_max_allowed: String::new(),
            helper_cpu_limit: String::new(),
            helper_cpu_limit_overwrite_max_allowed: String::new(),
            helper_cpu_request: String::new(),
            helper_cpu_request_overwrite_max_allowed: String::new(),
            helper_memory_limit: String::new(),
            helper_memory_limit_overwrite_max_allowed: String::new(),
            helper_memory_request: String::new(),
            helper_memory_request_overwrite_max_allowed: String::new(),
            helper_ephemeral_storage_limit: String::new(),
            helper_ephemeral_storage_limit_overwrite_max_allowed: String::new(),
            helper_ephemeral_storage_request: String::new(),
            helper_ephemeral_storage_request_overwrite_max_allowed: String::new(),
            node_selector: BTreeMap::new(),
            node_selector_overwrite_allowed: String::new(),
            node_tolerations: BTreeMap::new(),
            node_tolerations_overwrite_allowed: String::new(),
            affinity: None,
            pod_labels: BTreeMap::new(),
            pod_labels_overwrite_allowed: String::new(),
            pod_annotations: BTreeMap::new(),
            pod_annotations_overwrite_allowed: String::new(),
            pod_security_context: PodSecurityContext::default(),
            build_container_security_context: ContainerSecurityContext::default(),
            helper_container_security_context: ContainerSecurityContext::default(),
            service_container_security_context: ContainerSecurityContext::default(),
            init_permissions_container_security_context: ContainerSecurityContext::default(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            volumes: Volumes::default(),
            host_aliases: Vec::new(),
            dns_policy: String::new(),
            scheduler_name: String::new(),
            priority_class_name: String::new(),
            helper_image: String::new(),
            helper_image_flavor: String::new(),
            poll_interval: 3,
            poll_timeout: 180,
            termination_grace_period_seconds: None,
            pod_termination_grace_period_seconds: None,
            cleanup_grace_period_seconds: None,
            cleanup_resources_timeout: "5m".into(),
            print_pod_warning_events: None,
            logs_base_dir: String::new(),
            scripts_base_dir: String::new(),
            strategy: Strategy::Attach,
        }
    }
}

/// A TOML value that is one string or a list of them (`pull_policy`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "StringOrListRepr")]
pub struct StringOrList(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrListRepr {
    One(String),
    Many(Vec<String>),
}

impl From<StringOrListRepr> for StringOrList {
    fn from(r: StringOrListRepr) -> Self {
        match r {
            StringOrListRepr::One(s) if s.is_empty() => StringOrList(Vec::new()),
            StringOrListRepr::One(s) => StringOrList(vec![s]),
            StringOrListRepr::Many(v) => StringOrList(v),
        }
    }
}

/// `[runners.kubernetes.pod_security_context]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PodSecurityContext {
    pub fs_group: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub selinux_type: String,
}

/// `[runners.kubernetes.*_container_security_context]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ContainerSecurityContext {
    pub capabilities: Option<Capabilities>,
    pub privileged: Option<bool>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub read_only_root_filesystem: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub selinux_type: String,
    pub proc_mount: String,
}

/// `capabilities = { add = [...], drop = [...] }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

/// `[[runners.kubernetes.host_aliases]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// `[runners.kubernetes.volumes]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Volumes {
    pub host_path: Vec<HostPathVolume>,
    pub pvc: Vec<PvcVolume>,
    pub config_map: Vec<ConfigMapVolume>,
    pub secret: Vec<SecretVolume>,
    pub empty_dir: Vec<EmptyDirVolume>,
    pub csi: Vec<CsiVolume>,
}

/// `[[runners.kubernetes.volumes.host_path]]`; `host_path` defaults to `mount_path`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostPathVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub read_only: bool,
    pub host_path: String,
    pub mount_propagation: String,
}

/// `[[runners.kubernetes.volumes.pvc]]`; the name may contain `$CI_CONCURRENT_ID`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PvcVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub read_only: bool,
    pub mount_propagation: String,
}

/// `[[runners.kubernetes.volumes.config_map]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConfigMapVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub read_only: bool,
    pub items: BTreeMap<String, String>,
}

/// `[[runners.kubernetes.volumes.secret]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SecretVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub read_only: bool,
    pub items: BTreeMap<String, String>,
}

/// `[[runners.kubernetes.volumes.empty_dir]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct EmptyDirVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub medium: String,
    pub size_limit: String,
}

/// `[[runners.kubernetes.volumes.csi]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct CsiVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub read_only: bool,
    pub driver: String,
    pub fs_type: String,
    pub volume_attributes: BTreeMap<String, String>,
}

impl KubernetesConfig {
    /// Parses the body of a `[runners.kubernetes]` section (the keys, without the header).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
        Self::from_table(table)
    }

    /// Parses a `[runners.kubernetes]` table, rejecting unknown keys by name.
    pub fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let mut unknown = Vec::new();
        let value = toml::Value::Table(table);
        let cfg: KubernetesConfig = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownKeys(unknown));
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Finds the first `[[runners]]` entry's `kubernetes` table in a whole `config.toml`
    /// and parses it, with `[runners.feature_flags]` applied.
    pub fn from_runner_config_toml(text: &str) -> Result<Self, ConfigError> {
        let root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
        let runner = root
            .get("runners")
            .and_then(|r| r.as_array())
            .and_then(|a| a.first())
            .and_then(|r| r.as_table())
            .ok_or_else(|| ConfigError::Toml("config.toml has no [[runners]] entry".into()))?;
        let kube = match runner.get("kubernetes") {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err(ConfigError::Toml("[runners.kubernetes] must be a table".into())),
            None => toml::Table::new(),
        };
        let cfg = Self::from_table(kube)?;
        let flags: BTreeMap<String, bool> = runner
            .get("feature_flags")
            .and_then(|f| f.as_table())
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_bool()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(cfg.with_feature_flags(&flags))
    }

    /// Applies GitLab Runner feature flags that change this executor's behaviour.
    pub fn with_feature_flags(mut self, flags: &BTreeMap<String, bool>) -> Self {
        if flags.get("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY") == Some(&true) {
            self.strategy = Strategy::Exec;
        }
        self
    }

    /// `cleanup_resources_timeout` as a duration.
    pub fn cleanup_timeout(&self) -> Duration {
        parse_go_duration(&self.cleanup_resources_timeout).unwrap_or(Duration::from_secs(300))
    }

    fn check(&self) -> Result<(), ConfigError> {
        for p in &self.pull_policy.0 {
            if crate::pod::pull_policy_name(p).is_none() {
                return Err(ConfigError::Invalid {
                    key: "pull_policy".into(),
                    message: format!("{p:?} is not one of always, never, if-not-present"),
                });
            }
        }
        if !self.cleanup_resources_timeout.is_empty()
            && parse_go_duration(&self.cleanup_resources_timeout).is_none()
        {
            return Err(ConfigError::Invalid {
                key: "cleanup_resources_timeout".into(),
                message: format!(
                    "{:?} is not a duration like \"5m\" or \"90s\"",
                    self.cleanup_resources_timeout
                ),
            });
        }
        let vols = &self.volumes;
        let names = vols
            .host_path
            .iter()
            .map(|v| (&v.name, &v.mount_path, "host_path"))
            .chain(vols.pvc.iter().map(|v| (&v.name, &v.mount_path, "pvc")))
            .chain(
                vols.config_map
                    .iter()
                    .map(|v| (&v.name, &v.mount_path, "config_map")),
            )
            .chain(vols.secret.iter().map(|v| (&v.name, &v.mount_path, "secret")))
            .chain(
                vols.empty_dir
                    .iter()
                    .map(|v| (&v.name, &v.mount_path, "empty_dir")),
            )
            .chain(vols.csi.iter().map(|v| (&v.name, &v.mount_path, "csi")));
        for (name, mount, kind) in names {
            if name.is_empty() || mount.is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("volumes.{kind}"),
                    message: "every volume needs a name and a mount_path".into(),
                });
            }
        }
        for (k, v) in [
            ("namespace_overwrite_allowed", &self.namespace_overwrite_allowed),
            (
                "service_account_overwrite_allowed",
                &self.service_account_overwrite_allowed,
            ),
            (
                "pod_annotations_overwrite_allowed",
                &self.pod_annotations_overwrite_allowed,
            ),
            ("pod_labels_overwrite_allowed", &self.pod_labels_overwrite_allowed),
            (
                "node_selector_overwrite_allowed",
                &self.node_selector_overwrite_allowed,
            ),
        ] {
            if !v.is_empty()
                && let Err(e) = regex_lite_check(v)
            {
                return Err(ConfigError::Invalid {
                    key: k.into(),
                    message: e,
                });
            }
        }
        Ok(())
    }
}

fn regex_lite_check(re: &str) -> Result<(), String> {
    crate::pod::compile_overwrite_regex(re)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A Go `time.Duration` string: `300ms`, `90s`, `5m`, `1h30m`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_bearer_token() {
        let c = KubernetesConfig::from_toml_str(
            "host = \"https://k8s.example:6443\"\nbearer_token = \"s3cr3t-t0ken-value\"\nnamespace = \"ci\"\n",
        )
        .unwrap();
        assert_eq!(c.bearer_token, "s3cr3t-t0ken-value");
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!text.contains("s3cr3t-t0ken-value"), "token leaked: {text}");
            assert!(text.contains("bearer_token: \"[REDACTED]\""), "{text}");
            // The other fields are still there to debug with.
            assert!(text.contains("https://k8s.example:6443"), "{text}");
            assert!(text.contains("namespace: \"ci\""), "{text}");
        }
        let unset = format!("{:?}", KubernetesConfig::default());
        assert!(unset.contains("bearer_token: \"\""), "{unset}");
    }

    #[test]
    fn defaults_follow_gitlab_runner() {
        let c = KubernetesConfig::from_toml_str("").unwrap();
        assert_eq!(c.poll_interval, 3);
        assert_eq!(c.poll_timeout, 180);
        assert_eq!(c.namespace, "default");
        assert_eq!(c.privileged, None);
        assert_eq!(c.cleanup_timeout(), Duration::from_secs(300));
        assert_eq!(c.strategy, Strategy::Attach);
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let err = KubernetesConfig::from_toml_str(
            "privileged_mode = true\nnamespace = \"x\"\n[[volumes.pvc]]\nname = \"a\"\nmount_path = \"/a\"\nclaim = \"b\"\n[build_container_security_context]\nrun_as_usr = 1\n",
        )
        .unwrap_err();
        match err {
            ConfigError::UnknownKeys(k) => assert_eq!(
                k,
                vec![
                    "build_container_security_context.run_as_usr".to_string(),
                    "privileged_mode".to_string(),
                    "volumes.pvc.0.claim".to_string()
                ]
            ),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn wrong_types_and_values_are_errors_not_panics() {
        assert!(matches!(
            KubernetesConfig::from_toml_str("privileged = \"yes\""),
            Err(ConfigError::Toml(_))
        ));
        let e = KubernetesConfig::from_toml_str("pull_policy = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("pull_policy"), "{e}");
        let e = KubernetesConfig::from_toml_str("cleanup_resources_timeout = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("cleanup_resources_timeout"), "{e}");
        let e = KubernetesConfig::from_toml_str("[[volumes.pvc]]\nname = \"x\"").unwrap_err();
        assert!(e.to_string().contains("mount_path"), "{e}");
    }

    #[test]
    fn pull_policy_is_one_or_many_and_flags_pick_the_strategy() {
        let c = KubernetesConfig::from_toml_str("pull_policy = \"always\"").unwrap();
        assert_eq!(c.pull_policy.0, vec!["always"]);
        let c = KubernetesConfig::from_toml_str("pull_policy = [\"always\", \"if-not-present\"]").unwrap();
        assert_eq!(c.pull_policy.0.len(), 2);
        let c = KubernetesConfig::from_runner_config_toml(
            "[[runners]]\nexecutor = \"kubernetes\"\n[runners.feature_flags]\nFF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY = true\n[runners.kubernetes]\nnamespace = \"n\"\n",
        )
        .unwrap();
        assert_eq!((c.strategy, c.namespace.as_str()), (Strategy::Exec, "n"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("m"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errors_without_panic(s in "\\PC{0,200}") {
            let _ = KubernetesConfig::from_toml_str(&s);
            let _ = parse_go_duration(&s);
        }
    }
}
