use super::*;
use proptest::prelude::*;

const ARTICLE: &str = include_str!("article.toml");

fn err(text: &str) -> String {
    match Config::parse(text, "config.toml") {
        Ok(l) => panic!("expected an error, got {:?}", l.config),
        Err(e) => e.to_string(),
    }
}

#[test]
fn article_config_parses_without_warnings() {
    let l = Config::parse(ARTICLE, "config.toml").unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = &l.config;
    assert_eq!(c.concurrent, 10);
    assert_eq!(c.check_interval, 30);
    assert_eq!(c.listen_address.as_deref(), Some(":9252"));
    assert_eq!(c.shutdown_timeout, 0);
    assert_eq!(c.session_server.as_ref().map(|s| s.session_timeout), Some(1800));
    let r = &c.runners[0];
    assert_eq!(r.executor, ExecutorKind::Kubernetes);
    assert_eq!(r.url, "https://gitlab.example.com/");
    assert_eq!(r.id, 42);
    assert_eq!(r.request_concurrency, 1);
    assert_eq!(r.output_limit, 4096);
    let k = r.kubernetes.as_ref().unwrap();
    assert_eq!(k.get("namespace").and_then(|v| v.as_str()), Some("gitlab"));
    let pvc = k["volumes"]["pvc"].as_array().unwrap();
    assert_eq!(pvc[0]["mount_path"].as_str(), Some("/cache/.m2"));
    let cache = r.cache.as_ref().unwrap();
    assert_eq!(cache.kind, "");
    assert!(cache.s3.is_some());
}

#[test]
fn all_documented_keys() {
    let text = r#"
concurrent = 50
check_interval = 0
log_level = "debug"
log_format = "json"
listen_address = "127.0.0.1:9252"
shutdown_timeout = 5
[[runners]]
name = "a"
url = "http://127.0.0.1:8080"
token = "glrt-xyz"
executor = "shell"
limit = 7
request_concurrency = 0
output_limit = 16
environment = ["A=1", "B=x=y"]
builds_dir = "/b"
cache_dir = "/c"
shell = "bash"
pre_get_sources_script = "echo pre-get"
pre_build_script = "echo pre"
post_build_script = "echo post"
[runners.cache]
Type = "s3"
Path = "prefix"
Shared = true
[runners.cache.s3]
ServerAddress = "127.0.0.1:9000"
AccessKey = "AK"
SecretKey = "SK-very-secret"
BucketName = "runner"
BucketLocation = "us-east-1"
Insecure = true
"#;
    let l = Config::parse(text, "config.toml").unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!((c.concurrent, c.check_interval, c.shutdown_timeout), (50, 3, 5));
    assert_eq!(c.log_format.as_deref(), Some("json"));
    let r = &c.runners[0];
    assert_eq!((r.limit, r.request_concurrency, r.output_limit), (7, 1, 16));
    assert_eq!(r.environment, vec!["A=1", "B=x=y"]);
    assert_eq!(r.pre_build_script.as_deref(), Some("echo pre"));
    assert_eq!(r.post_build_script.as_deref(), Some("echo post"));
    assert_eq!(r.pre_get_sources_script.as_deref(), Some("echo pre-get"));
    let cache = r.cache.as_ref().unwrap();
    assert!(cache.shared);
    let s3 = cache.s3.as_ref().unwrap();
    assert!(s3.insecure);
    assert_eq!(s3.secret_key, "SK-very-secret");
    // Secrets stay out of Debug output (which reaches logs).
    let dbg = format!("{r:?} {s3:?}");
    assert!(
        !dbg.contains("SK-very-secret") && !dbg.contains("glrt-xyz"),
        "{dbg}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let text = "concurrent = 2\nconcurent = 3\n[[runners]]\nurl = \"https://g\"\ntoken = \"t\"\nexecutor = \"shell\"\nlimt = 1\n[runners.cache]\nTyp = \"s3\"\n[runners.cache.s3]\nBucket = \"x\"\n";
    let l = Config::parse(text, "config.toml").unwrap();
    assert_eq!(
        l.warnings,
        vec![
            "config.toml: unknown key `runners[0].cache.s3.Bucket` ignored",
            "config.toml: unknown key `runners[0].cache.Typ` ignored",
            "config.toml: unknown key `runners[0].limt` ignored",
            "config.toml: unknown key `concurent` ignored",
        ]
    );
}

#[test]
fn invalid_values_name_their_key_path() {
    let base = "[[runners]]\nurl = \"https://g\"\ntoken = \"t\"\nexecutor = \"shell\"\n";
    assert_eq!(
        err("concurrent = \"ten\""),
        "config.toml: `concurrent`: expected an integer, found string"
    );
    assert_eq!(
        err("concurrent = 0"),
        "config.toml: `concurrent`: must be at least 1"
    );
    assert_eq!(
        err("concurrent = -1"),
        "config.toml: `concurrent`: -1 is out of range: expected an integer from 0 to 100000"
    );
    assert_eq!(
        err(&format!("{base}limit = true")),
        "config.toml: `runners[0].limit`: expected an integer, found boolean"
    );
    assert_eq!(
        err(&format!("{base}[runners.cache.s3]\nInsecure = \"yes\"")),
        "config.toml: `runners[0].cache.s3.Insecure`: expected true or false, found string"
    );
    assert_eq!(
        err(&format!("{base}environment = [\"NOEQUALS\"]")),
        "config.toml: `runners[0].environment[0]`: `NOEQUALS` is not KEY=value"
    );
    assert_eq!(
        err("[[runners]]\nurl = \"https://g\"\ntoken = \"t\"\nexecutor = \"podman\""),
        "config.toml: `runners[0].executor`: `podman` is not supported: use shell or kubernetes"
    );
    assert_eq!(
        err("[[runners]]\nurl = \"gitlab.example.com\"\ntoken = \"t\"\nexecutor = \"shell\""),
        "config.toml: `runners[0].url`: `gitlab.example.com` is not an http:// or https:// URL"
    );
    assert_eq!(
        err("[[runners]]\nurl = \"https://g\"\nexecutor = \"shell\""),
        "config.toml: `runners[0].token`: missing: run `podci register` to obtain one"
    );
    assert_eq!(
        err(&format!("{base}[runners.cache]\nType = \"s3\"")),
        "config.toml: `runners[0].cache.s3.BucketName`: missing: Type = \"s3\" needs [runners.cache.s3] with BucketName"
    );
    assert_eq!(
        err(&format!("{base}kubernetes = 3")),
        "config.toml: `runners[0].kubernetes`: expected a table, found integer"
    );
    assert!(err("concurrent = = 1").starts_with("config.toml: not valid TOML: TOML parse error at line 1"));
}

#[test]
fn document_adds_and_removes_runners_keeping_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, ARTICLE).unwrap();
    let mut doc = Document::open(&path).unwrap();
    let mut t = Table::new();
    t.insert("name".into(), "second".into());
    t.insert("url".into(), "http://127.0.0.1:1".into());
    t.insert("token".into(), "glrt-second".into());
    t.insert("executor".into(), "shell".into());
    doc.add_runner(t);
    doc.save().unwrap();
    let c = Config::load(&path).unwrap().config;
    assert_eq!(c.runners.len(), 2);
    assert_eq!(c.runners[1].name, "second");
    // The kubernetes section survived the rewrite untouched.
    assert_eq!(
        c.runners[0].kubernetes,
        Config::parse(ARTICLE, "x").unwrap().config.runners[0].kubernetes
    );
    let mut doc = Document::open(&path).unwrap();
    let removed = doc.remove_runners(|t| t.get("token").and_then(|v| v.as_str()) == Some("glrt-second"));
    assert_eq!(removed, 1);
    doc.save().unwrap();
    let c = Config::load(&path).unwrap().config;
    assert_eq!(c.runners.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

proptest! {
    // Any text is an answer or an error, never a panic.
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = Config::parse(&text, "f");
    }

    // Values written for the integer keys come back as written, or name their key.
    #[test]
    fn integers_round_trip_or_name_the_key(concurrent in -5i64..200_000, limit in -5i64..200_000) {
        let text = format!("concurrent = {concurrent}\n[[runners]]\nurl = \"https://g\"\ntoken = \"t\"\nexecutor = \"shell\"\nlimit = {limit}\n");
        match Config::parse(&text, "f") {
            Ok(l) => {
                prop_assert_eq!(l.config.concurrent as i64, concurrent);
                prop_assert_eq!(l.config.runners[0].limit as i64, limit);
            }
            Err(ConfigError::Invalid { key, .. }) => {
                let bad_c = !(1..=100_000).contains(&concurrent);
                prop_assert_eq!(key, if bad_c { "concurrent" } else { "runners[0].limit" });
            }
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}
