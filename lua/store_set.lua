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
local PAD = 'store pad: a value over 64 bytes keeps this hash out of the listpack encoding'
local key, payload = ARGV[1], ARGV[2]
-- a record proves its store exists (a drop deletes the records with the metadata; a purge
-- deletes the records and keeps it): only a new record checks the metadata
local old = redis.call('HGET', records, key)
if not old and redis.call('EXISTS', meta) == 0 then return -1 end
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
local size = tonumber(ARGV[4])
local created, delta = 1, size
if old then
  created = 0
  delta = size - (tonumber(string.match(old, '^(%d+)')) or 0)
end
local record = size .. ':' .. ARGV[3]
if created == 1 then
  -- Past 64 entries a small hash (the listpack encoding) is scanned on every HGET and HSET; a
  -- pad entry over 64 bytes under the empty name (no record key is empty) keeps the items and
  -- records hashes in the hashtable encoding. It rides along with a new record's writes.
  redis.call('HSET', items, key, payload, '', PAD)
  redis.call('HSET', records, key, record, '', PAD)
  redis.call('ZADD', index, 0, key)
  redis.call('HINCRBY', meta, 'item_count', 1)
else
  redis.call('HSET', items, key, payload)
  if record ~= old then redis.call('HSET', records, key, record) end
end
if delta ~= 0 then redis.call('HINCRBY', meta, 'size', delta) end
redis.call('HSET', meta, 'modified_at', now, 'accessed_at', now)
return created
