#!/usr/bin/env bash
# Runs the relay and the reference peer (Node `ws`, bench/peer/relay.js) through the same
# scenarios, one server at a time: server pinned to core 0, load generator to core 1. Prints
# each result, then a table with the relay/peer ratios. Loopback only.
#
#   bench/run.sh                 every scenario at full scale (a few minutes)
#   bench/run.sh fanout storm    only those scenarios
#
# Besides the side-by-side scenarios, the relay alone runs two more: its typed JSON
# endpoint against its plain one at the same fixed load, and 19,000 idle connections.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout latency idle storm typed hold)
command -v taskset >/dev/null || fail "taskset (util-linux) is needed to pin processes to cores"
command -v node >/dev/null || apt_install nodejs npm

step "building the relay and the load generator (release)"
cargo build --release -p backend -p relay-bench
step "installing the peer's dependencies (npm ws)"
(cd bench/peer && npm ci --no-audit --no-fund --loglevel=error)

work=$(mktemp -d)
results="$work/results.jsonl"
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for_port PORT: until something listens there (bounded).
wait_for_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nothing listens on port $1"
}

start_relay() {
  rm -rf "$work/data"
  # Real costs included: SQLite with fsync, limits on (only set high enough for a push load).
  taskset -c 0 target/release/relay --listen 127.0.0.1:18080 --data-dir "$work/data" \
    --static-dir /nonexistent --rate-per-sec 1000000 --rate-burst 1000000 \
    --max-connections 19500 >"$work/relay.log" 2>&1 &
  server_pid=$!
  wait_for_port 18080
  url=ws://127.0.0.1:18080/
}

start_peer() {
  PORT=18081 taskset -c 0 node bench/peer/relay.js >"$work/peer.log" 2>&1 &
  server_pid=$!
  wait_for_port 18081
  url=ws://127.0.0.1:18081/
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# bench LABEL ARGS...: one run of the load generator on core 1, its JSON lines kept.
bench() {
  local label=$1
  shift
  taskset -c 1 target/release/relay-bench "$@" --pid "$server_pid" --label "$label" \
    >"$work/run.txt" || true
  grep -v '^{' "$work/run.txt" || true
  grep '^{' "$work/run.txt" >>"$results" || true
}

for scenario in "${scenarios[@]}"; do
  case "$scenario" in
    typed)
      # The same fixed load on both endpoints (8,000 messages/s to 110 clients), so server
      # CPU per delivery compares the protocols, not the load generator's speed with each.
      start_relay
      step "plain endpoint at a fixed rate"
      bench relay-plain fanout --rate 800 --url "$url"
      step "typed endpoint at the same rate"
      bench relay-typed fanout --rate 800 --protocol typed --url "${url}ws"
      stop_server
      ;;
    hold)
      start_relay
      step "19,000 idle connections"
      bench relay-hold idle --connections 19000 --url "$url"
      stop_server
      ;;
    *)
      for label in relay peer; do
        "start_$label"
        step "$scenario against $label"
        bench "$label" "$scenario" --url "$url"
        stop_server
      done
      ;;
  esac
done

step "relay against the Node ws peer (same machine, same run)"
node - "$results" <<'JS'
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n').map(JSON.parse);
const find = (scenario, server) => rows.find(r => r.scenario === scenario && r.server === server);
const metrics = [
  ['fanout', 'deliveries_per_cpu_s', 'deliveries per server CPU-second', true],
  ['latency', 'p99_ms', 'p99 latency (ms), 1000 subscribers at 100 msg/s', false],
  ['idle', 'bytes_per_connection', 'server memory per idle connection (bytes)', false],
  ['storm', 'total_s', 'connect storm: time to all deliveries (s)', false],
];
console.log(`${'measurement'.padEnd(52)} ${'relay'.padStart(12)} ${'node ws'.padStart(12)} ${'relay better by'.padStart(16)}`);
for (const [scenario, key, label, higherIsBetter] of metrics) {
  const relay = find(scenario, 'relay'), peer = find(scenario, 'peer');
  if (!relay || !peer) continue;
  const ratio = higherIsBetter ? relay[key] / peer[key] : peer[key] / relay[key];
  const fmt = v => (v >= 100 ? Math.round(v).toLocaleString('en') : v.toFixed(3));
  console.log(`${label.padEnd(52)} ${fmt(relay[key]).padStart(12)} ${fmt(peer[key]).padStart(12)} ${(ratio.toFixed(2) + 'x').padStart(16)}`);
}
const plain = rows.find(r => r.server === 'relay-plain');
const typed = rows.find(r => r.server === 'relay-typed');
if (plain && typed) {
  const key = 'deliveries_per_cpu_s';
  console.log(`typed /ws per server CPU-second at 8,000 msg/s: ${Math.round(typed[key]).toLocaleString('en')}, plain ${Math.round(plain[key]).toLocaleString('en')} (typed is ${(100 * typed[key] / plain[key]).toFixed(0)}% of plain)`);
}
const hold = rows.find(r => r.server === 'relay-hold');
if (hold) {
  console.log(`relay holding ${hold.connections.toLocaleString('en')} idle connections: ${Math.round(hold.bytes_per_connection).toLocaleString('en')} bytes each`);
}
JS
