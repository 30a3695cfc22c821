-- Gives a room a new epoch, unless someone did already: its history in Redis is not the one
-- the relay delivered (Redis lost writes but kept the room, as after a failover to a lagging
-- replica), so its offsets must not be used under the old epoch again.
--
-- KEYS[1] the room's meta hash
-- ARGV[1] the epoch found wrong, ARGV[2] the new epoch, ARGV[3] the room's top channel
--
-- Returns 1 if this call rotated it.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
local top = redis.call('HGET', KEYS[1], 'top')
redis.call('PUBLISH', ARGV[3], ARGV[2] .. ' ' .. top)
return 1
