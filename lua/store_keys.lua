-- name: store_keys
-- summary: one page of a key-value store's record metadata, in key order, after an exclusive start key
-- KEYS[1]: the store's key index zset
-- KEYS[2]: the store's records hash
-- ARGV[1]: the exclusive start key ('' to start at the first key)
-- ARGV[2]: the page size (at least 1)
-- ARGV[3]: 1 when ARGV[1] is a start key, 0 to start at the beginning
-- returns: a flat list {key, "size:content type", key, ...}
-- read-only: yes
local low = '-'
if ARGV[3] == '1' then low = '(' .. ARGV[1] end
local keys = redis.call('ZRANGEBYLEX', KEYS[1], low, '+', 'LIMIT', 0, tonumber(ARGV[2]))
if #keys == 0 then return {} end
local recs = redis.call('HMGET', KEYS[2], unpack(keys))
local out = {}
for i = 1, #keys do
  out[#out + 1] = keys[i]
  out[#out + 1] = recs[i] or '0:application/octet-stream'
end
return out
