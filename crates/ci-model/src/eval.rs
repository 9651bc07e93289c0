//! Evaluating a validated pipeline for one commit: `workflow:rules`, job `rules` and
//! `only`/`except`, `parallel` instances, and the variables each job gets.
//!
//! Semantics follow GitLab's `Gitlab::Ci::Pipeline::Chain` (workflow rules),
//! `Gitlab::Ci::Pipeline::Seed::Build` (job rules, only/except, needs on absent jobs) and
//! `Gitlab::Ci::Build::Rules` (first matching rule wins, `changes` with `compare_to`).
//! Predefined variables are derived from [`PipelineContext`]: the pipeline-wide ones in
//! [`PipelineContext::predefined`], the job's own (`CI_JOB_*`, `CI_NODE_*`,
//! `CI_ENVIRONMENT_*`) here, the ones that carry the job token in the payload. Matrix
//! expressions (`$[[ matrix.X ]]` in `needs:parallel:matrix`) are resolved per instance.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};

use crate::diag::Diagnostic;
use crate::pipeline::{Job, Pipeline, instance_names};
use crate::yaml::{Mapping, Node, Value};

/// Where a variable was defined (GitLab's precedence, lowest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VariableLevel {
    /// Predefined `CI_*` variables.
    Predefined,
    /// Top-level `variables:` of `.gitlab-ci.yml`.
    Global,
    /// `variables:` of the job (and `parallel:matrix` values, `rules:variables`).
    Job,
    /// Instance CI/CD variables.
    Instance,
    /// Group CI/CD variables.
    Group,
    /// Project CI/CD variables.
    Project,
    /// Variables given for this pipeline (manual run, trigger, schedule, `--variable`).
    Pipeline,
}

/// A variable with GitLab's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Name.
    pub key: String,
    /// Value (file variables: the content).
    pub value: String,
    /// Not shown in logs.
    pub masked: bool,
    /// Only for protected refs.
    pub protected: bool,
    /// A file variable.
    pub file: bool,
    /// Not expanded.
    pub raw: bool,
    /// Visible to anyone who can read the job (predefined and `.gitlab-ci.yml` ones).
    pub public: bool,
    /// Where it was defined.
    pub level: VariableLevel,
}

impl Variable {
    /// A public, unmasked variable.
    pub fn plain(key: &str, value: &str, level: VariableLevel) -> Self {
        Variable {
            key: key.to_string(),
            value: value.to_string(),
            masked: false,
            protected: false,
            file: false,
            raw: false,
            public: true,
            level,
        }
    }
}

/// Everything about the commit and project that decides what runs.
#[derive(Clone, Debug)]
pub struct PipelineContext {
    /// `push`, `web`, `merge_request_event`, `schedule`, `api`, `trigger`, `pipeline`,
    /// `chat`, `external`, `external_pull_request_event`, `parent_pipeline`.
    pub source: String,
    /// Branch or tag name.
    pub ref_name: String,
    /// `ref_name` is a tag.
    pub tag: bool,
    /// The project's default branch.
    pub default_branch: String,
    /// The ref is protected.
    pub protected_ref: bool,
    /// Commit SHA.
    pub sha: String,
    /// Previous SHA (`0000...` for a new branch).
    pub before_sha: String,
    /// Full commit message.
    pub commit_message: String,
    /// `Name <email>`.
    pub commit_author: String,
    /// ISO 8601 commit time.
    pub commit_timestamp: String,
    /// Files changed by the push; `None` when unknown (then `changes` always holds, as in
    /// GitLab pipelines without a push diff).
    pub changed_files: Option<Vec<String>>,
    /// Files in the repository at `sha` (for `exists`).
    pub existing_files: Vec<String>,
    /// Project id.
    pub project_id: u64,
    /// `namespace/project`.
    pub project_path: String,
    /// Instance URL, e.g. `https://gitlab.example.com`.
    pub server_url: String,
    /// Pipeline id and iid.
    pub pipeline_id: u64,
    /// Pipeline iid.
    pub pipeline_iid: u64,
    /// First job id; jobs get consecutive ids.
    pub first_job_id: u64,
    /// User-defined variables (project, group, instance, pipeline levels).
    pub variables: Vec<Variable>,
    /// Merge request source and target branch, for MR pipelines.
    pub merge_request: Option<(String, String)>,
    /// GitLab's version (`CI_SERVER_VERSION`, and its `_MAJOR`/`_MINOR`/`_PATCH` parts).
    pub server_version: String,
    /// GitLab's revision (`CI_SERVER_REVISION`).
    pub server_revision: String,
    /// When the pipeline was created (ISO 8601); `None` uses `commit_timestamp`.
    pub pipeline_created_at: Option<String>,
    /// When the job starts (`CI_JOB_STARTED_AT`, ISO 8601); `None` uses the pipeline's
    /// creation time. podci-model reads no clock: a runner sets this.
    pub job_started_at: Option<String>,
    /// Who started the pipeline (`GITLAB_USER_*`); `None` takes name and e-mail from
    /// `commit_author`, login from the e-mail's local part, id 1.
    pub user: Option<PipelineUser>,
    /// The runner that picks the jobs (`CI_RUNNER_*`); `None` leaves those out.
    pub runner: Option<RunnerIdentity>,
    /// `CI_PROJECT_VISIBILITY`: `private`, `internal` or `public`.
    pub project_visibility: String,
    /// `CI_PROJECT_DESCRIPTION`.
    pub project_description: String,
    /// `CI_PROJECT_TOPICS` (sent lowercased, comma-separated).
    pub project_topics: Vec<String>,
    /// `CI_PROJECT_NAMESPACE_ID`.
    pub namespace_id: u64,
    /// Files changed between a ref and `sha`, by ref (branch, tag or commit SHA), for
    /// `rules:changes:compare_to`. GitLab computes these diffs from the repository;
    /// podci-model reads none, so the caller fills in the refs the pipeline compares to
    /// (`refs/heads/X` and `refs/tags/X` also find `X`). A ref missing here is GitLab's
    /// "not a valid ref" error.
    pub compare_to_changes: std::collections::BTreeMap<String, Vec<String>>,
    /// The git blob id of each file at `sha` (`git ls-tree -r SHA`), for
    /// `cache:key:files` on GitLab 18.4 and later, which keys caches by file content.
    pub file_blob_ids: std::collections::BTreeMap<String, String>,
    /// The last commit at or before `sha` that touched each path
    /// (`git log -1 --format=%H SHA -- PATH`), for `cache:key:files_commits` and for
    /// `cache:key:files` on GitLab before 18.4.
    pub last_commits: std::collections::BTreeMap<String, String>,
    /// The merge request of a merge request pipeline (`CI_MERGE_REQUEST_*`), besides the
    /// branch names in `merge_request`; `None` there gives iid 1 and empty fields.
    pub merge_request_details: Option<MergeRequestDetails>,
}

/// A merge request as GitLab describes it to its pipelines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeRequestDetails {
    /// Instance-wide id (`CI_MERGE_REQUEST_ID`).
    pub id: u64,
    /// Project-level id (`CI_MERGE_REQUEST_IID`, the `!N`).
    pub iid: u64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Label names.
    pub labels: Vec<String>,
    /// Assignees' user names.
    pub assignees: Vec<String>,
    /// Milestone title.
    pub milestone: Option<String>,
    /// A draft.
    pub draft: bool,
    /// `detached`, `merged_result` or `merge_train`; empty means `detached`.
    pub event_type: String,
    /// The base commit of the diff.
    pub diff_base_sha: String,
    /// Source branch head (set by GitLab in merged results pipelines only).
    pub source_branch_sha: String,
    /// Target branch head (set by GitLab in merged results pipelines only).
    pub target_branch_sha: String,
    /// The source project's `namespace/project` and id when the MR comes from a fork.
    pub source_project: Option<(String, u64)>,
    /// The source branch is protected.
    pub source_branch_protected: bool,
    /// The target branch is protected.
    pub target_branch_protected: bool,
    /// Squash commits on merge.
    pub squash_on_merge: bool,
}

/// The user a pipeline runs as (`GITLAB_USER_ID`, `_LOGIN`, `_NAME`, `_EMAIL`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineUser {
    /// User id.
    pub id: u64,
    /// User name (login).
    pub login: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

/// The runner that runs a job (`CI_RUNNER_ID`, `_DESCRIPTION`, `_TAGS`), as GitLab knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerIdentity {
    /// Runner id.
    pub id: u64,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
}

impl Default for PipelineContext {
    fn default() -> Self {
        PipelineContext {
            source: "push".into(),
            ref_name: "main".into(),
            tag: false,
            default_branch: "main".into(),
            protected_ref: false,
            sha: "0".repeat(40),
            before_sha: "0".repeat(40),
            commit_message: String::new(),
            commit_author: String::new(),
            commit_timestamp: "1970-01-01T00:00:00+00:00".into(),
            changed_files: None,
            existing_files: Vec::new(),
            project_id: 1,
            project_path: "group/project".into(),
            server_url: "https://gitlab.example.com".into(),
            pipeline_id: 1,
            pipeline_iid: 1,
            first_job_id: 1,
            variables: Vec::new(),
            merge_request: None,
            server_version: "18.6.0".into(),
            server_revision: String::new(),
            pipeline_created_at: None,
            job_started_at: None,
            user: None,
            runner: None,
            project_visibility: "private".into(),
            project_description: String::new(),
            project_topics: Vec::new(),
            namespace_id: 1,
            compare_to_changes: std::collections::BTreeMap::new(),
            file_blob_ids: std::collections::BTreeMap::new(),
            last_commits: std::collections::BTreeMap::new(),
            merge_request_details: None,
        }
    }
}

/// Why a job is not in the pipeline, or how it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Created; `rule` is the index of the matching rule, if rules decided.
    Created {
        /// The rule that matched.
        rule: Option<usize>,
    },
    /// Not created: no rule matched.
    NoRuleMatched,
    /// Not created: the matching rule says `when: never`.
    Never {
        /// The rule that matched.
        rule: usize,
    },
    /// Not created by `only`/`except`.
    OnlyExcept,
}

/// One job of the evaluated pipeline (one `parallel` instance).
#[derive(Clone, Debug)]
pub struct EvaluatedJob {
    /// Instance name (`job 1/2`, `job: [a]`, or the job's name).
    pub name: String,
    /// The job as configured.
    pub job: String,
    /// Stage.
    pub stage: String,
    /// Index of the stage.
    pub stage_index: usize,
    /// `when` after rules.
    pub when: String,
    /// `start_in` for delayed jobs, in seconds.
    pub start_in: Option<u64>,
    /// `allow_failure` after rules.
    pub allow_failure: bool,
    /// `allow_failure:exit_codes`.
    pub allow_failure_exit_codes: Vec<i64>,
    /// Needs (instance names); `None` for stage ordering.
    pub needs: Option<Vec<(String, bool, bool)>>,
    /// Predefined and global variables this job inherits (shared between jobs).
    pub shared: Arc<Vec<Variable>>,
    /// The job's own variables: `CI_JOB_*`, `variables:`, matrix values, `rules:variables`.
    pub own: Vec<Variable>,
    /// Project, group, instance and pipeline variables (shared between jobs).
    pub user: Arc<Vec<Variable>>,
    /// Job id in this pipeline.
    pub id: u64,
    /// `name`, shared by every payload that lists this job as a dependency.
    shared_name: Arc<str>,
    /// Position of each name in `shared` (its names are unique), shared between jobs so
    /// that [`EvaluatedJob::variables`] hashes only the job's own and user variables.
    shared_index: Arc<HashMap<String, usize>>,
}

impl EvaluatedJob {
    /// The instance name as a shared string (cheap to copy into many payloads).
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.shared_name)
    }

    /// This job as another job's payload lists it in `dependencies` (GitLab fills the
    /// token and artifacts file when the job has run).
    pub(crate) fn dependency(&self) -> crate::payload::Dependency {
        crate::payload::Dependency {
            id: self.id,
            name: self.shared_name(),
            token: String::new(),
            artifacts_file: None,
        }
    }

    /// All variables in precedence order, lowest first, each name once (the winning
    /// definition, at the position of its first definition).
    pub fn variables(&self) -> Vec<&Variable> {
        let mut out: Vec<&Variable> =
            Vec::with_capacity(self.shared.len() + self.own.len() + self.user.len());
        if self.shared_index.len() == self.shared.len() {
            // `shared` has unique names: take it whole, then place the job's own and the
            // user variables, hashing only those.
            out.extend(self.shared.iter());
            let base = out.len();
            let mut extra: HashMap<&str, usize> = HashMap::new();
            for v in self.own.iter().chain(self.user.iter()) {
                let slot = self
                    .shared_index
                    .get(v.key.as_str())
                    .copied()
                    .or_else(|| extra.get(v.key.as_str()).copied());
                match slot {
                    Some(i) => out[i] = v,
                    None => {
                        extra.insert(v.key.as_str(), out.len());
                        out.push(v);
                    }
                }
            }
            debug_assert!(out.len() >= base);
            return out;
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(out.capacity());
        for v in self.shared.iter().chain(self.own.iter()).chain(self.user.iter()) {
            match index.get(v.key.as_str()) {
                Some(&i) => out[i] = v,
                None => {
                    index.insert(v.key.as_str(), out.len());
                    out.push(v);
                }
            }
        }
        out
    }

    /// Whether any layer defines `key` (a hash lookup in the shared layer).
    pub(crate) fn defines(&self, key: &str) -> bool {
        let in_shared = if self.shared_index.len() == self.shared.len() {
            self.shared_index.contains_key(key)
        } else {
            self.shared.iter().any(|v| v.key == key)
        };
        in_shared || self.own.iter().any(|v| v.key == key) || self.user.iter().any(|v| v.key == key)
    }

    /// The winning definition of `key`.
    pub fn variable(&self, key: &str) -> Option<&Variable> {
        fn find<'v>(l: &'v [Variable], key: &str) -> Option<&'v Variable> {
            l.iter().rev().find(|v| v.key == key)
        }
        find(&self.user, key)
            .or_else(|| find(&self.own, key))
            .or_else(|| find(&self.shared, key))
    }
}

/// The result of [`Pipeline::evaluate`].
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Whether `workflow:rules` let the pipeline be created.
    pub created: bool,
    /// `workflow:name`, expanded.
    pub name: Option<String>,
    /// The jobs that run, in stage order then configuration order.
    pub jobs: Vec<EvaluatedJob>,
    /// Every configured job with its decision.
    pub decisions: Vec<(String, Decision)>,
    /// Errors GitLab would report when creating the pipeline (e.g. a need on an absent job).
    pub errors: Vec<Diagnostic>,
    index: HashMap<String, usize>,
    /// Per stage index: the payload `dependencies` of a job without `needs` (every job of
    /// earlier stages), built on first use and shared by all payloads of that stage.
    stage_dependencies: Vec<std::sync::OnceLock<Arc<Vec<crate::payload::Dependency>>>>,
}

impl Evaluation {
    /// A job by instance name.
    pub fn job(&self, name: &str) -> Option<&EvaluatedJob> {
        self.index.get(name).and_then(|&i| self.jobs.get(i))
    }

    /// The jobs of stages before `stage_index` (jobs are sorted by stage).
    pub fn jobs_before_stage(&self, stage_index: usize) -> &[EvaluatedJob] {
        let end = self.jobs.partition_point(|j| j.stage_index < stage_index);
        &self.jobs[..end]
    }

    /// The dependencies GitLab lists for a job of `stage_index` without `needs` or
    /// `dependencies:`: every job of earlier stages, in pipeline order. Built once per
    /// stage; every payload of the stage shares it.
    pub(crate) fn stage_dependencies(&self, stage_index: usize) -> Arc<Vec<crate::payload::Dependency>> {
        let build = || {
            Arc::new(
                self.jobs_before_stage(stage_index)
                    .iter()
                    .map(EvaluatedJob::dependency)
                    .collect(),
            )
        };
        match self.stage_dependencies.get(stage_index) {
            Some(cell) => Arc::clone(cell.get_or_init(build)),
            None => build(),
        }
    }
}

/// `File.fnmatch?(glob, path, FNM_PATHNAME | FNM_DOTMATCH | FNM_EXTGLOB)`.
pub(crate) fn fnmatch(pattern: &str) -> Option<GlobMatcher> {
    GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

fn any_matches(patterns: &[String], files: &[String]) -> bool {
    patterns.iter().any(|p| match fnmatch(p) {
        Some(m) => files.iter().any(|f| m.is_match(f)),
        None => false,
    })
}

fn strings(n: Option<&Node>) -> Vec<String> {
    match n.map(|n| &n.value) {
        Some(Value::Seq(s)) => s.iter().filter_map(Node::scalar_to_string).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => n.and_then(Node::scalar_to_string).into_iter().collect(),
    }
}

/// Values of a `variables:` mapping (plain values or `{value:, expand:}`).
fn yaml_variables(node: Option<&Node>, level: VariableLevel) -> Vec<Variable> {
    let mut out = Vec::new();
    let Some(m) = node.and_then(Node::as_map) else {
        return out;
    };
    for (k, v) in m.iter() {
        let (value, raw) = match &v.value {
            Value::Map(vm) => (
                vm.get("value")
                    .and_then(Node::scalar_to_string)
                    .unwrap_or_default(),
                vm.get("expand").and_then(Node::as_bool) == Some(false),
            ),
            _ => (v.scalar_to_string().unwrap_or_default(), false),
        };
        let mut var = Variable::plain(k, &value, level);
        var.raw = raw;
        out.push(var);
    }
    out
}

/// Sets `vars[key] = value` keeping the "later wins" order.
fn upsert(vars: &mut Vec<Variable>, v: Variable) {
    vars.retain(|x| x.key != v.key);
    vars.push(v);
}

/// `CI_COMMIT_REF_SLUG`: lowercased, non-alphanumerics to `-`, at most 63 bytes, no
/// leading or trailing `-`.
pub fn ref_slug(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

impl PipelineContext {
    /// Whether the GitLab being modelled is `major.minor` or newer (from `server_version`;
    /// an unreadable version counts as the newest).
    pub fn server_at_least(&self, major: u32, minor: u32) -> bool {
        let mut parts = self.server_version.split(['.', '-']);
        let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
        match (num(), num()) {
            (Some(ma), Some(mi)) => (ma, mi) >= (major, minor),
            _ => true,
        }
    }

    fn branch(&self) -> Option<&str> {
        (!self.tag && self.merge_request.is_none()).then_some(self.ref_name.as_str())
    }

    /// The predefined variables GitLab sets for every job of this pipeline.
    pub fn predefined(&self) -> Vec<Variable> {
        let p = |k: &str, v: &str| Variable::plain(k, v, VariableLevel::Predefined);
        let (namespace, project_name) = self
            .project_path
            .rsplit_once('/')
            .unwrap_or(("", &self.project_path));
        let host = self
            .server_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.server_url)
            .trim_end_matches('/');
        let (server_host, server_port) = host.split_once(':').unwrap_or((host, ""));
        let protocol = self.server_url.split("://").next().unwrap_or("https");
        let port = if server_port.is_empty() {
            if protocol == "http" { "80" } else { "443" }
        } else {
            server_port
        };
        let (title, description) = commit_title_and_description(&self.commit_message);
        // GITLAB_CI_MAX_COMMIT_MESSAGE_SIZE_IN_BYTES, 100 KB by default.
        let message = truncate_bytes(&self.commit_message, 100 * 1024);
        let (title, description) = (title.as_str(), description.as_str());
        let created_at = self
            .pipeline_created_at
            .as_deref()
            .unwrap_or(&self.commit_timestamp);
        let mut version = self.server_version.splitn(3, '.');
        let (major, minor) = (version.next().unwrap_or(""), version.next().unwrap_or(""));
        // `17.11.0-ee` -> patch `0`.
        let patch: String = version
            .next()
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let (user_id, user_login, user_name, user_email) = match &self.user {
            Some(u) => (u.id.to_string(), u.login.clone(), u.name.clone(), u.email.clone()),
            None => {
                let (name, email) = match self.commit_author.rsplit_once('<') {
                    Some((n, e)) => (n.trim().to_string(), e.trim_end_matches('>').trim().to_string()),
                    None => (self.commit_author.trim().to_string(), String::new()),
                };
                let login = email.split('@').next().unwrap_or("").to_string();
                ("1".to_string(), login, name, email)
            }
        };
        let project_url = format!("{}/{}", self.server_url.trim_end_matches('/'), self.project_path);
        let mut v = vec![
            p("CI", "true"),
            p("GITLAB_CI", "true"),
            p("CI_SERVER", "yes"),
            p("CI_SERVER_URL", self.server_url.trim_end_matches('/')),
            p("CI_SERVER_HOST", server_host),
            p("CI_SERVER_PORT", port),
            p("CI_SERVER_PROTOCOL", protocol),
            p("CI_SERVER_NAME", "GitLab"),
            p("CI_SERVER_FQDN", host),
            p(
                "CI_API_V4_URL",
                &format!("{}/api/v4", self.server_url.trim_end_matches('/')),
            ),
            p(
                "CI_API_GRAPHQL_URL",
                &format!("{}/api/graphql", self.server_url.trim_end_matches('/')),
            ),
            p("CI_PROJECT_ID", &self.project_id.to_string()),
            p("CI_PROJECT_NAME", project_name),
            p("CI_PROJECT_TITLE", project_name),
            p("CI_PROJECT_PATH", &self.project_path),
            p("CI_PROJECT_PATH_SLUG", &ref_slug(&self.project_path)),
            p("CI_PROJECT_NAMESPACE", namespace),
            p(
                "CI_PROJECT_ROOT_NAMESPACE",
                namespace.split('/').next().unwrap_or(""),
            ),
            p("CI_PROJECT_URL", &project_url),
            p("CI_PROJECT_VISIBILITY", &self.project_visibility),
            p("CI_PROJECT_DESCRIPTION", &self.project_description),
            p(
                "CI_PROJECT_TOPICS",
                &self
                    .project_topics
                    .iter()
                    .map(|t| t.to_lowercase())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            p("CI_PROJECT_NAMESPACE_ID", &self.namespace_id.to_string()),
            p("CI_PROJECT_NAMESPACE_SLUG", &ref_slug(namespace)),
            p("CI_PROJECT_REPOSITORY_LANGUAGES", ""),
            p("CI_PROJECT_CLASSIFICATION_LABEL", ""),
            p("CI_DEFAULT_BRANCH", &self.default_branch),
            p("CI_DEFAULT_BRANCH_SLUG", &ref_slug(&self.default_branch)),
            p("CI_PROJECT_CONFIG_PATH", ".gitlab-ci.yml"),
            p("CI_CONFIG_PATH", ".gitlab-ci.yml"),
            p("CI_SERVER_VERSION", &self.server_version),
            p("CI_SERVER_VERSION_MAJOR", major),
            p("CI_SERVER_VERSION_MINOR", minor),
            p("CI_SERVER_VERSION_PATCH", &patch),
            p("CI_SERVER_REVISION", &self.server_revision),
            p("CI_SERVER_SHELL_SSH_HOST", server_host),
            p("CI_SERVER_SHELL_SSH_PORT", "22"),
            p("GITLAB_FEATURES", ""),
            p("CI_TEMPLATE_REGISTRY_HOST", "registry.gitlab.com"),
            p("GITLAB_USER_ID", &user_id),
            p("GITLAB_USER_EMAIL", &user_email),
            p("GITLAB_USER_LOGIN", &user_login),
            p("GITLAB_USER_NAME", &user_name),
            p("CI_PIPELINE_ID", &self.pipeline_id.to_string()),
            p("CI_PIPELINE_IID", &self.pipeline_iid.to_string()),
            p("CI_PIPELINE_SOURCE", &self.source),
            p(
                "CI_PIPELINE_URL",
                &format!("{project_url}/-/pipelines/{}", self.pipeline_id),
            ),
            p("CI_PIPELINE_CREATED_AT", created_at),
            p("CI_COMMIT_SHA", &self.sha),
            p("CI_COMMIT_SHORT_SHA", self.sha.get(..8).unwrap_or(&self.sha)),
            p("CI_COMMIT_BEFORE_SHA", &self.before_sha),
            p("CI_COMMIT_REF_NAME", &self.ref_name),
            p("CI_COMMIT_REF_SLUG", &ref_slug(&self.ref_name)),
            p(
                "CI_COMMIT_REF_PROTECTED",
                if self.protected_ref { "true" } else { "false" },
            ),
            p("CI_COMMIT_MESSAGE", message),
            p(
                "CI_COMMIT_MESSAGE_IS_TRUNCATED",
                if message.len() < self.commit_message.len() {
                    "true"
                } else {
                    "false"
                },
            ),
            p("CI_COMMIT_TITLE", title),
            p("CI_COMMIT_DESCRIPTION", description),
            p("CI_COMMIT_AUTHOR", &self.commit_author),
            p("CI_COMMIT_TIMESTAMP", &self.commit_timestamp),
            p("CI_REGISTRY", &format!("registry.{server_host}")),
            p(
                "CI_REGISTRY_IMAGE",
                &format!("registry.{server_host}/{}", self.project_path.to_lowercase()),
            ),
            p("CI_DEPENDENCY_PROXY_SERVER", &format!("{server_host}:{port}")),
            // The top-level group's prefix, and the project's own group's.
            p(
                "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX",
                &format!(
                    "{server_host}:{port}/{}/dependency_proxy/containers",
                    namespace.split('/').next().unwrap_or("")
                ),
            ),
            p(
                "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX",
                &format!("{server_host}:{port}/{namespace}/dependency_proxy/containers"),
            ),
            p("CI_PAGES_DOMAIN", &format!("pages.{server_host}")),
            p(
                "CI_PAGES_HOSTNAME",
                &format!(
                    "{}.pages.{server_host}",
                    namespace.split('/').next().unwrap_or("").to_lowercase()
                ),
            ),
            p(
                "CI_PAGES_URL",
                &format!(
                    "{protocol}://{}.pages.{server_host}/{}",
                    namespace.split('/').next().unwrap_or("").to_lowercase(),
                    self.project_path
                        .split_once('/')
                        .map_or(self.project_path.as_str(), |(_, rest)| rest)
                ),
            ),
        ];
        if self.source == "trigger" {
            v.push(p("CI_PIPELINE_TRIGGERED", "true"));
        }
        if self.tag {
            v.push(p("CI_COMMIT_TAG", &self.ref_name));
            v.push(p("CI_COMMIT_TAG_MESSAGE", ""));
        }
        if let Some(b) = self.branch() {
            v.push(p("CI_COMMIT_BRANCH", b));
        }
        if let Some((source, target)) = &self.merge_request {
            let fallback = MergeRequestDetails {
                id: 1,
                iid: 1,
                ..MergeRequestDetails::default()
            };
            let mr = self.merge_request_details.as_ref().unwrap_or(&fallback);
            let bool_str = |b: bool| if b { "true" } else { "false" };
            let (source_path, source_id) = mr
                .source_project
                .clone()
                .unwrap_or_else(|| (self.project_path.clone(), self.project_id));
            let server = self.server_url.trim_end_matches('/');
            let event = if mr.event_type.is_empty() {
                "detached"
            } else {
                mr.event_type.as_str()
            };
            v.push(p("CI_MERGE_REQUEST_ID", &mr.id.to_string()));
            v.push(p("CI_MERGE_REQUEST_IID", &mr.iid.to_string()));
            v.push(p("CI_MERGE_REQUEST_TITLE", &mr.title));
            // Cut to 2,700 characters.
            let description: String = mr.description.chars().take(2700).collect();
            v.push(p("CI_MERGE_REQUEST_DESCRIPTION", &description));
            v.push(p(
                "CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED",
                bool_str(description.len() < mr.description.len()),
            ));
            v.push(p("CI_MERGE_REQUEST_DRAFT", bool_str(mr.draft)));
            if !mr.labels.is_empty() {
                v.push(p("CI_MERGE_REQUEST_LABELS", &mr.labels.join(",")));
            }
            if !mr.assignees.is_empty() {
                v.push(p("CI_MERGE_REQUEST_ASSIGNEES", &mr.assignees.join(",")));
            }
            if let Some(m) = &mr.milestone {
                v.push(p("CI_MERGE_REQUEST_MILESTONE", m));
            }
            v.push(p("CI_MERGE_REQUEST_EVENT_TYPE", event));
            v.push(p("CI_MERGE_REQUEST_PROJECT_ID", &self.project_id.to_string()));
            v.push(p("CI_MERGE_REQUEST_PROJECT_PATH", &self.project_path));
            v.push(p("CI_MERGE_REQUEST_PROJECT_URL", &project_url));
            v.push(p(
                "CI_MERGE_REQUEST_REF_PATH",
                &format!("refs/merge-requests/{}/head", mr.iid),
            ));
            v.push(p("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", source));
            v.push(p(
                "CI_MERGE_REQUEST_SOURCE_BRANCH_PROTECTED",
                bool_str(mr.source_branch_protected),
            ));
            v.push(p("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", &mr.source_branch_sha));
            v.push(p("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", &source_id.to_string()));
            v.push(p("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", &source_path));
            v.push(p(
                "CI_MERGE_REQUEST_SOURCE_PROJECT_URL",
                &format!("{server}/{source_path}"),
            ));
            v.push(p("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", target));
            v.push(p(
                "CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED",
                bool_str(mr.target_branch_protected),
            ));
            v.push(p("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", &mr.target_branch_sha));
            v.push(p("CI_MERGE_REQUEST_DIFF_BASE_SHA", &mr.diff_base_sha));
            v.push(p(
                "CI_MERGE_REQUEST_SQUASH_ON_MERGE",
                bool_str(mr.squash_on_merge),
            ));
            v.push(p(
                "CI_OPEN_MERGE_REQUESTS",
                &format!("{}!{}", self.project_path, mr.iid),
            ));
        }
        v
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `CI_JOB_GROUP_NAME`: the name without a trailing parallel or manual-group suffix
/// (`job 1/3`, `job 1 3`, `job: [a, b]`), as GitLab's `Ci::Build#group_name` cuts it.
pub fn job_group_name(name: &str) -> String {
    static SUFFIX: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re =
        SUFFIX.get_or_init(|| regex::Regex::new(r"([\x08\s:]+((\[.*\])|(\d+[\s:/\\]+\d+))){1,3}\s*\z").ok());
    match re {
        Some(re) => re.replace(name, "").trim().to_string(),
        None => name.to_string(),
    }
}

/// `Commit#title` and `Commit#description` (GitLab's `app/models/commit.rb`): the first
/// line, cut to 80 characters and `…` when longer than 100 (`No commit message` for a
/// blank message); the rest after the first line break with one trailing line break
/// removed (Ruby's `chomp`), or `…` and everything from character 80 when the first line
/// is longer than 100 characters.
pub fn commit_title_and_description(message: &str) -> (String, String) {
    let full_title = if message.trim().is_empty() {
        "No commit message"
    } else {
        message.split('\n').next().unwrap_or("")
    };
    let title = if full_title.chars().count() > 100 {
        let mut t: String = full_title.chars().take(80).collect();
        t.push('…');
        t
    } else {
        full_title.to_string()
    };
    let first_line_chars = message.split('\n').next().map_or(0, |l| l.chars().count());
    let has_break = message.contains('\n');
    let description =
        if (!has_break && message.chars().count() > 100) || (has_break && first_line_chars > 100) {
            let mut d = String::from("…");
            d.extend(message.chars().skip(80));
            d
        } else {
            let rest = message.split_once('\n').map_or("", |(_, d)| d);
            let chomped = rest
                .strip_suffix("\r\n")
                .or_else(|| rest.strip_suffix('\n'))
                .or_else(|| rest.strip_suffix('\r'))
                .unwrap_or(rest);
            chomped.to_string()
        };
    (title, description)
}

/// Variable lookup over the layers of one job, highest precedence first.
struct Lookup<'a> {
    layers: [&'a [Variable]; 3],
    shared_index: &'a HashMap<String, usize>,
}

impl Lookup<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        for (i, layer) in self.layers.iter().enumerate() {
            if i == 2 {
                return self
                    .shared_index
                    .get(name)
                    .and_then(|&ix| layer.get(ix))
                    .map(|v| v.value.as_str());
            }
            if let Some(v) = layer.iter().rev().find(|v| v.key == name) {
                return Some(&v.value);
            }
        }
        None
    }

    /// As `(name, value)` pairs, lowest precedence first (for text expansion).
    fn pairs(&self) -> Vec<(String, String)> {
        self.layers
            .iter()
            .rev()
            .flat_map(|l| l.iter())
            .map(|v| (v.key.clone(), v.value.clone()))
            .collect()
    }
}

impl crate::expr::Variables for Lookup<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        Lookup::get(self, name)
    }
}

/// Parsed `if:` expressions, each parsed once per evaluation.
#[derive(Default)]
struct ExprCache {
    parsed: RefCell<HashMap<String, Option<Arc<crate::expr::Expression>>>>,
    /// Errors found while evaluating rules (GitLab fails the pipeline's creation).
    errors: RefCell<Vec<String>>,
}

impl ExprCache {
    fn truthy(&self, src: &str, vars: &Lookup<'_>) -> bool {
        let e = {
            let mut m = self.parsed.borrow_mut();
            m.entry(src.to_string())
                .or_insert_with(|| crate::expr::Expression::parse(src).ok().map(Arc::new))
                .clone()
        };
        e.is_some_and(|e| e.is_truthy(vars))
    }
}

/// What a list of rules decides (GitLab's `Gitlab::Ci::Build::Rules::Result`).
struct RuleResult {
    index: Option<usize>,
    when: String,
    allow_failure: Option<bool>,
    start_in: Option<u64>,
    variables: Vec<Variable>,
    needs: Option<Node>,
}

fn rule_matches(rule: &Mapping, vars: &Lookup<'_>, cache: &ExprCache, ctx: &PipelineContext) -> bool {
    if let Some(cond) = rule.get("if").and_then(Node::as_str)
        && !cache.truthy(cond, vars)
    {
        return false;
    }
    if let Some(ch) = rule.get("changes") {
        let compare_to = match &ch.value {
            Value::Map(m) => m.get("compare_to").and_then(Node::scalar_to_string),
            _ => None,
        };
        let files: Option<&Vec<String>> = match compare_to {
            // A diff against a named ref exists whatever started the pipeline.
            Some(r) => {
                let r = crate::expand::expand_existing(&r, &vars.pairs());
                let short = r
                    .strip_prefix("refs/heads/")
                    .or_else(|| r.strip_prefix("refs/tags/"))
                    .unwrap_or(&r);
                match ctx
                    .compare_to_changes
                    .get(r.as_str())
                    .or_else(|| ctx.compare_to_changes.get(short))
                {
                    Some(f) => Some(f),
                    None => {
                        // GitLab raises here: the job's rules stop (see `decide`).
                        cache
                            .errors
                            .borrow_mut()
                            .push("rules:changes:compare_to is not a valid ref".to_string());
                        return false;
                    }
                }
            }
            // Without a push diff (web, schedule, first push of a branch), `changes` holds.
            None => ctx.changed_files.as_ref(),
        };
        if let Some(files) = files {
            let pats = match &ch.value {
                Value::Map(m) => strings(m.get("paths")),
                _ => strings(Some(ch)),
            };
            let pairs = vars.pairs();
            let pats: Vec<String> = pats
                .iter()
                .map(|p| crate::expand::expand_existing(p, &pairs))
                .collect();
            if !any_matches(&pats, files) {
                return false;
            }
        }
    }
    if let Some(ex) = rule.get("exists") {
        let pats = match &ex.value {
            Value::Map(m) => strings(m.get("paths")),
            _ => strings(Some(ex)),
        };
        let pairs = vars.pairs();
        let pats: Vec<String> = pats
            .iter()
            .map(|p| crate::expand::expand_existing(p, &pairs))
            .collect();
        if !any_matches(&pats, &ctx.existing_files) {
            return false;
        }
    }
    true
}

fn evaluate_rules(
    rules: &[Node],
    vars: &Lookup<'_>,
    cache: &ExprCache,
    ctx: &PipelineContext,
    default_when: &str,
) -> RuleResult {
    let errors_before = cache.errors.borrow().len();
    for (i, r) in rules.iter().enumerate() {
        let Some(m) = r.as_map() else { continue };
        let matched = rule_matches(m, vars, cache, ctx);
        if cache.errors.borrow().len() > errors_before {
            // A rule that cannot be evaluated ends the rules: no rule matches.
            break;
        }
        if matched {
            return RuleResult {
                index: Some(i),
                when: m
                    .get("when")
                    .and_then(Node::scalar_to_string)
                    .unwrap_or_else(|| default_when.to_string()),
                allow_failure: m.get("allow_failure").and_then(Node::as_bool),
                start_in: m
                    .get("start_in")
                    .and_then(Node::scalar_to_string)
                    .and_then(|s| crate::parse_duration(&s)),
                variables: yaml_variables(m.get("variables"), VariableLevel::Job),
                needs: m.get("needs").cloned(),
            };
        }
    }
    RuleResult {
        index: None,
        when: "never".into(),
        allow_failure: None,
        start_in: None,
        variables: Vec::new(),
        needs: None,
    }
}

/// One `only:`/`except:` policy: does it match this pipeline?
fn policy_matches(policy: &Node, vars: &Lookup<'_>, cache: &ExprCache, ctx: &PipelineContext) -> bool {
    let (refs, variables, changes) = match &policy.value {
        Value::Map(m) => (
            m.get("refs").map(|n| strings(Some(n))),
            m.get("variables").map(|n| strings(Some(n))),
            m.get("changes").map(|n| strings(Some(n))),
        ),
        _ => (Some(strings(Some(policy))), None, None),
    };
    if let Some(refs) = refs
        && !refs.iter().any(|r| ref_matches(r, ctx))
    {
        return false;
    }
    if let Some(exprs) = variables
        && !exprs.iter().any(|e| cache.truthy(e, vars))
    {
        return false;
    }
    if let (Some(pats), Some(files)) = (changes, &ctx.changed_files)
        && !any_matches(&pats, files)
    {
        return false;
    }
    true
}

/// `only:refs` entries: keywords, `/regex/`, or a ref name (`name@namespace` too).
fn ref_matches(r: &str, ctx: &PipelineContext) -> bool {
    let src = ctx.source.as_str();
    match r {
        "branches" => !ctx.tag && ctx.merge_request.is_none(),
        "tags" => ctx.tag,
        "api" => src == "api",
        "external" => src == "external",
        "pipelines" => src == "pipeline" || src == "parent_pipeline",
        "pushes" => src == "push",
        "schedules" => src == "schedule",
        "triggers" => src == "trigger",
        "web" => src == "web",
        "merge_requests" => src == "merge_request_event",
        "external_pull_requests" => src == "external_pull_request_event",
        "chat" => src == "chat",
        _ => {
            let r = match r.split_once('@') {
                Some((name, ns)) if ctx.project_path.starts_with(ns) => name,
                Some(_) => return false,
                None => r,
            };
            if r.starts_with('/') && r.len() > 1 {
                return crate::expr::ruby_syntax_regexp(r).is_ok_and(|re| re.is_match(&ctx.ref_name));
            }
            r == ctx.ref_name
        }
    }
}

/// Shared state of one evaluation.
struct Shared<'a> {
    ctx: &'a PipelineContext,
    global: Arc<Vec<Variable>>,
    global_index: Arc<HashMap<String, usize>>,
    user: Arc<Vec<Variable>>,
    cache: ExprCache,
}

fn index_of(vars: &[Variable]) -> HashMap<String, usize> {
    vars.iter().enumerate().map(|(i, v)| (v.key.clone(), i)).collect()
}

impl Pipeline {
    /// Decides, as GitLab would when creating the pipeline, which jobs run and with what.
    pub fn evaluate(&self, ctx: &PipelineContext) -> Evaluation {
        let mut eval = Evaluation {
            created: true,
            name: None,
            jobs: Vec::new(),
            decisions: Vec::new(),
            errors: Vec::new(),
            index: HashMap::new(),
            stage_dependencies: Vec::new(),
        };
        let root = self.config.as_map();
        let mut user: Vec<Variable> = ctx
            .variables
            .iter()
            .filter(|v| !v.protected || ctx.protected_ref)
            .cloned()
            .collect();
        user.sort_by_key(|v| v.level);
        let mut global = ctx.predefined();
        for v in yaml_variables(root.and_then(|r| r.get("variables")), VariableLevel::Global) {
            upsert(&mut global, v);
        }
        let cache = ExprCache::default();

        // workflow:rules
        if let Some(wf) = root.and_then(|r| r.get("workflow")).and_then(Node::as_map) {
            let gi = index_of(&global);
            let lookup = Lookup {
                layers: [&user, &[], &global],
                shared_index: &gi,
            };
            if let Some(rules) = wf.get("rules").and_then(Node::as_seq) {
                let r = evaluate_rules(rules, &lookup, &cache, ctx, "always");
                if r.index.is_none() || r.when == "never" {
                    eval.created = false;
                    // e.g. a `changes:compare_to` naming no ref: the reason no pipeline exists.
                    for message in cache.errors.borrow_mut().drain(..) {
                        eval.errors.push(Diagnostic::error(message, None));
                    }
                    return eval;
                }
                for v in r.variables {
                    upsert(
                        &mut global,
                        Variable {
                            level: VariableLevel::Global,
                            ..v
                        },
                    );
                }
            }
            if let Some(name) = wf.get("name").and_then(Node::scalar_to_string) {
                let gi = index_of(&global);
                let lookup = Lookup {
                    layers: [&user, &[], &global],
                    shared_index: &gi,
                };
                let name = crate::expand::expand_existing(&name, &lookup.pairs());
                upsert(
                    &mut global,
                    Variable::plain("CI_PIPELINE_NAME", &name, VariableLevel::Predefined),
                );
                eval.name = Some(name);
            }
        }

        let shared = Shared {
            ctx,
            global_index: Arc::new(index_of(&global)),
            global: Arc::new(global),
            user: Arc::new(user),
            cache,
        };
        let mut next_id = ctx.first_job_id;
        let mut pending: Vec<EvaluatedJob> = Vec::new();
        for job in &self.jobs {
            let decision = self.decide(job, &shared, &mut pending, &mut next_id);
            eval.decisions.push((job.name.clone(), decision));
        }

        // Needs on jobs that are not in the pipeline (Seed::Build#needs_errors).
        let present: std::collections::HashSet<String> = pending.iter().map(|j| j.name.clone()).collect();
        let mut errors = Vec::new();
        for j in &pending {
            for (need, _, optional) in j.needs.iter().flatten() {
                if !present.contains(need) && !optional {
                    errors.push(Diagnostic::error(
                        format!(
                            "'{}' job needs '{need}' job, but '{need}' does not exist in the pipeline. This might be because of the only, except, or rules keywords. To need a job that sometimes does not exist in the pipeline, use needs:optional.",
                            j.name
                        ),
                        self.job(&j.job).map(|x| x.span),
                    ));
                }
            }
        }
        for j in &mut pending {
            if let Some(n) = &mut j.needs {
                n.retain(|(name, _, _)| present.contains(name));
            }
        }
        for message in shared.cache.errors.borrow_mut().drain(..) {
            errors.push(Diagnostic::error(message, None));
        }
        pending.sort_by_key(|j| j.stage_index);
        eval.index = pending
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.clone(), i))
            .collect();
        eval.stage_dependencies = (0..=pending.last().map_or(0, |j| j.stage_index))
            .map(|_| std::sync::OnceLock::new())
            .collect();
        eval.jobs = pending;
        eval.errors = errors;
        eval
    }

    fn decide(&self, job: &Job, sh: &Shared<'_>, out: &mut Vec<EvaluatedJob>, next_id: &mut u64) -> Decision {
        let ctx = sh.ctx;
        let cfg = &job.config;
        // Global variables, unless `inherit:variables` says otherwise (predefined always).
        let inherit = cfg
            .get("inherit")
            .and_then(Node::as_map)
            .and_then(|m| m.get("variables"));
        let (shared_vars, shared_index): (Arc<Vec<Variable>>, Arc<HashMap<String, usize>>) =
            match inherit.map(|n| &n.value) {
                Some(Value::Bool(false)) | Some(Value::Seq(_)) => {
                    let keep = |v: &Variable| {
                        v.level == VariableLevel::Predefined
                            || inherit
                                .and_then(Node::as_seq)
                                .is_some_and(|list| list.iter().any(|i| i.as_str() == Some(v.key.as_str())))
                    };
                    let filtered: Vec<Variable> = sh.global.iter().filter(|v| keep(v)).cloned().collect();
                    let ix = index_of(&filtered);
                    (Arc::new(filtered), Arc::new(ix))
                }
                _ => (Arc::clone(&sh.global), Arc::clone(&sh.global_index)),
            };
        let mut own: Vec<Variable> = vec![
            Variable::plain("CI_JOB_NAME", &job.name, VariableLevel::Predefined),
            Variable::plain(
                "CI_JOB_NAME_SLUG",
                &ref_slug(&job.name),
                VariableLevel::Predefined,
            ),
            Variable::plain("CI_JOB_STAGE", &job.stage, VariableLevel::Predefined),
            Variable::plain(
                "CI_JOB_GROUP_NAME",
                &job_group_name(&job.name),
                VariableLevel::Predefined,
            ),
            Variable::plain("CI_NODE_TOTAL", "1", VariableLevel::Predefined),
        ];
        if let Some(image) = cfg.get("image").and_then(|i| match &i.value {
            Value::Map(m) => m.get("name").and_then(Node::scalar_to_string),
            _ => i.scalar_to_string(),
        }) {
            own.push(Variable::plain("CI_JOB_IMAGE", &image, VariableLevel::Predefined));
        }
        if ctx.source == "trigger" {
            own.push(Variable::plain(
                "CI_JOB_TRIGGERED",
                "true",
                VariableLevel::Predefined,
            ));
        }

        for v in yaml_variables(cfg.get("variables"), VariableLevel::Job) {
            upsert(&mut own, v);
        }
        if let Some(env) = cfg.get("environment") {
            let lookup = Lookup {
                layers: [&sh.user, &own, &shared_vars],
                shared_index: &shared_index,
            };
            let env_vars = environment_variables(env, &lookup.pairs());
            own.extend(env_vars);
        }

        let job_when = cfg.get("when").and_then(Node::scalar_to_string);
        let job_allow_failure = cfg.get("allow_failure");
        let (when, allow_failure, start_in, rule_needs, decision) = if let Some(rules) =
            cfg.get("rules").and_then(Node::as_seq)
        {
            let lookup = Lookup {
                layers: [&sh.user, &own, &shared_vars],
                shared_index: &shared_index,
            };
            let errors_before = sh.cache.errors.borrow().len();
            let r = evaluate_rules(
                rules,
                &lookup,
                &sh.cache,
                ctx,
                job_when.as_deref().unwrap_or("on_success"),
            );
            {
                // Seed::Build#errors: "Failed to parse rule for JOB: MESSAGE".
                let mut errors = sh.cache.errors.borrow_mut();
                for e in errors.iter_mut().skip(errors_before) {
                    *e = format!("Failed to parse rule for {}: {e}", job.name);
                }
            }
            match r.index {
                None => return Decision::NoRuleMatched,
                Some(i) if r.when == "never" => return Decision::Never { rule: i },
                Some(i) => {
                    for v in r.variables {
                        upsert(&mut own, v);
                    }
                    // A rule's `when: manual` without allow_failure means allow_failure false.
                    let af = r
                        .allow_failure
                        .unwrap_or_else(|| job_allow_failure.and_then(Node::as_bool).unwrap_or(false));
                    let start_in = r.start_in.or_else(|| {
                        cfg.get("start_in")
                            .and_then(Node::scalar_to_string)
                            .and_then(|s| crate::parse_duration(&s))
                    });
                    (r.when, af, start_in, r.needs, Decision::Created { rule: Some(i) })
                }
            }
        } else {
            let lookup = Lookup {
                layers: [&sh.user, &own, &shared_vars],
                shared_index: &shared_index,
            };
            let default_only = Node::synthetic(Value::Seq(vec![
                Node::synthetic(Value::Str("branches".into())),
                Node::synthetic(Value::Str("tags".into())),
            ]));
            let only_ok = policy_matches(cfg.get("only").unwrap_or(&default_only), &lookup, &sh.cache, ctx);
            let except_hit = cfg
                .get("except")
                .is_some_and(|e| policy_matches(e, &lookup, &sh.cache, ctx));
            if !only_ok || except_hit {
                return Decision::OnlyExcept;
            }
            let start_in = cfg
                .get("start_in")
                .and_then(Node::scalar_to_string)
                .and_then(|s| crate::parse_duration(&s));
            (
                job.when.clone(),
                job.allow_failure,
                start_in,
                None,
                Decision::Created { rule: None },
            )
        };
        let exit_codes: Vec<i64> = match job_allow_failure
            .and_then(Node::as_map)
            .and_then(|m| m.get("exit_codes"))
        {
            Some(n) => match &n.value {
                Value::Int(i) => vec![*i],
                Value::Seq(s) => s.iter().filter_map(Node::as_int).collect(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let needs_node = rule_needs.or_else(|| cfg.get("needs").cloned());
        let needs: Option<Vec<(String, bool, bool)>> = needs_node.map(|n| {
            crate::pipeline::parse_needs(&n)
                .into_iter()
                .filter(|n| !n.external)
                .flat_map(|n| {
                    let expanded = self
                        .job(&n.job)
                        .filter(|j| j.instances.len() > 1)
                        .map(|j| j.instances.clone())
                        .unwrap_or_else(|| vec![n.job.clone()]);
                    expanded.into_iter().map(move |e| (e, n.artifacts, n.optional))
                })
                .collect()
        });
        let stage_index = self.stages.iter().position(|s| *s == job.stage).unwrap_or(0);

        // parallel instances, with matrix variables.
        let parallel = cfg.get("parallel");
        let names = instance_names(&job.name, parallel);
        let matrix_vars = matrix_variables(parallel);
        let total = names.len();
        for (i, inst) in names.iter().enumerate() {
            let mut v = own.clone();
            if total > 1 {
                upsert(
                    &mut v,
                    Variable::plain("CI_JOB_NAME", inst, VariableLevel::Predefined),
                );
                upsert(
                    &mut v,
                    Variable::plain("CI_JOB_NAME_SLUG", &ref_slug(inst), VariableLevel::Predefined),
                );
                upsert(
                    &mut v,
                    Variable::plain("CI_NODE_INDEX", &(i + 1).to_string(), VariableLevel::Predefined),
                );
                upsert(
                    &mut v,
                    Variable::plain("CI_NODE_TOTAL", &total.to_string(), VariableLevel::Predefined),
                );
            }
            if let Some(mv) = matrix_vars.get(i) {
                for (k, val) in mv {
                    upsert(&mut v, Variable::plain(k, val, VariableLevel::Job));
                }
            }
            v.push(Variable::plain(
                "CI_JOB_ID",
                &next_id.to_string(),
                VariableLevel::Predefined,
            ));
            if when == "manual" {
                // A manual job's payload exists only once someone started it.
                v.push(Variable::plain(
                    "CI_JOB_MANUAL",
                    "true",
                    VariableLevel::Predefined,
                ));
            }
            out.push(EvaluatedJob {
                shared_name: Arc::from(inst.as_str()),
                name: inst.clone(),
                job: job.name.clone(),
                stage: job.stage.clone(),
                stage_index,
                when: when.clone(),
                start_in,
                allow_failure,
                allow_failure_exit_codes: exit_codes.clone(),
                needs: match (&needs, matrix_vars.get(i)) {
                    // `$[[ matrix.X ]]` in needs:parallel:matrix: this instance's values.
                    (Some(list), Some(mv))
                        if list
                            .iter()
                            .any(|(n, _, _)| crate::pipeline::has_matrix_expression(n)) =>
                    {
                        Some(
                            list.iter()
                                .map(|(n, a, o)| (crate::pipeline::interpolate_matrix(n, mv), *a, *o))
                                .collect(),
                        )
                    }
                    _ => needs.clone(),
                },
                shared: Arc::clone(&shared_vars),
                shared_index: Arc::clone(&shared_index),
                own: v,
                user: Arc::clone(&sh.user),
                id: *next_id,
            });
            *next_id += 1;
        }
        decision
    }
}

/// `Gitlab::Slug::Environment#generate` (`CI_ENVIRONMENT_SLUG`): lowercase letters,
/// digits and single dashes, starting with a letter, at most 24 bytes; when that changed
/// the name or is too long, the first 17 characters, a dash and the last 6 base-36 digits
/// of the name's SHA-256.
pub fn environment_slug(name: &str) -> String {
    use sha2::Digest;
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug = format!("env-{slug}");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        // The last 6 base-36 digits of the digest as a number: the digest mod 36^6.
        const MODULUS: u64 = 36u64.pow(6);
        let digest = sha2::Sha256::digest(name.as_bytes());
        let mut rest = digest
            .iter()
            .fold(0u64, |r, b| (r * 256 + u64::from(*b)) % MODULUS);
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            let v = (rest % 36) as u8;
            *d = if v < 10 { b'0' + v } else { b'a' + v - 10 };
            rest /= 36;
        }
        short.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
        short
    } else {
        squeezed.trim_end_matches('-').to_string()
    }
}

/// `CI_ENVIRONMENT_*` of a job with `environment:` (name and URL expanded as GitLab
/// does, unknown references kept).
fn environment_variables(env: &Node, vars: &[(String, String)]) -> Vec<Variable> {
    let p = |k: &str, v: &str| Variable::plain(k, v, VariableLevel::Predefined);
    let (name, url, action, tier) = match &env.value {
        Value::Map(m) => (
            m.get("name").and_then(Node::scalar_to_string),
            m.get("url").and_then(Node::scalar_to_string),
            m.get("action").and_then(Node::scalar_to_string),
            m.get("deployment_tier").and_then(Node::scalar_to_string),
        ),
        _ => (env.scalar_to_string(), None, None, None),
    };
    let Some(name) = name.map(|n| crate::expand::expand_existing(&n, vars)) else {
        return Vec::new();
    };
    let tier = tier.unwrap_or_else(|| guess_tier(&name).to_string());
    let mut out = vec![
        p("CI_ENVIRONMENT_NAME", &name),
        p("CI_ENVIRONMENT_SLUG", &environment_slug(&name)),
        p("CI_ENVIRONMENT_ACTION", action.as_deref().unwrap_or("start")),
        p("CI_ENVIRONMENT_TIER", &tier),
    ];
    if let Some(url) = url {
        out.push(p(
            "CI_ENVIRONMENT_URL",
            &crate::expand::expand_existing(&url, vars),
        ));
    }
    out
}

/// GitLab's `Environment#guess_tier`: the deployment tier from the environment's name.
pub fn guess_tier(name: &str) -> &'static str {
    let n = name.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if has(&["dev", "review", "trunk"]) {
        "development"
    } else if has(&[
        "test", "tst", "int", "accept", "acpt", "qa", "qc", "control", "quality",
    ]) {
        "testing"
    } else if has(&["stag", "stg", "model", "modl", "pre", "demo", "non"]) {
        "staging"
    } else if has(&["prod", "prd", "live"]) {
        "production"
    } else {
        "other"
    }
}

/// The variables of each `parallel:matrix` combination, in instance order.
pub(crate) fn matrix_variables(parallel: Option<&Node>) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let Some(list) = parallel
        .and_then(Node::as_map)
        .and_then(|m| m.get("matrix"))
        .and_then(Node::as_seq)
    else {
        return out;
    };
    for entry in list {
        let Some(m) = entry.as_map() else { continue };
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, v) in m.iter() {
            let values: Vec<String> = strings(Some(v));
            let mut next = Vec::new();
            for c in &combos {
                for val in &values {
                    let mut c2 = c.clone();
                    c2.push((k.to_string(), val.clone()));
                    next.push(c2);
                }
            }
            combos = next;
        }
        out.extend(combos);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoadOptions, MemorySource, load};

    fn eval(y: &str, ctx: &PipelineContext) -> Evaluation {
        let p = load(".gitlab-ci.yml", y, &MemorySource::new(), &LoadOptions::default());
        assert!(p.is_valid(), "{:?}", p.diagnostics);
        p.evaluate(ctx)
    }

    fn names(e: &Evaluation) -> Vec<&str> {
        e.jobs.iter().map(|j| j.name.as_str()).collect()
    }

    fn branch(b: &str) -> PipelineContext {
        PipelineContext {
            ref_name: b.into(),
            ..PipelineContext::default()
        }
    }

    #[test]
    fn rules_first_match_wins() {
        let y = "a:\n  script: x\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n      when: manual\n    - when: always\nb:\n  script: x\n  rules:\n    - if: $CI_COMMIT_TAG\n";
        let e = eval(y, &branch("main"));
        assert_eq!(names(&e), vec!["a"]);
        let a = e.job("a").unwrap();
        assert_eq!(a.when, "manual");
        assert!(
            !a.allow_failure,
            "when: manual from a rule means allow_failure false"
        );
        assert_eq!(e.decisions[1].1, Decision::NoRuleMatched);
        let e = eval(y, &branch("dev"));
        assert_eq!(e.job("a").unwrap().when, "always");
    }

    #[test]
    fn manual_job_without_rules_allows_failure() {
        let e = eval("a: {script: x, when: manual}\n", &branch("main"));
        assert!(e.job("a").unwrap().allow_failure);
    }

    #[test]
    fn workflow_rules_and_variables() {
        let y = "workflow:\n  name: 'Pipeline for $CI_COMMIT_BRANCH ($MODE)'\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n      variables: {MODE: prod}\n    - if: $CI_COMMIT_BRANCH\n      variables: {MODE: dev}\nvariables: {MODE: none}\na:\n  script: x\n  rules:\n    - if: $MODE == \"prod\"\n";
        let e = eval(y, &branch("main"));
        assert!(e.created);
        assert_eq!(e.name.as_deref(), Some("Pipeline for main (prod)"));
        assert_eq!(names(&e), vec!["a"]);
        let e = eval(y, &branch("dev"));
        assert!(e.jobs.is_empty());
        let e = eval(
            y,
            &PipelineContext {
                tag: true,
                ref_name: "v1".into(),
                ..PipelineContext::default()
            },
        );
        assert!(!e.created);
    }

    #[test]
    fn changes_and_exists() {
        let y = "a:\n  script: x\n  rules:\n    - changes: ['src/**/*.rs']\nb:\n  script: x\n  rules:\n    - exists: [Dockerfile]\n";
        let mut ctx = branch("main");
        ctx.changed_files = Some(vec!["docs/readme.md".into()]);
        ctx.existing_files = vec!["Dockerfile".into()];
        assert_eq!(names(&eval(y, &ctx)), vec!["b"]);
        ctx.changed_files = Some(vec!["src/a/b.rs".into()]);
        assert_eq!(names(&eval(y, &ctx)), vec!["a", "b"]);
        ctx.changed_files = None; // no push diff: changes holds
        ctx.existing_files.clear();
        assert_eq!(names(&eval(y, &ctx)), vec!["a"]);
    }

    #[test]
    fn only_except_and_mr_default() {
        let y = "a: {script: x}\nb: {script: x, only: [tags]}\nc: {script: x, except: [main]}\nd: {script: x, only: ['/^rel-/']}\ne: {script: x, only: {refs: [branches], variables: ['$X == \"1\"']}}\nf: {script: x, rules: [{if: '$CI_PIPELINE_SOURCE == \"merge_request_event\"'}]}\n";
        let e = eval(y, &branch("main"));
        assert_eq!(names(&e), vec!["a"]);
        let e = eval(y, &branch("rel-1"));
        assert_eq!(names(&e), vec!["a", "c", "d"]);
        let mut ctx = branch("main");
        ctx.variables
            .push(Variable::plain("X", "1", VariableLevel::Project));
        assert_eq!(names(&eval(y, &ctx)), vec!["a", "e"]);
        let mr = PipelineContext {
            source: "merge_request_event".into(),
            ref_name: "feature".into(),
            merge_request: Some(("feature".into(), "main".into())),
            ..PipelineContext::default()
        };
        // Jobs without rules do not run in merge request pipelines.
        assert_eq!(names(&eval(y, &mr)), vec!["f"]);
    }

    #[test]
    fn needs_on_absent_job() {
        let y = "a: {script: x, rules: [{if: $NOPE}]}\nb: {script: x, needs: [a]}\nc: {script: x, needs: [{job: a, optional: true}]}\n";
        let e = eval(y, &branch("main"));
        assert_eq!(e.errors.len(), 1);
        assert_eq!(
            e.errors[0].message,
            "'b' job needs 'a' job, but 'a' does not exist in the pipeline. This might be because of the only, except, or rules keywords. To need a job that sometimes does not exist in the pipeline, use needs:optional."
        );
        assert_eq!(e.job("c").unwrap().needs.as_ref().unwrap().len(), 0);
    }

    #[test]
    fn variables_precedence_and_matrix() {
        let y = "variables: {G: global, J: global}\na:\n  script: x\n  variables: {J: job}\n  parallel:\n    matrix:\n      - P: [x, y]\n";
        let mut ctx = branch("main");
        ctx.variables
            .push(Variable::plain("G", "project", VariableLevel::Project));
        let e = eval(y, &ctx);
        assert_eq!(names(&e), vec!["a: [x]", "a: [y]"]);
        let get = |j: &EvaluatedJob, k: &str| j.variable(k).map(|v| v.value.clone());
        let j = &e.jobs[1];
        assert_eq!(get(j, "G").as_deref(), Some("project"));
        assert_eq!(get(j, "J").as_deref(), Some("job"));
        assert_eq!(get(j, "P").as_deref(), Some("y"));
        assert_eq!(get(j, "CI_JOB_NAME").as_deref(), Some("a: [y]"));
        assert_eq!(get(j, "CI_NODE_INDEX").as_deref(), Some("2"));
        assert_eq!(get(j, "CI_COMMIT_BRANCH").as_deref(), Some("main"));
        assert_eq!(get(j, "CI_COMMIT_REF_SLUG").as_deref(), Some("main"));
        assert_eq!(e.jobs[0].id + 1, e.jobs[1].id);
    }

    #[test]
    fn protected_variables_only_on_protected_refs() {
        let y = "a: {script: x, rules: [{if: $SECRET}]}\n";
        let mut ctx = branch("main");
        let mut s = Variable::plain("SECRET", "s3cr3t-value", VariableLevel::Project);
        s.protected = true;
        s.masked = true;
        s.public = false;
        ctx.variables.push(s);
        assert!(eval(y, &ctx).jobs.is_empty());
        ctx.protected_ref = true;
        assert_eq!(names(&eval(y, &ctx)), vec!["a"]);
    }

    #[test]
    fn slugs() {
        assert_eq!(ref_slug("Feature/Foo_Bar"), "feature-foo-bar");
        assert_eq!(ref_slug("-x-"), "x");
        assert_eq!(ref_slug(&"a".repeat(100)).len(), 63);
    }
}
