# Shells the step-script tests run rendered scripts with:
# crates/ci-model/tests/script_run.rs (bash, dash as /bin/sh, coreutils' sleep).
apt_install bash dash coreutils
