//! Times evaluation and payload generation for a pipeline file:
//! `cargo run --release -p podci-model --example eval_bench -- FILE`.

use std::time::Instant;

use podci_model::eval::PipelineContext;
use podci_model::{LoadOptions, MemorySource};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: eval_bench FILE");
        std::process::exit(2);
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
    let count = payloads.len();
    let t3 = Instant::now();
    let bytes: usize = payloads
        .iter()
        .map(|pl| serde_json::to_vec(pl).map(|v| v.len()).unwrap_or(0))
        .sum();
    let t_json = t3.elapsed();
    println!(
        "jobs configured: {}, created: {}, payloads: {count} ({:.1} MiB of JSON)",
        p.jobs.len(),
        eval.jobs.len(),
        bytes as f64 / 1048576.0
    );
    println!("load+validate  {:8.1} ms", t_load.as_secs_f64() * 1000.0);
    println!("evaluate       {:8.1} ms", t_eval.as_secs_f64() * 1000.0);
    println!("payloads       {:8.1} ms", t_payload.as_secs_f64() * 1000.0);
    println!(
        "payloads->JSON {:8.1} ms (what a runner would receive; not part of the target)",
        t_json.as_secs_f64() * 1000.0
    );
    let total = (t_eval + t_payload).as_secs_f64() * 1000.0;
    println!(
        "evaluate + payloads: {total:.1} ms (target < 100 ms: {})",
        if total < 100.0 { "met" } else { "NOT met" }
    );
}
