//! `podci lint`: check a `.gitlab-ci.yml` as GitLab would, list its jobs, or show the
//! fully merged configuration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use podci_model::{Diagnostic, LoadOptions, Pipeline, Severity};

use crate::files::{DirSource, parse_mapping};

/// The pipeline podci runs when a directory has no `.gitlab-ci.yml`.
pub const EMBEDDED_HELLO: &str = include_str!("hello.gitlab-ci.yml");

/// Options of `podci lint`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The file to check (default: `.gitlab-ci.yml`; podci's embedded hello pipeline when
    /// there is none).
    pub file: Option<PathBuf>,
    /// One row per job: name, stage, when, allow_failure, needs.
    #[arg(long, conflicts_with = "preview")]
    pub list: bool,
    /// Print the fully merged configuration (includes inlined, extends merged,
    /// `!reference` replaced) as YAML.
    #[arg(long)]
    pub preview: bool,
    /// Machine-readable output (GitLab's lint API shape).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub includes: IncludeArgs,
}

/// How includes that need a GitLab server are resolved locally.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct IncludeArgs {
    /// Project root for `include:local` (default: the file's directory).
    #[arg(long, value_name = "DIR")]
    pub project_dir: Option<PathBuf>,
    /// Map `include:project` GROUP/PROJECT to a local checkout.
    #[arg(long = "project", value_name = "GROUP/PROJECT=DIR", value_parser = parse_mapping)]
    pub projects: Vec<(String, PathBuf)>,
    /// Map a CI/CD component project HOST/GROUP/PROJECT to a local checkout.
    #[arg(long = "component", value_name = "HOST/GROUP/PROJECT=DIR", value_parser = parse_mapping)]
    pub components: Vec<(String, PathBuf)>,
    /// A copy of GitLab's CI templates for `include:template`.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Use FILE for `include:remote` URL instead of fetching it.
    #[arg(long = "remote", value_name = "URL=FILE", value_parser = parse_mapping)]
    pub remotes: Vec<(String, PathBuf)>,
    /// Never fetch remote includes over the network.
    #[arg(long)]
    pub offline: bool,
}

/// Reads and validates the pipeline a command was pointed at.
pub fn load_pipeline(file: Option<&Path>, includes: &IncludeArgs) -> anyhow::Result<(String, Pipeline)> {
    let (name, text, dir) = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
            let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
            (f.display().to_string(), text, dir)
        }
        None => {
            let default = Path::new(".gitlab-ci.yml");
            if default.exists() {
                let text = std::fs::read_to_string(default).context("cannot read .gitlab-ci.yml")?;
                (".gitlab-ci.yml".to_string(), text, PathBuf::from("."))
            } else {
                eprintln!(
                    "podci: no .gitlab-ci.yml in this directory; using podci's embedded hello pipeline"
                );
                (
                    "<embedded hello>/.gitlab-ci.yml".to_string(),
                    EMBEDDED_HELLO.to_string(),
                    PathBuf::from("."),
                )
            }
        }
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let source = DirSource {
        root: includes.project_dir.clone().unwrap_or(dir),
        projects: includes.projects.iter().cloned().collect(),
        components: includes.components.iter().cloned().collect(),
        templates: includes.templates.clone(),
        remotes: includes.remotes.iter().cloned().collect(),
        offline: includes.offline,
    };
    let pipeline = podci_model::load(&name, &text, &source, &LoadOptions::default());
    Ok((name, pipeline))
}

/// Writes diagnostics as `FILE:LINE:COL: message` (warnings marked).
pub fn print_diagnostics(out: &mut dyn Write, pipeline: &Pipeline) -> std::io::Result<()> {
    for d in &pipeline.diagnostics {
        match d.severity {
            Severity::Error => writeln!(out, "{}", d.display(&pipeline.sources))?,
            Severity::Warning => {
                let w = Diagnostic {
                    message: format!("warning: {}", d.message),
                    ..d.clone()
                };
                writeln!(out, "{}", w.display(&pipeline.sources))?
            }
        }
    }
    Ok(())
}

fn diag_json(d: &Diagnostic, p: &Pipeline) -> serde_json::Value {
    let (file, line, col) = match d.span {
        Some(s) => (p.sources.name(s.file).to_string(), s.line, s.col),
        None => (p.sources.name(0).to_string(), 0, 0),
    };
    serde_json::json!({ "message": d.message, "file": file, "line": line, "column": col })
}

/// One created job (parallel jobs expanded), as `--list` and `--json` show it.
pub struct Row {
    /// Job name (instance name for parallel jobs).
    pub name: String,
    /// Stage.
    pub stage: String,
    /// `when`.
    pub when: String,
    /// `allow_failure`.
    pub allow_failure: bool,
    /// `needs`; `None` for stage ordering.
    pub needs: Option<Vec<String>>,
}

impl Row {
    fn needs_text(&self) -> String {
        match &self.needs {
            None => String::new(),
            Some(n) if n.is_empty() => "[]".to_string(),
            Some(n) => n.join(", "),
        }
    }
}

/// The rows in stage order, then configuration order.
pub fn job_rows(p: &Pipeline) -> Vec<Row> {
    let mut rows = Vec::new();
    for stage in &p.stages {
        for j in p.jobs.iter().filter(|j| &j.stage == stage) {
            let needs: Option<Vec<String>> = j
                .needs
                .as_ref()
                .map(|n| n.iter().map(|n| n.job.clone()).collect());
            for inst in &j.instances {
                rows.push(Row {
                    name: inst.clone(),
                    stage: j.stage.clone(),
                    when: j.when.clone(),
                    allow_failure: j.allow_failure,
                    needs: needs.clone(),
                });
            }
        }
    }
    rows
}

/// Runs `podci lint`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_name, p) = load_pipeline(args.file.as_deref(), &args.includes)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let valid = p.is_valid();
    if args.json {
        let jobs: Vec<serde_json::Value> = job_rows(&p)
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "stage": r.stage, "when": r.when,
                    "allow_failure": r.allow_failure, "needs": r.needs,
                })
            })
            .collect();
        let v = serde_json::json!({
            "valid": valid,
            "errors": p.errors().map(|d| diag_json(d, &p)).collect::<Vec<_>>(),
            "warnings": p.warnings().map(|d| diag_json(d, &p)).collect::<Vec<_>>(),
            "stages": p.stages,
            "jobs": if valid { jobs } else { Vec::new() },
            "includes": p.included,
            "merged_yaml": if valid && args.preview { Some(podci_model::emit::to_yaml(&p.config)) } else { None },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        out.flush()?;
        return Ok(if valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if !valid {
        drop(out);
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        print_diagnostics(&mut err, &p)?;
        return Ok(ExitCode::from(1));
    }
    if p.warnings().next().is_some() {
        print_diagnostics(&mut std::io::stderr().lock(), &p)?;
    }
    if args.preview {
        write!(out, "{}", podci_model::emit::to_yaml(&p.config))?;
    } else if args.list {
        let header = ["NAME", "STAGE", "WHEN", "ALLOW_FAILURE", "NEEDS"];
        let rows: Vec<[String; 5]> = job_rows(&p)
            .into_iter()
            .map(|r| {
                let needs = r.needs_text();
                [r.name, r.stage, r.when, r.allow_failure.to_string(), needs]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 4 {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            s.trim_end().to_string()
        };
        writeln!(out, "{}", line(header))?;
        for r in &rows {
            writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]))?;
        }
    } else {
        let jobs: usize = p.jobs.iter().map(|j| j.instances.len()).sum();
        writeln!(
            out,
            "{}: syntax is correct ({jobs} jobs in {} stages)",
            p.sources.name(0),
            p.stages.len()
        )?;
    }
    out.flush()?;
    // The process ends right after this; freeing a large pipeline node by node would
    // only cost time.
    std::mem::forget(p);
    Ok(ExitCode::SUCCESS)
}
