#!/usr/bin/env bash
# Sets everything up, builds the web client and runs the relay with it on
# http://localhost:8080. Extra arguments go to the relay (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib.sh
step "building the web client (release, precompressed)"
build_web_client
step "starting the relay on http://localhost:8080 (Ctrl-C to stop)"
exec cargo run --release -p backend --bin relay -- "$@"
