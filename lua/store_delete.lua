-- name: store_delete
-- summary: delete one record of a key-value store and update the store's metadata in the same step
-- KEYS[1]: the store's items hash
-- KEYS[2]: the store's records hash
-- KEYS[3]: the store's key index zset
-- KEYS[4]: the store's metadata hash
-- ARGV[1]: the record key
-- returns: 1 when the record was deleted, 0 when there was none, -1 when the store does not exist
-- read-only: no
local items, records, index, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then return -1 end
local key = ARGV[1]
local old = redis.call('HGET', records, key)
if not old then return 0 end
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HDEL', items, key)
redis.call('HDEL', records, key)
redis.call('ZREM', index, key)
redis.call('HINCRBY', meta, 'item_count', -1)
local size = tonumber(string.match(old, '^(%d+)')) or 0
if size ~= 0 then redis.call('HINCRBY', meta, 'size', -size) end
redis.call('HSET', meta, 'modified_at', now, 'accessed_at', now)
return 1
