//! What the user sees of a local pipeline: plain `[job] line` output when stdout is not
//! a terminal, a live view (indicatif: one line per running job with its elapsed time
//! and last output line) on a terminal, the full masked trace of every job in
//! `.podci/logs/<pipeline>/<job>.log`, and the summary table at the end. A library
//! caller ([`super::run_pipeline`]) gets the same lines through a [`RunObserver`] instead
//! of the terminal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::executor::TraceSink;

/// Receives what a pipeline run would print, when podci runs as a library: the caller
/// decides where lines go (a Python callback, a GUI), podci never writes to stdout then.
///
/// Methods are called from the runtime's worker threads, one call per whole line, as the
/// line is produced; a slow observer slows the job that printed the line.
pub trait RunObserver: Send + Sync {
    /// One line of a job's trace, cleaned for a person ([`clean_line`]).
    fn job_line(&self, job: &str, line: &str);
    /// A line about the pipeline rather than a job's output (started, finished, retried,
    /// the summary).
    fn note(&self, _line: &str) {}
}

/// The shared display of a pipeline run.
pub struct Display {
    live: Option<MultiProgress>,
    out: Mutex<std::io::Stdout>,
    observer: Option<Arc<dyn RunObserver>>,
}

impl Display {
    /// A live view when `live`, else plain lines.
    pub fn new(live: bool) -> Arc<Display> {
        let live = live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Arc::new(Display {
            live,
            out: Mutex::new(std::io::stdout()),
            observer: None,
        })
    }

    /// Whether this is the terminal's live view (else one plain line per event).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Every line goes to `observer`; nothing is printed.
    pub fn observed(observer: Arc<dyn RunObserver>) -> Arc<Display> {
        Arc::new(Display {
            live: None,
            out: Mutex::new(std::io::stdout()),
            observer: Some(observer),
        })
    }

    /// A line that is not a job's (start, finish, summary).
    pub fn note(&self, line: &str) {
        if let Some(o) = &self.observer {
            o.note(line);
            return;
        }
        match &self.live {
            // Bars are cleared while the line is printed, then drawn again below it.
            Some(mp) => mp.suspend(|| {
                if let Ok(mut o) = self.out.lock() {
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                }
            }),
            None => {
                if let Ok(mut o) = self.out.lock() {
                    let _ = writeln!(o, "{line}");
                }
            }
        }
    }

    /// A sink for one job's trace: the log file and this display.
    pub fn job_sink(self: &Arc<Self>, job: &str, log: &Path, attempt: u32) -> std::io::Result<JobSink> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        if attempt > 1 {
            writeln!(file, "\n=== attempt {attempt} ===")?;
        }
        let bar = self.live.as_ref().map(|mp| {
            let pb = mp.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(job.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Ok(JobSink {
            display: Arc::clone(self),
            job: job.to_string(),
            file,
            partial: Vec::new(),
            bar,
            path: log.to_path_buf(),
        })
    }
}

/// One job's trace sink: every byte to the log file, whole lines to the display.
pub struct JobSink {
    display: Arc<Display>,
    job: String,
    file: std::fs::File,
    partial: Vec<u8>,
    bar: Option<ProgressBar>,
    path: PathBuf,
}

impl JobSink {
    fn show(&mut self, raw: &[u8]) {
        let Some(line) = clean_line(raw) else { return };
        if let Some(o) = &self.display.observer {
            o.job_line(&self.job, &line);
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => {
                if let Ok(mut o) = self.display.out.lock() {
                    let _ = writeln!(o, "[{}] {}", self.job, line);
                }
            }
        }
    }

    /// Flushes a last partial line and removes the live line.
    pub fn finish(mut self) -> PathBuf {
        if !self.partial.is_empty() {
            let p = std::mem::take(&mut self.partial);
            self.show(&p);
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = self.file.flush();
        self.path.clone()
    }
}

impl TraceSink for JobSink {
    fn write(&mut self, bytes: &[u8]) {
        let _ = self.file.write_all(bytes);
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..i]);
            self.show(&line);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }
}

/// A trace line as text for a person: ANSI sequences removed, a section start shown as
/// its header, a section end dropped, `\r` overwrites applied. `None`: nothing to show.
pub fn clean_line(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut s = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        s.push(c);
    }
    if s.starts_with("section_end:") {
        return None;
    }
    let shown = match s.rfind('\r') {
        Some(i) if i + 1 < s.len() => s[i + 1..].to_string(),
        Some(i) => s[..i].to_string(),
        None => s,
    };
    if shown.starts_with("section_start:") || shown.starts_with("section_end:") {
        return None;
    }
    Some(shown)
}

/// One row of the summary table.
pub struct Row {
    /// Job name.
    pub job: String,
    /// Stage.
    pub stage: String,
    /// Final status (GitLab's name), with `(allowed)` for an allowed failure.
    pub status: String,
    /// Wall time of the last attempt.
    pub duration: Option<Duration>,
    /// Attempts made.
    pub attempts: u32,
    /// Log file.
    pub log: Option<PathBuf>,
}

/// A job's log file as text for a person: each line through [`clean_line`].
pub fn read_clean_log(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After a final newline the split yields an empty piece that is no line.
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    let mut out = String::with_capacity(bytes.len());
    for raw in pieces {
        if let Some(line) = clean_line(raw) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The summary table.
pub fn summary(rows: &[Row]) -> String {
    let w_job = rows.iter().map(|r| r.job.len()).max().unwrap_or(3).max(3);
    let w_stage = rows.iter().map(|r| r.stage.len()).max().unwrap_or(5).max(5);
    let w_status = rows.iter().map(|r| r.status.len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:w_job$}  {:w_stage$}  {:w_status$}  {:>8}  {:>3}  LOG\n",
        "JOB", "STAGE", "STATUS", "DURATION", "TRY"
    );
    for r in rows {
        let d = r
            .duration
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let log = r
            .log
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:w_job$}  {:w_stage$}  {:w_status$}  {:>8}  {:>3}  {}\n",
            r.job, r.stage, r.status, d, r.attempts, log
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{clean_line, read_clean_log};

    #[test]
    fn clean_log_keeps_lines_and_drops_markers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.log");
        std::fs::write(
            &path,
            b"\x1b[0Ksection_start:1:step_script\r\x1b[0K\x1b[32;1mExecuting step\x1b[0;m\n\x1b[32;1m$ echo hi\x1b[0;m\nhi\n\nlast without newline",
        )
        .expect("write");
        assert_eq!(
            read_clean_log(&path).expect("read"),
            "Executing step\n$ echo hi\nhi\n\nlast without newline\n"
        );
        std::fs::write(&path, b"").expect("write");
        assert_eq!(read_clean_log(&path).expect("read"), "");
        assert!(read_clean_log(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn sections_and_colors() {
        assert_eq!(
            clean_line(b"\x1b[0Ksection_start:1:step_script\r\x1b[0K\x1b[32;1mExecuting step\x1b[0;m")
                .as_deref(),
            Some("Executing step")
        );
        assert_eq!(clean_line(b"\x1b[0Ksection_end:1:step_script\r\x1b[0K"), None);
        assert_eq!(
            clean_line(b"\x1b[32;1m$ echo hi\x1b[0;m").as_deref(),
            Some("$ echo hi")
        );
        assert_eq!(clean_line(b"plain").as_deref(), Some("plain"));
        assert_eq!(clean_line(b"50%\r100%").as_deref(), Some("100%"));
    }
}
