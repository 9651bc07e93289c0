//! Times evaluation and payload generation for a pipeline file:
//! `cargo run --release -p podci-model --example eval_bench -- FILE [RUNS]`.
//!
//! Runs evaluate + all payloads RUNS times (default 10) in one process and reports the
//! best and the median run, since single runs on a shared machine vary by 2-3x. Prints a
//! checksum of all payloads as JSON so that an optimisation can be checked not to change
//! the output (compare the line before and after).

use std::time::{Duration, Instant};

use podci_model::eval::PipelineContext;
use podci_model::{LoadOptions, MemorySource};

/// The target for evaluate + payloads of the 2,000-job pipeline.
const TARGET_MS: f64 = 100.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// FNV-1a over the bytes: enough to tell whether two runs produced the same JSON.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: eval_bench FILE [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = match args.next().map(|r| r.parse()) {
        None => 10,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("RUNS must be a positive number");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let p = podci_model::load(&path, &text, &MemorySource::new(), &LoadOptions::default());
    let t_load = t0.elapsed();
    if !p.is_valid() {
        for d in p.errors() {
            eprintln!("{}", d.display(&p.sources));
        }
        std::process::exit(1);
    }
    let ctx = PipelineContext {
        ref_name: "main".into(),
        ..PipelineContext::default()
    };
    let mut evals = Vec::with_capacity(runs);
    let mut payloads_runs = Vec::with_capacity(runs);
    let mut totals = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        // The previous run's payloads are dropped outside the timed region.
        drop(last.take());
        let t1 = Instant::now();
        let eval = p.evaluate(&ctx);
        let t_eval = t1.elapsed();
        let t2 = Instant::now();
        let payloads: Vec<_> = eval
            .jobs
            .iter()
            .filter_map(|j| p.payload(&eval, &j.name, &ctx, "token"))
            .collect();
        let t_payload = t2.elapsed();
        evals.push(t_eval);
        payloads_runs.push(t_payload);
        totals.push(t_eval + t_payload);
        last = Some((eval, payloads));
    }
    let Some((eval, payloads)) = last else {
        return;
    };
    let t3 = Instant::now();
    let mut bytes = 0usize;
    let mut sum = 0xcbf2_9ce4_8422_2325_u64;
    for pl in &payloads {
        match serde_json::to_vec(pl) {
            Ok(v) => {
                bytes += v.len();
                sum = fnv1a(sum, &v);
            }
            Err(e) => {
                eprintln!("payload does not serialize: {e}");
                std::process::exit(1);
            }
        }
    }
    let t_json = t3.elapsed();
    println!(
        "jobs configured: {}, created: {}, payloads: {} ({:.1} MiB of JSON, fnv1a {sum:016x})",
        p.jobs.len(),
        eval.jobs.len(),
        payloads.len(),
        bytes as f64 / 1048576.0
    );
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let median = |v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort();
        s.get(s.len() / 2).copied().unwrap_or_default()
    };
    println!("load+validate  {:8.1} ms (once)", ms(t_load));
    println!(
        "evaluate       {:8.1} ms best, {:8.1} ms median of {runs}",
        ms(best(&evals)),
        ms(median(&evals))
    );
    println!(
        "payloads       {:8.1} ms best, {:8.1} ms median of {runs}",
        ms(best(&payloads_runs)),
        ms(median(&payloads_runs))
    );
    println!(
        "payloads->JSON {:8.1} ms (what a runner would receive; not part of the target)",
        ms(t_json)
    );
    let b = ms(best(&totals));
    let m = ms(median(&totals));
    println!(
        "evaluate + payloads: {b:.1} ms best, {m:.1} ms median of {runs}; target < {TARGET_MS:.0} ms: {} (best is {:.2}x the target, median {:.2}x)",
        if b < TARGET_MS { "met" } else { "NOT met" },
        b / TARGET_MS,
        m / TARGET_MS
    );
}
