# Running podci in a cluster (deploy/, issue 10): crates/runner/tests/install.rs checks
# the chart's values.schema.json with check-jsonschema (PyPI), renders deploy/manifests
# with kubectl (50-k8s / 30-fake-kube) and validates it with kubernetes-validate
# (50-k8s.sh), and builds podci's image with deploy/image/build.sh from busybox-static,
# pushed to Debian's docker-registry (started by the test itself). chroot (coreutils)
# runs the image's podci from its unpacked layers. No helm binary is installable here.
apt_install busybox-static docker-registry coreutils tar
command -v kubectl >/dev/null 2>&1 || apt_install kubectl
if ! command -v check-jsonschema >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  # Debian's system Python refuses pip installs without --break-system-packages.
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'check-jsonschema>=0.29' 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages 'check-jsonschema>=0.29'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages kubernetes-validate
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
