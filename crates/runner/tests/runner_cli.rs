//! `podci register`, `verify`, `unregister` and `list` against the fake GitLab server,
//! through the real binary, editing a real config.toml.

use std::path::Path;
use std::process::Command;

use podci_fake_gitlab::{FakeGitlab, Options};

fn podci(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podci"));
    c.args(args).arg("--config").arg(config);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_verify_list_unregister() {
    let fake = FakeGitlab::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let url = fake.url().to_string();
    let cfg = config.clone();
    let fake_tokens = || fake.runner_tokens();
    let run = move |args: Vec<&'static str>, env: Vec<(&'static str, String)>| {
        let cfg = cfg.clone();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut a: Vec<&str> = args.clone();
            if a[0] == "register" {
                a.extend(["--url", url.as_str()]);
            }
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            podci(&a, &cfg, &env)
        })
    };

    // Legacy registration token: exchanged for a runner token written to the file.
    let (ok, out, err) = run(
        vec![
            "register",
            "--non-interactive",
            "--name",
            "legacy",
            "--executor",
            "shell",
        ],
        vec![("REGISTRATION_TOKEN", "GR1348941-registration".into())],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("Runner registered successfully: legacy"), "{out}");
    let text = std::fs::read_to_string(&config).unwrap();
    let issued = fake_tokens()
        .into_iter()
        .find(|t| t.contains("registered"))
        .unwrap();
    assert!(text.contains(&issued), "{text}");
    assert!(!out.contains(&issued) && !err.contains(&issued), "token printed");

    // A glrt- token made in GitLab's UI is verified, not exchanged.
    let (ok, _, err) = run(
        vec!["register", "-n", "--name", "ui", "--executor", "kubernetes"],
        vec![("REGISTRATION_TOKEN", "glrt-t1_fake-runner-token".into())],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    // A wrong registration token is refused and nothing is written.
    let (ok, _, err) = run(
        vec!["register", "-n", "--name", "bad"],
        vec![("REGISTRATION_TOKEN", "wrong".into())],
    )
    .await
    .unwrap();
    assert!(!ok && err.contains("403 Forbidden"), "{err}");

    let (ok, out, _) = run(vec!["list"], vec![]).await.unwrap();
    assert!(ok);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with("legacy") && rows[0].contains("Executor=shell"),
        "{out}"
    );
    assert!(
        rows[1].starts_with("ui")
            && rows[1].contains("Executor=kubernetes")
            && rows[1].contains("Token=fake-run")
    );
    assert!(!out.contains("glrt-t1_fake-runner-token"));

    let (ok, out, _) = run(vec!["verify"], vec![]).await.unwrap();
    assert!(ok, "{out}");
    assert_eq!(out.matches("is valid").count(), 2, "{out}");

    // GitLab forgets the `ui` runner: verify fails, verify --delete drops it.
    let cfg_text = std::fs::read_to_string(&config).unwrap();
    let (ok, _, _) = run(vec!["unregister", "--name", "ui"], vec![]).await.unwrap();
    assert!(ok);
    assert!(!fake_tokens().contains(&"glrt-t1_fake-runner-token".to_string()));
    std::fs::write(&config, &cfg_text).unwrap();
    let (ok, out, _) = run(vec!["verify"], vec![]).await.unwrap();
    assert!(!ok && out.contains("is removed"), "{out}");
    let (ok, out, _) = run(vec!["verify", "--delete"], vec![]).await.unwrap();
    assert!(ok && out.contains("Removed 1 runner(s)"), "{out}");
    let (_, out, _) = run(vec!["list"], vec![]).await.unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");

    let (ok, _, _) = run(vec!["unregister", "--all-runners"], vec![]).await.unwrap();
    assert!(ok);
    assert!(fake_tokens().iter().all(|t| !t.contains("registered")));
    let (_, out, _) = run(vec!["list"], vec![]).await.unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn config_errors_name_the_key_and_warnings_name_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "concurrent = 2\nconcurent = 3\n[[runners]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nexecutor = \"shell\"\n",
    )
    .unwrap();
    let (ok, _, err) = podci(&["list"], &config, &[]);
    assert!(ok);
    assert!(err.contains("unknown key `concurent` ignored"), "{err}");
    std::fs::write(
        &config,
        "[[runners]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nexecutor = \"shell\"\nlimit = \"ten\"\n",
    )
    .unwrap();
    let (ok, _, err) = podci(&["run"], &config, &[]);
    assert!(!ok);
    assert!(
        err.contains("`runners[0].limit`: expected an integer, found string"),
        "{err}"
    );
}
