-- Drops a room's entries older than a time, freeing their client ids; at most a batch per
-- call, so a huge backlog does not hold Redis for long (the caller repeats while it drops
-- a full batch).
--
-- KEYS[1] the room's stream, KEYS[2] its client ids
-- ARGV[1] the oldest ts kept, ARGV[2] the batch size
--
-- Returns how many entries went.
local log, ids = KEYS[1], KEYS[2]
local cutoff = tonumber(ARGV[1])
local dropped = 0
for _, entry in ipairs(redis.call('XRANGE', log, '-', '+', 'COUNT', ARGV[2])) do
  local fields = entry[2]
  local ts, cid = nil, ''
  for f = 1, #fields, 2 do
    if fields[f] == 'ts' then ts = tonumber(fields[f + 1]) end
    if fields[f] == 'cid' then cid = fields[f + 1] end
  end
  if ts == nil or ts >= cutoff then break end
  if cid ~= '' then redis.call('HDEL', ids, cid) end
  redis.call('XDEL', log, entry[1])
  dropped = dropped + 1
end
return dropped
