-- name: kv_flush
-- summary: apply a batch of buffered sets and deletes to the mounts of one slot in one step: every quota checked write by write in their order, the bookkeeping updated with one variadic command per structure
-- KEYS[*]: the records of the W writes, in order, one write per record (a record is its mount's metadata key minus the last character, then "k:", then the key name); then 4 keys per mount (index zset, metadata hash, expiry zset, byte counter): first the G mounts the writes name, then, when the store has a size limit, the other mounts of this slot (counted, never written)
-- ARGV[*]: 1 W; 2 G; 3 the store's max size in bytes (0 no limit); 4 the bytes used by mounts in other slots (a snapshot); then G values: each named mount's max entries (0 no limit); then per write a head and, for a set, the encoded value. A head is "d<g>" for a delete or "s<g> <TTL ms> <content type>" for a set (g: the write's mount, 1..G; TTL 0: none)
-- returns: the refused sets, flat: the write's position (1..W) then its code, -1 refused by the entry quota, -3 refused by the store quota (nothing written for them); empty when every write went through
-- read-only: no
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local W, G = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_store, others = tonumber(ARGV[3]), tonumber(ARGV[4])
local NG = (#KEYS - W) / 4
local CHUNK = 2000 -- arguments per variadic command (Lua's unpack has a limit); even: pairs stay whole

-- the pad entries that keep a mount's metadata hash and expiry zset in their hashed encodings (see kv_set)
local META_PAD = 'bookkeeping pad: over 64 bytes, it keeps this hash out of the listpack encoding'
local EXP_PAD = '\255expiry pad: over 64 bytes, it keeps this sorted set out of the listpack encoding'

local function key(g, j) return KEYS[W + 4 * (g - 1) + j] end
local function size_of(meta_value) return tonumber(string.match(meta_value, '^%d+')) or 0 end

-- cmd k list[1..n], in commands of at most CHUNK elements (unpack takes ranges: nothing is copied)
local function bulk(cmd, k, list, n)
  for i = 1, n, CHUNK do
    redis.call(cmd, k, unpack(list, i, math.min(i + CHUNK - 1, n)))
  end
end

-- Drop the bookkeeping of mount g's records whose deadline has passed (Redis already expired
-- them), except the members in keep; the bytes freed and the members dropped.
local function purge(g, keep)
  local idx, meta, exp = key(g, 1), key(g, 2), key(g, 3)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', '(' .. now)
  if keep and #gone > 0 then
    local kept = {}
    for _, m in ipairs(gone) do
      if not keep[m] then kept[#kept + 1] = m end
    end
    gone = kept
  end
  local n = #gone
  if n == 0 then return 0, gone end
  local freed = 0
  for i = 1, n, CHUNK do
    for _, v in ipairs(redis.call('HMGET', meta, unpack(gone, i, math.min(i + CHUNK - 1, n)))) do
      if v then freed = freed + size_of(v) end
    end
  end
  bulk('ZREM', exp, gone, n)
  bulk('ZREM', idx, gone, n)
  bulk('HDEL', meta, gone, n)
  if freed > 0 then redis.call('DECRBY', key(g, 4), freed) end
  return freed, gone
end

-- parse the writes; each distinct head is parsed once: {is set, g, TTL text, TTL ms, deadline as text, metadata after the size}
local max_entries, skip, pos, np = {}, {}, {}, {}
for g = 1, G do
  max_entries[g] = tonumber(ARGV[4 + g])
  skip[g] = #key(g, 2) + 2 -- where the key name starts in a record key
  pos[g], np[g] = {}, 0     -- the writes of mount g, in order
end
local parsed = {}
local head, member, value = {}, {}, {}
local a = 5 + G
for i = 1, W do
  local text = ARGV[a]
  local h = parsed[text]
  if not h then
    if string.sub(text, 1, 1) == 'd' then
      h = {false, tonumber(string.sub(text, 2))}
    else
      local g, ttl, ctype = string.match(text, '^s(%d+) (%d+) (.*)$')
      local ms = tonumber(ttl)
      local tail = string.format(':%d:%s', now, ctype) -- the metadata after the size (as kv_set writes it)
      if ms > 0 then tail = ';' .. ttl .. ';' .. ctype end
      h = {true, tonumber(g), ttl, ms, string.format('%d', now + ms), tail} -- numbers as text once ('%d')
    end
    parsed[text] = h
  end
  a = a + 1
  head[i] = h
  local g = h[2]
  member[i] = string.sub(KEYS[i], skip[g])
  local n = np[g] + 1
  np[g] = n
  pos[g][n] = i
  if h[1] then
    value[i] = ARGV[a]
    a = a + 1
  end
end

-- the current metadata of each written record; a mount that gets a new key purges its expired
-- bookkeeping first (as a single write of a new key does), and its expired records written
-- here become new keys
local prev, purged = {}, {}
for g = 1, G do
  local p, n, fresh = pos[g], np[g], false
  for c = 1, n, CHUNK do
    local top = math.min(c + CHUNK - 1, n)
    local names = {}
    for j = c, top do names[j - c + 1] = member[p[j]] end
    local got = redis.call('HMGET', key(g, 2), unpack(names))
    for j = c, top do
      local v = got[j - c + 1]
      prev[p[j]] = v
      if not v and head[p[j]][1] then fresh = true end
    end
  end
  if fresh then
    purged[g] = true
    local _, gone = purge(g)
    if #gone > 0 then
      local dropped = {}
      for _, m in ipairs(gone) do dropped[m] = true end
      for j = 1, n do
        if dropped[member[p[j]]] then prev[p[j]] = nil end
      end
    end
  end
end

-- The quotas' state, read only when a write needs it: the entry count of a mount and the
-- store's total, plus what the writes decided so far changed (dcount, dtotal).
local base_count, dcount, delta = {}, {}, {}
for g = 1, G do dcount[g], delta[g] = 0, 0 end
local base_total, dtotal = nil, 0
local function count(g)
  if not base_count[g] then base_count[g] = redis.call('ZCARD', key(g, 1)) end
  return base_count[g] + dcount[g]
end
local function total()
  if not base_total then
    base_total = others
    for g = 1, NG do base_total = base_total + (tonumber(redis.call('GET', key(g, 4))) or 0) end
  end
  return base_total + dtotal
end

-- nil when write i fits, else its refusal
local function refusal(g, old, d)
  if not old and max_entries[g] > 0 and count(g) >= max_entries[g] then return -1 end
  if max_store > 0 and d > 0 and total() + d > max_store then return -3 end
  return nil
end

-- A refused write first purges every mount of the slot not purged yet (expired records give
-- their place back), keeping the records this batch writes, then looks again.
local all_purged = false
local function purge_rest()
  all_purged = true
  for g = 1, NG do
    if not purged[g] then
      purged[g] = true
      local mine = nil
      if g <= G then
        mine = {}
        for j = 1, np[g] do mine[member[pos[g][j]]] = true end
      end
      local freed, gone = purge(g, mine)
      if base_total then base_total = base_total - freed end
      if base_count[g] then base_count[g] = base_count[g] - #gone end
    end
  end
end

-- decide each write in order, as if they ran one after another
local ok, refused, nr = {}, {}, 0
for i = 1, W do
  local h = head[i]
  local g, old = h[2], prev[i]
  if h[1] then
    local d = #value[i] - (old and size_of(old) or 0)
    local code = refusal(g, old, d)
    if code and not all_purged then
      purge_rest()
      code = refusal(g, old, d)
    end
    if code then
      refused[nr + 1], refused[nr + 2] = i, code
      nr = nr + 2
    else
      ok[i] = true
      if not old then dcount[g] = dcount[g] + 1 end
      dtotal = dtotal + d
      delta[g] = delta[g] + d
    end
  elseif old then
    local d = size_of(old)
    dcount[g] = dcount[g] - 1
    dtotal = dtotal - d
    delta[g] = delta[g] - d
  end
end

-- write: the records one by one, the bookkeeping with one variadic command per structure
for g = 1, G do
  local p = pos[g]
  local add_exp, rem_exp, add_idx, gone, meta_set, dead = {}, {}, {}, {}, {}, {}
  local ae, re, ai, go, ms, de = 0, 0, 0, 0, 0, 0
  for j = 1, np[g] do
    local i = p[j]
    local h, m, old = head[i], member[i], prev[i]
    if not h[1] then
      de = de + 1
      dead[de] = KEYS[i]
      if old then
        go = go + 1
        gone[go] = m
      end
    elseif ok[i] then
      local v = value[i]
      if h[4] > 0 then
        redis.call('SET', KEYS[i], v, 'PX', h[3])
        add_exp[ae + 1], add_exp[ae + 2] = h[5], m
        ae = ae + 2
      else
        redis.call('SET', KEYS[i], v)
        if old then
          re = re + 1
          rem_exp[re] = m
        end
      end
      if not old then
        add_idx[ai + 1], add_idx[ai + 2] = 0, m
        ai = ai + 2
      end
      local mv = string.format('%d%s', #v, h[6])
      if mv ~= old then -- an overwrite of the same size, TTL and type leaves it as it is
        meta_set[ms + 1], meta_set[ms + 2] = m, mv
        ms = ms + 2
      end
    end
  end
  if ai > 0 then -- new keys bring the pads along (see kv_set)
    meta_set[ms + 1], meta_set[ms + 2] = '', META_PAD
    ms = ms + 2
    if ae > 0 then
      add_exp[ae + 1], add_exp[ae + 2] = '+inf', EXP_PAD
      ae = ae + 2
    end
  end
  local idx, meta, exp = key(g, 1), key(g, 2), key(g, 3)
  if de > 0 then for i = 1, de, CHUNK do redis.call('DEL', unpack(dead, i, math.min(i + CHUNK - 1, de))) end end
  if go > 0 then
    bulk('ZREM', idx, gone, go)
    bulk('ZREM', exp, gone, go)
    bulk('HDEL', meta, gone, go)
  end
  if re > 0 then bulk('ZREM', exp, rem_exp, re) end
  if ae > 0 then bulk('ZADD', exp, add_exp, ae) end
  if ai > 0 then bulk('ZADD', idx, add_idx, ai) end
  if ms > 0 then bulk('HSET', meta, meta_set, ms) end
  if delta[g] ~= 0 then redis.call('INCRBY', key(g, 4), delta[g]) end
end
return refused
