-- name: kv_set
-- summary: write one kv record with its TTL, quotas and bookkeeping in one step (optionally compare-and-set)
-- KEYS[*]: 1 the record (the metadata key minus its last character, then "k:", then the key name), 2 the mount's index zset, 3 its metadata hash, 4 its expiry zset, 5 its byte counter; then groups of 4 (index, metadata, expiry, counter) of the other mounts in this slot
-- ARGV[1]: the encoded value
-- ARGV[2]: the write's terms, space-separated: TTL in ms (0 none), the mount's max entries (0 no limit), the store's max size in bytes (0 no limit), the bytes used by mounts in other slots (a snapshot), then the content type recorded in the metadata
-- ARGV[3]: absent for a plain write; 1 only if the record is absent, 2 only if it holds ARGV[4]
-- ARGV[4]: the expected current value when ARGV[3] is 2
-- returns: {1, size} written; {0, 0} compare-and-set conflict; {-1, limit} entry quota; {-3, limit} store quota
-- read-only: no
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec, idx, meta, exp, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local member = string.sub(rec, #meta + 2)
local value = ARGV[1]
local a, b, c, d, ctype = string.match(ARGV[2], '^(%d+) (%d+) (%d+) (%d+) (.*)$')
local ttl, max_entries, max_store, others = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
local size = string.len(value)

local cas = ARGV[3]
if cas then
  local cur = redis.call('GET', rec)
  if cas == '1' then
    if cur then return {0, 0} end
  elseif cur ~= ARGV[4] then
    return {0, 0}
  end
end

local function size_of(meta_value)
  return tonumber(string.match(meta_value, '^(%d+)')) or 0
end

-- drop the bookkeeping of records whose deadline has passed (Redis already expired them)
local function purge(i, m, x, u)
  local gone = redis.call('ZRANGEBYSCORE', x, '-inf', '(' .. now_ms)
  if #gone == 0 then return end
  local freed = 0
  for j = 1, #gone, 500 do
    local chunk = {}
    for k = j, math.min(j + 499, #gone) do
      local mv = redis.call('HGET', m, gone[k])
      if mv then freed = freed + size_of(mv) end
      chunk[#chunk + 1] = gone[k]
    end
    redis.call('ZREM', x, unpack(chunk))
    redis.call('ZREM', i, unpack(chunk))
    redis.call('HDEL', m, unpack(chunk))
  end
  if freed > 0 then redis.call('DECRBY', u, freed) end
end

local old = redis.call('HGET', meta, member)
local delta
-- nil when the write fits, else the refusal
local function refusal()
  local old_size = 0
  if old then
    old_size = size_of(old)
  elseif max_entries > 0 and redis.call('ZCARD', idx) >= max_entries then
    return {-1, max_entries}
  end
  delta = size - old_size
  if max_store > 0 and delta > 0 then
    local total = others + (tonumber(redis.call('GET', used)) or 0)
    for i = 6, #KEYS, 4 do
      total = total + (tonumber(redis.call('GET', KEYS[i + 3])) or 0)
    end
    if total + delta > max_store then return {-3, max_store} end
  end
  return nil
end

-- A new key purges its mount's expired bookkeeping first (what expired never piles up); an
-- overwrite purges only when a quota would refuse it (expired records give their place back).
if not old then purge(idx, meta, exp, used) end
local refused = refusal()
if refused then
  purge(idx, meta, exp, used)
  for i = 6, #KEYS, 4 do purge(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]) end
  old = redis.call('HGET', meta, member)
  refused = refusal()
  if refused then return refused end
end

if ttl > 0 then
  redis.call('SET', rec, value, 'PX', ttl)
  redis.call('ZADD', exp, now_ms + ttl, member)
else
  redis.call('SET', rec, value)
  if old then redis.call('ZREM', exp, member) end
end
if not old then redis.call('ZADD', idx, 0, member) end
redis.call('HSET', meta, member, size .. ':' .. now_ms .. ':' .. ctype)
if delta ~= 0 then redis.call('INCRBY', used, delta) end
return {1, size}
