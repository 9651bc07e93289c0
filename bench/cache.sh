#!/usr/bin/env bash
# Benchmark: `podci cache push/pull` against `tar | zstd -T0 -3` / `zstd -d | tar -x`
# and against `zip -r -q` / `unzip -q` (GitLab Runner's default cache.zip format), on a
# generated ~1 GiB Maven-like tree (~20,000 files: many small poms/sha1s, some big jars).
#
# Usage: bench/cache.sh [WORKDIR]   (default /var/tmp/podci-bench-cache; the tree is
# generated once and reused). Needs: zstd, tar, zip, unzip, python3, /usr/bin/time.
# Targets (issue #4): push and pull >= 0.9x tar+zstd throughput, >= 5x faster than zip;
# second push of the unchanged tree < 5% of the first; peak RSS < 200 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/var/tmp/podci-bench-cache}
TREE=$WORK/project
mkdir -p "$WORK"

if [ ! -f "$TREE/.done" ]; then
  echo "::: generating the Maven-like tree in $TREE"
  rm -rf "$TREE"
  python3 - "$TREE" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
total, files = 0, 0
target = 1 << 30
groups = [f"org/g{g:03d}" for g in range(120)]
pom = ("<project><modelVersion>4.0.0</modelVersion><dependencies>" +
       "<dependency><groupId>org.example</groupId><artifactId>lib</artifactId></dependency>" * 20 +
       "</dependencies></project>\n").encode()
def jar_bytes(n):
    # jars are deflated zips: mostly incompressible, with readable directory parts
    text = (b"META-INF/MANIFEST.MF com/example/Class.class " * 64)
    out = bytearray()
    while len(out) < n:
        out += rnd.randbytes(min(48 * 1024, n - len(out)))
        out += text[: min(len(text), max(0, n - len(out)))]
    return bytes(out[:n])
artifact = 0
while files < 20000 and total < target:
    g = rnd.choice(groups)
    d = os.path.join(root, ".m2/repository", g, f"a{artifact}", "1.0.0")
    os.makedirs(d, exist_ok=True)
    # a few big jars, mostly small ones
    r = rnd.random()
    size = rnd.randint(8 << 20, 40 << 20) if r < 0.008 else rnd.randint(60 << 10, 300 << 10) if r < 0.35 else rnd.randint(2 << 10, 30 << 10)
    size = min(size, target - total) if files > 100 else size
    for name, data in ((f"a{artifact}-1.0.0.jar", jar_bytes(size)), (f"a{artifact}-1.0.0.pom", pom),
                       (f"a{artifact}-1.0.0.jar.sha1", b"%040x\n" % rnd.getrandbits(160)),
                       (f"a{artifact}-1.0.0.pom.sha1", b"%040x\n" % rnd.getrandbits(160)),
                       ("_remote.repositories", b"#NOTE: generated\na.jar>central=\n")):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        total += len(data)
        files += 1
    artifact += 1
print(f"generated {files} files, {total / (1 << 20):.0f} MiB")
PY
  touch "$TREE/.done"
fi
echo "::: building podci (release)"
cargo build --release -q -p podci
PODCI=${CARGO_TARGET_DIR:-target}/release/podci

du -sh --apparent-size "$TREE/.m2" | awk '{print "tree size: " $1}'
echo "files: $(find "$TREE/.m2" -type f | wc -l)"

# Read the tree once so every tool starts with the same warm page cache.
tar -cf - -C "$TREE" .m2 > /dev/null

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
peak_rss() { awk '/Maximum resident set size/ {print int($NF/1024)}' "$1"; }

STORE=$WORK/store
rm -rf "$STORE" "$WORK/store-nofsync" "$WORK/store-level3" "$WORK/out" "$WORK/restore-"*
mkdir -p "$WORK/out"

echo "::: push"
t0=$(now); /usr/bin/time -v -o "$WORK/push1.time" "$PODCI" cache push --store "$STORE" --key maven --path .m2/repository --project-dir "$TREE"; t1=$(now)
PUSH1=$(elapsed "$t0" "$t1")
t0=$(now); /usr/bin/time -v -o "$WORK/push2.time" "$PODCI" cache push --store "$STORE" --key maven --path .m2/repository --project-dir "$TREE"; t1=$(now)
PUSH2=$(elapsed "$t0" "$t1")
t0=$(now); (cd "$TREE" && tar -cf - .m2/repository | zstd -q -T0 -3 -o "$WORK/out/cache.tar.zst"); t1=$(now)
TARZ=$(elapsed "$t0" "$t1")
t0=$(now); "$PODCI" cache push --zstd-level 3 --store "$WORK/store-level3" --key maven --path .m2/repository --project-dir "$TREE"; t1=$(now)
PUSH3=$(elapsed "$t0" "$t1")
SIZE_L3=$(du -b "$WORK/store-level3/blobs" | tail -1 | cut -f1)
t0=$(now); "$PODCI" cache push --no-fsync --store "$WORK/store-nofsync" --key maven --path .m2/repository --project-dir "$TREE"; t1=$(now)
PUSHNF=$(elapsed "$t0" "$t1")
t0=$(now); (cd "$TREE" && tar -cf - .m2/repository | zstd -q -T0 -3 -c | dd of="$WORK/out/durable.tar.zst" bs=1M conv=fsync status=none); t1=$(now)
TARZD=$(elapsed "$t0" "$t1")
t0=$(now); (cd "$TREE" && zip -r -q -y "$WORK/out/cache.zip" .m2/repository); t1=$(now)
ZIP=$(elapsed "$t0" "$t1")

echo "::: pull"
mkdir -p "$WORK/restore-podci" "$WORK/restore-tar" "$WORK/restore-zip"
# Flush the pushes' dirty pages first so no pull pays for earlier writeback.
sync
t0=$(now); /usr/bin/time -v -o "$WORK/pull.time" "$PODCI" cache pull --store "$STORE" --key maven --project-dir "$WORK/restore-podci"; t1=$(now)
PULL=$(elapsed "$t0" "$t1")
sync
t0=$(now); zstd -q -d -c "$WORK/out/cache.tar.zst" | tar -x -C "$WORK/restore-tar"; t1=$(now)
UNTARZ=$(elapsed "$t0" "$t1")
sync
t0=$(now); unzip -q "$WORK/out/cache.zip" -d "$WORK/restore-zip"; t1=$(now)
UNZIP=$(elapsed "$t0" "$t1")

# the restore must have the same content as the source
if ! diff -r "$TREE/.m2/repository" "$WORK/restore-podci/.m2/repository" >/dev/null; then
  echo "ERROR: podci restore differs from the source"; exit 1
fi

SIZE_PODCI=$(du -b "$STORE/blobs" | tail -1 | cut -f1)
SIZE_TARZ=$(stat -c %s "$WORK/out/cache.tar.zst")
SIZE_ZIP=$(stat -c %s "$WORK/out/cache.zip")
RSS_PUSH=$(peak_rss "$WORK/push1.time"); RSS_PULL=$(peak_rss "$WORK/pull.time")

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo
echo "=== results (seconds; ratio = peer time / podci time, higher is better for podci)"
echo "    podci defaults: zstd level 1, fsync on (directory store); peers: zstd -3, no fsync unless noted"
printf '%-34s %8s   %s\n' "podci cache push"               "$PUSH1" "archive $((SIZE_PODCI >> 20)) MiB, peak RSS ${RSS_PUSH} MiB"
printf '%-34s %8s   %s\n' "tar -cf - | zstd -T0 -3"        "$TARZ"  "archive $((SIZE_TARZ >> 20)) MiB   ratio $(ratio "$TARZ" "$PUSH1")x (target >= 0.9)"
printf '%-34s %8s   %s\n' "podci cache push --zstd-level 3"  "$PUSH3" "archive $((SIZE_L3 >> 20)) MiB   ratio tar+zstd/podci $(ratio "$TARZ" "$PUSH3")x"
printf '%-34s %8s   %s\n' "podci cache push --no-fsync"    "$PUSHNF" "ratio tar+zstd/podci $(ratio "$TARZ" "$PUSHNF")x (same durability as the pipeline)"
printf '%-34s %8s   %s\n' "tar | zstd | dd conv=fsync"     "$TARZD" "ratio $(ratio "$TARZD" "$PUSH1")x vs podci push (both durable)"
printf '%-34s %8s   %s\n' "zip -r -q"                      "$ZIP"   "archive $((SIZE_ZIP >> 20)) MiB   ratio $(ratio "$ZIP" "$PUSH1")x (target >= 5)"
printf '%-34s %8s   %s\n' "podci cache push (unchanged)"   "$PUSH2" "$(python3 -c "print(f'{100 * $PUSH2 / $PUSH1:.1f}')")% of first push (target < 5%)"
printf '%-34s %8s   %s\n' "podci cache pull"               "$PULL"  "peak RSS ${RSS_PULL} MiB"
printf '%-34s %8s   %s\n' "zstd -d | tar -x"               "$UNTARZ" "ratio $(ratio "$UNTARZ" "$PULL")x (target >= 0.9)"
printf '%-34s %8s   %s\n' "unzip -q"                       "$UNZIP" "ratio $(ratio "$UNZIP" "$PULL")x (target >= 5)"
