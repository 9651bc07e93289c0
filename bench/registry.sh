#!/usr/bin/env bash
# Push benchmark: podci image copy vs skopeo copy of an 8-layer, 512 MiB image from an OCI
# layout directory to a local docker-registry; first push to a fresh repository on fresh
# storage, then the unchanged re-push. Prints times, ratios and podci's peak memory.
# Needs: docker-registry, skopeo, python3 (Debian packages; see .ci/setup.d/40-registry.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-8}
LAYER_MIB=${LAYER_MIB:-64}

for b in docker-registry skopeo python3; do
  command -v "$b" >/dev/null || { echo "bench/registry.sh: $b is not installed" >&2; exit 1; }
done
cargo build --release -q -p podci
PODCI=${CARGO_TARGET_DIR:-target}/release/podci

work=$(mktemp -d /var/tmp/podci-bench.XXXXXX)
reg_pid=""
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# --- the image: gzip'd tar layers of random data (already compressed, as in real images,
# so neither tool recompresses; skopeo would gzip plain tar layers on the way) ----------
python3 - "$work/layout" "$LAYERS" "$LAYER_MIB" <<'PY'
import hashlib, io, json, os, subprocess, sys, tarfile
out, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs)
def put(data_path=None, data=None):
    h = hashlib.sha256()
    if data is None:
        with open(data_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
        size = os.path.getsize(data_path); os.rename(data_path, os.path.join(blobs, h.hexdigest()))
    else:
        h.update(data); size = len(data)
        with open(os.path.join(blobs, h.hexdigest()), "wb") as f: f.write(data)
    return "sha256:" + h.hexdigest(), size
layers, diff_ids = [], []
for i in range(n):
    tmp = os.path.join(out, f"layer{i}.tar")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as t:
        ti = tarfile.TarInfo(f"data/layer{i}.bin"); ti.size = mib << 20; ti.mtime = 0
        # tarfile reads exactly ti.size bytes from the file object
        src = os.path.join(out, "rand.bin")
        with open(src, "wb") as w, open("/dev/urandom", "rb") as r:
            left = ti.size
            while left: b = r.read(min(left, 1 << 20)); w.write(b); left -= len(b)
        with open(src, "rb") as f: t.addfile(ti, f)
        os.remove(src)
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
    diff_ids.append("sha256:" + h.hexdigest())
    subprocess.run(["gzip", "-1", "-n", tmp], check=True)
    d, s = put(tmp + ".gz")
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
config = {"architecture": "amd64", "os": "linux", "config": {},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}}
cd, cs = put(data=json.dumps(config).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers}
md, ms = put(data=json.dumps(manifest).encode())
with open(os.path.join(out, "oci-layout"), "w") as f: f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_registry() {  # fresh storage each time
  [ -n "$reg_pid" ] && { kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true; }
  rm -rf "$work/data"
  cat > "$work/reg.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$port}
YML
  docker-registry serve "$work/reg.yml" >/dev/null 2>&1 & reg_pid=$!
  for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && return; sleep 0.1; done
  echo "registry did not start" >&2; exit 1
}

# Prints "seconds peak_rss_kib" of one command.
timed() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.monotonic() - t
if r.returncode: sys.stderr.write(r.stderr.decode()); sys.exit(r.returncode)
print(f"{dt:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}

src="oci:$work/layout:v1"
start_registry
read -r p1 pm1 < <(timed "$PODCI" image copy "$src" "127.0.0.1:$port/bench/podci:v1")
read -r p2 pm2 < <(timed "$PODCI" image copy "$src" "127.0.0.1:$port/bench/podci:v1")
start_registry
read -r s1 _ < <(timed skopeo copy -q --dest-tls-verify=false "$src" "docker://127.0.0.1:$port/bench/skopeo:v1")
read -r s2 _ < <(timed skopeo copy -q --dest-tls-verify=false "$src" "docker://127.0.0.1:$port/bench/skopeo:v1")

peak=$(( (pm1 > pm2 ? pm1 : pm2) / 1024 ))
total=$(du -sm "$work/layout/blobs" | cut -f1)
echo "image: $LAYERS layers, ${total} MiB in an OCI layout; docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null), skopeo $(skopeo --version | awk '{print $3}')"
printf '%-22s %10s %10s\n' "" "podci" "skopeo"
printf '%-22s %9ss %9ss   skopeo/podci = %s\n' "first push" "$p1" "$s1" "$(python3 -c "print(f'{$s1/$p1:.2f}')")"
printf '%-22s %9ss %9ss   skopeo/podci = %s\n' "unchanged re-push" "$p2" "$s2" "$(python3 -c "print(f'{$s2/$p2:.2f}')")"
echo "podci peak memory: ${peak} MiB (target < 64 MiB)"
echo "targets: first push podci <= skopeo: $(python3 -c "print('met' if $p1 <= $s1 else 'NOT met')"); re-push podci <= skopeo/2: $(python3 -c "print('met' if $p2 <= $s2/2 else 'NOT met')"); memory: $([ "$peak" -lt 64 ] && echo met || echo 'NOT met')"
