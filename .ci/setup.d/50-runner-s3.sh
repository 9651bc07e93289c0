# podci run's S3 cache tests (crates/runner/tests/runner_s3_cache.rs): moto as the S3
# server (each test starts its own on 127.0.0.1), zip to make a cache as GitLab Runner
# would, util-linux's unshare for the Kubernetes variant's container roots.
apt_install zip util-linux
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
