# podci-python (bindings/python): maturin builds the wheel, pytest runs the suite against
# the installed wheel, mypy checks the examples with the shipped stubs, PyYAML reads the
# GitLab payload fixtures. bindings/python/tests/wheel.rs drives all of it from
# `cargo test`. The registry tests reuse 40-registry.sh's docker-registry and htpasswd.
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
if ! python3 -c 'import maturin, pytest, mypy, yaml' >/dev/null 2>&1 || ! command -v maturin >/dev/null 2>&1; then
  # Debian's system Python refuses pip installs without --break-system-packages.
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      'maturin>=1.16,<2' pytest mypy pyyaml 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages 'maturin>=1.16,<2' pytest mypy pyyaml
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
apt_install docker-registry apache2-utils
# podci.run tests make git repositories and run their jobs with bash (shell executor);
# podci.k8s tests validate Pods with kubernetes-validate's Python API (50-k8s.sh installs
# it too; checked here so this file stands alone).
apt_install git bash
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages kubernetes-validate
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
