-- name: store_drop
-- summary: remove a key-value store: its records and its metadata
-- KEYS[1]: the store's items hash
-- KEYS[2]: the store's records hash
-- KEYS[3]: the store's key index zset
-- KEYS[4]: the store's metadata hash
-- returns: 1 when the store existed, 0 when there was none
-- read-only: no
local existed = redis.call('EXISTS', KEYS[4])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return existed
