#!/usr/bin/env bash
# Builds floe's plugins (plugins/, a cargo workspace for wasm32-wasip2) and copies the
# components to plugins/dist/: validator.wasm, enricher.wasm, and testing/*.wasm (plugins that
# misbehave on purpose, for floe's own tests).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/plugins"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q '^wasm32-wasip2$'; then
  echo "installing the Rust target wasm32-wasip2"
  rustup target add wasm32-wasip2 >/dev/null
fi
cargo build --release --locked --target wasm32-wasip2 --quiet
out=target/wasm32-wasip2/release
mkdir -p dist/testing
cp "$out/validator.wasm" "$out/enricher.wasm" dist/
cp "$out/misbehave.wasm" "$out/future_wit.wasm" dist/testing/
echo "plugins built: $(cd dist && ls *.wasm testing/*.wasm | tr '\n' ' ')"
