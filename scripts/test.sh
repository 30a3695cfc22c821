#!/usr/bin/env bash
# Sets everything up and runs every test layer; fails if any layer fails or runs no tests.
#
#   1. formatting              cargo fmt --check
#   2. lints                   clippy -D warnings, native and wasm32; rustdoc -D warnings
#   3. unit + integration      cargo test (protocol, relay against real sockets, UI state)
#   4. web client build        trunk build --release, precompressed (also what the end-to-end
#                              test serves), failing over the wasm size budget
#   5. browser tests           wasm-bindgen-test in headless Chromium against a live relay
#   6. HTTP API                examples/ (PHP, Python, curl) publishing to live typed and plain
#                              clients; the relay held to docs/openapi.yaml (explicit requests
#                              for every operation and status, then schemathesis)
#   7. end to end              two Chromium sessions + a plain client over WebDriver; axe-core
#                              accessibility checks of the page's main states
#   8. benchmark smoke         a few seconds of every bench scenario, failing on any lost message
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
source scripts/lib.sh
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
# The Redis engine's tests run against real redis-server processes (setup.sh --test installs
# the package); here a missing one is a failure, not a skip.
export RELAY_TEST_REDIS=required
# On CI every build is cold: incremental state would only take disk (about 1.4 GB).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

logs=$(mktemp -d)
relay_pid=
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  rm -rf "$logs"
}
trap cleanup EXIT
timings=()

# layer NAME COMMAND...: runs one layer, showing its output, and records its time. With
# MIN_TESTS set, also fails unless the output reports at least that many passing tests.
layer() {
  local name=$1 started=$SECONDS log="$logs/layer.log"
  shift
  step "$name"
  if ! "$@" 2>&1 | tee "$log"; then
    fail "$name failed"
  fi
  if [ -n "${MIN_TESTS:-}" ]; then
    local passed
    passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{n += $1} END {print n + 0}')
    [ "$passed" -ge "$MIN_TESTS" ] || fail "$name ran $passed tests; expected at least $MIN_TESTS"
  fi
  timings+=("$(printf '%-24s %4ss' "$name" $((SECONDS - started)))")
}

layer "format" cargo fmt --all -- --check
layer "clippy (native)" cargo clippy --workspace --all-targets --all-features -- -D warnings
layer "clippy (wasm32)" cargo clippy -p common -p frontend --target wasm32-unknown-unknown \
  --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" layer "docs (broken links)" cargo doc --workspace --no-deps
MIN_TESTS=75 layer "unit + integration" cargo test --workspace
layer "web client build" build_web_client
# Issue 5's size budget. Sizes are deterministic (locked dependencies, pinned tools), so
# going over is a regression to look at, not noise.
WASM_GZIP_BUDGET=100000
wasm=$(ls dist/*.wasm)
wasm_gzipped=$(gzip -9 -c "$wasm" | wc -c)
[ "$wasm_gzipped" -le "$WASM_GZIP_BUDGET" ] ||
  fail "the web client is $wasm_gzipped bytes gzipped, over the $WASM_GZIP_BUDGET-byte budget"

# The browser tests and the benchmark smoke talk to a real relay process.
# start_relay NAME ARGS...: runs the debug relay on a free port with its own data; sets
# relay_address and relay_pid.
start_relay() {
  local name=$1 log="$logs/$1.log"
  shift
  target/debug/relay --listen 127.0.0.1:0 --data-dir "$logs/$name-data" "$@" >"$log" 2>&1 &
  relay_pid=$!
  relay_address=
  for _ in $(seq 100); do
    relay_address=$(grep -Eo 'listening on http://[0-9.:]+' "$log" | sed 's|.*http://||' || true)
    [ -n "$relay_address" ] && return 0
    sleep 0.1
  done
  fail "the relay did not start: $(cat "$log")"
}
stop_relay() {
  kill "$relay_pid" && wait "$relay_pid" 2>/dev/null || true
  relay_pid=
}

start_relay browser --static-dir dist
export RELAY_TEST_WS_URL="ws://$relay_address/ws"
MIN_TESTS=6 layer "browser (wasm)" cargo test -p frontend --target wasm32-unknown-unknown
stop_relay

# The HTTP API (issue 12), with the Python of .tools/venv (setup.sh --test). Each script
# starts and stops its own relays from the debug build, since they need several configured
# differently (no key, a tiny rate, short retention). Both print "N passed, N failed".
MIN_TESTS=8 layer "HTTP API examples" .tools/venv/bin/python scripts/api_examples.py target/debug/relay
MIN_TESTS=200 layer "HTTP API conformance" \
  .tools/venv/bin/python scripts/api_conformance.py target/debug/relay

# --workspace: the same features as the unit + integration layer, so nothing is rebuilt.
MIN_TESTS=3 layer "end to end" cargo test --workspace --test e2e -- --ignored

# Built with the tests' features (dev-dependencies included), like target/debug/relay, so
# that the dependencies are not compiled a second time with other features.
cargo build -q --workspace --bins --tests
# The smoke publishes through the HTTP API too, so the relay gets a key and a high API rate.
bench_key=relay-bench-smoke-key-0123456789
start_relay bench --rate-per-sec 1000000 --rate-burst 1000000 \
  --api-key "$bench_key" --api-rate-per-sec 1000000 --api-rate-burst 1000000
layer "benchmark smoke" target/debug/relay-bench smoke --url "ws://$relay_address/" \
  --pid "$relay_pid" --label relay --api-key "$bench_key"
stop_relay

step "summary"
printf '  %s\n' "${timings[@]}"
printf '  %-24s %s bytes raw, %s bytes gzipped\n' "web client wasm" \
  "$(wc -c <"$wasm")" "$wasm_gzipped"
ok "all layers passed"
