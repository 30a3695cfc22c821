#!/usr/bin/env bash
# Runs the relay and the reference peer (Node `ws`, bench/peer/relay.js) through the same
# scenarios, one server at a time: server pinned to core 0, load generator to core 1. Prints
# each result, then a table with the relay/peer ratios. Loopback only.
#
#   bench/run.sh                 every scenario at full scale (a few minutes)
#   bench/run.sh fanout storm    only those scenarios
#   bench/run.sh churn           relay only, not in the default list: memory under 100,000
#                                short connections over 5,000 rooms, SQLite store then memory
#                                (about 2.5 minutes)
#   bench/run.sh durability      relay only, not in the default list: latency with SQLite next
#                                to the memory engine, on this disk and on one 30 ms slower per
#                                sync; and this disk's fdatasync latency
#   bench/run.sh catchup         relay only, not in the default list: live latency without and
#                                with clients recovering 10,000 messages (about a minute)
#   bench/run.sh api             relay only, not in the default list: the HTTP server API
#                                (issue 12) against the WebSocket `send`: publishes per relay
#                                CPU-second, and delivery latency to 1,000 subscribers at 100
#                                publishes/s (about 2.5 minutes)
#   bench/run.sh cluster         relay only, not in the default list: the Redis engine (issue
#                                14) against SQLite in the same run: typed fan-out per relay
#                                CPU-second on SQLite, on Redis with one node and with two
#                                (clients split), and latency to 1,000 subscribers on one
#                                node and split over two; the same two-node runs on a Redis
#                                Cluster of three shards; three alternating rounds (about 6
#                                minutes)
#   bench/run.sh publish-rate    relay only, not in the default list: issue 12's throughput
#                                target, durable `POST /api/publish` per relay CPU-second
#                                from wrk (32 to 256 keep-alive connections) and from the
#                                project's own checking client, beside floor-http as the
#                                machine's yardstick and the relay storing nothing
#                                (`--store memory`), three alternating rounds (about 8
#                                minutes)
#   bench/run.sh http-floor      relay only, not in the default list: `POST /api/publish` from
#                                32 keep-alive connections against the least an HTTP endpoint
#                                can do here (bench/src/bin/floor-http.rs, hand-written and
#                                hyper) and the relay with the memory store (rooms empty, or
#                                held by one member each): requests per server CPU-second,
#                                three alternating rounds (about 3 minutes)
#
# Besides the side-by-side scenarios, the relay alone runs two more: its typed JSON
# endpoint against its plain one at the same fixed load, and 19,000 idle connections. The
# latency scenario also runs `floor-relay` (bench/src/bin), a bare blocking send loop: the
# least any relay can do on this machine.
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
  [ -n "${second_pid:-}" ] && kill "$second_pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  [ -n "${shard_pids:-}" ] && kill "${shard_pids[@]}" 2>/dev/null || true
  # BENCH_RESULTS=FILE keeps every run's JSON line (samples included).
  [ -n "${BENCH_RESULTS:-}" ] && cp "$results" "$BENCH_RESULTS"
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

# start_relay [ARGS...]: a fresh relay, with ARGS added to its flags.
start_relay() {
  rm -rf "$work/data"
  # Real costs included: SQLite with fsync, limits on (only set high enough for a push load).
  taskset -c 0 target/release/relay --listen 127.0.0.1:18080 --data-dir "$work/data" \
    --static-dir /nonexistent --rate-per-sec 1000000 --rate-burst 1000000 \
    --max-connections 19500 "$@" >"$work/relay.log" 2>&1 &
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

start_floor() {
  taskset -c 0 target/release/floor-relay 127.0.0.1:18082 >"$work/floor.log" 2>&1 &
  server_pid=$!
  wait_for_port 18082
  url=ws://127.0.0.1:18082/
}

# start_floor_http MODE: the bare HTTP endpoint, `threads` (hand-written) or `hyper`.
start_floor_http() {
  taskset -c 0 target/release/floor-http --mode "$1" 127.0.0.1:18083 >"$work/floor.log" 2>&1 &
  server_pid=$!
  wait_for_port 18083
  url=ws://127.0.0.1:18083/
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
  if [ -n "${second_pid:-}" ]; then
    kill "$second_pid" 2>/dev/null || true
    wait "$second_pid" 2>/dev/null || true
    second_pid=
  fi
}

# start_second_relay ARGS...: another relay on port 18084 (a second node), also on core 0.
start_second_relay() {
  taskset -c 0 target/release/relay --listen 127.0.0.1:18084 --data-dir "$work/data2" \
    --static-dir /nonexistent --rate-per-sec 1000000 --rate-burst 1000000 \
    --max-connections 19500 "$@" >"$work/relay2.log" 2>&1 &
  second_pid=$!
  wait_for_port 18084
}

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# bench LABEL ARGS...: one run of the load generator on core 1, its JSON lines kept. When it
# fails against the relay, the end of the relay's log says what the relay saw.
bench() {
  local label=$1 status=0
  shift
  taskset -c 1 target/release/relay-bench "$@" --pid "$server_pid" --label "$label" \
    >"$work/run.txt" || status=$?
  grep -v '^{' "$work/run.txt" || true
  grep '^{' "$work/run.txt" >>"$results" || true
  if [ "$status" -ne 0 ] && [[ "$label" == relay* ]] && [ -f "$work/relay.log" ]; then
    echo "relay-bench failed (exit $status); the end of the relay's log:"
    tail -n 20 "$work/relay.log"
  fi
}

# wrk_publish CONNECTIONS SECONDS [STORE]: one wrk run of bench/wrk/publish.lua against the relay
# (started with `--store STORE`, sqlite if not given)
# with its `api_key`, on core 1; the relay's CPU is read around it. Checks the answers (wrk
# ran, no socket error, none but 2xx) and that the tops of the run's eight rooms (their
# newest offsets, from `GET /api/rooms`: offsets are never reused, so the sum counts every
# message published) add up to the answered publishes, plus at most one unanswered request
# per connection. Keeps a JSON line; a failed check fails the run, not the script.
wrk_publish() {
  local connections=$1 seconds=$2 store=${3:-sqlite} run before after out status=0 tops
  run="wrk$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n')"
  before=$(cpu_ticks "$server_pid")
  out=$(API_KEY=$api_key RUN=$run taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" \
    --latency -s bench/wrk/publish.lua http://127.0.0.1:18080) || status=$?
  after=$(cpu_ticks "$server_pid")
  tops=$(curl -fsS -H "Authorization: Bearer $api_key" http://127.0.0.1:18080/api/rooms |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const run=process.argv[1];
      const rooms=JSON.parse(s).rooms.filter(r=>r.room.startsWith(run+"-"));
      console.log(rooms.length===8?rooms.reduce((n,r)=>n+r.top,0):-1)})' "$run") || tops=-1
  WRK_OUT=$out node - "$connections" "$seconds" $((after - before)) "$tops" "$status" "$store" \
    >>"$results" <<'JS'
const [connections, seconds, ticks, tops, status] = process.argv.slice(2, 7).map(Number);
const store = process.argv[7];
const out = process.env.WRK_OUT;
const num = re => { const m = out.match(re); return m ? Number(m[1]) : 0; };
const ms = p => {
  const m = out.match(new RegExp(`^\\s*${p}%\\s+([0-9.]+)(us|ms|s)\\s*$`, 'm'));
  return m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2]] : null;
};
const requests = num(/(\d+) requests in/);
const socketErrors = (out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/) || [])
  .slice(1).reduce((n, x) => n + Number(x), 0);
const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
const cpu = ticks / 100;
const failures = socketErrors + non2xx +
  (status !== 0 || requests === 0 || tops < requests || tops > requests + connections ? 1 : 0);
const row = {
  scenario: 'publish-rate', server: 'relay-publish-wrk', tool: 'wrk', store, connections, seconds,
  requests, tops, socket_errors: socketErrors, non_2xx: non2xx, wrk_status: status, failures,
  server_cpu_s: cpu,
  requests_per_s: requests / seconds, requests_per_cpu_s: requests / cpu,
  request_p50_ms: ms(50), request_p99_ms: ms(99),
};
console.error(`publish-rate: wrk, ${store} store, ${connections} connections: ${requests} publishes answered (rooms' tops add up to ${tops}), relay CPU ${cpu.toFixed(2)} s -> ${Math.round(row.requests_per_cpu_s)} per CPU-second; p50 ${row.request_p50_ms} ms, p99 ${row.request_p99_ms} ms; ${failures} failures`);
console.log(JSON.stringify(row));
JS
}

for scenario in "${scenarios[@]}"; do
  case "$scenario" in
    typed)
      # The same fixed load on both endpoints (8,000 messages/s to 110 clients), so server
      # CPU per delivery compares the protocols, not the load generator's speed with each.
      # A typed `message` frame carries ~125 bytes of JSON around the 64-byte text, so the
      # plain endpoint also runs with frames of that size: same bytes on the wire. Three
      # rounds, alternating, a fresh relay for each run; the summary takes medians.
      for round in 1 2 3; do
        start_relay
        step "round $round: plain endpoint at a fixed rate"
        bench relay-plain fanout --rate 800 --url "$url"
        stop_server
        start_relay
        step "round $round: typed endpoint at the same rate"
        bench relay-typed fanout --rate 800 --protocol typed --url "${url}ws"
        stop_server
        typed_frame=$(grep '"relay-typed"' "$results" | tail -1 |
          grep -Eo '"frame_bytes":[0-9.]+' | cut -d: -f2 | cut -d. -f1)
        start_relay
        step "round $round: plain endpoint, frames as large as typed ones ($typed_frame B)"
        bench relay-plain-same-bytes fanout --rate 800 --size "$typed_frame" --url "$url"
        stop_server
      done
      ;;
    hold)
      start_relay
      step "19,000 idle connections"
      bench relay-hold idle --connections 19000 --url "$url"
      stop_server
      ;;
    churn)
      # 100,000 connections, 500 at a time, each joining one of 5,000 rooms, sending one
      # message and closing: does memory grow with room churn? Once with the SQLite store,
      # once with nothing on disk. CHURN_ARGS passes options to the scenario.
      for store in sqlite memory; do
        start_relay --store "$store"
        step "churn: 100,000 short connections over 5,000 rooms, $store store"
        # shellcheck disable=SC2086 # word splitting of the extra options is wanted
        bench "relay-churn-$store" churn --url "${url}ws" ${CHURN_ARGS:-}
        stop_server
      done
      ;;
    durability)
      # Issue 11: delivery latency with the default durability (SQLite, fsync before the
      # ack) next to the memory engine, three alternating rounds each, on this disk and on a
      # disk whose every sync takes 30 ms longer (an LD_PRELOAD shim, bench/slow-sync), so
      # the result does not depend on the disk's mood that hour. The disk itself is measured
      # first (bench/src/bin/fsync-probe.rs).
      gcc -shared -fPIC -O2 -o "$work/slow_sync.so" bench/slow-sync/slow_sync.c -ldl
      step "what this disk's fdatasync does this hour"
      target/release/fsync-probe "$work" 10 | tee "$work/run.txt" | grep -v '^{' || true
      grep '^{' "$work/run.txt" >>"$results" || true
      for round in 1 2 3; do
        for disk in real slow; do
          preload=
          [ "$disk" = slow ] && preload="$work/slow_sync.so"
          for store in sqlite memory; do
            LD_PRELOAD=$preload start_relay --store "$store"
            step "round $round: latency, $store engine, $disk disk"
            bench "relay-$store-$disk" latency --url "$url"
            stop_server
          done
        done
      done
      ;;
    api)
      # Issue 12: `POST /api/publish` from keep-alive HTTP/1.1 connections next to the typed
      # WebSocket `send`, on one relay with the default durability (SQLite, fsync before the
      # answer), the API's per-key rate limit raised for a push load. Three rounds of each
      # part, the two paths alternating (bench/src/scenarios/api.rs says what each does).
      # Retention runs at its default interval, as in production. API_BENCH_ARGS passes
      # options to the scenario (e.g. "--connections 256").
      api_key="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
      start_relay --api-key "$api_key" --api-rate-per-sec 1000000 --api-rate-burst 1000000
      step "api: HTTP publish against WebSocket send: throughput, then latency to 1,000"
      # shellcheck disable=SC2086 # word splitting of the extra options is wanted
      bench relay-api api --url "$url" --api-key "$api_key" ${API_BENCH_ARGS:-}
      stop_server
      ;;
    publish-rate)
      # Issue 12's throughput target, as the issue states it: durable publishes (SQLite, fsync
      # before each answer, the default) per relay CPU-second from keep-alive HTTP/1.1
      # clients. wrk (Debian's package) with a Lua body (bench/wrk/publish.lua: a new
      # idempotency key per request, eight rooms, 64-byte texts) from 32, 64, 128 and 256
      # connections, 10 s each; then relay-bench's own client at 128 connections, which
      # checks every answer (200, offsets rising per connection) and, with one typed member
      # per room, that every message arrives. Retention runs every second (the default is a
      # minute), so its deletes fall inside each run as they would in a relay that runs for
      # hours. As a yardstick of the machine's speed that hour (it moves by half on these
      # shared VMs), the same client against floor-http on hyper (bench/src/bin/floor-http.rs:
      # answers, stores nothing) at 128 connections; and as the most storage could leave, wrk
      # at 128 connections against the relay with `--store memory` (the whole HTTP and room
      # path, nothing written). A fresh relay and store per run; three rounds, the order
      # reversed every other round. PUBLISH_RATE_SECONDS changes the length of a run.
      command -v wrk >/dev/null || apt_install wrk
      api_key="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
      seconds=${PUBLISH_RATE_SECONDS:-10}
      relay_flags=(--api-key "$api_key" --api-rate-per-sec 1000000 --api-rate-burst 1000000
        --prune-interval-ms 1000)
      for round in 1 2 3; do
        order=(floor memory-128 wrk-32 wrk-64 wrk-128 wrk-256 own-128-0 own-128-1)
        [ $((round % 2)) -eq 0 ] &&
          order=(own-128-1 own-128-0 wrk-256 wrk-128 wrk-64 wrk-32 memory-128 floor)
        for run in "${order[@]}"; do
          if [ "$run" = floor ]; then
            start_floor_http hyper
            step "round $round: the machine's yardstick, floor-http on hyper, 128 connections"
            bench floor-publish-hyper http-floor --url "$url" --connections 128 \
              --seconds "$seconds"
            stop_server
            continue
          fi
          if [ "$run" = memory-128 ]; then
            start_relay "${relay_flags[@]}" --store memory
            step "round $round: wrk, 128 connections, ${seconds} s, the relay storing nothing"
            wrk_publish 128 "$seconds" memory
            stop_server
            continue
          fi
          start_relay "${relay_flags[@]}"
          case "$run" in
            wrk-*)
              connections=${run#wrk-}
              step "round $round: wrk, $connections connections, ${seconds} s"
              wrk_publish "$connections" "$seconds"
              ;;
            own-*)
              members=${run##*-}
              step "round $round: relay-bench http-floor, 128 connections, $members member(s) per room"
              bench "relay-publish-own-$members" http-floor --url "$url" --api-key "$api_key" \
                --connections 128 --seconds "$seconds" --members "$members"
              ;;
          esac
          stop_server
        done
      done
      ;;
    cluster)
      # Issue 14. Redis with its append-only file fsynced on every write (what
      # `--durability full`, the default, requires), on core 0 with the relays; the load
      # generator on core 1. Typed protocol: every message is stored. Redis is emptied
      # between runs. CPU is the relays' (Redis' own is printed beside it).
      command -v redis-server >/dev/null || apt_install redis-server
      mkdir -p "$work/redis"
      taskset -c 0 redis-server --port 18090 --bind 127.0.0.1 --dir "$work/redis" --save '' \
        --appendonly yes --appendfsync always >"$work/redis.log" 2>&1 &
      redis_pid=$!
      wait_for_port 18090
      redis=(--engine redis --redis-url redis://127.0.0.1:18090/)
      flush_redis() { redis-cli -p 18090 FLUSHALL >/dev/null; }
      # A Redis Cluster of three primaries (no replicas), also on core 0.
      shard_pids=()
      for port in 18091 18092 18093; do
        mkdir -p "$work/shard-$port"
        taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --dir "$work/shard-$port" \
          --save '' --appendonly yes --appendfsync always --cluster-enabled yes \
          --cluster-config-file nodes.conf >"$work/shard-$port.log" 2>&1 &
        shard_pids+=($!)
        wait_for_port "$port"
      done
      redis-cli --cluster create 127.0.0.1:18091 127.0.0.1:18092 127.0.0.1:18093 \
        --cluster-replicas 0 --cluster-yes >/dev/null
      until redis-cli -p 18091 CLUSTER INFO | grep -q 'cluster_state:ok'; do sleep 0.2; done
      sharded=(--engine redis --redis-url
        redis://127.0.0.1:18091,redis://127.0.0.1:18092,redis://127.0.0.1:18093)
      flush_shards() { for port in 18091 18092 18093; do redis-cli -p "$port" FLUSHALL >/dev/null; done; }
      shards_cpu() { local total=0 pid; for pid in "${shard_pids[@]}"; do total=$((total + $(cpu_ticks "$pid"))); done; echo "$total"; }
      for round in 1 2 3; do
        start_relay
        step "round $round: fan-out, SQLite"
        bench relay-sqlite fanout --protocol typed --url "${url}ws"
        stop_server
        for part in fanout latency; do
          flush_redis
          start_relay "${redis[@]}"
          before=$(cpu_ticks "$redis_pid")
          step "round $round: $part, Redis, one node"
          bench "relay-redis-1-$part" "$part" --protocol typed --url "${url}ws"
          echo "redis-server CPU: $(( $(cpu_ticks "$redis_pid") - before )) ticks"
          stop_server
          flush_redis
          start_relay "${redis[@]}"
          start_second_relay "${redis[@]}"
          before=$(cpu_ticks "$redis_pid")
          step "round $round: $part, Redis, two nodes (clients split)"
          bench "relay-redis-2-$part" "$part" --protocol typed --url "${url}ws" \
            --also-url ws://127.0.0.1:18084/ws --also-pid "$second_pid"
          echo "redis-server CPU: $(( $(cpu_ticks "$redis_pid") - before )) ticks"
          stop_server
          flush_shards
          start_relay "${sharded[@]}"
          start_second_relay "${sharded[@]}"
          before=$(shards_cpu)
          step "round $round: $part, Redis Cluster of three shards, two nodes (clients split)"
          bench "relay-redis-cluster-2-$part" "$part" --protocol typed --url "${url}ws" \
            --also-url ws://127.0.0.1:18084/ws --also-pid "$second_pid"
          echo "redis-server CPU (three shards): $(( $(shards_cpu) - before )) ticks"
          stop_server
        done
      done
      kill "$redis_pid" "${shard_pids[@]}"
      ;;
    http-floor)
      # The floor of the HTTP publish path: the same client and load (the `api` scenario's
      # HTTP throughput phase, without WebSocket members) against floor-http hand-written
      # (a blocking thread per connection), floor-http on hyper 1 + tokio (the relay's
      # stack), and the relay's `POST /api/publish` with the memory store (nothing on disk):
      # once with nobody in the rooms (the memory store then drops a room with its history
      # after each publish, so each publish re-creates its room), once with one typed member
      # per room holding it (as in the `api` scenario; each publish then also reaches one
      # member). A fresh server for each run; three rounds, the order reversed every other
      # round. HTTP_FLOOR_ARGS passes options to the scenario.
      api_key="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
      for round in 1 2 3; do
        order=(threads hyper relay relay-members)
        [ $((round % 2)) -eq 0 ] && order=(relay-members relay hyper threads)
        for server in "${order[@]}"; do
          members=0
          case "$server" in
            relay*)
              start_relay --store memory --api-key "$api_key" --api-rate-per-sec 1000000 \
                --api-rate-burst 1000000
              label="relay-memory${server#relay}"
              [ "$server" = relay-members ] && members=1
              ;;
            *)
              start_floor_http "$server"
              label="floor-$server"
              ;;
          esac
          step "round $round: http-floor against $label"
          # shellcheck disable=SC2086 # word splitting of the extra options is wanted
          bench "$label" http-floor --url "$url" --api-key "$api_key" --members "$members" \
            ${HTTP_FLOOR_ARGS:-}
          stop_server
        done
      done
      ;;
    catchup)
      # Default settings: each catch-up is replayed 9,950 messages from the store (a page at
      # a time, at the client's pace) and the last 50 from memory.
      start_relay
      step "catchup: live latency without and with clients recovering 10,000 messages"
      bench relay-catchup catchup --url "${url}ws"
      stop_server
      ;;
    *)
      servers=(relay peer)
      [ "$scenario" = latency ] && servers+=(floor)
      for label in "${servers[@]}"; do
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
const floor = find('latency', 'floor'), relayLatency = find('latency', 'relay');
if (floor && relayLatency) {
  console.log(`latency floor (bare send loop, no storage): p99 ${floor.p99_ms.toFixed(2)} ms; the relay is ${(relayLatency.p99_ms / floor.p99_ms).toFixed(2)}x the floor`);
}
// Typed against plain: per round, then the median of the rounds.
const perCpu = server => rows.filter(r => r.server === server).map(r => r.deliveries_per_cpu_s);
const [plain, typed, sameBytes] = ['relay-plain', 'relay-typed', 'relay-plain-same-bytes'].map(perCpu);
const median = xs => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = xs => xs.map(x => `${(100 * x).toFixed(0)}%`).join(' ');
if (plain.length && plain.length === typed.length) {
  const ratios = typed.map((t, i) => t / plain[i]);
  console.log(`typed /ws vs plain /, same 64-byte text, per server CPU-second at 8,000 msg/s: typed is ${pct(ratios)} of plain (median ${pct([median(ratios)])}; frames ${Math.round(rows.find(r => r.server === 'relay-typed').frame_bytes)} B vs ${Math.round(rows.find(r => r.server === 'relay-plain').frame_bytes)} B)`);
  if (sameBytes.length === typed.length) {
    const same = typed.map((t, i) => t / sameBytes[i]);
    console.log(`typed /ws vs plain / with frames of the same size: typed is ${pct(same)} (median ${pct([median(same)])})`);
  }
}
for (const r of rows.filter(r => r.scenario === 'churn')) {
  const mib = b => (b / 1048576).toFixed(1);
  const slope = r.bytes_per_connection_after_warmup;
  console.log(`churn, ${r.server.replace('relay-churn-', '')} store: ${r.completed.toLocaleString('en')} connections over ${r.rooms.toLocaleString('en')} rooms in ${r.wall_s.toFixed(0)} s; server RSS ${r.rss_warm ? mib(r.rss_warm.rss) : '?'} MiB after warm-up (${r.rss_warm ? r.rss_warm.connections.toLocaleString('en') : '?'}) -> ${mib(r.rss_end.rss)} MiB at the end: ${slope == null ? '?' : slope.toFixed(1)} bytes per connection; ${r.failures} failures`);
}
const fsync = rows.find(r => r.scenario === 'fsync');
if (fsync) {
  console.log(`fdatasync of 4 KiB at 100/s on this disk: p50 ${fsync.p50_ms.toFixed(2)} ms, p99 ${fsync.p99_ms.toFixed(2)} ms, p99.9 ${fsync.p999_ms.toFixed(2)} ms, max ${fsync.max_ms.toFixed(2)} ms`);
}
for (const disk of ['real', 'slow']) {
  const p99 = store => rows.filter(r => r.server === `relay-${store}-${disk}`).map(r => r.p99_ms);
  const [sqlite, memory] = [p99('sqlite'), p99('memory')];
  if (sqlite.length && memory.length) {
    const f = xs => xs.map(x => x.toFixed(1)).join(' ');
    console.log(`latency p99 at 1,000 subscribers, ${disk === 'real' ? 'this disk' : 'every sync +30 ms'}: SQLite ${f(sqlite)} ms (median ${median(sqlite).toFixed(1)}), memory ${f(memory)} ms (median ${median(memory).toFixed(1)}): ${(median(sqlite) / median(memory)).toFixed(2)}x`);
  }
}
const catchup = rows.find(r => r.scenario === 'catchup');
if (catchup) {
  const c = catchup.catchups;
  const f = v => (v == null ? '?' : v.toFixed(2));
  console.log(`catch-ups of ${catchup.gap.toLocaleString('en')} messages every ${catchup.catchup_every_ms} ms beside ${catchup.rooms} rooms x ${catchup.subscribers} subscribers at ${catchup.rate} msg/s: live p99 ${f(catchup.p99_without_ms)} ms without, ${f(catchup.p99_with_ms)} ms with (${f(catchup.p99_ratio)}x; medians of ${catchup.rounds}); ${c.started} catch-ups, ${c.complete} complete (median ${f(c.median_ms)} ms), ${catchup.failures} failed`);
}
{
  const runs = rows.filter(r => r.scenario === 'publish-rate' || r.server?.startsWith('relay-publish-own'));
  const yardstick = rows.filter(r => r.server === 'floor-publish-hyper').map(r => r.requests_per_cpu_s);
  const groups = new Map();
  for (const r of runs) {
    const key = r.tool !== 'wrk' ? `relay-bench, ${r.connections} connections, ${r.members_per_room} member(s) per room`
      : r.store === 'memory' ? `wrk, ${r.connections} connections, memory store (nothing stored)`
      : `wrk, ${r.connections} connections`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(r);
  }
  for (const [key, group] of groups) {
    const rates = group.map(r => r.requests_per_cpu_s);
    const p99 = group.map(r => r.request_p99_ms).filter(x => x != null);
    const failures = group.reduce((n, r) => n + r.failures, 0);
    const share = yardstick.length ? `, ${(median(rates) / median(yardstick)).toFixed(2)}x the yardstick` : '';
    const what = key.includes('memory store') ? 'POST /api/publish' : 'durable POST /api/publish';
    console.log(`${what}, ${key}: ${rates.map(x => Math.round(x).toLocaleString('en')).join(', ')} per relay CPU-second (median ${Math.round(median(rates)).toLocaleString('en')}; target 30,000${share}), request p99 median ${p99.length ? median(p99).toFixed(2) : '?'} ms, ${failures} failures`);
  }
  const wrk128 = store => runs.filter(r => r.tool === 'wrk' && r.connections === 128 &&
    (r.store || 'sqlite') === store).map(r => r.requests_per_cpu_s);
  if (wrk128('sqlite').length && wrk128('memory').length) {
    console.log(`wrk, 128 connections: durable is ${(median(wrk128('sqlite')) / median(wrk128('memory'))).toFixed(2)}x the relay storing nothing (medians)`);
  }
  if (yardstick.length) {
    console.log(`the machine's yardstick this run, floor-http on hyper (stores nothing), 128 connections: ${yardstick.map(x => Math.round(x).toLocaleString('en')).join(', ')} requests per CPU-second (median ${Math.round(median(yardstick)).toLocaleString('en')})`);
  }
}
for (const r of rows.filter(r => r.scenario === 'api')) {
  const f0 = v => (v == null ? '?' : Math.round(v).toLocaleString('en'));
  const f2 = v => (v == null ? '?' : v.toFixed(2));
  const rounds = (phases, path, key, f) => phases.filter(p => p.path === path).map(p => f(p[key])).join(', ');
  const t = r.throughput;
  console.log(`HTTP API, ${r.connections} keep-alive connections into ${r.rooms} rooms, ${r.deliveries_per_publish} typed members each: ${rounds(r.throughput_phases, 'http', 'publishes_per_cpu_s', f0)} publishes per relay CPU-second (median ${f0(t.http.publishes_per_cpu_s)}), request p50/p99 ${f2(t.http.request_p50_ms)}/${f2(t.http.request_p99_ms)} ms; WebSocket send at the same concurrency ${rounds(r.throughput_phases, 'ws', 'publishes_per_cpu_s', f0)} (median ${f0(t.ws.publishes_per_cpu_s)}), ack p50/p99 ${f2(t.ws.request_p50_ms)}/${f2(t.ws.request_p99_ms)} ms: HTTP is ${f2(r.http_vs_ws_per_cpu)}x`);
  const split = path => Object.entries(t[path].cpu_us_per_publish_by_thread).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
  console.log(`  relay CPU per publish by thread (µs, medians): HTTP ${split('http')}; WebSocket ${split('ws')}`);
  console.log(`HTTP API delivery latency to ${r.latency_subscribers.toLocaleString('en')} subscribers at ${r.rate}/s: p99 HTTP ${rounds(r.latency_phases, 'http', 'p99_ms', f2)} ms (median ${f2(r.http_p99_ms)}), WebSocket ${rounds(r.latency_phases, 'ws', 'p99_ms', f2)} ms (median ${f2(r.ws_p99_ms)}): HTTP / WebSocket ${f2(r.p99_ratio)}x (target within 1.2x); p50 ${f2(r.latency.http.p50_ms)} vs ${f2(r.latency.ws.p50_ms)} ms, max ${f2(r.latency.http.max_ms)} vs ${f2(r.latency.ws.max_ms)} ms`);
}
{
  // http-floor: per server, the rounds and their medians; then the relay against each floor.
  // The publish-rate scenario's own runs are not the floor's.
  const floorRows = rows.filter(r => r.scenario === 'http-floor' && !r.server.includes('-publish-'));
  const of = (server, key) => floorRows.filter(r => r.server === server).map(r => r[key]);
  const f0 = v => Math.round(v).toLocaleString('en');
  const servers = [['floor-threads', 'floor-http, hand-written (thread per connection)'],
    ['floor-hyper', 'floor-http, hyper 1 + tokio'],
    ['relay-memory', 'relay POST /api/publish, memory store, empty rooms'],
    ['relay-memory-members', 'relay POST /api/publish, memory store, 1 member per room']];
  const medians = {};
  for (const [server, name] of servers) {
    const perCpu = of(server, 'requests_per_cpu_s');
    if (!perCpu.length) continue;
    medians[server] = median(perCpu);
    const threads = floorRows.filter(r => r.server === server).map(r => r.threads);
    const names = [...new Set(threads.flatMap(Object.keys))];
    const split = names.map(n => [n, median(floorRows.filter(r => r.server === server)
      .map(r => 1e6 * (r.threads[n] || 0) / r.requests))]).sort((a, b) => b[1] - a[1])
      .map(([n, us]) => `${n} ${us.toFixed(1)}`).join(', ');
    console.log(`${name}, ${floorRows[0].connections} keep-alive connections: ${perCpu.map(f0).join(', ')} requests per server CPU-second (median ${f0(medians[server])}; ${(1e6 / medians[server]).toFixed(1)} µs each), ${of(server, 'requests_per_s').map(f0).join(', ')} requests/s (median ${f0(median(of(server, 'requests_per_s')))}), p50/p99 ${median(of(server, 'request_p50_ms')).toFixed(2)}/${median(of(server, 'request_p99_ms')).toFixed(2)} ms, generator CPU ${median(of(server, 'generator_cpu_s')).toFixed(2)} s; server CPU per request by thread (µs, medians): ${split}`);
  }
  for (const floor of ['floor-threads', 'floor-hyper']) {
    if (!medians[floor]) continue;
    console.log(`target 30,000 requests per CPU-second (33.3 µs each) against ${floor}: ${(30000 / medians[floor]).toFixed(2)}x its median`);
    for (const relay of ['relay-memory', 'relay-memory-members']) {
      if (medians[relay]) {
        console.log(`  ${relay} / ${floor}: ${(medians[relay] / medians[floor]).toFixed(2)}x the requests per CPU-second; ${(1e6 / medians[relay] - 1e6 / medians[floor]).toFixed(1)} µs more CPU per request`);
      }
    }
  }
  for (const r of floorRows.filter(r => r.epochs > r.connections)) {
    console.log(`  ${r.server}: ${r.epochs.toLocaleString('en')} epochs over ${r.requests.toLocaleString('en')} publishes (rooms re-created)`);
  }
}
const hold = rows.find(r => r.server === 'relay-hold');
if (hold) {
  console.log(`relay holding ${hold.connections.toLocaleString('en')} idle connections: ${Math.round(hold.bytes_per_connection).toLocaleString('en')} bytes each`);
}
JS
