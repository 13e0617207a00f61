-- name: cache_invalidate
-- summary: delete a cached value and leave a short tombstone on its lease, so a fill already in flight (computed from older data) never stores its result
-- KEYS[1]: the cached value
-- KEYS[2]: its fill lease
-- ARGV[1]: tombstone lifetime in ms (the lease length: no older fill outlives it)
-- returns: 1 when a value was deleted, 0 when none was cached
-- read-only: no
local n = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '~', 'PX', ARGV[1])
return n
