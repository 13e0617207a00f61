-- name: stream_dead_letter
-- summary: move one pending entry to the dead-letter stream and ack it, in one step
-- KEYS[1]: the stream
-- KEYS[2]: the dead-letter stream (same hash tag)
-- ARGV[1]: consumer group
-- ARGV[2]: entry id
-- ARGV[3]: consumer that must own the entry ('' for any)
-- ARGV[4]: last error text
-- ARGV[5]: dead-letter stream MAXLEN (approximate; 0 for no cap)
-- ARGV[6]: 1 to XDEL the entry from the stream after the move, else 0
-- returns: the delivery count when moved; 0 when the entry is no longer pending (or owned by another consumer)
-- read-only: no
local group, id = ARGV[1], ARGV[2]
local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
if #p == 0 or (ARGV[3] ~= '' and p[1][2] ~= ARGV[3]) then
  return 0
end
local count = tonumber(p[1][4])
local body = redis.call('XRANGE', KEYS[1], id, id)
local t = redis.call('TIME')
local cmd = {'XADD', KEYS[2]}
if tonumber(ARGV[5]) > 0 then
  cmd[#cmd + 1] = 'MAXLEN'
  cmd[#cmd + 1] = '~'
  cmd[#cmd + 1] = ARGV[5]
end
for _, v in ipairs({'*', 'rp:id', id, 'rp:group', group, 'rp:consumer', p[1][2],
    'rp:deliveries', count, 'rp:error', ARGV[4],
    'rp:dead_us', tonumber(t[1]) * 1000000 + tonumber(t[2])}) do
  cmd[#cmd + 1] = v
end
if #body == 1 then
  for _, v in ipairs(body[1][2]) do
    cmd[#cmd + 1] = v
  end
else
  cmd[#cmd + 1] = 'rp:missing'
  cmd[#cmd + 1] = '1'
end
redis.call(unpack(cmd))
redis.call('XACK', KEYS[1], group, id)
if ARGV[6] == '1' then
  redis.call('XDEL', KEYS[1], id)
end
return count
