# Real RE2 (Google's google-re2 Python bindings) for the differential test of podci's
# rules:if regex handling: crates/ci-model/tests/expr_re2_differential.rs.
if ! python3 -c 'import re2' >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  python3 -m pip install -q --root-user-action=ignore google-re2==1.1.20251105 2>/dev/null \
    || python3 -m pip install -q --root-user-action=ignore --break-system-packages google-re2==1.1.20251105
fi
