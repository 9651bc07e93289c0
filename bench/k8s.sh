#!/usr/bin/env bash
# 100 one-step jobs through podci-k8s against the fake Kubernetes API server (no real
# API server can run on these machines). Prints API requests per job and the time podci
# adds per job beyond the job's own process time. Targets: <= 12 requests per
# single-step job without services, < 50 ms added per job. The peer, GitLab Runner's
# Kubernetes executor, cannot run here; its floor from poll_interval = 3 s is printed
# for comparison, and a breakdown of each job's time from the instants the fake server
# received its requests (Pod create, first exec/attach, Pod delete). The "floor" is the
# same Pod created, watched to running and deleted by the bench itself, no executor.
# Needs root and unshare (the fake server's container roots).
# JOBS=N changes the count; PROFILE=dev skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
jobs=${JOBS:-100}
if [ "$profile" = release ]; then
  cargo run -q --release -p podci-k8s --example bench_jobs -- "$jobs"
else
  cargo run -q -p podci-k8s --example bench_jobs -- "$jobs"
fi
