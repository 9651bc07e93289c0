//! Property: for random pipelines (stages and needs DAGs, every `when`, allowed failures,
//! retries, auto-cancel on failure) driven by random results, plays and an occasional
//! cancel, no job is enqueued before what it waits for is complete, every job ends in a
//! final status, and the pipeline finishes.

use podci_model::schedule::{
    Action, AllowFailure, Event, FailureReason, JobResult, JobSpec, JobStatus, NeedRef, Retry, Scheduler,
    When,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct GenJob {
    stage: usize,
    /// `None`: stage ordering; otherwise indices (taken modulo) of earlier jobs.
    needs: Option<Vec<usize>>,
    when: u8,
    allow_failure: bool,
    retry_max: u8,
}

fn gen_job() -> impl Strategy<Value = GenJob> {
    (
        0usize..4,
        prop::option::of(prop::collection::vec(0usize..64, 0..3)),
        0u8..6,
        any::<bool>(),
        0u8..3,
    )
        .prop_map(|(stage, needs, when, allow_failure, retry_max)| GenJob {
            stage,
            needs,
            when,
            allow_failure,
            retry_max,
        })
}

/// Turns generated jobs into specs; needs point only at earlier jobs in the same or an
/// earlier stage, as GitLab's validation requires.
fn specs(jobs_in: &[GenJob]) -> Vec<JobSpec> {
    let mut out: Vec<JobSpec> = Vec::new();
    // Sort by stage so "earlier job" also means "not in a later stage".
    let mut jobs_in = jobs_in.to_vec();
    jobs_in.sort_by_key(|g| g.stage);
    for (i, g) in jobs_in.iter().enumerate() {
        let mut s = JobSpec::new(format!("j{i}"), g.stage);
        s.when = match g.when {
            0 | 1 => When::OnSuccess,
            2 => When::OnFailure,
            3 => When::Always,
            4 => When::Manual,
            _ => When::Delayed { start_in: 10 },
        };
        s.allow_failure = if g.allow_failure {
            AllowFailure::Yes
        } else {
            AllowFailure::No
        };
        s.retry = Retry {
            max: g.retry_max,
            ..Retry::default()
        };
        if let Some(needs) = &g.needs {
            let mut list: Vec<NeedRef> = if i == 0 {
                Vec::new()
            } else {
                needs
                    .iter()
                    .map(|n| NeedRef::new(format!("j{}", n % i)))
                    .collect()
            };
            list.dedup();
            s.needs = Some(list);
        }
        out.push(s);
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Fail(i32),
    Cancel,
}

fn gen_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Success),
        2 => (1i32..3).prop_map(Outcome::Fail),
        1 => Just(Outcome::Cancel),
    ]
}

/// Checks that `job`, just enqueued by processing, waited for what it depends on.
fn assert_ready(s: &Scheduler, specs: &[JobSpec], job: &str) -> Result<(), TestCaseError> {
    let spec = specs
        .iter()
        .find(|j| j.name == job)
        .ok_or_else(|| TestCaseError::fail("unknown job enqueued"))?;
    let status = |n: &str| s.job_status(n).unwrap_or(JobStatus::Created);
    match &spec.needs {
        Some(needs) => {
            for n in needs {
                let st = status(&n.name);
                // An allowed manual job never blocks anything (GitLab: `ignored`).
                let ignored = st == JobStatus::Manual
                    && specs
                        .iter()
                        .any(|o| o.name == n.name && o.allow_failure == AllowFailure::Yes);
                prop_assert!(
                    st.is_complete() || ignored,
                    "{job} enqueued while its need {} is {st}",
                    n.name
                );
            }
        }
        None => {
            for other in specs.iter().filter(|o| o.stage < spec.stage) {
                let st = status(&other.name);
                let ignored = st == JobStatus::Manual && other.allow_failure == AllowFailure::Yes;
                prop_assert!(
                    st.is_complete() || ignored,
                    "{job} (stage {}) enqueued while {} (stage {}) is {st}",
                    spec.stage,
                    other.name,
                    other.stage
                );
            }
        }
    }
    Ok(())
}

/// Checks every `Enqueue` that processing produced (not the played job itself and not
/// an automatic retry of the job that just failed).
fn check_actions(
    s: &Scheduler,
    specs: &[JobSpec],
    actions: &[Action],
    direct: Option<&str>,
) -> Result<(), TestCaseError> {
    for a in actions {
        if let Action::Enqueue { job, .. } = a {
            let retried = actions
                .iter()
                .any(|r| matches!(r, Action::Retry { job: rj, .. } if rj == job));
            if Some(job.as_str()) != direct && !retried {
                assert_ready(s, specs, job)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_pipelines_finish_in_order(
        jobs_in in prop::collection::vec(gen_job(), 1..14),
        outcomes in prop::collection::vec(gen_outcome(), 64),
        picks in prop::collection::vec(0usize..64, 64),
        cancel_at in prop::option::of(0usize..40),
        auto_cancel in any::<bool>(),
    ) {
        let specs = specs(&jobs_in);
        let mut s = Scheduler::new(specs.clone()).auto_cancel_on_job_failure(auto_cancel);
        let actions = s.start();
        check_actions(&s, &specs, &actions, None)?;
        let mut canceled = false;
        let mut now = 0u64;
        for step in 0..400usize {
            if cancel_at == Some(step) {
                s.on_event(Event::Canceled).map_err(|e| TestCaseError::fail(e.to_string()))?;
                canceled = true;
            }
            let active: Vec<(String, JobStatus)> = s
                .jobs()
                .filter(|(_, st)| matches!(st, JobStatus::Pending | JobStatus::Running))
                .map(|(n, st)| (n.to_string(), st))
                .collect();
            let (ev, direct) = if !active.is_empty() {
                let (name, st) = &active[picks[step % picks.len()] % active.len()];
                if *st == JobStatus::Pending {
                    (Event::Started { job: name.clone() }, None)
                } else {
                    let result = match outcomes[step % outcomes.len()] {
                        Outcome::Success => JobResult::Success,
                        Outcome::Fail(code) => JobResult::Failed {
                            reason: FailureReason::ScriptFailure,
                            exit_code: Some(code),
                        },
                        Outcome::Cancel => JobResult::Canceled,
                    };
                    (Event::Finished { job: name.clone(), result }, None)
                }
            } else if let Some(at) = s.next_wakeup() {
                now = now.max(at);
                (Event::TimeElapsed { now }, None)
            } else if let (false, Some(m)) = (
                canceled,
                s.jobs().find(|(_, st)| *st == JobStatus::Manual).map(|(n, _)| n.to_string()),
            ) {
                (Event::Played { job: m.clone() }, Some(m))
            } else {
                break;
            };
            let actions = s.on_event(ev).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_actions(&s, &specs, &actions, direct.as_deref())?;
        }
        for (name, st) in s.jobs() {
            let done = st.is_complete() || (canceled && st == JobStatus::Manual);
            prop_assert!(done, "{name} ended as {st}");
        }
        if canceled {
            prop_assert_eq!(s.status().as_str(), "canceled");
        }
        prop_assert!(s.is_finished(), "pipeline ended as {}", s.status());
        prop_assert!(s.is_idle());
        prop_assert_eq!(s.next_wakeup(), None);
    }
}
