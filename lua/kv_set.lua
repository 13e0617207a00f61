-- name: kv_set
-- summary: write one kv record with its TTL, quotas and bookkeeping in one step (optionally compare-and-set)
-- KEYS[*]: 1 the record (the metadata key minus its last character, then "k:", then the key name), 2 the mount's index zset, 3 its metadata hash, 4 its expiry zset, 5 its byte counter; then groups of 4 (index, metadata, expiry, counter) of the other mounts in this slot
-- ARGV[1]: the encoded value
-- ARGV[2]: the TTL in ms (0: none)
-- ARGV[3]: the record's metadata: for a write with a TTL, all of it, "<size>;<TTL ms>;<content type>" (its time is its deadline minus its TTL; the size is ARGV[1]'s length); without a TTL, ":<content type>" (the script writes "<size>:<time in ms>:<content type>")
-- ARGV[4]: the limits, space-separated: the mount's max entries (0 no limit), the store's max size in bytes (0 no limit), the bytes used by mounts in other slots (a snapshot); read only for a new key or a write that grows
-- ARGV[5]: absent for a plain write; 1 only if the record is absent, 2 only if it holds ARGV[6]
-- ARGV[6]: the expected current value when ARGV[5] is 2
-- returns: 1 written; 0 compare-and-set conflict; -1 refused by the entry quota; -3 refused by the store quota (nothing written)
-- read-only: no
local rec, meta = KEYS[1], KEYS[3]
local value, ttl, tail = ARGV[1], ARGV[2], ARGV[3]
local cas = ARGV[5]
if cas then
  local cur = redis.call('GET', rec)
  if cas == '1' then
    if cur then return 0 end
  elseif cur ~= ARGV[6] then
    return 0
  end
end
local member = string.sub(rec, #meta + 2)
local size = #value
local old = redis.call('HGET', meta, member)
local new -- the metadata this write leaves: with a TTL, ARGV[3] as sent; without, once the time is read
if ttl ~= '0' then new = tail end
local delta = size
if old then
  if old == new then
    delta = 0 -- the same size, TTL and type: the metadata stays as it is
  else
    delta = size - (tonumber(string.match(old, '^%d+')) or 0)
  end
end
local now -- the server's time in ms, read only where needed (never by an overwrite with a TTL that does not grow)

-- The common write (an overwrite that does not grow) needs no quota check: the rest of this
-- block runs only for a new key or a growing value.
if not old or delta > 0 then
  local t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)
  local a, b, c = string.match(ARGV[4], '^(%d+) (%d+) (%d+)$')
  local max_entries, max_store, others = tonumber(a), tonumber(b), tonumber(c)

  -- drop the bookkeeping of records whose deadline has passed (Redis already expired them)
  local function purge(i, m, x, u)
    local gone = redis.call('ZRANGEBYSCORE', x, '-inf', '(' .. now)
    if #gone == 0 then return end
    local freed = 0
    for j = 1, #gone, 500 do
      local chunk = {}
      for k = j, math.min(j + 499, #gone) do chunk[#chunk + 1] = gone[k] end
      for _, mv in ipairs(redis.call('HMGET', m, unpack(chunk))) do
        if mv then freed = freed + (tonumber(string.match(mv, '^%d+')) or 0) end
      end
      redis.call('ZREM', x, unpack(chunk))
      redis.call('ZREM', i, unpack(chunk))
      redis.call('HDEL', m, unpack(chunk))
    end
    if freed > 0 then redis.call('DECRBY', u, freed) end
  end

  -- nil when the write fits, else the refusal (sets delta from old)
  local function refusal()
    if old then
      delta = size - (tonumber(string.match(old, '^%d+')) or 0)
    else
      delta = size
      if max_entries > 0 and redis.call('ZCARD', KEYS[2]) >= max_entries then return -1 end
    end
    if max_store > 0 and delta > 0 then
      local total = others + (tonumber(redis.call('GET', KEYS[5])) or 0)
      for i = 6, #KEYS, 4 do
        total = total + (tonumber(redis.call('GET', KEYS[i + 3])) or 0)
      end
      if total + delta > max_store then return -3 end
    end
    return nil
  end

  -- A new key purges its mount's expired bookkeeping first (what expired never piles up); a
  -- write that would be refused purges every mount of the slot and looks again (expired
  -- records give their place back).
  if not old then purge(KEYS[2], meta, KEYS[4], KEYS[5]) end
  local refused = refusal()
  if refused then
    purge(KEYS[2], meta, KEYS[4], KEYS[5])
    for i = 6, #KEYS, 4 do purge(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]) end
    old = redis.call('HGET', meta, member)
    refused = refusal()
    if refused then return refused end
  end
end

-- Past 64 entries a small hash or zset (the listpack encoding) is scanned on every HGET, HSET
-- and ZADD; a pad entry over 64 bytes keeps the metadata and expiry structures in their hashed
-- encodings. It rides along with a new key's writes (no call of its own); no key name can
-- equal it (key names are not empty, and no UTF-8 text starts with byte 255), and the expiry
-- pad's deadline never comes.
local META_PAD = 'bookkeeping pad: over 64 bytes, it keeps this hash out of the listpack encoding'
local EXP_PAD = '\255expiry pad: over 64 bytes, it keeps this sorted set out of the listpack encoding'
-- Hot path (measured with callgrind on redis-server): the metadata of a write with a TTL comes
-- whole from the caller (no number turned into text here), and the deadline is formatted with
-- '%d' (a Lua number's default '%.14g' costs more). (PSETEX would parse less than SET ... PX,
-- but fakeredis rounds its deadline to the second.)
if ttl ~= '0' then
  redis.call('SET', rec, value, 'PX', ttl)
  local deadline = string.format('%d', redis.call('PEXPIRETIME', rec))
  if old then
    redis.call('ZADD', KEYS[4], deadline, member)
  else
    redis.call('ZADD', KEYS[4], deadline, member, '+inf', EXP_PAD)
  end
else
  if not now then
    local t = redis.call('TIME')
    now = t[1] * 1000 + math.floor(t[2] / 1000)
  end
  new = string.format('%d:%d%s', size, now, tail)
  redis.call('SET', rec, value)
  if old then redis.call('ZREM', KEYS[4], member) end
end
if not old then
  redis.call('ZADD', KEYS[2], 0, member)
  redis.call('HSET', meta, member, new, '', META_PAD)
elseif new ~= old then
  redis.call('HSET', meta, member, new)
end
if delta ~= 0 then redis.call('INCRBY', KEYS[5], delta) end
return 1
