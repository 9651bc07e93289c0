//! `cache:key:files` / `files_commits` in payloads: GitLab computes the key on the server
//! (`Gitlab::Ci::Pipeline::Seed::Build::Cache`) from the repository, which podci-model
//! sees through `PipelineContext::file_blob_ids` and `last_commits`. Expected digests are
//! computed here with `sha1sum`-equivalent input strings, independently of the code under
//! test, from GitLab's rule: SHA-1 of the sorted distinct ids joined by `-`.

use podci_model::eval::PipelineContext;
use podci_model::{LoadOptions, MemorySource, load};
use std::process::Command;

/// SHA-1 hex of `text` by the system's `sha1sum` (coreutils), so the expectation does not
/// share code with podci-model.
fn sha1sum(text: &str) -> String {
    use std::io::Write;
    let mut child = match Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("sha1sum (coreutils) is needed for this test: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to sha1sum");
    }
    let out = child.wait_with_output().expect("sha1sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

const YAML: &str = "content:
  script: x
  cache:
    key:
      files: [Gemfile.lock, 'vendor/*.lock']
      prefix: gems
    paths: [vendor/ruby]
commits:
  script: x
  cache:
    - key:
        files_commits: [package.json, yarn.lock]
      paths: [node_modules]
    - key:
        files: [missing.txt]
      paths: [x]
plain:
  script: x
  cache:
    key: $CI_COMMIT_REF_SLUG
    paths: [x]
";

fn context(version: &str) -> PipelineContext {
    let mut ctx = PipelineContext {
        server_version: version.into(),
        ..PipelineContext::default()
    };
    for (path, blob) in [
        ("Gemfile.lock", "bbbb000000000000000000000000000000000002"),
        ("vendor/a.lock", "aaaa000000000000000000000000000000000001"),
        ("vendor/b.lock", "bbbb000000000000000000000000000000000002"),
        ("vendor/sub/c.lock", "cccc000000000000000000000000000000000003"),
        ("package.json", "dddd000000000000000000000000000000000004"),
    ] {
        ctx.file_blob_ids.insert(path.into(), blob.into());
    }
    for (path, commit) in [
        ("Gemfile.lock", "1111111111111111111111111111111111111111"),
        ("package.json", "3333333333333333333333333333333333333333"),
        ("yarn.lock", "2222222222222222222222222222222222222222"),
    ] {
        ctx.last_commits.insert(path.into(), commit.into());
    }
    ctx
}

fn keys(ctx: &PipelineContext, job: &str) -> Vec<String> {
    let p = load(
        ".gitlab-ci.yml",
        YAML,
        &MemorySource::new(),
        &LoadOptions::default(),
    );
    assert!(
        p.is_valid(),
        "{:?}",
        p.errors().map(|d| d.message.clone()).collect::<Vec<_>>()
    );
    let e = p.evaluate(ctx);
    let pl = p.payload(&e, job, ctx, "t").expect("job exists");
    pl.cache.iter().map(|c| c.key.clone()).collect()
}

#[test]
fn files_key_hashes_blob_ids_on_current_gitlab() {
    let ctx = context("18.6.0");
    // Gemfile.lock and vendor/*.lock (not vendor/sub: `*` stops at `/`); the two equal
    // blob ids count once.
    let digest = sha1sum("aaaa000000000000000000000000000000000001-bbbb000000000000000000000000000000000002");
    assert_eq!(
        keys(&ctx, "content"),
        vec![format!("gems-{digest}-non_protected")]
    );
}

#[test]
fn files_key_hashes_last_commits_before_18_4() {
    let ctx = context("17.11.2-ee");
    // Only the literal path has a last commit; the pattern names no file.
    let digest = sha1sum("1111111111111111111111111111111111111111");
    assert_eq!(
        keys(&ctx, "content"),
        vec![format!("gems-{digest}-non_protected")]
    );
}

#[test]
fn files_commits_and_unknown_files() {
    let mut ctx = context("18.6.0");
    ctx.protected_ref = true;
    let digest = sha1sum("2222222222222222222222222222222222222222-3333333333333333333333333333333333333333");
    assert_eq!(
        keys(&ctx, "commits"),
        vec![format!("{digest}-protected"), "default-protected".to_string()]
    );
    // A string key is sent as written (the runner expands it).
    assert_eq!(keys(&ctx, "plain"), vec!["$CI_COMMIT_REF_SLUG-protected"]);
}

#[test]
fn a_changed_file_changes_the_key() {
    let mut ctx = context("18.6.0");
    let before = keys(&ctx, "content");
    ctx.file_blob_ids.insert(
        "vendor/a.lock".into(),
        "eeee000000000000000000000000000000000005".into(),
    );
    assert_ne!(keys(&ctx, "content"), before);
    // A new commit that leaves the content as it was keeps the key (the reason for 18.4's change).
    let mut ctx2 = context("18.6.0");
    ctx2.last_commits.insert(
        "Gemfile.lock".into(),
        "9999999999999999999999999999999999999999".into(),
    );
    assert_eq!(keys(&ctx2, "content"), before);
}
