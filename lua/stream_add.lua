-- name: stream_add
-- summary: XADD once per idempotency key: a duplicate add returns the first entry's id
-- KEYS[1]: the stream
-- KEYS[2]: the idempotency marker (same hash tag as the stream)
-- ARGV[1]: marker TTL in milliseconds
-- ARGV[2]: trim strategy: MAXLEN, MINID or '' for none
-- ARGV[3]: '~' (approximate) or '=' (exact)
-- ARGV[4]: trim threshold (a count for MAXLEN, an id for MINID)
-- ARGV[*]: then field, value, field, value, ...
-- returns: {id, 1} when added, {first id, 0} for a duplicate
-- read-only: no
local first = redis.call('GET', KEYS[2])
if first then
  return {first, 0}
end
local cmd = {'XADD', KEYS[1]}
if ARGV[2] ~= '' then
  cmd[#cmd + 1] = ARGV[2]
  cmd[#cmd + 1] = ARGV[3]
  cmd[#cmd + 1] = ARGV[4]
end
cmd[#cmd + 1] = '*'
for i = 5, #ARGV do
  cmd[#cmd + 1] = ARGV[i]
end
local id = redis.call(unpack(cmd))
redis.call('SET', KEYS[2], id, 'PX', tonumber(ARGV[1]))
return {id, 1}
