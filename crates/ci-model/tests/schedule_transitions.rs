//! Transition tables for the scheduler: GitLab's composite-status table
//! (`spec/lib/gitlab/ci/status/composite_spec.rb`), every `when` against every result of
//! what comes before (stage ordering and `needs`), allowed failures by exit code, retries
//! by reason and exit code, manual and delayed jobs, cancellation, and bad events.

use podci_model::schedule::{
    Action, AllowFailure, Event, FailureReason, JobResult, JobSpec, JobStatus, NeedRef, PipelineStatus,
    Retry, RetryWhen, ScheduleError, Scheduler, When, composite,
};

use JobStatus as J;

fn job(name: &str, stage: usize) -> JobSpec {
    JobSpec::new(name, stage)
}

fn finished(name: &str, result: JobResult) -> Event {
    Event::Finished {
        job: name.into(),
        result,
    }
}

fn failed(reason: FailureReason, code: Option<i32>) -> JobResult {
    JobResult::Failed {
        reason,
        exit_code: code,
    }
}

fn script_failure(code: i32) -> JobResult {
    failed(FailureReason::ScriptFailure, Some(code))
}

fn ev(s: &mut Scheduler, e: Event) -> Vec<Action> {
    s.on_event(e).expect("event applies")
}

#[test]
fn composite_table_from_gitlab_spec() {
    // (statuses, dag, result, warnings) for allow_failure: false, then true. Rows with
    // preparing / waiting_for_resource / waiting_for_callback are left out: podci's jobs
    // have no such states.
    let not_allowed: &[(&[JobStatus], bool, &str)] = &[
        (&[J::Skipped], false, "skipped"),
        (&[J::Skipped, J::Success], false, "success"),
        (&[J::Skipped, J::Success], true, "skipped"),
        (&[J::Created], false, "created"),
        (&[J::Canceled, J::Success, J::Skipped], false, "canceled"),
        (&[J::Canceled, J::Success, J::Skipped], true, "skipped"),
        (&[J::Pending, J::Created, J::Skipped], false, "pending"),
        (
            &[J::Pending, J::Created, J::Skipped, J::Success],
            false,
            "running",
        ),
        (
            &[J::Running, J::Created, J::Skipped, J::Success],
            false,
            "running",
        ),
        (&[J::Pending, J::Created, J::Skipped], true, "skipped"),
        (&[J::Pending, J::Created, J::Skipped, J::Success], true, "skipped"),
        (&[J::Running, J::Created, J::Skipped, J::Success], true, "skipped"),
        (&[J::Success, J::Manual], false, "manual"),
        (&[J::Success, J::Scheduled], false, "scheduled"),
        (&[J::Created, J::Success, J::Pending], false, "running"),
        (&[J::Skipped, J::Success, J::Failed], false, "failed"),
        (&[J::Skipped, J::Success, J::Failed], true, "skipped"),
        (&[J::Success, J::Manual], true, "manual"),
        (&[J::Success, J::Failed, J::Created], true, "running"),
    ];
    for (statuses, dag, want) in not_allowed {
        let c = composite(statuses.iter().map(|s| (*s, false)), *dag);
        assert_eq!(
            c.status.map(|s| s.as_str()),
            Some(*want),
            "{statuses:?} dag={dag}"
        );
        assert!(!c.warnings, "{statuses:?} dag={dag}: no warnings");
    }
    let allowed: &[(&[JobStatus], bool, &str, bool)] = &[
        (&[J::Manual], false, "skipped", false),
        (&[J::Skipped, J::Failed], false, "success", true),
        (&[J::Skipped, J::Failed], true, "skipped", true),
        (&[J::Success, J::Manual], true, "skipped", false),
        (&[J::Success, J::Manual], false, "success", false),
        (&[J::Created, J::Failed], false, "created", true),
    ];
    for (statuses, dag, want, warnings) in allowed {
        let c = composite(statuses.iter().map(|s| (*s, true)), *dag);
        assert_eq!(
            c.status.map(|s| s.as_str()),
            Some(*want),
            "{statuses:?} dag={dag}"
        );
        assert_eq!(c.warnings, *warnings, "{statuses:?} dag={dag}");
    }
    assert_eq!(composite(std::iter::empty(), false).status, None);
}

/// How the job before `x` ends up.
#[derive(Debug, Clone, Copy)]
enum Prev {
    Success,
    Failed,
    AllowedFailure,
    Canceled,
    Skipped,
    ManualAllowed,
    ManualBlocking,
}

const PREVS: [Prev; 7] = [
    Prev::Success,
    Prev::Failed,
    Prev::AllowedFailure,
    Prev::Canceled,
    Prev::Skipped,
    Prev::ManualAllowed,
    Prev::ManualBlocking,
];

const WHENS: [When; 6] = [
    When::OnSuccess,
    When::OnFailure,
    When::Always,
    When::Manual,
    When::Delayed { start_in: 30 },
    When::Never,
];

/// Builds `prev` (stage 0) and `x` (stage 1, needing `prev` when `dag`), drives `prev` to
/// its result and returns `x`'s status.
fn x_after(prev: Prev, when: &When, dag: bool) -> JobStatus {
    let mut p = job("prev", 0);
    match prev {
        Prev::AllowedFailure => p.allow_failure = AllowFailure::Yes,
        // Nothing before it failed, so an on_failure job is skipped.
        Prev::Skipped => p.when = When::OnFailure,
        Prev::ManualAllowed => {
            p.when = When::Manual;
            p.allow_failure = AllowFailure::Yes;
        }
        Prev::ManualBlocking => p.when = When::Manual,
        _ => {}
    }
    let mut x = job("x", 1);
    x.when = when.clone();
    if dag {
        x.needs = Some(vec![NeedRef::new("prev")]);
    }
    let mut s = Scheduler::new(vec![p, x]);
    s.start();
    let result = match prev {
        Prev::Success => Some(JobResult::Success),
        Prev::Failed | Prev::AllowedFailure => Some(script_failure(1)),
        Prev::Canceled => Some(JobResult::Canceled),
        _ => None,
    };
    if let Some(r) = result {
        ev(&mut s, Event::Started { job: "prev".into() });
        ev(&mut s, finished("prev", r));
    }
    s.job_status("x").expect("x exists")
}

fn check_table(dag: bool, table: &[[JobStatus; 6]; 7]) {
    for (pi, prev) in PREVS.iter().enumerate() {
        for (wi, when) in WHENS.iter().enumerate() {
            assert_eq!(
                x_after(*prev, when, dag),
                table[pi][wi],
                "prev {prev:?}, x when {when:?}, dag {dag}"
            );
        }
    }
}

// Columns: on_success, on_failure, always, manual, delayed, never.
const P: JobStatus = J::Pending;
const S: JobStatus = J::Skipped;
const M: JobStatus = J::Manual;
const D: JobStatus = J::Scheduled;
const C: JobStatus = J::Created;

#[test]
fn when_against_previous_stage_result() {
    // ProcessBuildService with stage ordering: on_success/manual/delayed run after
    // success or skipped, on_failure after failed, always after success/failed/skipped.
    check_table(
        false,
        &[
            [P, S, P, M, D, S], // success
            [S, P, P, S, S, S], // failed
            [P, S, P, M, D, S], // failed, allowed: counts as success
            [S, S, S, S, S, S], // canceled: nothing runs
            [P, S, P, M, D, S], // skipped
            [P, S, P, M, D, S], // manual, allowed to fail: ignored, counts as skipped
            [C, C, C, C, C, C], // manual, blocking: later stages wait
        ],
    );
}

#[test]
fn when_against_needed_job_result() {
    // With needs, on_success/manual/delayed need plain success; a skipped or ignored
    // need skips them; always still runs.
    check_table(
        true,
        &[
            [P, S, P, M, D, S],
            [S, P, P, S, S, S],
            [P, S, P, M, D, S],
            [S, S, S, S, S, S],
            [S, S, P, S, S, S],
            [S, S, P, S, S, S],
            [C, C, C, C, C, C],
        ],
    );
}

#[test]
fn needs_empty_starts_at_once_and_optional_absent_need_is_ignored() {
    let mut a = job("a", 0);
    a.when = When::Manual;
    a.allow_failure = AllowFailure::No;
    let mut b = job("b", 2);
    b.needs = Some(vec![]);
    let mut c = job("c", 2);
    c.needs = Some(vec![NeedRef {
        name: "gone".into(),
        optional: true,
    }]);
    let mut s = Scheduler::new(vec![a, b, c]);
    let actions = s.start();
    assert!(actions.contains(&Action::Enqueue {
        job: "b".into(),
        attempt: 1
    }));
    assert_eq!(s.job_status("c"), Some(J::Pending));
    assert_eq!(s.job_status("a"), Some(J::Manual));
}

#[test]
fn allow_failure_exit_codes() {
    for (code, allowed) in [(3, true), (1, false)] {
        let mut a = job("a", 0);
        a.allow_failure = AllowFailure::ExitCodes(vec![3, 4]);
        let mut s = Scheduler::new(vec![a, job("b", 1)]);
        s.start();
        // Before failing, an exit-code allowance does not make the job optional.
        assert_eq!(s.job_allowed_to_fail("a"), Some(false));
        ev(&mut s, finished("a", script_failure(code)));
        assert_eq!(s.job_allowed_to_fail("a"), Some(allowed));
        if allowed {
            assert_eq!(s.job_status("b"), Some(J::Pending));
            ev(&mut s, finished("b", JobResult::Success));
            assert_eq!(s.status(), PipelineStatus::Success);
            assert!(s.has_warnings());
        } else {
            assert_eq!(s.job_status("b"), Some(J::Skipped));
            assert_eq!(s.status(), PipelineStatus::Failed);
            assert!(!s.has_warnings());
        }
        assert!(s.is_finished());
    }
}

fn retrying(retry: Retry) -> Scheduler {
    let mut a = job("a", 0);
    a.retry = retry;
    let mut s = Scheduler::new(vec![a, job("b", 1)]);
    s.start();
    s
}

#[test]
fn retry_by_reason_up_to_max() {
    let mut s = retrying(Retry {
        max: 2,
        when: Some(vec![RetryWhen::parse("script_failure")]),
        exit_codes: None,
    });
    for attempt in 2..=3 {
        let actions = ev(&mut s, finished("a", script_failure(1)));
        assert_eq!(
            actions,
            vec![
                Action::Retry {
                    job: "a".into(),
                    attempt,
                    reason: FailureReason::ScriptFailure
                },
                Action::Enqueue {
                    job: "a".into(),
                    attempt
                }
            ]
        );
        assert_eq!(s.job_status("a"), Some(J::Pending));
        assert_eq!(s.job_status("b"), Some(J::Created), "b waits for the new attempt");
        assert_eq!(s.status(), PipelineStatus::Pending);
    }
    let actions = ev(&mut s, finished("a", script_failure(1)));
    assert_eq!(actions, vec![Action::Skip { job: "b".into() }]);
    assert_eq!(s.job_status("a"), Some(J::Failed));
    assert_eq!(s.job_attempt("a"), Some(3));
    assert_eq!(s.status(), PipelineStatus::Failed);
}

#[test]
fn retry_skips_reasons_not_listed() {
    let mut s = retrying(Retry {
        max: 2,
        when: Some(vec![RetryWhen::parse("runner_system_failure")]),
        exit_codes: None,
    });
    ev(&mut s, finished("a", script_failure(1)));
    assert_eq!(s.job_status("a"), Some(J::Failed));
    assert_eq!(s.job_attempt("a"), Some(1));

    let mut s = retrying(Retry {
        max: 1,
        when: Some(vec![RetryWhen::parse("runner_system_failure")]),
        exit_codes: None,
    });
    ev(
        &mut s,
        finished("a", failed(FailureReason::RunnerSystemFailure, None)),
    );
    assert_eq!(s.job_status("a"), Some(J::Pending));
    ev(
        &mut s,
        finished("a", failed(FailureReason::RunnerSystemFailure, None)),
    );
    assert_eq!(s.job_status("a"), Some(J::Failed), "max 1 means one retry");
}

#[test]
fn retry_by_exit_code() {
    // With exit_codes and no `when`, only the exit codes decide.
    let retry = Retry {
        max: 2,
        when: None,
        exit_codes: Some(vec![137]),
    };
    let mut s = retrying(retry.clone());
    ev(&mut s, finished("a", script_failure(1)));
    assert_eq!(s.job_status("a"), Some(J::Failed));

    let mut s = retrying(retry);
    ev(&mut s, finished("a", script_failure(137)));
    assert_eq!(s.job_attempt("a"), Some(2));
    assert_eq!(s.job_status("a"), Some(J::Pending));

    // A reason in `when` or an exit code in `exit_codes` is enough (GitLab ORs them).
    let mut s = retrying(Retry {
        max: 1,
        when: Some(vec![RetryWhen::parse("api_failure")]),
        exit_codes: Some(vec![2]),
    });
    ev(&mut s, finished("a", script_failure(2)));
    assert_eq!(s.job_attempt("a"), Some(2));
}

#[test]
fn retry_defaults_and_overrides() {
    // `retry: 2` means when: always.
    let mut s = retrying(Retry {
        max: 2,
        ..Retry::default()
    });
    ev(
        &mut s,
        finished("a", failed(FailureReason::parse("image_pull_failure"), None)),
    );
    assert_eq!(s.job_attempt("a"), Some(2));

    // missing_dependency_failure is never retried.
    let mut s = retrying(Retry {
        max: 2,
        ..Retry::default()
    });
    ev(
        &mut s,
        finished("a", failed(FailureReason::MissingDependencyFailure, None)),
    );
    assert_eq!(s.job_status("a"), Some(J::Failed));

    // scheduler_failure is retried twice even without `retry:`.
    let mut s = retrying(Retry::default());
    for _ in 0..2 {
        ev(
            &mut s,
            finished("a", failed(FailureReason::SchedulerFailure, None)),
        );
        assert_eq!(s.job_status("a"), Some(J::Pending));
    }
    ev(
        &mut s,
        finished("a", failed(FailureReason::SchedulerFailure, None)),
    );
    assert_eq!(s.job_status("a"), Some(J::Failed));
    assert_eq!(FailureReason::parse("stale_schedule").as_str(), "stale_schedule");
}

#[test]
fn blocking_manual_holds_later_stages_until_played() {
    let mut m = job("m", 0);
    m.when = When::Manual;
    m.allow_failure = AllowFailure::No;
    let mut s = Scheduler::new(vec![m, job("next", 1)]);
    assert_eq!(s.start(), vec![Action::WaitManual { job: "m".into() }]);
    assert_eq!(s.status(), PipelineStatus::Manual);
    assert!(!s.is_finished());
    assert_eq!(s.job_status("next"), Some(J::Created));
    let actions = ev(&mut s, Event::Played { job: "m".into() });
    assert_eq!(
        actions,
        vec![Action::Enqueue {
            job: "m".into(),
            attempt: 1
        }]
    );
    ev(&mut s, Event::Started { job: "m".into() });
    assert_eq!(s.status(), PipelineStatus::Running);
    let actions = ev(&mut s, finished("m", JobResult::Success));
    assert_eq!(
        actions,
        vec![Action::Enqueue {
            job: "next".into(),
            attempt: 1
        }]
    );
}

#[test]
fn allowed_manual_does_not_block_and_pipeline_can_succeed_without_it() {
    let mut m = job("m", 0);
    m.when = When::Manual;
    m.allow_failure = AllowFailure::Yes;
    let mut s = Scheduler::new(vec![job("a", 0), m, job("next", 1)]);
    s.start();
    ev(&mut s, finished("a", JobResult::Success));
    assert_eq!(s.job_status("next"), Some(J::Pending));
    ev(&mut s, finished("next", JobResult::Success));
    assert_eq!(s.status(), PipelineStatus::Success);
    assert_eq!(s.job_status("m"), Some(J::Manual));
    assert!(s.is_finished());

    // Only allowed manual jobs: nothing to run, GitLab shows `skipped`.
    let mut only = job("only", 0);
    only.when = When::Manual;
    only.allow_failure = AllowFailure::Yes;
    let mut s = Scheduler::new(vec![only]);
    s.start();
    assert_eq!(s.status(), PipelineStatus::Skipped);
}

#[test]
fn delayed_job_waits_for_its_time_or_a_play() {
    let mut d = job("d", 1);
    d.when = When::Delayed { start_in: 60 };
    let mut s = Scheduler::new(vec![job("a", 0), d.clone(), job("z", 2)]);
    s.set_time(1000);
    s.start();
    ev(&mut s, Event::TimeElapsed { now: 1010 });
    let actions = ev(&mut s, finished("a", JobResult::Success));
    assert_eq!(
        actions,
        vec![Action::Schedule {
            job: "d".into(),
            at: 1070
        }]
    );
    assert_eq!(s.status(), PipelineStatus::Scheduled);
    assert_eq!(s.next_wakeup(), Some(1070));
    assert!(ev(&mut s, Event::TimeElapsed { now: 1069 }).is_empty());
    assert_eq!(s.job_status("d"), Some(J::Scheduled));
    let actions = ev(&mut s, Event::TimeElapsed { now: 1070 });
    assert_eq!(
        actions,
        vec![Action::Enqueue {
            job: "d".into(),
            attempt: 1
        }]
    );
    assert_eq!(s.next_wakeup(), None);

    let mut s = Scheduler::new(vec![job("a", 0), d, job("z", 2)]);
    s.start();
    ev(&mut s, finished("a", JobResult::Success));
    ev(&mut s, Event::Played { job: "d".into() });
    assert_eq!(s.job_status("d"), Some(J::Pending));
    assert_eq!(s.job_scheduled_at("d"), None);
}

#[test]
fn cancel_stops_running_and_pending_keeps_manual() {
    let mut m = job("m", 0);
    m.when = When::Manual;
    let mut s = Scheduler::new(vec![job("run", 0), job("wait", 0), m, job("later", 1)]);
    s.start();
    ev(&mut s, Event::Started { job: "run".into() });
    let actions = ev(&mut s, Event::Canceled);
    assert_eq!(
        actions,
        vec![
            Action::Cancel {
                job: "run".into(),
                was_running: true
            },
            Action::Cancel {
                job: "wait".into(),
                was_running: false
            },
        ]
    );
    assert_eq!(s.job_status("later"), Some(J::Canceled));
    assert_eq!(s.job_status("m"), Some(J::Manual));
    assert_eq!(s.status(), PipelineStatus::Canceled);
    assert!(s.is_finished());
    // The executor's late report of the canceled job changes nothing.
    assert!(ev(&mut s, finished("run", JobResult::Success)).is_empty());
    assert_eq!(s.job_status("run"), Some(J::Canceled));
}

#[test]
fn user_retry_revives_skipped_jobs() {
    let mut s = Scheduler::new(vec![job("a", 0), job("b", 1)]);
    s.start();
    ev(&mut s, finished("a", script_failure(1)));
    assert_eq!(s.status(), PipelineStatus::Failed);
    assert_eq!(s.job_status("b"), Some(J::Skipped));
    let actions = ev(&mut s, Event::Retried { job: "a".into() });
    assert_eq!(
        actions,
        vec![Action::Enqueue {
            job: "a".into(),
            attempt: 2
        }]
    );
    assert_eq!(s.job_status("b"), Some(J::Created));
    assert_eq!(
        s.status(),
        PipelineStatus::Running,
        "a finished pipeline resumes as running"
    );
    ev(&mut s, finished("a", JobResult::Success));
    assert_eq!(s.job_status("b"), Some(J::Pending));
}

#[test]
fn bad_events_are_errors() {
    let mut s = Scheduler::new(vec![job("a", 0), job("b", 1)]);
    s.start();
    assert_eq!(
        s.on_event(Event::Started { job: "nope".into() }),
        Err(ScheduleError::UnknownJob("nope".into()))
    );
    let err = s.on_event(Event::Played { job: "a".into() }).unwrap_err();
    assert_eq!(err.to_string(), "job `a` cannot be played: it is pending");
    let err = s.on_event(finished("b", JobResult::Success)).unwrap_err();
    assert_eq!(err.to_string(), "job `b` cannot be finished: it is created");
    assert_eq!(
        Scheduler::try_new(vec![job("a", 0), job("a", 1)]).err(),
        Some(ScheduleError::DuplicateJob("a".into()))
    );
}

#[test]
fn job_specs_from_a_loaded_pipeline() {
    let yaml = r#"
stages: [build, test, deploy]
build:
  stage: build
  script: make
  parallel: 2
  retry:
    max: 2
    when: [runner_system_failure, script_failure]
    exit_codes: [137]
lint:
  stage: test
  script: lint
  allow_failure:
    exit_codes: [3, 4]
  interruptible: true
  needs: [build]
unit:
  stage: test
  script: test
  retry: 1
review:
  stage: deploy
  script: deploy
  when: manual
later:
  stage: deploy
  script: deploy
  when: delayed
  start_in: 2 minutes
"#;
    let files = podci_model::MemorySource::new();
    let pipeline = podci_model::load(".gitlab-ci.yml", yaml, &files, &Default::default());
    assert!(pipeline.is_valid(), "{:?}", pipeline.diagnostics);
    let jobs: Vec<&podci_model::Job> = pipeline.jobs.iter().collect();
    let specs = podci_model::schedule::job_specs(&pipeline, &jobs);
    let by = |n: &str| {
        specs
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no spec {n}"))
    };
    assert_eq!(specs.len(), 6);
    let b1 = by("build 1/2");
    assert_eq!(
        b1.stage,
        pipeline.stages.iter().position(|s| s == "build").unwrap()
    );
    assert_eq!(
        b1.retry,
        Retry {
            max: 2,
            when: Some(vec![
                RetryWhen::Reason(FailureReason::RunnerSystemFailure),
                RetryWhen::Reason(FailureReason::ScriptFailure)
            ]),
            exit_codes: Some(vec![137]),
        }
    );
    let lint = by("lint");
    assert_eq!(lint.allow_failure, AllowFailure::ExitCodes(vec![3, 4]));
    assert!(lint.interruptible);
    assert_eq!(
        lint.needs,
        Some(vec![NeedRef::new("build 1/2"), NeedRef::new("build 2/2")])
    );
    assert_eq!(by("unit").retry.max, 1);
    assert_eq!(by("unit").retry.when, None);
    assert_eq!(by("review").when, When::Manual);
    assert_eq!(by("review").allow_failure, AllowFailure::Yes);
    assert_eq!(by("later").when, When::Delayed { start_in: 120 });

    // And they run: both build instances must finish before lint starts.
    let mut s = Scheduler::new(specs.clone());
    s.start();
    ev(&mut s, finished("build 1/2", JobResult::Success));
    assert_eq!(s.job_status("lint"), Some(J::Created));
    ev(&mut s, finished("build 2/2", JobResult::Success));
    assert_eq!(s.job_status("lint"), Some(J::Pending));
}

#[test]
fn retry_failed_jobs_after_cancel_resumes_the_pipeline() {
    let mut s = Scheduler::new(vec![job("a", 0), job("b", 0), job("c", 1)]);
    s.start();
    ev(&mut s, finished("a", script_failure(1)));
    ev(&mut s, Event::Canceled);
    assert_eq!(s.status(), PipelineStatus::Canceled);
    assert_eq!(s.job_status("b"), Some(J::Canceled));
    assert_eq!(s.job_status("c"), Some(J::Canceled));
    let actions = ev(&mut s, Event::RetriedFailed);
    // a (failed) and b (canceled) get new attempts; c is canceled too, so it is retried
    // as well and waits for its stage.
    assert!(actions.contains(&Action::Enqueue {
        job: "a".into(),
        attempt: 2
    }));
    assert!(actions.contains(&Action::Enqueue {
        job: "b".into(),
        attempt: 2
    }));
    assert_eq!(s.job_status("c"), Some(J::Created));
    assert_eq!(s.status(), PipelineStatus::Running);
    ev(&mut s, finished("a", JobResult::Success));
    ev(&mut s, finished("b", JobResult::Success));
    assert_eq!(s.job_status("c"), Some(J::Pending));
    ev(&mut s, finished("c", JobResult::Success));
    assert_eq!(s.status(), PipelineStatus::Success);
    assert!(!s.has_warnings());
}
