#!/usr/bin/env bash
# `make test`: install what is missing, build, start a fresh local stack, run every test
# (Rust unit tests, then the end-to-end tests against the real components).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${FLOE_CACHE:-$ROOT/.cache}/venv

bash scripts/stack.sh install
echo "== lint (rustfmt, clippy)"
cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
echo "== build (floe, then the plugins for wasm32-wasip2)"
cargo build --release --locked
bash scripts/build-plugins.sh
(cd plugins && cargo fmt --all --check && cargo clippy --release --locked --target wasm32-wasip2 --quiet -- -D warnings)
echo "== unit tests"
cargo test --release --locked
# The plugins' allocator is plain Rust: its tests run natively.
(cd plugins && cargo test --release --locked -p plugin-alloc)
echo "== fresh local stack"
bash scripts/stack.sh reset
bash scripts/stack.sh up
echo "== end-to-end tests (logs of each floe run: .cache/test-logs/)"
status=0
"$VENV/bin/python" -m pytest tests/integration -v -p no:cacheprovider || status=$?
if [ "$status" -ne 0 ]; then
  echo "end-to-end tests failed; stack logs are in ${FLOE_CACHE:-$ROOT/.cache}/stack/logs"
fi
bash scripts/stack.sh down
exit "$status"
