-- name: kv_set
-- summary: write one kv record with its TTL, quotas and bookkeeping in one step (optionally compare-and-set)
-- KEYS[*]: 1 the record, 2 the mount's index zset, 3 its metadata hash, 4 its expiry zset, 5 its byte counter; then groups of 4 (index, metadata, expiry, counter) of the other mounts in this slot
-- ARGV[1]: the record's key name (index member)
-- ARGV[2]: the encoded value
-- ARGV[3]: TTL in milliseconds, 0 for none
-- ARGV[4]: max entries of the mount, 0 for no limit
-- ARGV[5]: max value size in bytes, 0 for no limit
-- ARGV[6]: max store size in bytes, 0 for no limit
-- ARGV[7]: bytes used by mounts in other slots (a snapshot), 0 when every mount is in this slot
-- ARGV[8]: the content type recorded in the metadata
-- ARGV[9]: 0 plain write, 1 only if the record is absent, 2 only if it holds ARGV[10]
-- ARGV[10]: the expected current value when ARGV[9] is 2
-- returns: {1, size} written; {0, 0} compare-and-set conflict; {-1, limit} entry quota; {-2, limit} value too large; {-3, limit} store quota
-- read-only: no
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function size_of(meta_value)
  return tonumber(string.match(meta_value, '^(%d+)')) or 0
end

-- drop the bookkeeping of records whose deadline has passed (Redis already expired them)
local function purge(idx, meta, exp, used)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', '(' .. now_ms)
  if #gone == 0 then return end
  local freed = 0
  for i = 1, #gone, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #gone) do
      local m = redis.call('HGET', meta, gone[j])
      if m then freed = freed + size_of(m) end
      chunk[#chunk + 1] = gone[j]
    end
    redis.call('ZREM', exp, unpack(chunk))
    redis.call('ZREM', idx, unpack(chunk))
    redis.call('HDEL', meta, unpack(chunk))
  end
  if freed > 0 then redis.call('DECRBY', used, freed) end
end

local rec, idx, meta, exp, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local member, value = ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local max_entries, max_value, max_store = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local size = string.len(value)

if max_value > 0 and size > max_value then return {-2, max_value} end
purge(idx, meta, exp, used)

local cas = ARGV[9]
if cas ~= '0' then
  local cur = redis.call('GET', rec)
  if cas == '1' then
    if cur then return {0, 0} end
  elseif cur ~= ARGV[10] then
    return {0, 0}
  end
end

local old = redis.call('HGET', meta, member)
local old_size = 0
if old then
  old_size = size_of(old)
elseif max_entries > 0 and redis.call('ZCARD', idx) >= max_entries then
  return {-1, max_entries}
end

local delta = size - old_size
if max_store > 0 and delta > 0 then
  local total = tonumber(ARGV[7]) + (tonumber(redis.call('GET', used)) or 0)
  for i = 6, #KEYS, 4 do
    purge(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3])
    total = total + (tonumber(redis.call('GET', KEYS[i + 3])) or 0)
  end
  if total + delta > max_store then return {-3, max_store} end
end

if ttl > 0 then
  redis.call('SET', rec, value, 'PX', ttl)
  redis.call('ZADD', exp, now_ms + ttl, member)
else
  redis.call('SET', rec, value)
  redis.call('ZREM', exp, member)
end
redis.call('ZADD', idx, 0, member)
redis.call('HSET', meta, member, size .. ':' .. now_ms .. ':' .. ARGV[8])
if delta ~= 0 then redis.call('INCRBY', used, delta) end
return {1, size}
