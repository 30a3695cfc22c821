-- Removes a dead relay process's members from one room and tells the others they left.
-- Only the process that removes an entry announces it, so sweeping nodes never announce a
-- leave twice.
--
-- KEYS[1] the room's members hash: connection id -> "<node> <member as JSON>"
-- ARGV[1] the dead node's number, ARGV[2] the room's presence channel
--
-- Returns how many members went.
local gone = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local value = all[i + 1]
  local space = string.find(value, ' ', 1, true)
  if space and string.sub(value, 1, space - 1) == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('PUBLISH', ARGV[2], '{"node":' .. ARGV[1] ..
      ',"change":{"op":"left","member":' .. string.sub(value, space + 1) .. '}}')
    gone = gone + 1
  end
end
return gone
