-- name: store_open
-- summary: open a key-value store, creating its metadata when absent (atomic for concurrent openers)
-- KEYS[1]: the store's metadata hash
-- ARGV[1]: the store id
-- ARGV[2]: the store name ('' for an unnamed store)
-- ARGV[3]: the store alias ('' for none)
-- returns: {created (1|0), the metadata hash as a flat field/value list}
-- read-only: no
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
local meta = KEYS[1]
local created = 0
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'id', ARGV[1], 'name', ARGV[2], 'alias', ARGV[3], 'created_at', now,
    'modified_at', now, 'accessed_at', now, 'item_count', 0, 'size', 0)
  created = 1
else
  redis.call('HSET', meta, 'accessed_at', now)
end
return {created, redis.call('HGETALL', meta)}
