//! Masking throughput: `cargo run --release -p podci-model --example mask_bench`.
//!
//! Masks 256 MiB of log-like text (with a secret and a token every few KiB) in 64 KiB
//! chunks through one `Masker`, with 20 secrets (and their URL-encoded forms) and the
//! default token prefixes, and prints MB/s. A timing aid, not a test.

use std::time::Instant;

use podci_model::mask::{DEFAULT_TOKEN_PREFIXES, Masker, url_encode};

fn main() {
    let mut secrets: Vec<String> = (0..20)
        .map(|i| format!("S3cr3t/Value+{i:02}=xyzzyAbCdEf"))
        .collect();
    let encoded: Vec<String> = secrets.iter().map(|s| url_encode(s)).collect();
    secrets.extend(encoded);
    let masker = Masker::new(&secrets, DEFAULT_TOKEN_PREFIXES);

    let line = "2026-11-27T22:00:00Z [INFO] Downloading https://repo.example/maven2/org/x/y/1.0/y-1.0.jar (12 kB at 3.4 MB/s) gl ok\n";
    let mut block = String::new();
    let mut n = 0;
    while block.len() < 64 * 1024 {
        block.push_str(line);
        n += 1;
        if n % 40 == 0 {
            block.push_str(&format!(
                "password is {} and glpat-abcdefghijkl\n",
                secrets[n % 20]
            ));
        }
    }
    let block = block.into_bytes();
    let total: usize = 256 * 1024 * 1024;
    let chunks = total / block.len();

    let mut m = masker.clone();
    let start = Instant::now();
    let mut out_bytes = 0usize;
    for _ in 0..chunks {
        out_bytes += m.write(&block).len();
    }
    out_bytes += m.finish().len();
    let secs = start.elapsed().as_secs_f64();
    let mb = (chunks * block.len()) as f64 / 1e6;
    println!(
        "masked {mb:.0} MB in {secs:.3} s: {:.0} MB/s ({} patterns, output {} MB)",
        mb / secs,
        secrets.len() + DEFAULT_TOKEN_PREFIXES.len(),
        out_bytes / 1_000_000
    );

    // No secrets at all: the pass-through cost.
    let mut m = Masker::new(Vec::<String>::new(), Vec::<String>::new());
    let start = Instant::now();
    for _ in 0..chunks {
        std::hint::black_box(m.write(&block));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("no patterns: {:.0} MB/s", mb / secs);
}
