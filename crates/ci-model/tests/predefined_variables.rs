//! The predefined variables a job payload carries, each checked against the
//! `PipelineContext` it is derived from.
//!
//! The names GitLab sends a runner come from a payload captured from a real GitLab
//! (the `CI_*`/`GITLAB_*` list in collabora/gitlab-runner-rs's mock server) and from
//! GitLab's "Predefined CI/CD variables reference" (those with availability "Pipeline" or
//! "Pre-pipeline" that every branch pipeline has). Deprecated `CI_BUILD_*` aliases
//! (removed from GitLab) are not sent.

use podci_model::eval::{PipelineContext, PipelineUser, RunnerIdentity};
use podci_model::payload::JobPayload;
use podci_model::{LoadOptions, MemorySource, load};

/// Every name of a real GitLab payload for a branch push (CI_BUILD_* aliases dropped).
const GITLAB_SENDS: &[&str] = &[
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_URL",
    "CI_JOB_TOKEN",
    "CI_JOB_STARTED_AT",
    "CI_REGISTRY_USER",
    "CI_REGISTRY_PASSWORD",
    "CI_REPOSITORY_URL",
    "CI_DEPENDENCY_PROXY_USER",
    "CI_DEPENDENCY_PROXY_PASSWORD",
    "CI_JOB_NAME",
    "CI_JOB_STAGE",
    "CI_NODE_TOTAL",
    "GITLAB_CI",
    "CI_SERVER_URL",
    "CI_SERVER_HOST",
    "CI_SERVER_PORT",
    "CI_SERVER_PROTOCOL",
    "CI_SERVER_NAME",
    "CI_SERVER_VERSION",
    "CI_SERVER_VERSION_MAJOR",
    "CI_SERVER_VERSION_MINOR",
    "CI_SERVER_VERSION_PATCH",
    "CI_SERVER_REVISION",
    "GITLAB_FEATURES",
    "CI_PROJECT_ID",
    "CI_PROJECT_NAME",
    "CI_PROJECT_TITLE",
    "CI_PROJECT_PATH",
    "CI_PROJECT_PATH_SLUG",
    "CI_PROJECT_NAMESPACE",
    "CI_PROJECT_ROOT_NAMESPACE",
    "CI_PROJECT_URL",
    "CI_PROJECT_VISIBILITY",
    "CI_PROJECT_REPOSITORY_LANGUAGES",
    "CI_DEFAULT_BRANCH",
    "CI_PROJECT_CONFIG_PATH",
    "CI_CONFIG_PATH",
    "CI_PAGES_DOMAIN",
    "CI_PAGES_URL",
    "CI_REGISTRY",
    "CI_REGISTRY_IMAGE",
    "CI_DEPENDENCY_PROXY_SERVER",
    "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX",
    "CI_API_V4_URL",
    "CI_PIPELINE_IID",
    "CI_PIPELINE_SOURCE",
    "CI_PIPELINE_CREATED_AT",
    "CI_COMMIT_SHA",
    "CI_COMMIT_SHORT_SHA",
    "CI_COMMIT_BEFORE_SHA",
    "CI_COMMIT_REF_NAME",
    "CI_COMMIT_REF_SLUG",
    "CI_COMMIT_BRANCH",
    "CI_COMMIT_MESSAGE",
    "CI_COMMIT_TITLE",
    "CI_COMMIT_DESCRIPTION",
    "CI_COMMIT_REF_PROTECTED",
    "CI_COMMIT_TIMESTAMP",
    "CI_COMMIT_AUTHOR",
    "CI_RUNNER_ID",
    "CI_RUNNER_DESCRIPTION",
    "CI_RUNNER_TAGS",
    "GITLAB_USER_ID",
    "GITLAB_USER_EMAIL",
    "GITLAB_USER_LOGIN",
    "GITLAB_USER_NAME",
    // Newer than that capture, from GitLab's reference.
    "CI",
    "CI_SERVER",
    "CI_SERVER_FQDN",
    "CI_SERVER_SHELL_SSH_HOST",
    "CI_SERVER_SHELL_SSH_PORT",
    "CI_API_GRAPHQL_URL",
    "CI_JOB_NAME_SLUG",
    "CI_DEFAULT_BRANCH_SLUG",
    "CI_PROJECT_NAMESPACE_ID",
    "CI_PROJECT_NAMESPACE_SLUG",
    "CI_PROJECT_DESCRIPTION",
    "CI_PROJECT_TOPICS",
    "CI_PROJECT_CLASSIFICATION_LABEL",
    "CI_PAGES_HOSTNAME",
    "CI_TEMPLATE_REGISTRY_HOST",
];

fn context() -> PipelineContext {
    PipelineContext {
        source: "push".into(),
        ref_name: "Feature/Login_Page".into(),
        default_branch: "Main".into(),
        protected_ref: true,
        sha: "265c14cf140a66cfc61e40e4ab45c95ba8df5ed1".into(),
        before_sha: "fc40ad32cdd36b814f07a540605110edc209a38c".into(),
        commit_message: "Add login page\n\nWith a form.\n".into(),
        commit_author: "Test User <test@example.com>".into(),
        commit_timestamp: "2026-11-27T12:19:53+02:00".into(),
        project_id: 42,
        project_path: "Group/Sub/My-App".into(),
        server_url: "https://gitlab.example.com:8443".into(),
        pipeline_id: 120,
        pipeline_iid: 33,
        first_job_id: 265,
        server_version: "17.11.3-ee".into(),
        server_revision: "b321336e443".into(),
        pipeline_created_at: Some("2026-11-27T10:20:00Z".into()),
        job_started_at: Some("2026-11-27T10:21:00Z".into()),
        user: Some(PipelineUser {
            id: 7,
            login: "tuser".into(),
            name: "Test User".into(),
            email: "test@example.com".into(),
        }),
        runner: Some(RunnerIdentity {
            id: 8,
            description: "podci on k8s".into(),
            tags: vec!["k8s".into(), "linux".into()],
        }),
        project_visibility: "internal".into(),
        project_description: "An app".into(),
        project_topics: vec!["Rust".into(), "CI".into()],
        namespace_id: 9,
        ..PipelineContext::default()
    }
}

fn payload(yaml: &str, ctx: &PipelineContext, job: &str) -> JobPayload {
    let p = load(
        ".gitlab-ci.yml",
        yaml,
        &MemorySource::new(),
        &LoadOptions::default(),
    );
    assert!(p.is_valid(), "{:?}", p.diagnostics);
    let e = p.evaluate(ctx);
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    match p.payload(&e, job, ctx, "glcbt-64_secret-token") {
        Some(pl) => pl,
        None => panic!(
            "no payload for {job}; jobs: {:?}",
            e.jobs.iter().map(|j| &j.name).collect::<Vec<_>>()
        ),
    }
}

fn value<'a>(pl: &'a JobPayload, key: &str) -> Option<&'a str> {
    pl.variables
        .iter()
        .find(|v| v.key == key)
        .map(|v| v.value.as_str())
}

#[test]
fn podci_sends_what_gitlab_sends() {
    let ctx = context();
    let pl = payload("build:\n  script: make\n", &ctx, "build");
    let missing: Vec<&str> = GITLAB_SENDS
        .iter()
        .copied()
        .filter(|k| value(&pl, k).is_none())
        .collect();
    let set: Vec<&str> = pl.variables.iter().map(|v| v.key.as_str()).collect();
    eprintln!("podci sets {} variables: {}", set.len(), set.join(" "));
    assert!(missing.is_empty(), "not set: {missing:?}");
    assert!(set.len() >= 80, "{} variables", set.len());
    // Each name once.
    let mut unique = set.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), set.len(), "duplicate names in {set:?}");
}

#[test]
fn values_follow_the_context() {
    let ctx = context();
    let pl = payload("build:\n  script: make\n", &ctx, "build");
    let server = ctx.server_url.as_str();
    let project_url = format!("{server}/{}", ctx.project_path);
    let expect: Vec<(&str, String)> = vec![
        ("CI", "true".into()),
        ("GITLAB_CI", "true".into()),
        ("CI_SERVER_URL", server.into()),
        ("CI_SERVER_HOST", "gitlab.example.com".into()),
        ("CI_SERVER_PORT", "8443".into()),
        ("CI_SERVER_PROTOCOL", "https".into()),
        ("CI_SERVER_FQDN", "gitlab.example.com:8443".into()),
        ("CI_SERVER_VERSION", ctx.server_version.clone()),
        ("CI_SERVER_VERSION_MAJOR", "17".into()),
        ("CI_SERVER_VERSION_MINOR", "11".into()),
        ("CI_SERVER_VERSION_PATCH", "3".into()),
        ("CI_SERVER_REVISION", ctx.server_revision.clone()),
        ("CI_API_V4_URL", format!("{server}/api/v4")),
        ("CI_API_GRAPHQL_URL", format!("{server}/api/graphql")),
        ("CI_PROJECT_ID", ctx.project_id.to_string()),
        ("CI_PROJECT_NAME", "My-App".into()),
        ("CI_PROJECT_PATH", ctx.project_path.clone()),
        ("CI_PROJECT_PATH_SLUG", "group-sub-my-app".into()),
        ("CI_PROJECT_NAMESPACE", "Group/Sub".into()),
        ("CI_PROJECT_NAMESPACE_SLUG", "group-sub".into()),
        ("CI_PROJECT_NAMESPACE_ID", ctx.namespace_id.to_string()),
        ("CI_PROJECT_ROOT_NAMESPACE", "Group".into()),
        ("CI_PROJECT_URL", project_url.clone()),
        ("CI_PROJECT_VISIBILITY", ctx.project_visibility.clone()),
        ("CI_PROJECT_DESCRIPTION", ctx.project_description.clone()),
        ("CI_PROJECT_TOPICS", "rust,ci".into()),
        ("CI_DEFAULT_BRANCH", ctx.default_branch.clone()),
        ("CI_DEFAULT_BRANCH_SLUG", "main".into()),
        ("CI_PIPELINE_ID", ctx.pipeline_id.to_string()),
        ("CI_PIPELINE_IID", ctx.pipeline_iid.to_string()),
        ("CI_PIPELINE_SOURCE", ctx.source.clone()),
        (
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", ctx.pipeline_id),
        ),
        ("CI_PIPELINE_CREATED_AT", "2026-11-27T10:20:00Z".into()),
        ("CI_JOB_ID", ctx.first_job_id.to_string()),
        ("CI_JOB_URL", format!("{project_url}/-/jobs/{}", ctx.first_job_id)),
        ("CI_JOB_NAME", "build".into()),
        ("CI_JOB_STAGE", "test".into()),
        ("CI_JOB_STARTED_AT", "2026-11-27T10:21:00Z".into()),
        ("CI_NODE_TOTAL", "1".into()),
        ("CI_JOB_TOKEN", "glcbt-64_secret-token".into()),
        ("CI_REGISTRY_USER", "gitlab-ci-token".into()),
        ("CI_REGISTRY_PASSWORD", "glcbt-64_secret-token".into()),
        ("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token".into()),
        ("CI_DEPENDENCY_PROXY_PASSWORD", "glcbt-64_secret-token".into()),
        (
            "CI_REPOSITORY_URL",
            "https://gitlab-ci-token:glcbt-64_secret-token@gitlab.example.com:8443/Group/Sub/My-App.git"
                .into(),
        ),
        ("CI_REGISTRY", "registry.gitlab.example.com".into()),
        (
            "CI_REGISTRY_IMAGE",
            "registry.gitlab.example.com/group/sub/my-app".into(),
        ),
        ("CI_DEPENDENCY_PROXY_SERVER", "gitlab.example.com:8443".into()),
        ("CI_COMMIT_SHA", ctx.sha.clone()),
        ("CI_COMMIT_SHORT_SHA", ctx.sha[..8].to_string()),
        ("CI_COMMIT_BEFORE_SHA", ctx.before_sha.clone()),
        ("CI_COMMIT_REF_NAME", ctx.ref_name.clone()),
        ("CI_COMMIT_REF_SLUG", "feature-login-page".into()),
        ("CI_COMMIT_BRANCH", ctx.ref_name.clone()),
        ("CI_COMMIT_REF_PROTECTED", "true".into()),
        ("CI_COMMIT_MESSAGE", ctx.commit_message.clone()),
        ("CI_COMMIT_TITLE", "Add login page".into()),
        // Ruby: message.split("\n", 2)[1].chomp keeps the blank line.
        ("CI_COMMIT_DESCRIPTION", "\nWith a form.".into()),
        ("CI_COMMIT_AUTHOR", ctx.commit_author.clone()),
        ("CI_COMMIT_TIMESTAMP", ctx.commit_timestamp.clone()),
        ("CI_RUNNER_ID", "8".into()),
        ("CI_RUNNER_DESCRIPTION", "podci on k8s".into()),
        ("CI_RUNNER_TAGS", r#"["k8s","linux"]"#.into()),
        ("CI_JOB_GROUP_NAME", "build".into()),
        ("CI_COMMIT_MESSAGE_IS_TRUNCATED", "false".into()),
        (
            "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX",
            "gitlab.example.com:8443/Group/dependency_proxy/containers".into(),
        ),
        (
            "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX",
            "gitlab.example.com:8443/Group/Sub/dependency_proxy/containers".into(),
        ),
        ("GITLAB_USER_ID", "7".into()),
        ("GITLAB_USER_LOGIN", "tuser".into()),
        ("GITLAB_USER_NAME", "Test User".into()),
        ("GITLAB_USER_EMAIL", "test@example.com".into()),
        (
            "CI_PAGES_URL",
            "https://group.pages.gitlab.example.com/Sub/My-App".into(),
        ),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(k, v)| value(&pl, k) != Some(v.as_str()))
        .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", value(&pl, k)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Tag and branch variables are exclusive.
    assert_eq!(value(&pl, "CI_COMMIT_TAG"), None);
    // Secrets are not public; the masked ones are masked.
    for key in [
        "CI_JOB_TOKEN",
        "CI_REGISTRY_PASSWORD",
        "CI_DEPENDENCY_PROXY_PASSWORD",
        "CI_REPOSITORY_URL",
    ] {
        let v = pl
            .variables
            .iter()
            .find(|v| v.key == key)
            .map(|v| (v.public, v.masked));
        assert_eq!(v.map(|(public, _)| public), Some(false), "{key}");
    }
    assert!(pl.variables.iter().any(|v| v.key == "CI_JOB_TOKEN" && v.masked));
}

#[test]
fn job_level_variables() {
    let mut ctx = context();
    ctx.runner = None;
    ctx.user = None;
    ctx.job_started_at = None;
    let yaml = "workflow:\n  name: 'Deploy $CI_COMMIT_REF_SLUG'\n\
                deploy:\n  image: {name: 'alpine:3.20'}\n  variables: {REGION: eu}\n  \
                environment: {name: 'review/$REGION', url: 'https://$REGION.example.com'}\n  \
                script: x\n  rules:\n    - when: manual\n\
                matrix:\n  script: x\n  parallel:\n    matrix:\n      - P: [a, b]\n";
    let pl = payload(yaml, &ctx, "deploy");
    let get = |k: &str| value(&pl, k).map(str::to_string);
    assert_eq!(get("CI_JOB_IMAGE").as_deref(), Some("alpine:3.20"));
    assert_eq!(get("CI_JOB_MANUAL").as_deref(), Some("true"));
    assert_eq!(get("CI_ENVIRONMENT_NAME").as_deref(), Some("review/eu"));
    assert_eq!(
        get("CI_ENVIRONMENT_URL").as_deref(),
        Some("https://eu.example.com")
    );
    assert_eq!(get("CI_ENVIRONMENT_ACTION").as_deref(), Some("start"));
    assert_eq!(get("CI_ENVIRONMENT_TIER").as_deref(), Some("development"));
    assert_eq!(
        get("CI_PIPELINE_NAME").as_deref(),
        Some("Deploy feature-login-page")
    );
    // Without a user, GITLAB_USER_* come from the commit author; no runner, no CI_RUNNER_*.
    assert_eq!(get("GITLAB_USER_NAME").as_deref(), Some("Test User"));
    assert_eq!(get("GITLAB_USER_EMAIL").as_deref(), Some("test@example.com"));
    assert_eq!(get("GITLAB_USER_LOGIN").as_deref(), Some("test"));
    assert_eq!(get("CI_RUNNER_ID"), None);
    // The job starts (as far as podci-model knows) when the pipeline was created.
    assert_eq!(get("CI_JOB_STARTED_AT"), ctx.pipeline_created_at.clone());
    let m = payload(yaml, &ctx, "matrix: [b]");
    assert_eq!(value(&m, "CI_NODE_TOTAL"), Some("2"));
    assert_eq!(value(&m, "CI_NODE_INDEX"), Some("2"));
    assert_eq!(value(&m, "CI_JOB_MANUAL"), None);
    assert_eq!(value(&m, "CI_JOB_IMAGE"), None);
    assert_eq!(value(&m, "CI_JOB_GROUP_NAME"), Some("matrix"));
    // A tag pipeline: CI_COMMIT_TAG, no CI_COMMIT_BRANCH.
    let tag = PipelineContext {
        tag: true,
        ref_name: "v1.2.0".into(),
        ..context()
    };
    let t = payload("build:\n  script: make\n", &tag, "build");
    assert_eq!(value(&t, "CI_COMMIT_TAG"), Some("v1.2.0"));
    assert_eq!(value(&t, "CI_COMMIT_BRANCH"), None);
}

#[test]
fn deployment_tiers() {
    use podci_model::eval::guess_tier;
    for (name, tier) in [
        ("production", "production"),
        ("prd-eu", "production"),
        ("staging", "staging"),
        ("pre-prod", "staging"),
        ("qa", "testing"),
        ("review/feature", "development"),
        ("dev", "development"),
        ("sandbox", "other"),
    ] {
        assert_eq!(guess_tier(name), tier, "{name}");
    }
}

#[test]
fn merge_request_pipeline_variables() {
    use podci_model::eval::MergeRequestDetails;
    let ctx = PipelineContext {
        source: "merge_request_event".into(),
        ref_name: "feature".into(),
        merge_request: Some(("feature".into(), "main".into())),
        merge_request_details: Some(MergeRequestDetails {
            id: 5012,
            iid: 17,
            title: "Draft: login page".into(),
            labels: vec!["frontend".into(), "deploy-review".into()],
            draft: true,
            diff_base_sha: "abc0000000000000000000000000000000000000".into(),
            source_project: Some(("fork/My-App".into(), 77)),
            ..MergeRequestDetails::default()
        }),
        ..context()
    };
    let yaml = "review:\n  script: x\n  rules:\n    - if: $CI_MERGE_REQUEST_LABELS =~ /deploy-review/ && $CI_MERGE_REQUEST_IID == \"17\"\n";
    let pl = payload(yaml, &ctx, "review");
    let server = &ctx.server_url;
    let expect: Vec<(&str, String)> = vec![
        ("CI_MERGE_REQUEST_ID", "5012".into()),
        ("CI_MERGE_REQUEST_IID", "17".into()),
        ("CI_MERGE_REQUEST_TITLE", "Draft: login page".into()),
        ("CI_MERGE_REQUEST_DRAFT", "true".into()),
        ("CI_MERGE_REQUEST_LABELS", "frontend,deploy-review".into()),
        ("CI_MERGE_REQUEST_EVENT_TYPE", "detached".into()),
        ("CI_MERGE_REQUEST_REF_PATH", "refs/merge-requests/17/head".into()),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature".into()),
        ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main".into()),
        ("CI_MERGE_REQUEST_PROJECT_PATH", ctx.project_path.clone()),
        ("CI_MERGE_REQUEST_PROJECT_ID", ctx.project_id.to_string()),
        ("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", "fork/My-App".into()),
        ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "77".into()),
        (
            "CI_MERGE_REQUEST_SOURCE_PROJECT_URL",
            format!("{server}/fork/My-App"),
        ),
        (
            "CI_MERGE_REQUEST_DIFF_BASE_SHA",
            "abc0000000000000000000000000000000000000".into(),
        ),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", String::new()),
        ("CI_OPEN_MERGE_REQUESTS", format!("{}!17", ctx.project_path)),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(k, v)| value(&pl, k) != Some(v.as_str()))
        .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", value(&pl, k)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // No branch variable in a merge request pipeline.
    assert_eq!(value(&pl, "CI_COMMIT_BRANCH"), None);
    assert_eq!(value(&pl, "CI_MERGE_REQUEST_MILESTONE"), None);
}

/// GitLab expands references between a job's variables before it sends them
/// (`Ci::BuildRunnerPresenter#runner_variables`), keeping unknown, file and raw
/// references; the runner then expands once more.
#[test]
fn payload_variables_are_expanded_as_gitlab_sends_them() {
    let mut ctx = context();
    let mut file = podci_model::eval::Variable::plain(
        "KUBECONFIG",
        "apiVersion: v1",
        podci_model::eval::VariableLevel::Project,
    );
    file.file = true;
    ctx.variables.push(file);
    let yaml = "variables:\n  C: '${B}-c'\n  B: '$A-b'\n  A: a\n  IMAGE: '$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA'\n  \
                KEEP: '$UNKNOWN $$A %%A% $KUBECONFIG $R'\n  R: {value: '$A', expand: false}\n  \
                X: '$Y'\n  Y: '$X'\n\
                build:\n  script: make\n";
    // The cycle X <-> Y leaves every value as written: check it separately.
    let p = load(
        ".gitlab-ci.yml",
        &yaml.replace("  X: '$Y'\n  Y: '$X'\n", ""),
        &MemorySource::new(),
        &LoadOptions::default(),
    );
    let e = p.evaluate(&ctx);
    let pl = p.payload(&e, "build", &ctx, "t").expect("payload");
    assert_eq!(value(&pl, "C"), Some("a-b-c"));
    assert_eq!(value(&pl, "B"), Some("a-b"));
    assert_eq!(
        value(&pl, "IMAGE").map(str::to_string),
        Some(format!(
            "registry.gitlab.example.com/group/sub/my-app:{}",
            &ctx.sha[..8]
        ))
    );
    assert_eq!(value(&pl, "KEEP"), Some("$UNKNOWN $$A %%A% $KUBECONFIG $R"));
    assert_eq!(value(&pl, "R"), Some("$A"));
    // Dependencies come first: A before B before C.
    let pos = |k: &str| pl.variables.iter().position(|v| v.key == k);
    assert!(
        pos("A") < pos("B") && pos("B") < pos("C"),
        "{:?}",
        pl.variables.iter().map(|v| &v.key).collect::<Vec<_>>()
    );

    let p = load(
        ".gitlab-ci.yml",
        yaml,
        &MemorySource::new(),
        &LoadOptions::default(),
    );
    let e = p.evaluate(&ctx);
    let pl = p.payload(&e, "build", &ctx, "t").expect("payload");
    assert_eq!(value(&pl, "C"), Some("${B}-c"));
    assert_eq!(value(&pl, "X"), Some("$Y"));
}

#[test]
fn commit_title_and_description_as_gitlab_cuts_them() {
    use podci_model::eval::commit_title_and_description as td;
    assert_eq!(td("test rust runner\n"), ("test rust runner".into(), "".into()));
    assert_eq!(td(""), ("No commit message".into(), "".into()));
    assert_eq!(td("one line"), ("one line".into(), "".into()));
    let long = "é".repeat(120);
    let (t, d) = td(&format!("{long}\nbody"));
    assert_eq!(t, format!("{}…", "é".repeat(80)));
    assert_eq!(d, format!("…{}\nbody", "é".repeat(40)));
    let (t, d) = td(&"x".repeat(101));
    assert_eq!(t.chars().count(), 81);
    assert_eq!(d, format!("…{}", "x".repeat(21)));
    assert_eq!(td("t\r\nbody\r\n").1, "body");
}

#[test]
fn job_group_names() {
    use podci_model::eval::job_group_name;
    for (name, group) in [
        ("rspec:test: [ruby, ubuntu]", "rspec:test"),
        ("rspec 1/3", "rspec"),
        ("rspec 1 3", "rspec"),
        ("build", "build"),
        ("deploy: [eu]", "deploy"),
        ("test 2024", "test 2024"),
    ] {
        assert_eq!(job_group_name(name), group, "{name}");
    }
}

#[test]
fn long_commit_messages_are_cut_at_100_kb() {
    let ctx = PipelineContext {
        commit_message: "ü".repeat(60 * 1024),
        ..context()
    };
    let pl = payload("build:\n  script: make\n", &ctx, "build");
    let msg = value(&pl, "CI_COMMIT_MESSAGE").unwrap_or_default();
    assert!(
        msg.len() <= 100 * 1024 && msg.len() > 100 * 1024 - 4,
        "{}",
        msg.len()
    );
    assert_eq!(value(&pl, "CI_COMMIT_MESSAGE_IS_TRUNCATED"), Some("true"));
}

/// `Gitlab::Slug::Environment` reimplemented in Python (Ruby's algorithm, line by line)
/// as the reference for `environment_slug`.
#[test]
fn environment_slugs_match_gitlabs_algorithm() {
    const REFERENCE: &str = r#"
import hashlib, re, sys
def base36(n):
    s = ""
    while n:
        n, r = divmod(n, 36)
        s = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + s
    return s or "0"
for name in sys.argv[1:]:
    slug = re.sub(r"[^a-z0-9]", "-", name.lower())
    if not re.match(r"^[a-z]", slug):
        slug = "env-" + slug
    slug = re.sub(r"-+", "-", slug)
    if len(slug) > 24 or slug != name:
        slug = slug[0:17]
        if not slug.endswith("-"):
            slug += "-"
        slug += base36(int(hashlib.sha256(name.encode()).hexdigest(), 16))[-6:]
    elif slug.endswith("-"):
        slug = slug[:-1]
    print(slug)
"#;
    let names = [
        "production",
        "review/feature-login",
        "Staging",
        "1-env",
        "a--b",
        "a-very-long-environment-name-indeed",
        "review/$CI_COMMIT_REF_SLUG",
        "prod-",
    ];
    let out = match std::process::Command::new("python3")
        .arg("-c")
        .arg(REFERENCE)
        .args(names)
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("python3 reference failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("python3 is needed for this test: {e}"),
    };
    let want: Vec<&str> = out.lines().collect();
    let got: Vec<String> = names
        .iter()
        .map(|n| podci_model::eval::environment_slug(n))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got[0], "production", "an already valid name stays as it is");
    assert!(got.iter().all(|s| s.len() <= 24), "{got:?}");
}
