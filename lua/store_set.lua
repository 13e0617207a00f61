-- name: store_set
-- summary: write one record of a key-value store and update the store's metadata in the same step
-- KEYS[1]: the store's items hash (key -> type mark + payload)
-- KEYS[2]: the store's records hash (key -> "size:content type")
-- KEYS[3]: the store's key index zset (score 0, ordered by key)
-- KEYS[4]: the store's metadata hash
-- ARGV[1]: the record key
-- ARGV[2]: the stored value (type mark + payload)
-- ARGV[3]: the content type
-- ARGV[4]: the payload's size in bytes (without the mark)
-- returns: 1 when the record was created, 0 when replaced, -1 when the store does not exist (dropped)
-- read-only: no
local items, records, index, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then return -1 end
local key, payload = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
local size = tonumber(ARGV[4])
local old = redis.call('HGET', records, key)
local created, delta = 1, size
if old then
  created = 0
  delta = size - (tonumber(string.match(old, '^(%d+)')) or 0)
end
redis.call('HSET', items, key, payload)
redis.call('HSET', records, key, size .. ':' .. ARGV[3])
if created == 1 then
  redis.call('ZADD', index, 0, key)
  redis.call('HINCRBY', meta, 'item_count', 1)
end
if delta ~= 0 then redis.call('HINCRBY', meta, 'size', delta) end
redis.call('HSET', meta, 'modified_at', now, 'accessed_at', now)
return created
