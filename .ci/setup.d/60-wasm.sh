# Previewer (bindings/wasm): the wasm target, wasm-bindgen-cli at exactly Cargo.lock's
# wasm-bindgen version (build + wasm-bindgen-test-runner), headless Chromium and its
# driver for the wasm-bindgen and page tests, brotli for bench/wasm.sh.
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown >/dev/null
apt_install chromium chromium-driver brotli
wb_want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)
wb_have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$wb_have" != "$wb_want" ] || ! command -v wasm-bindgen-test-runner >/dev/null; then
  # --locked first; a lock pinned to a crate version the registry no longer serves
  # (seen: webpki-roots 1.0.11) falls back to a fresh resolution of the same CLI version.
  cargo install -q wasm-bindgen-cli --version "$wb_want" --locked 2>/dev/null \
    || cargo install -q wasm-bindgen-cli --version "$wb_want"
fi
