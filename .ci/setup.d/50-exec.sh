# podci exec: the shell executor's tests need git and bash; bench/exec.sh compares with
# gitlab-ci-local@4.70.1 (npm, needs rsync), installed into a private prefix (not on PATH).
apt_install git bash rsync
GCL_DIR=${GCL_DIR:-/var/tmp/podci-bench/gitlab-ci-local}
if [ ! -x "$GCL_DIR/node_modules/.bin/gitlab-ci-local" ]; then
  command -v npm >/dev/null 2>&1 || apt_install npm
  mkdir -p "$GCL_DIR"
  npm install --silent --no-audit --no-fund --prefix "$GCL_DIR" gitlab-ci-local@4.70.1 >/dev/null
fi
# The docker executor's tests start their own dockerd (no bridge, no iptables) and import
# an image made from busybox-static.
apt_install docker.io busybox-static tar
