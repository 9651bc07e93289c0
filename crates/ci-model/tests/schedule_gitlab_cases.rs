//! GitLab's own pipeline-processing cases (`tests/gitlab_processing/*.yml`, see its
//! README) run against the scheduler: each case's config becomes `JobSpec`s, each event
//! is applied, and the pipeline, stage and job statuses after it must equal GitLab's.

use std::collections::BTreeMap;
use std::path::Path;

use podci_model::schedule::{
    AllowFailure, Event, FailureReason, JobResult, JobSpec, NeedRef, Scheduler, When,
};
use serde_json::Value as Json;

const DEFAULT_STAGES: [&str; 5] = [".pre", "build", "test", "deploy", ".post"];

struct Case {
    stages: Vec<String>,
    auto_cancel: bool,
    jobs: Vec<JobSpec>,
    doc: Json,
}

fn load(path: &Path) -> Case {
    let src = std::fs::read_to_string(path).expect("fixture is readable");
    let (_, node) = podci_model::yaml::load_config(&src, 0, Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = node.to_json();
    let config = doc["config"].as_object().expect("config is a mapping");
    let stages: Vec<String> = match config.get("stages") {
        Some(Json::Array(list)) => {
            let mut s = vec![".pre".to_string()];
            s.extend(list.iter().map(|v| v.as_str().expect("stage name").to_string()));
            s.push(".post".to_string());
            s
        }
        _ => DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
    };
    let mut jobs = Vec::new();
    for (name, job) in config {
        if matches!(name.as_str(), "stages" | "workflow" | "variables") {
            continue;
        }
        let job = job.as_object().cloned().unwrap_or_default();
        if let Some(rules) = job.get("rules") {
            // The only rules in GitLab's cases rule a job out on the default branch.
            let rule = rules[0]["if"].as_str().expect("rules:if");
            assert_eq!(rule, "$CI_COMMIT_REF_NAME == \"invalid\"", "unexpected rule");
            continue;
        }
        let stage_name = job.get("stage").and_then(Json::as_str).unwrap_or("test");
        let stage = stages
            .iter()
            .position(|s| s == stage_name)
            .unwrap_or_else(|| panic!("{}: unknown stage {stage_name}", path.display()));
        let mut spec = JobSpec::new(name.clone(), stage);
        spec.when = match job.get("when").and_then(Json::as_str).unwrap_or("on_success") {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "never" => When::Never,
            "delayed" => When::Delayed {
                start_in: podci_model::parse_duration(
                    job.get("start_in").and_then(Json::as_str).expect("start_in"),
                )
                .expect("duration"),
            },
            other => panic!("unknown when {other}"),
        };
        // GitLab's default: a manual job may fail unless it says otherwise.
        let allow = job
            .get("allow_failure")
            .and_then(Json::as_bool)
            .unwrap_or(spec.when == When::Manual);
        spec.allow_failure = if allow {
            AllowFailure::Yes
        } else {
            AllowFailure::No
        };
        if let Some(Json::Array(needs)) = job.get("needs") {
            spec.needs = Some(
                needs
                    .iter()
                    .map(|n| match n {
                        Json::String(s) => NeedRef::new(s.clone()),
                        Json::Object(o) => NeedRef {
                            name: o["job"].as_str().expect("needs:job").to_string(),
                            optional: o.get("optional").and_then(Json::as_bool).unwrap_or(false),
                        },
                        other => panic!("bad need {other}"),
                    })
                    .collect(),
            );
        }
        jobs.push(spec);
    }
    let auto_cancel = config
        .get("workflow")
        .and_then(|w| w["auto_cancel"]["on_job_failure"].as_str())
        == Some("all");
    Case {
        stages,
        auto_cancel,
        jobs,
        doc,
    }
}

fn actual(s: &Scheduler, stages: &[String]) -> (String, BTreeMap<String, String>, BTreeMap<String, String>) {
    let stage_map = stages
        .iter()
        .enumerate()
        .filter_map(|(i, name)| s.stage_status(i).map(|st| (name.clone(), st.to_string())))
        .collect();
    let job_map = s.jobs().map(|(n, st)| (n.to_string(), st.to_string())).collect();
    (s.status().to_string(), stage_map, job_map)
}

fn string_map(v: &Json) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares and returns a description of every difference.
fn check(s: &Scheduler, stages: &[String], expect: &Json, jobs_only: bool, at: &str) -> Vec<String> {
    let (pipeline, stage_map, job_map) = actual(s, stages);
    let mut errs = Vec::new();
    let want_jobs = string_map(&expect["jobs"]);
    if job_map != want_jobs {
        errs.push(format!("{at}: jobs {job_map:?}, GitLab {want_jobs:?}"));
    }
    if jobs_only {
        return errs;
    }
    let want_pipeline = expect["pipeline"].as_str().unwrap_or_default();
    if pipeline != want_pipeline {
        errs.push(format!("{at}: pipeline {pipeline}, GitLab {want_pipeline}"));
    }
    let want_stages = string_map(&expect["stages"]);
    if stage_map != want_stages {
        errs.push(format!("{at}: stages {stage_map:?}, GitLab {want_stages:?}"));
    }
    errs
}

fn run_case(path: &Path) -> Vec<String> {
    let case = load(path);
    let mut s = Scheduler::try_new(case.jobs)
        .expect("unique names")
        .auto_cancel_on_job_failure(case.auto_cancel);
    s.start();
    let mut errs = check(&s, &case.stages, &case.doc["init"]["expect"], false, "init");
    let transitions = case.doc["transitions"].as_array().cloned().unwrap_or_default();
    for (idx, t) in transitions.iter().enumerate() {
        let event = t["event"].as_str().expect("event");
        let jobs: Vec<String> = t["jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|j| j.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let events: Vec<Event> = if jobs.is_empty() {
            match event {
                "retry" => vec![Event::RetriedFailed],
                "cancel" => vec![Event::Canceled],
                other => panic!("{}: pipeline event {other}", path.display()),
            }
        } else {
            jobs.iter()
                .map(|job| {
                    let job = job.clone();
                    match event {
                        // `enqueue!` on a manual job is a bare state change in GitLab's
                        // spec; playing it is the nearest real event.
                        "play" | "enqueue" => Event::Played { job },
                        "run" => Event::Started { job },
                        "success" => Event::Finished {
                            job,
                            result: JobResult::Success,
                        },
                        "drop" => Event::Finished {
                            job,
                            result: JobResult::Failed {
                                reason: FailureReason::ScriptFailure,
                                exit_code: Some(1),
                            },
                        },
                        "cancel" => Event::Finished {
                            job,
                            result: JobResult::Canceled,
                        },
                        "retry" => Event::Retried { job },
                        other => panic!("{}: job event {other}", path.display()),
                    }
                })
                .collect()
        };
        for ev in events {
            if let Err(e) = s.on_event(ev) {
                errs.push(format!("transition:{idx}: {e}"));
            }
        }
        // GitLab does not reprocess the pipeline after a bare `enqueue!`, so only the
        // job statuses of that step are comparable.
        let jobs_only = event == "enqueue";
        errs.extend(check(
            &s,
            &case.stages,
            &t["expect"],
            jobs_only,
            &format!("transition:{idx} ({event})"),
        ));
    }
    errs
}

#[test]
fn gitlab_pipeline_processing_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gitlab_processing");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 60, "every ported GitLab case is present");
    let mut failures = Vec::new();
    for p in &paths {
        for e in run_case(p) {
            failures.push(format!(
                "{}: {e}",
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
