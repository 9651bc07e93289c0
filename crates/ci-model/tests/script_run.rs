//! Runs rendered step scripts with the real /bin/bash and /bin/sh (dash on Debian) and
//! checks exit codes, output, variables, sections, markers and timeouts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use podci_model::mask::Masker;
use podci_model::payload::{JobPayload, JobVariable, Step};
use podci_model::script::{
    JobStatus, ScriptOptions, Shell, TIMEOUT_EXIT_CODE, detect_shell_script, parse_step_end, render_step,
};

const NONCE: &str = "Zq7nonce_x91";
const T0: u64 = 1_700_000_000;

struct Run {
    code: i32,
    out: String,
    marker: Option<i32>,
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("podci-script-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Dir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shells to test: (binary, how to render for it).
fn shells() -> Vec<(&'static str, Shell)> {
    let mut v = Vec::new();
    for (bin, shell) in [("/bin/bash", Shell::Bash), ("/bin/sh", Shell::Sh)] {
        if Path::new(bin).exists() {
            v.push((bin, shell));
        } else if std::env::var_os("CI").is_some() {
            panic!("{bin} is missing; install it (CI is set)");
        } else {
            eprintln!("!!! {bin} missing: skipping it");
        }
    }
    v
}

fn opts(shell: Shell, dir: &Dir) -> ScriptOptions {
    ScriptOptions {
        shell,
        nonce: NONCE.into(),
        start_time: T0,
        build_dir: dir.path().join("build").display().to_string(),
        tmp_dir: dir.path().join("build.tmp").display().to_string(),
        job_status: None,
    }
}

fn step(name: &str, cmds: &[&str]) -> Step {
    Step {
        name: name.into(),
        script: cmds.iter().map(|s| s.to_string()).collect(),
        when: "on_success".into(),
        ..Default::default()
    }
}

fn run_with(program: &str, args: &[&str], script: &str) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shell");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let o = child.wait_with_output().expect("wait");
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    let marker = o
        .stdout
        .split(|&b| b == b'\n')
        .rev()
        .find_map(|l| parse_step_end(l, NONCE));
    Run {
        code: o.status.code().unwrap_or(-1),
        out,
        marker,
    }
}

fn run(bin: &str, payload: &JobPayload, st: &Step, o: &ScriptOptions) -> Run {
    std::fs::create_dir_all(&o.build_dir).expect("build dir");
    let script = render_step(payload, st, o).expect("render");
    run_with(bin, &[], &script)
}

#[test]
fn echoes_commands_in_green_inside_a_section() {
    for (bin, shell) in shells() {
        let d = Dir::new("echo");
        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &["echo hi", "echo 'a b'"]),
            &opts(shell, &d),
        );
        assert_eq!(r.code, 0, "{bin}: {}", r.out);
        assert_eq!(r.marker, Some(0), "{bin}");
        assert!(
            r.out.contains("\x1b[32;1m$ echo hi\x1b[0;m\nhi\n"),
            "{bin}: {:?}",
            r.out
        );
        assert!(
            r.out.contains("\x1b[32;1m$ echo 'a b'\x1b[0;m\na b\n"),
            "{bin}: {:?}",
            r.out
        );
        let start = format!("\x1b[0Ksection_start:{T0}:step_script\r\x1b[0K");
        assert!(r.out.starts_with(&start), "{bin}: {:?}", r.out);
        let end_at = r.out.find("\x1b[0Ksection_end:").expect("section_end");
        assert!(
            r.out[end_at..].contains(":step_script\r\x1b[0K\n"),
            "{bin}: {:?}",
            r.out
        );
        assert!(
            end_at > r.out.find("a b\n").unwrap_or(usize::MAX),
            "{bin}: section ends after output"
        );
    }
}

#[test]
fn multi_line_command_is_collapsed_in_the_echo() {
    for (bin, shell) in shells() {
        let d = Dir::new("multi");
        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &["echo one\necho two"]),
            &opts(shell, &d),
        );
        assert_eq!(r.code, 0, "{bin}: {}", r.out);
        assert!(
            r.out
                .contains("$ echo one # collapsed multi-line command\x1b[0;m\none\ntwo\n"),
            "{bin}: {:?}",
            r.out
        );
    }
}

#[test]
fn failure_stops_at_the_failing_command() {
    for (bin, shell) in shells() {
        let d = Dir::new("fail");
        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &["echo one", "exit 3", "echo two"]),
            &opts(shell, &d),
        );
        assert_eq!(r.code, 3, "{bin}: {}", r.out);
        assert_eq!(r.marker, Some(3), "{bin}");
        assert!(r.out.contains("one\n"));
        assert!(!r.out.contains("$ echo two"), "{bin}: {:?}", r.out);
        assert!(r.out.contains("section_end:"), "{bin}: section closed on failure");

        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &["false", "echo two"]),
            &opts(shell, &d),
        );
        assert_eq!((r.code, r.marker), (1, Some(1)), "{bin}: {}", r.out);
        assert!(!r.out.contains("two"), "{bin}");
    }
}

#[test]
fn syntax_error_in_a_command_fails_the_step_not_the_script() {
    for (bin, shell) in shells() {
        let d = Dir::new("syntax");
        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &["echo (", "echo after"]),
            &opts(shell, &d),
        );
        assert_ne!(r.code, 0, "{bin}: {}", r.out);
        assert_eq!(r.marker, Some(r.code), "{bin}: marker printed: {}", r.out);
        assert!(!r.out.contains("\nafter\n"), "{bin}");
    }
}

#[test]
fn pipefail_where_the_shell_has_it() {
    for (bin, shell) in shells() {
        let d = Dir::new("pipefail");
        let has_pipefail = Command::new(bin)
            .args(["-c", "set -o pipefail"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &["false | true", "echo after"]),
            &opts(shell, &d),
        );
        if has_pipefail {
            assert_eq!((r.code, r.marker), (1, Some(1)), "{bin}: {}", r.out);
            assert!(!r.out.contains("\nafter\n"), "{bin}");
        } else {
            // dash 0.5.12 has no pipefail: the pipeline's status is its last command's.
            assert_eq!(r.code, 0, "{bin}: {}", r.out);
            assert!(r.out.contains("\nafter\n"), "{bin}");
        }
    }
    assert!(
        shells().iter().any(|(b, _)| *b == "/bin/bash"),
        "bash is needed to test pipefail"
    );
}

fn var(key: &str, value: &str) -> JobVariable {
    JobVariable {
        key: key.into(),
        value: value.into(),
        public: true,
        ..Default::default()
    }
}

#[test]
fn variables_exported_quoted_raw_and_expanded() {
    // No `$` here: quoting only (expansion has its own test below).
    let tricky = "it's \"q\" `id` \\ \n second line";
    let payload = JobPayload {
        variables: vec![
            var("BASE", "/opt/base"),
            var("TRICKY", tricky),
            JobVariable {
                raw: true,
                ..var("RAW", "$BASE/raw")
            },
            var("EXPANDED", "$BASE/x and ${BASE}/y $UNKNOWN"),
            var("bad-name", "v"),
        ],
        ..Default::default()
    };
    for (bin, shell) in shells() {
        let d = Dir::new("vars");
        let st = step(
            "script",
            &["printf '[%s]\\n' \"$TRICKY\" \"$RAW\" \"$EXPANDED\"", "pwd"],
        );
        let o = opts(shell, &d);
        let r = run(bin, &payload, &st, &o);
        assert_eq!(r.code, 0, "{bin}: {}", r.out);
        assert!(r.out.contains(&format!("[{tricky}]")), "{bin}: {:?}", r.out);
        assert!(r.out.contains("[$BASE/raw]"), "{bin}: {:?}", r.out);
        assert!(
            r.out.contains("[/opt/base/x and /opt/base/y ]"),
            "{bin}: {:?}",
            r.out
        );
        assert!(r.out.contains("not a valid shell name"), "{bin}: {:?}", r.out);
        assert!(
            r.out.contains(&format!("{}\n", o.build_dir)),
            "{bin}: runs in build_dir"
        );
    }
}

/// GitLab Runner expands each non-raw value once with Go's `os.Expand` against the job's
/// variables (`Variables.Expand` in common/spec/variables.go) and exports the result
/// single-quoted: unknown references (also ones the shell would know, like `$HOME`)
/// become empty, `$$` becomes `$`, `$1`/`$?` are empty, file variables stand for their
/// path, a reference to a variable whose own value refers further is not resolved again,
/// and nothing is left for the shell to expand.
#[test]
fn variable_values_are_expanded_as_gitlab_runner_does() {
    let payload = JobPayload {
        variables: vec![
            var("BASE", "/opt/base"),
            var("CHAIN", "$BASE/chain"),
            var("USES_CHAIN", "[$CHAIN]"),
            var("PASSWORD", "pa$$word$1x and $HOME and ${NOPE}!"),
            JobVariable {
                raw: true,
                ..var("RAW_PASSWORD", "pa$$word$HOME")
            },
            JobVariable {
                file: true,
                ..var("KUBECONFIG", "apiVersion: v1")
            },
            var("CONFIG_PATH", "cfg=$KUBECONFIG"),
            var("BASE", "/override"),
        ],
        ..Default::default()
    };
    for (bin, shell) in shells() {
        let d = Dir::new("expand");
        let st = step(
            "script",
            &["printf '<%s>\n' \"$CHAIN\" \"$USES_CHAIN\" \"$PASSWORD\" \"$RAW_PASSWORD\" \"$CONFIG_PATH\""],
        );
        let o = opts(shell, &d);
        let r = run(bin, &payload, &st, &o);
        assert_eq!(r.code, 0, "{bin}: {}", r.out);
        let want = [
            // The last definition of BASE wins.
            "</override/chain>".to_string(),
            // One pass: CHAIN's own value, not its expansion.
            "<[$BASE/chain]>".to_string(),
            "<pa$wordx and  and !>".to_string(),
            "<pa$$word$HOME>".to_string(),
            format!("<cfg={}/KUBECONFIG>", o.tmp_dir),
        ];
        for w in &want {
            assert!(r.out.contains(w.as_str()), "{bin}: want {w:?} in {:?}", r.out);
        }
    }
}

#[test]
fn secrets_are_not_echoed_and_masked_when_printed() {
    let secret = "Sup3rS3cret@value.1";
    let payload = JobPayload {
        token: "glcbt-64_jobtokenvalue".into(),
        variables: vec![
            JobVariable {
                public: false,
                masked: true,
                ..var("SECRET", secret)
            },
            var("CI_JOB_TOKEN", "glcbt-64_jobtokenvalue"),
        ],
        ..Default::default()
    };
    for (bin, shell) in shells() {
        let d = Dir::new("secret");
        let quiet = run(
            bin,
            &payload,
            &step("script", &["test -n \"$SECRET\"", "echo done"]),
            &opts(shell, &d),
        );
        assert_eq!(quiet.code, 0, "{bin}: {}", quiet.out);
        assert!(
            !quiet.out.contains(secret),
            "{bin}: secret echoed: {:?}",
            quiet.out
        );
        assert!(!quiet.out.contains("jobtokenvalue"), "{bin}");

        let loud = run(
            bin,
            &payload,
            &step("script", &["echo \"s=$SECRET t=$CI_JOB_TOKEN\""]),
            &opts(shell, &d),
        );
        assert!(loud.out.contains(secret), "{bin}: the command did print it");
        let mut m = Masker::for_job(&payload);
        let mut masked = Vec::new();
        for chunk in loud.out.as_bytes().chunks(5) {
            masked.extend(m.write(chunk));
        }
        masked.extend(m.finish());
        let masked = String::from_utf8_lossy(&masked);
        assert!(masked.contains("s=[MASKED] t=[MASKED]"), "{bin}: {masked:?}");
        assert!(!masked.contains(secret), "{bin}");
    }
}

#[test]
fn file_variables_are_files_under_tmp_dir() {
    let content = "-----BEGIN X-----\nline 'two' $NOT\n-----END X-----\n";
    let payload = JobPayload {
        variables: vec![
            JobVariable {
                file: true,
                public: false,
                ..var("MY_CERT", content)
            },
            var("CERT_ARG", "--cacert=$MY_CERT"),
        ],
        ..Default::default()
    };
    for (bin, shell) in shells() {
        let d = Dir::new("file");
        let o = opts(shell, &d);
        let r = run(
            bin,
            &payload,
            &step(
                "script",
                &[
                    "echo \"path=$MY_CERT\"",
                    "echo \"arg=$CERT_ARG\"",
                    "cp \"$MY_CERT\" copy.txt",
                    "ls -l \"$MY_CERT\"",
                ],
            ),
            &o,
        );
        assert_eq!(r.code, 0, "{bin}: {}", r.out);
        let path = format!("{}/MY_CERT", o.tmp_dir);
        assert!(r.out.contains(&format!("path={path}\n")), "{bin}: {:?}", r.out);
        assert!(
            r.out.contains(&format!("arg=--cacert={path}\n")),
            "{bin}: {:?}",
            r.out
        );
        assert!(
            r.out.contains("-rw-------"),
            "{bin}: file is private: {:?}",
            r.out
        );
        let copied = std::fs::read_to_string(Path::new(&o.build_dir).join("copy.txt")).expect("copy");
        assert_eq!(copied, content, "{bin}");
        assert!(!r.out.contains("BEGIN X"), "{bin}: content not echoed");
    }
}

#[test]
fn after_script_sees_job_status() {
    for (bin, shell) in shells() {
        for status in [JobStatus::Success, JobStatus::Failed, JobStatus::Canceled] {
            let d = Dir::new("after");
            let o = ScriptOptions {
                job_status: Some(status),
                ..opts(shell, &d)
            };
            let r = run(
                bin,
                &JobPayload::default(),
                &step("after_script", &["echo \"status=$CI_JOB_STATUS\""]),
                &o,
            );
            assert_eq!(r.code, 0, "{bin}: {}", r.out);
            assert!(
                r.out.contains(&format!("\nstatus={}\n", status.as_str())),
                "{bin}: {:?}",
                r.out
            );
            assert!(
                r.out.contains(&format!("section_start:{T0}:after_script\r")),
                "{bin}: {:?}",
                r.out
            );
            assert!(r.out.contains("Running after_script"), "{bin}");
        }
    }
}

#[test]
fn end_marker_cannot_be_faked_by_user_output() {
    for (bin, shell) in shells() {
        let d = Dir::new("marker");
        let cmds = [
            "echo podci-step-end:other_nonce1:0",
            &format!("printf 'podci-step-end:{NONCE}:0'"), // no newline: joins the next line
            "echo \"podci-step-end:${__podci_nonce}:0\"",
            "exit 7",
        ];
        let r = run(
            bin,
            &JobPayload::default(),
            &step("script", &cmds),
            &opts(shell, &d),
        );
        let found: Vec<i32> = r
            .out
            .lines()
            .filter_map(|l| parse_step_end(l.as_bytes(), NONCE))
            .collect();
        assert_eq!(found, vec![7], "{bin}: {:?}", r.out);
        assert_eq!(r.code, 7);
    }
}

#[test]
fn step_timeout_kills_the_whole_step() {
    for (bin, shell) in shells() {
        let d = Dir::new("timeout");
        let pidfile = d.path().join("child.pid");
        let mut st = step(
            "script",
            &[
                "echo started",
                &format!("sh -c 'echo $$ > {}; exec sleep 60'", pidfile.display()),
                "echo never",
            ],
        );
        st.timeout = 1;
        let began = std::time::Instant::now();
        let r = run(bin, &JobPayload::default(), &st, &opts(shell, &d));
        assert_eq!(r.code, TIMEOUT_EXIT_CODE, "{bin}: {}", r.out);
        assert_eq!(r.marker, Some(TIMEOUT_EXIT_CODE), "{bin}");
        assert!(r.out.contains("timed out after 1 seconds"), "{bin}: {:?}", r.out);
        assert!(!r.out.contains("\nnever\n"), "{bin}");
        // The sleep would have held the script for 60 s; it was killed instead.
        assert!(began.elapsed().as_secs() < 50, "{bin}: step not stopped");
        let pid = std::fs::read_to_string(&pidfile).expect("child pid");
        // Gone, or a zombie waiting for whoever reaps orphans here.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.chars().next())
            .unwrap_or(None);
        let alive = matches!(state, Some(c) if c != 'Z' && c != 'X');
        assert!(!alive, "{bin}: grandchild {pid} survived: {stat}");

        // A step that finishes in time is unaffected and leaves no watchdog behind.
        st.script = vec!["echo quick".into()];
        st.timeout = 30;
        let began = std::time::Instant::now();
        let r = run(bin, &JobPayload::default(), &st, &opts(shell, &d));
        assert_eq!((r.code, r.marker), (0, Some(0)), "{bin}: {}", r.out);
        assert!(began.elapsed().as_secs() < 25, "{bin}: waited for the watchdog");
    }
}

#[test]
fn detection_script_runs_the_step_under_the_found_shell() {
    let d = Dir::new("detect");
    let o = opts(Shell::Detect, &d);
    std::fs::create_dir_all(&o.build_dir).expect("build dir");
    let script = render_step(
        &JobPayload::default(),
        &step("script", &["echo \"shell=$(readlink /proc/$$/exe)\""]),
        &o,
    )
    .expect("render");
    let r = run_with("sh", &["-c", detect_shell_script()], &script);
    assert_eq!((r.code, r.marker), (0, Some(0)), "{}", r.out);
    // Debian has /usr/bin/bash, which the detection prefers over sh.
    assert!(r.out.contains("shell=/usr/bin/bash\n"), "{:?}", r.out);
    // The same text also runs under dash directly.
    let r = run_with("/bin/sh", &[], &script);
    assert_eq!((r.code, r.marker), (0, Some(0)), "{}", r.out);
}

#[test]
fn cancel_terminates_the_body() {
    for (bin, shell) in shells() {
        let d = Dir::new("cancel");
        let o = opts(shell, &d);
        std::fs::create_dir_all(&o.build_dir).expect("build dir");
        let script = render_step(
            &JobPayload::default(),
            &step("script", &["echo started", "sleep 60", "echo never"]),
            &o,
        )
        .expect("render");
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        // Cancel once the body is running (its first command has printed).
        let mut stdout = child.stdout.take().expect("stdout");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.windows(8).any(|w| w == b"started\n") {
            let n = std::io::Read::read(&mut stdout, &mut buf).expect("read");
            assert!(
                n > 0,
                "{bin}: script ended early: {:?}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        std::io::Read::read_to_end(&mut stdout, &mut out).expect("read rest");
        let status = child.wait().expect("wait");
        let out = String::from_utf8_lossy(&out);
        let marker = out
            .lines()
            .rev()
            .find_map(|l| parse_step_end(l.as_bytes(), NONCE));
        assert_eq!(marker, Some(143), "{bin}: {out:?}");
        assert_eq!(status.code(), Some(143), "{bin}");
        assert!(!out.contains("\nnever\n"), "{bin}");
    }
}
