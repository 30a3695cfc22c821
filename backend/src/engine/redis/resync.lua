-- Makes a room's members hash hold exactly this node's current members (after Redis was
-- unreachable, changes made meanwhile were not written): its entries for connections gone
-- are removed, its missing ones added, each change announced like a live one.
--
-- KEYS[1] the room's members hash
-- ARGV[1] this node's number, ARGV[2] the room's presence channel,
-- then pairs: connection id, "<node> <member as JSON>"
local node = ARGV[1]
local wanted = {}
for i = 3, #ARGV, 2 do
  wanted[ARGV[i]] = ARGV[i + 1]
end
local function announce(op, value)
  local space = string.find(value, ' ', 1, true)
  redis.call('PUBLISH', ARGV[2], '{"node":' .. node .. ',"change":{"op":"' .. op ..
    '","member":' .. string.sub(value, space + 1) .. '}}')
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local connection, value = all[i], all[i + 1]
  local space = string.find(value, ' ', 1, true)
  if space and string.sub(value, 1, space - 1) == node and wanted[connection] == nil then
    redis.call('HDEL', KEYS[1], connection)
    announce('left', value)
  end
end
for connection, value in pairs(wanted) do
  if redis.call('HSET', KEYS[1], connection, value) == 1 then
    announce('joined', value)
  end
end
return 1
