#!/usr/bin/env bash
# Benchmark: the previewer's wasm in headless Chromium vs native `podci lint --list`, in one
# run, on the 2,000-job pipeline of bench/lint.sh (bench/gen_pipeline.py).
# Prints the wasm size (raw, gzip -9, brotli if installed), the time to lint (load,
# validate, evaluate rules) and lay out the pipeline in the page's wasm, the time the page
# then takes to draw it, native podci's time, and the ratio.
# Targets (issue 11): compressed wasm < 1.5 MiB; lint + layout < 100 ms in headless Chromium.
# Needs: chromium, chromium-driver, wasm-bindgen-cli (.ci/setup.d/60-wasm.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
JOBS=${JOBS:-2000}
RUNS=${RUNS:-7}
target=${CARGO_TARGET_DIR:-$root/target}

work=$(mktemp -d)
driver_pid=""
server_pid=""
cleanup() {
  [ -n "$driver_pid" ] && kill "$driver_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building the wasm (release) and podci (release)..." >&2
cp "$root"/bindings/wasm/web/{index.html,style.css,app.js} "$work/"
bash "$root/bindings/wasm/build.sh" "$work/pkg" 2>/dev/null
(cd "$root" && cargo build --release -q -p podci)
python3 "$here/gen_pipeline.py" "$JOBS" > "$work/gen.yml"

wasm="$work/pkg/podci_wasm_bg.wasm"
raw=$(stat -c %s "$wasm")
gz=$(gzip -9c "$wasm" | wc -c)
if command -v brotli >/dev/null; then br=$(brotli -c -q 11 "$wasm" | wc -c); else br=""; fi

# Native peer: best of RUNS.
best_native=""
for _ in $(seq "$RUNS"); do
  read -r t _mem rc < <(python3 "$here/measure.py" /dev/null "$target/release/podci" lint --list "$work/gen.yml")
  [ "$rc" = 0 ] || { echo "podci lint failed" >&2; exit 1; }
  if [ -z "$best_native" ] || python3 -c "import sys; sys.exit(0 if $t < $best_native else 1)"; then best_native=$t; fi
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work" "$port" >/dev/null 2>&1 &
server_pid=$!
chromedriver --port="$dport" >/dev/null 2>&1 &
driver_pid=$!

python3 - "$port" "$dport" "$RUNS" "$raw" "$gz" "$br" "$best_native" <<'PY'
import json, sys, time, urllib.request
port, dport, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
raw, gz, br, native = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], float(sys.argv[7])

def wd(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{dport}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)["value"]

for _ in range(200):
    try:
        wd("GET", "/status"); break
    except Exception:
        time.sleep(0.1)
caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]}}}}
sid = wd("POST", "/session", caps)["sessionId"]
try:
    wd("POST", f"/session/{sid}/url", {"url": f"http://127.0.0.1:{port}/index.html"})
    for _ in range(300):
        if wd("POST", f"/session/{sid}/execute/sync", {"script": "return document.body.dataset.state", "args": []}) == "ready":
            break
        time.sleep(0.05)
    wd("POST", f"/session/{sid}/timeouts", {"script": 300000})
    script = """
      const done = arguments[arguments.length - 1];
      (async () => {
        const yaml = await (await fetch('gen.yml')).text();
        const out = [];
        for (let i = 0; i < %d + 1; i++) out.push(window.podciBench(yaml, 'needs'));
        return out.slice(1);   // the first run warms the JIT and allocator
      })().then(done, e => done({error: String(e)}));
    """ % runs
    res = wd("POST", f"/session/{sid}/execute/async", {"script": script, "args": []})
finally:
    wd("DELETE", f"/session/{sid}")
if isinstance(res, dict):
    sys.exit(f"benchmark failed in the page: {res}")
assert all(r["valid"] for r in res), res
best = min(res, key=lambda r: r["lint_ms"] + r["layout_ms"])
wasm_ms = best["lint_ms"] + best["layout_ms"]
mib = 1024 * 1024
print(f"wasm size: raw {raw/mib:.2f} MiB, gzip -9 {gz/mib:.2f} MiB" + (f", brotli {int(br)/mib:.2f} MiB" if br else ", brotli not installed"))
print(f"pipeline: {len(res) and best['cards']} job cards ({sys.argv[0] and ''}2,000-job bench/gen_pipeline.py)")
print(f"wasm in headless Chromium: lint {best['lint_ms']:.1f} ms + layout {best['layout_ms']:.1f} ms = {wasm_ms:.1f} ms (best of {len(res)}); page draws it in {best['page_ms']:.0f} ms")
print(f"native podci lint --list (process, best of {runs}): {native*1000:.1f} ms")
print(f"ratio (wasm lint+layout / native podci lint): {wasm_ms/(native*1000):.2f}x")
smallest = min(gz, int(br)) if br else gz
print(f"targets: compressed < 1.5 MiB {'met' if smallest < 1.5*mib else 'NOT met'}; lint + layout < 100 ms {'met' if wasm_ms < 100 else 'NOT met'}")
PY
