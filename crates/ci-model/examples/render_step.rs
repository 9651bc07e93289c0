//! Prints a rendered step script: `cargo run -p podci-model --example render_step -- [bash|sh|detect] TIMEOUT CMD...`.

use podci_model::payload::{JobPayload, JobVariable, Step};
use podci_model::script::{ScriptOptions, Shell, render_step};

fn main() {
    let mut args = std::env::args().skip(1);
    let shell = match args.next().as_deref() {
        Some("bash") => Shell::Bash,
        Some("sh") => Shell::Sh,
        _ => Shell::Detect,
    };
    let timeout = args.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let step = Step {
        name: "script".into(),
        script: args.collect(),
        timeout,
        ..Default::default()
    };
    let payload = JobPayload {
        variables: vec![JobVariable {
            key: "GREETING".into(),
            value: "hello".into(),
            public: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let opts = ScriptOptions {
        shell,
        nonce: "example-nonce".into(),
        start_time: 0,
        build_dir: ".".into(),
        tmp_dir: std::env::temp_dir()
            .join("podci-example.tmp")
            .display()
            .to_string(),
        job_status: None,
    };
    match render_step(&payload, &step, &opts) {
        Ok(s) => print!("{s}"),
        Err(e) => eprintln!("{e}"),
    }
}
