-- name: kv_clear
-- summary: delete a batch of a mount's records with their bookkeeping, and name the next batch
-- KEYS[*]: 1 the mount's index zset, 2 its metadata hash, 3 its expiry zset, 4 its byte counter; then the records to delete
-- ARGV[*]: the key names (index members) of KEYS[5...], in the same order; the last ARGV is the batch size
-- returns: the key names of the next batch still indexed (empty when the mount is clear)
-- read-only: no
local idx, meta, exp, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch = tonumber(ARGV[#ARGV])
local freed = 0
for i = 5, #KEYS do
  local member = ARGV[i - 4]
  redis.call('DEL', KEYS[i])
  local old = redis.call('HGET', meta, member)
  if old then
    freed = freed + (tonumber(string.match(old, '^(%d+)')) or 0)
    redis.call('HDEL', meta, member)
  end
  redis.call('ZREM', idx, member)
  redis.call('ZREM', exp, member)
end
if redis.call('ZCARD', idx) == 0 then
  redis.call('DEL', meta, exp, used)
  return {}
end
if freed > 0 then redis.call('DECRBY', used, freed) end
return redis.call('ZRANGE', idx, 0, batch - 1)
