# podci-cache tests: zip/unzip for cache.zip interop, git for `untracked`,
# moto (S3 server, started by the tests on 127.0.0.1), zstd for bench/cache.sh.
apt_install zip unzip git zstd
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
