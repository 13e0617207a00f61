-- name: stream_prune
-- summary: delete a group's consumers that hold no pending entries and have been idle long enough; the check and the delete are one atomic step, so no entry is ever lost with a consumer
-- KEYS[1]: the stream
-- ARGV[1]: consumer group
-- ARGV[2]: minimum idle time in milliseconds
-- ARGV[3]: a consumer name to keep whatever its state (the caller), or ''
-- returns: the names of the deleted consumers
-- read-only: no
local deleted = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do
    info[c[i]] = c[i + 1]
  end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted[#deleted + 1] = info['name']
  end
end
return deleted
