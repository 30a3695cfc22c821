-- Opens a room: registers it (with the given epoch) if it is new, and returns its epoch, top
-- offset and newest entries.
--
-- KEYS[1] the room's meta hash, KEYS[2] its stream, KEYS[3] its members hash
-- ARGV[1] the epoch for a new room, ARGV[2] how many recent entries to return
--
-- Returns {epoch, top, entries newest first (as XREVRANGE gives them), members}.
local meta, log = KEYS[1], KEYS[2]
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'epoch', ARGV[1], 'top', 0, 'ts', 0)
end
local state = redis.call('HMGET', meta, 'epoch', 'top')
local recent = {}
if tonumber(ARGV[2]) > 0 then
  recent = redis.call('XREVRANGE', log, '+', '-', 'COUNT', ARGV[2])
end
return {state[1], tonumber(state[2]), recent, redis.call('HVALS', KEYS[3])}
