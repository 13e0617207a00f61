-- name: kv_flush
-- summary: apply a batch of buffered sets and deletes to the mounts of one slot in one step: every quota checked write by write in their order, the bookkeeping updated with one variadic command per structure
-- KEYS[*]: the records of the W writes, in order (a record is its mount's metadata key minus the last character, then "k:", then the key name); then 4 keys per mount (index zset, metadata hash, expiry zset, byte counter): first the G mounts the writes name, then, when the store has a size limit, the other mounts of this slot (counted, never written)
-- ARGV[*]: 1 W; 2 G; 3 the store's max size in bytes (0 no limit); 4 the bytes used by mounts in other slots (a snapshot); then G values: each named mount's max entries (0 no limit); then per write a head and, for a set, the encoded value. A head is "d<g>" for a delete or "s<g> <TTL ms> <content type>" for a set (g: the write's mount, 1..G; TTL 0: none)
-- returns: one code per write, in order: a set 1 written, -1 refused by the entry quota, -3 refused by the store quota (nothing written); a delete 1 when the key was indexed, else 0
-- read-only: no
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local W, G = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_store, others = tonumber(ARGV[3]), tonumber(ARGV[4])
local NG = (#KEYS - W) / 4
local CHUNK = 2000 -- arguments per variadic command (Lua's unpack has a limit)

local function key(g, j) return KEYS[W + 4 * (g - 1) + j] end
local function size_of(meta_value) return tonumber(string.match(meta_value, '^(%d+)')) or 0 end

-- cmd key list... in commands of at most CHUNK elements (an even CHUNK keeps pairs whole)
local function bulk(cmd, k, list)
  for i = 1, #list, CHUNK do
    local args, n = {cmd, k}, 2
    for j = i, math.min(i + CHUNK - 1, #list) do
      n = n + 1
      args[n] = list[j]
    end
    redis.call(unpack(args))
  end
end

-- drop the bookkeeping of records whose deadline has passed (Redis already expired them)
local function purge(g)
  local idx, meta, exp = key(g, 1), key(g, 2), key(g, 3)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', '(' .. now_ms)
  if #gone == 0 then return end
  local freed = 0
  for i = 1, #gone, CHUNK do
    local chunk, n = {'HMGET', meta}, 2
    for j = i, math.min(i + CHUNK - 1, #gone) do
      n = n + 1
      chunk[n] = gone[j]
    end
    for _, v in ipairs(redis.call(unpack(chunk))) do
      if v then freed = freed + size_of(v) end
    end
  end
  bulk('ZREM', exp, gone)
  bulk('ZREM', idx, gone)
  bulk('HDEL', meta, gone)
  if freed > 0 then redis.call('DECRBY', key(g, 4), freed) end
end

-- parse the writes (heads repeat: each distinct one is parsed once)
local max_entries, skip, names = {}, {}, {}
for g = 1, G do
  max_entries[g] = tonumber(ARGV[4 + g])
  skip[g] = #key(g, 2) + 2 -- the key name starts there in a record key
  names[g] = {}
end
local parsed = {}
local head, member, value = {}, {}, {}
local a = 5 + G
for i = 1, W do
  local text = ARGV[a]
  local h = parsed[text]
  if not h then
    if string.sub(text, 1, 1) == 'd' then
      h = {false, tonumber(string.sub(text, 2)), 0, ''}
    else
      local g, ttl, ctype = string.match(text, '^s(%d+) (%d+) (.*)$')
      h = {true, tonumber(g), tonumber(ttl), ctype}
    end
    parsed[text] = h
  end
  a = a + 1
  head[i] = h
  local g = h[2]
  member[i] = string.sub(KEYS[i], skip[g])
  local list = names[g]
  list[#list + 1] = member[i]
  if h[1] then
    value[i] = ARGV[a]
    a = a + 1
  end
end

-- the state the quotas start from, expired records purged first
for g = 1, (max_store > 0 and NG or G) do purge(g) end
local old, count = {}, {}
for g = 1, G do
  local list, known = names[g], {}
  for i = 1, #list, CHUNK do
    local args, n = {'HMGET', key(g, 2)}, 2
    for j = i, math.min(i + CHUNK - 1, #list) do
      n = n + 1
      args[n] = list[j]
    end
    local got = redis.call(unpack(args))
    for j = 1, #got do known[list[i + j - 1]] = got[j] end
  end
  old[g] = known
  if max_entries[g] > 0 then count[g] = redis.call('ZCARD', key(g, 1)) end
end
local total = others
if max_store > 0 then
  for g = 1, NG do total = total + (tonumber(redis.call('GET', key(g, 4))) or 0) end
end

-- decide each write in order, as if they ran one after another
local codes, delta = {}, {}
for g = 1, G do delta[g] = 0 end
for i = 1, W do
  local h = head[i]
  local g = h[2]
  local prev = old[g][member[i]]
  if h[1] then
    local d = string.len(value[i]) - (prev and size_of(prev) or 0)
    if not prev and max_entries[g] > 0 and count[g] >= max_entries[g] then
      codes[i] = -1
    elseif max_store > 0 and d > 0 and total + d > max_store then
      codes[i] = -3
    else
      codes[i] = 1
      if not prev and max_entries[g] > 0 then count[g] = count[g] + 1 end
      total = total + d
      delta[g] = delta[g] + d
    end
  elseif prev then
    codes[i] = 1
    local d = size_of(prev)
    if max_entries[g] > 0 then count[g] = count[g] - 1 end
    total = total - d
    delta[g] = delta[g] - d
  else
    codes[i] = 0
  end
end

-- write: the records one by one, the bookkeeping in bulk
local add_exp, rem_exp, add_idx, rem_idx, set_meta, del_meta = {}, {}, {}, {}, {}, {}
for g = 1, G do
  add_exp[g], rem_exp[g], add_idx[g], rem_idx[g], set_meta[g], del_meta[g] = {}, {}, {}, {}, {}, {}
end
local dead = {}
local function push(list, x) list[#list + 1] = x end
for i = 1, W do
  local h = head[i]
  local g, m = h[2], member[i]
  local prev = old[g][m]
  if not h[1] then
    push(dead, KEYS[i])
    if prev then
      push(rem_idx[g], m)
      push(rem_exp[g], m)
      push(del_meta[g], m)
    end
  elseif codes[i] == 1 then
    local ttl = h[3]
    if ttl > 0 then
      redis.call('SET', KEYS[i], value[i], 'PX', ttl)
      push(add_exp[g], now_ms + ttl)
      push(add_exp[g], m)
    else
      redis.call('SET', KEYS[i], value[i])
      if prev then push(rem_exp[g], m) end
    end
    if not prev then
      push(add_idx[g], 0)
      push(add_idx[g], m)
    end
    push(set_meta[g], m)
    push(set_meta[g], string.len(value[i]) .. ':' .. now_ms .. ':' .. h[4])
  end
end
for i = 1, #dead, CHUNK do
  redis.call('DEL', unpack(dead, i, math.min(i + CHUNK - 1, #dead)))
end
for g = 1, G do
  local idx, meta, exp = key(g, 1), key(g, 2), key(g, 3)
  if #rem_exp[g] > 0 then bulk('ZREM', exp, rem_exp[g]) end
  if #add_exp[g] > 0 then bulk('ZADD', exp, add_exp[g]) end
  if #rem_idx[g] > 0 then bulk('ZREM', idx, rem_idx[g]) end
  if #add_idx[g] > 0 then bulk('ZADD', idx, add_idx[g]) end
  if #del_meta[g] > 0 then bulk('HDEL', meta, del_meta[g]) end
  if #set_meta[g] > 0 then bulk('HSET', meta, set_meta[g]) end
  if delta[g] ~= 0 then redis.call('INCRBY', key(g, 4), delta[g]) end
end
return codes
