#!/usr/bin/env bash
# Benchmark: evaluate rules and produce every job payload for the 2,000-job pipeline of
# bench/lint.sh (bench/gen_pipeline.py). Target (issue 3): under 100 ms in total.
# Prints best and median of RUNS in-process runs and the ratio to the target, plus a
# checksum of all payloads as JSON (it must not change when the code is made faster).
# Usage: [JOBS=2000] [RUNS=10] bash bench/eval.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
JOBS=${JOBS:-2000}
RUNS=${RUNS:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$here/gen_pipeline.py" "$JOBS" > "$work/.gitlab-ci.yml"
cd "$root"
cargo build -q --release -p podci-model --example eval_bench
"$root/target/release/examples/eval_bench" "$work/.gitlab-ci.yml" "$RUNS"
