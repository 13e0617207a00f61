-- name: session_index_swap
-- summary: confirm a new session id is still indexed (no logout-everywhere ran), fix its score, drop the old id
-- KEYS[1]: the user's index
-- ARGV[1]: the new session id
-- ARGV[2]: its absolute deadline, integer ms since the epoch
-- ARGV[3]: the old session id to remove, or ''
-- returns: 1 when the new id is indexed, 0 when it was removed meanwhile (the caller revokes it)
-- read-only: no
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[3])
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return 1
