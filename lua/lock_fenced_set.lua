-- name: lock_fenced_set
-- summary: write a value iff the writer's fencing token is not older than the last one accepted
-- KEYS[1]: the protected value
-- KEYS[2]: the highest fencing token accepted for it
-- ARGV[1]: the writer's fencing token
-- ARGV[2]: the encoded value
-- ARGV[3]: expiry of both keys in milliseconds, 0 for none
-- returns: 1 written; 0 rejected (a newer holder already wrote: the writer is stale)
-- read-only: no
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = tonumber(ARGV[1])
if fence < seen then
  return 0
end
local ms = tonumber(ARGV[3])
if ms > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ms)
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ms)
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1
