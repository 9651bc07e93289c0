#!/usr/bin/env bash
# Time from exec to "serving" for the fake Kubernetes API server (goal: under 100 ms, so
# every test can start its own), and the first API call answered. There is no peer to
# compare with: no real API server can run on these machines.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p podci-fake-kube --bin fake-kube
bin="${CARGO_TARGET_DIR:-target}/debug/fake-kube"
runs=${RUNS:-10}
total=0
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  out=$(mktemp)
  "$bin" >"$out" 2>&1 &
  pid=$!
  until grep -q "serving at" "$out"; do sleep 0.001; done
  url=$(sed -n 's/.*serving at //p' "$out")
  curl -s -o /dev/null -H "Authorization: Bearer fake-kube-admin-token" "$url/version"
  end=$(date +%s%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$out"
  total=$((total + (end - start) / 1000))
done
echo "fake-kube: start + first /version: $((total / runs)) us on average over $runs runs"
