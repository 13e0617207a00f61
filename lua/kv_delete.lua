-- name: kv_delete
-- summary: delete one kv record and its bookkeeping (index, metadata, expiry, byte counter) in one step
-- KEYS[1]: the record
-- KEYS[2]: the mount's index zset
-- KEYS[3]: the mount's metadata hash
-- KEYS[4]: the mount's expiry zset
-- KEYS[5]: the mount's byte counter
-- ARGV[1]: the record's key name (index member)
-- returns: 1 when a live record was deleted, 0 when there was none
-- read-only: no
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec, idx, meta, exp, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local member = ARGV[1]

local deadline = redis.call('ZSCORE', exp, member)
local live = not deadline or tonumber(deadline) >= now_ms
local old = redis.call('HGET', meta, member)
local n = redis.call('DEL', rec)
if old then
  redis.call('HDEL', meta, member)
  redis.call('ZREM', idx, member)
  redis.call('ZREM', exp, member)
  redis.call('DECRBY', used, tonumber(string.match(old, '^(%d+)')) or 0)
  if live then return 1 end
end
if n > 0 then return 1 end
return 0
