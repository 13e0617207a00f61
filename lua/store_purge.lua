-- name: store_purge
-- summary: remove every record of a key-value store, keep the store and reset its counters
-- KEYS[1]: the store's items hash
-- KEYS[2]: the store's records hash
-- KEYS[3]: the store's key index zset
-- KEYS[4]: the store's metadata hash
-- returns: the number of records removed, or -1 when the store does not exist
-- read-only: no
local meta = KEYS[4]
if redis.call('EXISTS', meta) == 0 then return -1 end
local n = redis.call('ZCARD', KEYS[3])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', meta, 'item_count', 0, 'size', 0, 'modified_at', now, 'accessed_at', now)
return n
