-- Appends drafts to one room, atomically: de-duplication by client id, the next offsets,
-- the capped stream, and a notification for the other relay nodes.
--
-- KEYS[1] the room's meta hash (epoch, top offset, newest ts)
-- KEYS[2] the room's stream: one entry per message, id "<offset>-0"
-- KEYS[3] the room's client ids: client id -> "<offset>:<ts>"
-- ARGV[1] messages kept per room
-- ARGV[2] the epoch to give the room if it has none yet
-- ARGV[3] the channel to announce the new top on
-- then four per draft: from, text, client id ("" for none), source code
--
-- Returns {epoch, ts, then per draft: 1, offset (stored) or 0, offset, ts (duplicate)}.
local meta, log, ids = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'epoch', ARGV[2], 'top', 0, 'ts', 0)
end
local state = redis.call('HMGET', meta, 'epoch', 'top', 'ts')
local epoch, top, last = state[1], tonumber(state[2]), tonumber(state[3])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ts < last then ts = last end

local out = {epoch, ts}
local stored = false
for i = 4, #ARGV, 4 do
  local cid = ARGV[i + 2]
  local original = false
  if cid ~= '' then original = redis.call('HGET', ids, cid) end
  if original then
    local sep = string.find(original, ':', 1, true)
    table.insert(out, 0)
    table.insert(out, tonumber(string.sub(original, 1, sep - 1)))
    table.insert(out, tonumber(string.sub(original, sep + 1)))
  else
    top = top + 1
    redis.call('XADD', log, top .. '-0', 'ts', ts, 'from', ARGV[i], 'text', ARGV[i + 1],
      'cid', cid, 'src', ARGV[i + 3])
    if cid ~= '' then redis.call('HSET', ids, cid, top .. ':' .. ts) end
    table.insert(out, 1)
    table.insert(out, top)
    stored = true
  end
end

if stored then
  redis.call('HSET', meta, 'top', top, 'ts', ts)
  -- Retention by count: the oldest go, and their client ids are free again.
  local excess = redis.call('XLEN', log) - tonumber(ARGV[1])
  if excess > 0 then
    for _, entry in ipairs(redis.call('XRANGE', log, '-', '+', 'COUNT', excess)) do
      local fields = entry[2]
      for f = 1, #fields, 2 do
        if fields[f] == 'cid' and fields[f + 1] ~= '' then redis.call('HDEL', ids, fields[f + 1]) end
      end
      redis.call('XDEL', log, entry[1])
    end
  end
  redis.call('PUBLISH', ARGV[3], epoch .. ' ' .. top)
end
return out
