# podci-k8s: its pod tests validate every generated Pod and Secret against the
# Kubernetes schema with kubernetes-validate (PyPI); the executor tests run jobs in the
# fake server's container roots (unshare, setsid from util-linux; tail from coreutils;
# python3 serves the service-container test).
apt_install util-linux coreutils python3
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
