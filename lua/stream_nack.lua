-- name: stream_nack
-- summary: release own pending entries so any consumer's reclaim may take them after a delay, without counting a delivery
-- KEYS[1]: the stream
-- ARGV[1]: consumer group
-- ARGV[2]: this consumer's name (entries another consumer has taken meanwhile are left alone)
-- ARGV[3]: idle time to set in milliseconds (the reclaim min-idle minus the wanted delay)
-- ARGV[*]: then the entry ids
-- returns: the number of entries released
-- read-only: no
local cmd = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    cmd[#cmd + 1] = ARGV[i]
    n = n + 1
  end
end
if n == 0 then
  return 0
end
cmd[#cmd + 1] = 'IDLE'
cmd[#cmd + 1] = ARGV[3]
cmd[#cmd + 1] = 'JUSTID'
return #redis.call(unpack(cmd))
