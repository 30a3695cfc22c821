-- wrk script for `bench/run.sh publish-rate`: each request is a `POST /api/publish` with a new
-- idempotency key, into one of eight rooms in turn, with a 64-byte text.
--
--   API_KEY=<key> RUN=<unique> wrk -t1 -c128 -d10s -s bench/wrk/publish.lua http://127.0.0.1:18080
--
-- Keys are `<RUN>-<thread>-<n>`, so no two requests of a run (or of two runs with different
-- RUN values) share one. Rooms are `<RUN>-0` to `<RUN>-7`.

local threads = 0

-- Runs once per wrk thread, in the main Lua state: numbers the threads.
function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end

local run = os.getenv("RUN") or "wrk"
local sent = 0
local text = string.rep("x", 64)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("API_KEY") or "")

function request()
  sent = sent + 1
  local body = string.format('{"room":"%s-%d","text":"%s","idempotency_key":"%s-%d-%d"}',
    run, sent % 8, text, run, number, sent)
  return wrk.format(nil, "/api/publish", nil, body)
end
