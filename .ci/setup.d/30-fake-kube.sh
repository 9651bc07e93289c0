# podci-fake-kube: its kubectl tests need kubectl (the machines' image ships it from the
# `kubectl` apt package). The fake server itself needs nothing installed: each test
# starts its own on 127.0.0.1.
if ! command -v kubectl >/dev/null 2>&1; then
  apt_install kubectl || echo "WARNING: kubectl could not be installed; the kubectl tests will fail under CI" >&2
fi
