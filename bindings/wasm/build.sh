#!/usr/bin/env bash
# Builds the previewer's wasm module into bindings/wasm/web/pkg/ (release, then
# wasm-bindgen --target web). Needs the wasm32-unknown-unknown target and wasm-bindgen-cli
# at exactly the wasm-bindgen version in Cargo.lock (.ci/setup.d/60-wasm.sh installs both).
# Usage: bindings/wasm/build.sh [OUT_DIR]   (default: bindings/wasm/web/pkg)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/web/pkg}
target=${CARGO_TARGET_DIR:-$root/target}
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' "$root/Cargo.lock")
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "wasm-bindgen-cli $want is needed (found: ${have:-none}); install it with:" >&2
  echo "  cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi
(cd "$root" && cargo build -q --release --locked -p podci-wasm --target wasm32-unknown-unknown)
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  "$target/wasm32-unknown-unknown/release/podci_wasm.wasm"
ls -l "$out"/*.wasm >&2
