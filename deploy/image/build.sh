#!/usr/bin/env bash
# Builds podci's own container image without a container engine and pushes it:
#   bash deploy/image/build.sh REGISTRY/REPO:TAG [podci image append options...]
# e.g. bash deploy/image/build.sh registry.example.com/podci/podci:0.1.0
#
# Two layers on an empty base (`podci image append --base scratch`):
#   1. a minimal base: busybox-static (Debian's busybox-static) as /bin/sh and the
#      usual tools, /etc/passwd with the unprivileged user podci (65532), /tmp;
#   2. the podci binary at /usr/bin/podci and the shared libraries it links to
#      (as `ldd` lists them), so a glibc build runs without a distribution underneath.
#
# PODCI_BIN   the podci binary to package (default: target/release/podci, built with
#             `cargo build --release -p podci` when missing)
# BUSYBOX     a statically linked busybox (default: /bin/busybox from busybox-static)
# Registry credentials come from `podci image login` (Docker's config.json) or from
# --username with --password-stdin: never from this script's arguments.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 REGISTRY/REPO:TAG [podci image append options...]" >&2
  exit 2
fi
ref=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)

bin=${PODCI_BIN:-}
if [ -z "$bin" ]; then
  bin=$root/target/release/podci
  if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release --locked -p podci)
  fi
fi
[ -x "$bin" ] || { echo "build.sh: $bin is not an executable podci" >&2; exit 1; }

busybox=${BUSYBOX:-}
if [ -z "$busybox" ]; then
  for c in /bin/busybox /usr/bin/busybox; do
    [ -x "$c" ] && { busybox=$c; break; }
  done
fi
[ -n "$busybox" ] || { echo "build.sh: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build.sh: $busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=$work/base
app=$work/app

# --- layer 1: the minimal base ------------------------------------------------------------
mkdir -p "$base/bin" "$base/etc" "$base/tmp" "$base/home/podci" "$base/usr/bin"
chmod 1777 "$base/tmp"
cp "$busybox" "$base/bin/busybox"
for applet in sh ash cat cp env ls mkdir mv rm sleep printf echo test id dirname \
  basename wget tar gzip; do
  ln -s busybox "$base/bin/$applet"
done
cat >"$base/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
podci:x:65532:65532:podci:/home/podci:/bin/sh
PASSWD
cat >"$base/etc/group" <<'GROUP'
root:x:0:
podci:x:65532:
GROUP
printf 'hosts: files dns\n' >"$base/etc/nsswitch.conf"

# --- layer 2: podci and its shared libraries ----------------------------------------------
mkdir -p "$app/usr/bin"
cp "$bin" "$app/usr/bin/podci"
# Each library at the path the dynamic loader looks for it (ldd prints "=> /path" or the
# loader's own absolute path).
ldd "$bin" 2>/dev/null | while read -r a b c _; do
  lib=""
  if [ "$b" = "=>" ] && [ "${c#/}" != "$c" ]; then
    lib=$c
  elif [ "${a#/}" != "$a" ]; then
    lib=$a
  fi
  [ -n "$lib" ] || continue
  mkdir -p "$app$(dirname "$lib")"
  cp -L "$lib" "$app$lib"
done
# CA certificates for HTTPS to GitLab and registries.
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$app/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$app/etc/ssl/certs/"
fi

exec "$bin" image append --base scratch \
  --layer "$base:/" --layer "$app:/" \
  --entrypoint '["/usr/bin/podci"]' --cmd '["run"]' \
  --user 65532:65532 --workdir /home/podci \
  --env PATH=/usr/bin:/bin --env HOME=/home/podci \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --expose 9252/tcp \
  --label org.opencontainers.image.title=podci \
  --tag "$ref" "$@"
