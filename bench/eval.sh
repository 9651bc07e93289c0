#!/usr/bin/env bash
# Benchmark: evaluate rules and produce every job payload for the 2,000-job pipeline of
# bench/lint.sh. Target (issue): under 100 ms in total.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
JOBS=${JOBS:-2000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$here/gen_pipeline.py" "$JOBS" > "$work/.gitlab-ci.yml"
cd "$root"
cargo run -q --release -p podci-model --example eval_bench -- "$work/.gitlab-ci.yml"
