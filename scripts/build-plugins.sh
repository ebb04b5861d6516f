#!/usr/bin/env bash
# Builds floe's plugins into plugins/dist/:
#   validator.wasm, enricher.wasm          the default plugins (Rust, plugins/ workspace)
#   testing/*.wasm                         plugins that misbehave on purpose, for floe's tests
#   examples/guide_validator_py.wasm       the guide's rules in Python (componentize-py)
#   examples/guide_validator_js.wasm       the guide's rules in JavaScript (componentize-js)
# The example components are rebuilt only when their source or the WIT changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${FLOE_CACHE:-$ROOT/.cache}/venv
WIT="$ROOT/wit/floe-plugin@0.3.0"
DIST="$ROOT/plugins/dist"
mkdir -p "$DIST/testing" "$DIST/examples"

cd "$ROOT/plugins"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q '^wasm32-wasip2$'; then
  echo "installing the Rust target wasm32-wasip2"
  rustup target add wasm32-wasip2 >/dev/null
fi
cargo build --release --locked --target wasm32-wasip2 --quiet
out=target/wasm32-wasip2/release
cp "$out/validator.wasm" "$out/enricher.wasm" "$DIST/"
cp "$out/misbehave.wasm" "$out/future_wit.wasm" "$DIST/testing/"

# stamp FILE...: a hash of the inputs, to skip rebuilding an unchanged example.
stamp() { cat "$@" "$WIT"/*.wit | sha1sum | cut -c1-16; }

py_src="$ROOT/plugins/examples/python/guide_validator.py"
py_out="$DIST/examples/guide_validator_py.wasm"
if [ "$(cat "$py_out.stamp" 2>/dev/null)" != "$(stamp "$py_src")" ]; then
  [ -x "$VENV/bin/componentize-py" ] || { echo "componentize-py missing: run scripts/stack.sh install" >&2; exit 1; }
  tmp=$(mktemp -d)
  (cd "$ROOT/plugins/examples/python" && "$VENV/bin/componentize-py" -d "$WIT" -w plugin \
    componentize guide_validator -o "$tmp/out.wasm") >"$tmp/log" 2>&1 \
    || { cat "$tmp/log" >&2; exit 1; }
  mv "$tmp/out.wasm" "$py_out"
  rm -rf "$tmp"
  stamp "$py_src" >"$py_out.stamp"
fi

js_dir="$ROOT/plugins/examples/javascript"
js_out="$DIST/examples/guide_validator_js.wasm"
if [ "$(cat "$js_out.stamp" 2>/dev/null)" != "$(stamp "$js_dir/guide_validator.js" "$js_dir/package-lock.json")" ]; then
  if [ ! -x "$js_dir/node_modules/.bin/componentize-js" ]; then
    # `npm install`, not `npm ci`: this registry mirror leaves optional platform packages out
    # of the lock file, which `npm ci` refuses; the versions stay pinned by the lock file.
    (cd "$js_dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null) \
      || { echo "npm install failed in $js_dir" >&2; exit 1; }
  fi
  # No wasi:http (componentize-js imports it by default; floe grants no network).
  (cd "$js_dir" && ./node_modules/.bin/componentize-js guide_validator.js --wit "$WIT" -n plugin \
    -d http fetch-event -o "$js_out.tmp") >/dev/null
  mv "$js_out.tmp" "$js_out"
  stamp "$js_dir/guide_validator.js" "$js_dir/package-lock.json" >"$js_out.stamp"
fi
echo "plugins built: $(cd "$DIST" && ls *.wasm testing/*.wasm examples/*.wasm | tr '\n' ' ')"
