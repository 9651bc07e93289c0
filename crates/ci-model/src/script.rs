//! Job steps rendered into shell scripts.
//!
//! Owns the text an executor hands to a shell for one step of a job (`script`,
//! `after_script`, `release`): exported variables, file variables, `errexit`/`pipefail`,
//! GitLab-style command echo (`$ command` in bold green), collapsible section markers,
//! `CI_JOB_STATUS` for `after_script`, a per-step timeout, and an end-of-step marker
//! carrying the exit code that [`parse_step_end`] finds in the output stream. Each step
//! is its own script, so `after_script` runs in a fresh shell as in GitLab.
//!
//! The script is POSIX sh (bash-only syntax only in [`Shell::Bash`]'s `pipefail` line), so
//! one text runs under bash or dash or busybox sh; [`detect_shell_script`] picks the
//! shell the way GitLab Runner does. Feed the script on the shell's stdin (or as a file):
//! never as an argument, since it holds the job's variable values.
//!
//! How it runs: the step body (exports, `cd`, commands) is one single-quoted string that
//! a subshell `eval`s in the background with stdin from `/dev/null` (a syntax error in a
//! command is then a failed command, and no command can eat the rest of a script read
//! from stdin). The parent shell waits for it, runs the timeout watchdog, and prints the
//! section end and the end marker whatever happened.
//!
//! Timeouts are a shell-level watchdog, not `timeout(1)` (missing or different in
//! minimal images): a background `sleep N`, then `TERM` to the body and every process
//! below it (found through `/proc/*/stat`; without `/proc` only the body shell is
//! signalled), `KILL` 10 s later. A timed-out step ends with exit code
//! [`TIMEOUT_EXIT_CODE`] (124, as `timeout(1)`). A `TERM` to the script itself (a
//! cancel) is passed on the same way to the whole body.

use thiserror::Error;

use crate::payload::{JobPayload, Step};

/// Which shell the script is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Shell {
    /// bash: `set -eo pipefail`.
    Bash,
    /// POSIX sh (dash, busybox): `set -e`, `pipefail` only where the shell has it.
    Sh,
    /// Either, chosen at run time by [`detect_shell_script`]: the script is the POSIX one.
    #[default]
    Detect,
}

/// The job's state as `after_script` sees it in `CI_JOB_STATUS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// All script steps succeeded.
    Success,
    /// A script step failed.
    Failed,
    /// The job was canceled.
    Canceled,
}

impl JobStatus {
    /// The value GitLab puts in `CI_JOB_STATUS`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }
}

/// Everything a rendered script depends on besides the payload; no clock or randomness
/// is read here.
#[derive(Clone, Debug, Default)]
pub struct ScriptOptions {
    /// Target shell.
    pub shell: Shell,
    /// Per-job random string (8 to 128 of `[A-Za-z0-9_-]`) in the end marker, so user
    /// output cannot fake the marker; the executor keeps it and passes it to
    /// [`parse_step_end`].
    pub nonce: String,
    /// Unix time put in `section_start`; the `section_end` time is the shell's clock at
    /// the step's end (the script runs later than it is rendered).
    pub start_time: u64,
    /// Directory the commands run in (`CI_PROJECT_DIR`).
    pub build_dir: String,
    /// Directory for file variables; created if missing.
    pub tmp_dir: String,
    /// Exported as `CI_JOB_STATUS` when set (GitLab sets it for `after_script`).
    pub job_status: Option<JobStatus>,
}

/// Why a script could not be rendered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScriptError {
    /// The nonce would not be unguessable or not survive quoting.
    #[error(
        "script nonce must be 8 to 128 characters of A-Z, a-z, 0-9, '_' or '-'; generate a random one per job"
    )]
    InvalidNonce,
}

/// Exit code of a step stopped by its timeout.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// The start of every end-of-step marker line.
pub const STEP_END_PREFIX: &str = "podci-step-end:";

/// GitLab Runner's shell detection (`shells/bash.go`, `BashDetectShellScript`, non-login):
/// run with `sh -c` as the container command, it execs the first bash, then the first sh,
/// which reads the step script from stdin.
pub fn detect_shell_script() -> &'static str {
    "if [ -x /usr/local/bin/bash ]; then\n\
     \texec /usr/local/bin/bash \n\
     elif [ -x /usr/bin/bash ]; then\n\
     \texec /usr/bin/bash \n\
     elif [ -x /bin/bash ]; then\n\
     \texec /bin/bash \n\
     elif [ -x /usr/local/bin/sh ]; then\n\
     \texec /usr/local/bin/sh \n\
     elif [ -x /usr/bin/sh ]; then\n\
     \texec /usr/bin/sh \n\
     elif [ -x /bin/sh ]; then\n\
     \texec /bin/sh \n\
     elif [ -x /busybox/sh ]; then\n\
     \texec /busybox/sh \n\
     else\n\
     \techo shell not found\n\
     \texit 1\n\
     fi\n"
}

/// The marker line a step prints last (without the newline).
pub fn step_end_marker(nonce: &str, exit_code: i32) -> String {
    format!("{STEP_END_PREFIX}{nonce}:{exit_code}")
}

/// The exit code if `line` is this job's end-of-step marker. `line` is one line of
/// output, with or without its `\n`/`\r\n`; anything else on the line, a different
/// nonce or a malformed code gives `None`.
pub fn parse_step_end(line: &[u8], nonce: &str) -> Option<i32> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(STEP_END_PREFIX.as_bytes())?;
    let rest = rest.strip_prefix(nonce.as_bytes())?;
    let code = rest.strip_prefix(b":")?;
    if nonce.is_empty() || code.is_empty() || code.len() > 11 {
        return None;
    }
    let (neg, digits) = match code.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, code),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    let v: i64 = text.parse().ok()?;
    let v = if neg { -v } else { v };
    i32::try_from(v).ok()
}

/// Finds this job's end-of-step marker in a stream of output chunks and removes it (with
/// the newline the script prints before it) from the bytes passed on to the trace.
///
/// Bytes are held back only while they may still become the marker line: a newline, and
/// a line start that matches `podci-step-end:<nonce>:` so far.
///
/// ```
/// use podci_model::script::StepEndScanner;
/// let mut s = StepEndScanner::new("n0nce-1234");
/// let mut out = s.write(b"hi\n\npodci-step-end:n0n");
/// out.extend(s.write(b"ce-1234:3\n"));
/// out.extend(s.finish());
/// assert_eq!(out, b"hi\n");
/// assert_eq!(s.exit_code(), Some(3));
/// ```
#[derive(Debug, Clone)]
pub struct StepEndScanner {
    head: Vec<u8>,
    nonce: String,
    /// Held back: an optional newline, then the start of a line that may be the marker.
    pending: Vec<u8>,
    /// Whether `pending` starts with a held newline.
    held_newline: bool,
    /// At the start of a line (the next byte may begin a marker).
    at_line_start: bool,
    exit: Option<i32>,
}

impl StepEndScanner {
    /// A scanner for the marker carrying `nonce`.
    pub fn new(nonce: &str) -> Self {
        StepEndScanner {
            head: format!("{STEP_END_PREFIX}{nonce}:").into_bytes(),
            nonce: nonce.to_string(),
            pending: Vec::new(),
            held_newline: false,
            at_line_start: true,
            exit: None,
        }
    }

    /// The exit code of the last marker seen.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit
    }

    /// Whether the held-back line (without the held newline) could still be a marker.
    fn may_be_marker(&self, line: &[u8]) -> bool {
        let h = self.head.len();
        if line.len() <= h {
            return self.head.starts_with(line);
        }
        if !line.starts_with(&self.head) {
            return false;
        }
        let rest = &line[h..];
        let (body, cr) = match rest.strip_suffix(b"\r") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let digits = body.strip_prefix(b"-").unwrap_or(body);
        body.len() <= 11 && digits.iter().all(u8::is_ascii_digit) && !(cr && digits.is_empty())
    }

    /// Passes `chunk` on, minus the marker; returns the bytes for the trace.
    pub fn write(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.pending.len());
        for &b in chunk {
            if !self.at_line_start && self.pending.is_empty() {
                if b == b'\n' {
                    self.pending.push(b);
                    self.held_newline = true;
                    self.at_line_start = true;
                } else {
                    out.push(b);
                }
                continue;
            }
            // At a line start, possibly after a held newline.
            let line_start = usize::from(self.held_newline);
            if b == b'\n' {
                let line = &self.pending[line_start..];
                if let Some(code) = parse_step_end(line, &self.nonce) {
                    self.exit = Some(code);
                    self.pending.clear();
                    self.held_newline = false;
                } else {
                    out.append(&mut self.pending);
                    self.pending.push(b);
                    self.held_newline = true;
                }
                self.at_line_start = true;
                continue;
            }
            self.pending.push(b);
            if !self.may_be_marker(&self.pending[line_start..]) {
                out.append(&mut self.pending);
                self.held_newline = false;
                self.at_line_start = false;
            }
        }
        out
    }

    /// Flushes what was held back at the end of the output.
    pub fn finish(&mut self) -> Vec<u8> {
        let line_start = usize::from(self.held_newline);
        if parse_step_end(&self.pending[line_start..], &self.nonce).is_some() {
            self.exit = parse_step_end(&self.pending[line_start..], &self.nonce);
            self.pending.clear();
        }
        self.held_newline = false;
        self.at_line_start = true;
        std::mem::take(&mut self.pending)
    }
}

fn valid_nonce(n: &str) -> bool {
    (8..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A shell word that stands for `s` literally (single quotes; NUL bytes, which no shell
/// string can hold, are dropped).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn valid_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// GitLab's section name for a step.
fn section_name(step: &str) -> String {
    let clean: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == "after_script" {
        clean
    } else {
        format!("step_{clean}")
    }
}

/// `printf` that shows `text` in bold green, as GitLab Runner's `Noticef`.
fn notice(text: &str) -> String {
    format!("printf '\\033[32;1m%s\\033[0;m\\n' {}\n", quote(text))
}

/// Renders one step of `payload` as a complete script for `opts.shell`.
///
/// ```
/// use podci_model::payload::{JobPayload, Step};
/// use podci_model::script::{ScriptOptions, Shell, parse_step_end, render_step};
/// let step = Step { name: "script".into(), script: vec!["echo hi".into()], ..Default::default() };
/// let opts = ScriptOptions { shell: Shell::Sh, nonce: "n0nce-1234".into(), build_dir: "/tmp".into(),
///     tmp_dir: "/tmp/podci.tmp".into(), ..Default::default() };
/// let script = render_step(&JobPayload::default(), &step, &opts).unwrap();
/// assert!(script.contains("'$ echo hi'"));
/// assert_eq!(parse_step_end(b"podci-step-end:n0nce-1234:0\n", &opts.nonce), Some(0));
/// ```
pub fn render_step(payload: &JobPayload, step: &Step, opts: &ScriptOptions) -> Result<String, ScriptError> {
    if !valid_nonce(&opts.nonce) {
        return Err(ScriptError::InvalidNonce);
    }
    let body = render_body(payload, step, opts);
    let section = section_name(&step.name);
    let header = if step.name == "after_script" {
        "Running after_script".to_string()
    } else {
        format!("Executing \"{section}\" stage of the job script")
    };

    let mut s = String::new();
    match opts.shell {
        Shell::Bash => s.push_str("#!/usr/bin/env bash\n"),
        Shell::Sh => s.push_str("#!/bin/sh\n"),
        Shell::Detect => {}
    }
    s.push_str("# podci step script: the body runs in a background subshell, see podci_model::script\n");
    s.push_str(&format!("__podci_nonce={}\n", quote(&opts.nonce)));
    s.push_str(&format!("__podci_tmp={}\n", quote(&opts.tmp_dir)));
    s.push_str(&format!("__podci_body={}\n", quote(&body)));
    s.push_str(KILL_TREE_FN);
    s.push_str(&format!(
        "printf '\\033[0Ksection_start:%s:%s\\r\\033[0K\\033[32;1m%s\\033[0;m\\n' {} {} {}\n",
        opts.start_time,
        quote(&section),
        quote(&header)
    ));
    // The trap is set before the body starts, so a cancel at any moment reaches it.
    s.push_str("__podci_pid=; __podci_cancel=; __podci_timedout=\n");
    s.push_str("trap '__podci_cancel=1; if [ -n \"$__podci_pid\" ]; then __podci_kill_tree \"$__podci_pid\" TERM; fi' TERM\n");
    s.push_str("( eval \"$__podci_body\" ) </dev/null &\n");
    s.push_str("__podci_pid=$!\n");
    s.push_str("if [ -n \"$__podci_cancel\" ]; then __podci_kill_tree \"$__podci_pid\" TERM; fi\n");
    if step.timeout > 0 {
        // The watchdog tells this shell that it fired with a signal rather than a flag
        // file: no `mkdir`/`rm` processes per step. `$$` in a subshell is this shell.
        s.push_str("trap '__podci_timedout=1' USR1\n");
        s.push_str(&format!(
            "( sleep {t}; kill -s USR1 $$; __podci_kill_tree \"$__podci_pid\" TERM; sleep 10; __podci_kill_tree \"$__podci_pid\" KILL ) </dev/null >/dev/null 2>&1 &\n",
            t = step.timeout
        ));
        s.push_str("__podci_wd=$!\n");
    }
    s.push_str("wait \"$__podci_pid\"; __podci_rc=$?\n");
    // A trapped signal interrupts `wait`; wait again for the body's own status.
    s.push_str("while kill -0 \"$__podci_pid\" 2>/dev/null; do wait \"$__podci_pid\"; __podci_rc=$?; done\n");
    if step.timeout > 0 {
        s.push_str("__podci_kill_tree \"$__podci_wd\" TERM\n");
        s.push_str("wait \"$__podci_wd\" 2>/dev/null\n");
        s.push_str("if [ -n \"$__podci_timedout\" ]; then\n");
        s.push_str(&format!(
            "  printf '\\n\\033[31;1m%s\\033[0;m\\n' {}\n",
            quote(&format!(
                "ERROR: step \"{}\" timed out after {} seconds",
                step.name, step.timeout
            ))
        ));
        s.push_str(&format!("  __podci_rc={TIMEOUT_EXIT_CODE}\n"));
        s.push_str("fi\n");
    }
    s.push_str(&format!(
        "printf '\\033[0Ksection_end:%s:%s\\r\\033[0K\\n' \"${{EPOCHSECONDS:-$(date +%s 2>/dev/null || echo {})}}\" {}\n",
        opts.start_time,
        quote(&section)
    ));
    s.push_str(&format!(
        "printf '\\n%s%s:%s\\n' {} \"$__podci_nonce\" \"$__podci_rc\"\n",
        quote(STEP_END_PREFIX)
    ));
    s.push_str("exit \"$__podci_rc\"\n");
    Ok(s)
}

/// `__podci_kill_tree PID SIGNAL`: signals PID and all its descendants at once.
const KILL_TREE_FN: &str = r#"__podci_kill_tree() {
  __podci_all=$1; __podci_level=$1
  while [ -n "$__podci_level" ]; do
    __podci_next=
    for __podci_f in /proc/[0-9]*/stat; do
      { read -r __podci_l <"$__podci_f"; } 2>/dev/null || continue
      __podci_r=${__podci_l##*) }; __podci_r=${__podci_r#* }; __podci_pp=${__podci_r%% *}
      for __podci_p in $__podci_level; do
        if [ "$__podci_pp" = "$__podci_p" ]; then
          __podci_c=${__podci_f#/proc/}; __podci_next="$__podci_next ${__podci_c%/stat}"
        fi
      done
    done
    __podci_all="$__podci_all $__podci_next"; __podci_level=$__podci_next
  done
  kill -s "$2" $__podci_all 2>/dev/null
  return 0
}
"#;

/// The part the subshell evals: shell options, variables, `cd`, echoed commands.
fn render_body(payload: &JobPayload, step: &Step, opts: &ScriptOptions) -> String {
    let mut b = String::new();
    match opts.shell {
        Shell::Bash => b.push_str("set -eo pipefail\n"),
        Shell::Sh | Shell::Detect => {
            b.push_str("set -e\n");
            b.push_str("if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\n");
        }
    }
    b.push_str("set +o noclobber\n");
    // The body is a fork of the parent shell: hide the nonce so that commands cannot
    // print a well-formed end marker.
    b.push_str("unset __podci_nonce __podci_tmp __podci_body\n");

    // A file variable stands for its path, also inside other variables' values.
    let file_path = |key: &str| format!("{}/{}", opts.tmp_dir.trim_end_matches('/'), key);
    let pairs: Vec<(String, String)> = payload
        .variables
        .iter()
        .map(|v| {
            let value = if v.file {
                file_path(&v.key)
            } else {
                v.value.clone()
            };
            (v.key.clone(), value)
        })
        .collect();
    let mut made_tmp = false;
    for v in &payload.variables {
        if !valid_name(&v.key) {
            b.push_str(&format!(
                "printf '\\033[0;33m%s\\033[0;m\\n' {}\n",
                quote(&format!(
                    "WARNING: variable {:?} is not a valid shell name; not exported",
                    v.key
                ))
            ));
            continue;
        }
        if v.file {
            if !made_tmp {
                b.push_str(&format!("mkdir -p {}\n", quote(&opts.tmp_dir)));
                made_tmp = true;
            }
            let path = file_path(&v.key);
            // printf is a builtin in every supported shell: the value stays out of argv.
            b.push_str(&format!(
                "(umask 077 && printf '%s' {} >{})\n",
                quote(&v.value),
                quote(&path)
            ));
            b.push_str(&format!("export {}={}\n", v.key, quote(&path)));
        } else {
            // GitLab Runner (`Build.GetAllVariables` -> `Variables.Expand`) expands every
            // value but raw ones once, with `os.Expand`, against all job variables (file
            // variables stand for their path): unknown references become empty, `$$` is
            // `$`. The shell then gets the result single-quoted (`ShellEscape`).
            let value = if v.raw {
                v.value.clone()
            } else {
                crate::expand::expand_runner(&v.value, &pairs)
            };
            b.push_str(&format!("export {}={}\n", v.key, quote(&value)));
        }
    }
    if let Some(status) = opts.job_status {
        b.push_str(&format!("export CI_JOB_STATUS={}\n", status.as_str()));
    }
    b.push_str(&format!("cd {}\n", quote(&opts.build_dir)));
    for cmd in &step.script {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            b.push_str("echo\n");
            continue;
        }
        match cmd.split_once('\n') {
            Some((first, _)) => b.push_str(&notice(&format!("$ {first} # collapsed multi-line command"))),
            None => b.push_str(&notice(&format!("$ {cmd}"))),
        }
        b.push_str(cmd);
        b.push('\n');
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_quotes() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a\0b"), "'ab'");
    }

    #[test]
    fn marker_parser_is_strict() {
        let n = "abcdefgh12";
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh12:0", n), Some(0));
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh12:137\r\n", n), Some(137));
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh12:-1\n", n), Some(-1));
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh13:0", n), None);
        assert_eq!(parse_step_end(b"x podci-step-end:abcdefgh12:0", n), None);
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh12:0 ", n), None);
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh12:", n), None);
        assert_eq!(parse_step_end(b"podci-step-end:abcdefgh12:99999999999", n), None);
        assert_eq!(parse_step_end(b"podci-step-end::0", ""), None);
        assert_eq!(parse_step_end(step_end_marker(n, 42).as_bytes(), n), Some(42));
    }

    #[test]
    fn rejects_bad_nonce() {
        let opts = ScriptOptions {
            nonce: "a'b".into(),
            ..Default::default()
        };
        assert_eq!(
            render_step(&JobPayload::default(), &Step::default(), &opts),
            Err(ScriptError::InvalidNonce)
        );
    }

    #[test]
    fn section_names() {
        assert_eq!(section_name("script"), "step_script");
        assert_eq!(section_name("after_script"), "after_script");
        assert_eq!(section_name("re lease"), "step_re_lease");
    }
}
