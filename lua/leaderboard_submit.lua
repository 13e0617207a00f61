-- name: leaderboard_submit
-- summary: apply submits (best/latest/incr) and removals to a board, its dense-rank index and the current bucket of each time window; every check (clock range, tie-break bounds, window bucket) runs before the first write
-- KEYS[1]: the board's sorted set
-- KEYS[2]: the member-data hash
-- KEYS[*]: then KEYS[3..2+W]: the current bucket of each window, in the order of the window arguments; then, on dense boards only, KEYS[3+W]: the distinct-score sorted set (member = score text) and KEYS[4+W]: the distinct-score count hash (score text -> members holding it)
-- ARGV[1]: the board's terms: "desc" or "asc" alone for a board with none of the options below, else space-separated: order ("desc": higher is better, or "asc"); "1" to maintain the dense-rank index (its two keys follow the buckets) else "0"; tie-break time bits B (0: no tie-break; a stored score is then primary * 2^B + time part); tie-break epoch (integer µs); tie-break tick (integer µs); board TTL in ms refreshed on every write (0: none); a virtual clock in µs, tests only (0: the server's TIME); the number of windows W
-- ARGV[*]: then 4 per window: kind (day|week|month), the caller's bucket id, ms kept after the bucket closes, the bucket's end in µs; then per operation: the op (best|latest|incr, with a "+" when data follows; or remove), the member, then, except for a removal, the score, then the data when the op ends in "+"
-- returns: {1, stored score text or nil per operation (the board's value after it; for a removal, the value it had)}; {0, day, week, month} when a window bucket named by the caller is not the current one by the clock (nothing written; retry with those ids)
-- read-only: no


-- Fast path: one best / latest / incr (with or without data) on a board with none of the options
-- (terms "desc" or "asc"): at most two commands, no parsing, closures or number formatting.
local nargs = #ARGV
if nargs <= 5 and #ARGV[1] <= 4 then
  local op = ARGV[2]
  if nargs == 5 then
    if op == 'best+' then op = 'best' elseif op == 'latest+' then op = 'latest' elseif op == 'incr+' then op = 'incr' else op = nil end
  elseif nargs ~= 4 then
    op = nil
  end
  if op == 'best' or op == 'latest' or op == 'incr' then
    local key, member, s = KEYS[1], ARGV[3], ARGV[4]
    local out = s
    if op == 'latest' then
      redis.call('ZADD', key, s, member)
    else
      local raw = redis.call('ZSCORE', key, member)
      if op == 'incr' then
        if raw then
          local new = tonumber(raw) + tonumber(s)
          if new ~= new or new == math.huge or new == -math.huge then
            return redis.error_reply('ERR leaderboard: incrementing ' .. member .. ' leaves the finite range')
          end
        end
        out = redis.call('ZINCRBY', key, s, member)
      elseif not raw then
        redis.call('ZADD', key, s, member)
      else
        local new, old = tonumber(s), tonumber(raw)
        if (ARGV[1] == 'desc' and new > old) or (ARGV[1] ~= 'desc' and new < old) then
          redis.call('ZADD', key, s, member)
        else
          out = raw
        end
      end
    end
    if nargs == 5 then
      redis.call('HSET', KEYS[2], member, ARGV[5])
    end
    return {1, out}
  end
end

local desc, dense, bits, epoch, tick, ttl, now, nw = ARGV[1] == 'desc', false, 0, 0, 1, 0, 0, 0
if #ARGV[1] > 4 then
  local order, dense_flag, b, e, k, l, v, w = string.match(ARGV[1], '^(%a+) (%d) (%d+) (%-?%d+) (%d+) (%d+) (%-?%d+) (%d+)$')
  desc, dense = order == 'desc', dense_flag == '1'
  bits, epoch, tick = tonumber(b), tonumber(e), tonumber(k)
  ttl, now, nw = tonumber(l), tonumber(v), tonumber(w)
end
if now == 0 and (bits > 0 or nw > 0) then -- only tie-breaks and windows need the clock
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- the bucket the caller named for each window must be the current one by the clock
local keyidx = {1}
if nw > 0 then
  -- current bucket ids: UTC day, Monday-based week, calendar month
  local day = math.floor(now / 86400000000)
  local function civil(z) -- days since 1970-01-01 -> year, month (proleptic Gregorian)
    z = z + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local m = mp < 10 and mp + 3 or mp - 9
    if m <= 2 then y = y + 1 end
    return y, m
  end
  local ids = {day = day, week = math.floor((day + 3) / 7)}
  local yy, mm = civil(day)
  ids.month = yy * 12 + (mm - 1)
  for i = 1, nw do
    local a = 2 + 4 * (i - 1)
    if ids[ARGV[a]] ~= tonumber(ARGV[a + 1]) then
      return {0, ids.day, ids.week, ids.month}
    end
    keyidx[#keyidx + 1] = 2 + i
  end
end
local UKEY, CKEY = KEYS[3 + nw], KEYS[4 + nw]

local M, T, MAXP, MINP = 0, 0, 0, 0
if bits > 0 then
  M = 2 ^ bits
  MAXP = 2 ^ (53 - bits) - 1
  MINP = -(2 ^ (53 - bits))
  T = math.floor((now - epoch) / tick)
  if T < 0 or T >= M then
    return redis.error_reply('ERR leaderboard: the clock is outside the tie-break time range (time part ' .. string.format('%.17g', T) .. ' not in [0, 2^' .. bits .. '))')
  end
end

local function better(x, y)
  if desc then return x > y end
  return x < y
end
local function enc(p)
  if desc then return p * M + (M - 1 - T) end
  return p * M + T
end

-- parse the operations into columns: op, member, score, data (nil when none)
local op_of, member_of, score_of, data_of = {}, {}, {}, {}
local nops = 0
local a = 2 + 4 * nw
while a <= #ARGV do
  local op = ARGV[a]
  nops = nops + 1
  if string.byte(op, -1) == 43 then -- "+": data follows
    op = string.sub(op, 1, -2)
    data_of[nops] = ARGV[a + 3]
  end
  op_of[nops], member_of[nops] = op, ARGV[a + 1]
  if op == 'remove' then
    a = a + 2
  else
    score_of[nops] = tonumber(ARGV[a + 2])
    a = a + (data_of[nops] and 4 or 3)
  end
end

-- pass 1: read, compute every new value, check; nothing is written until all checks pass
local orig, cur = {}, {} -- per key index: member -> score (false: absent)
local touched_ki, touched_m = {}, {}
for _, ki in ipairs(keyidx) do
  orig[ki], cur[ki] = {}, {}
end
local results = {1}
for j = 1, nops do
  local op, member, s = op_of[j], member_of[j], score_of[j]
  for _, ki in ipairs(keyidx) do
    local old = cur[ki][member]
    if old == nil then
      local raw = redis.call('ZSCORE', KEYS[ki], member)
      if raw then old = tonumber(raw) else old = false end
      orig[ki][member] = old
      touched_ki[#touched_ki + 1] = ki
      touched_m[#touched_m + 1] = member
    end
    local new
    if op == 'remove' then
      new = false
    elseif bits > 0 then
      if op == 'incr' then
        local p = s
        if old then p = p + math.floor(old / M) end
        if p > MAXP or p < MINP then
          return redis.error_reply('ERR leaderboard: score ' .. string.format('%.17g', p) .. ' outside the tie-break range [' .. string.format('%.17g', MINP) .. ', ' .. string.format('%.17g', MAXP) .. ']')
        end
        new = enc(p)
      else
        new = enc(s)
        if op == 'best' and old and not better(new, old) then new = old end
      end
    else
      if op == 'incr' then
        new = s
        if old then new = old + s end
        if new ~= new or new == math.huge or new == -math.huge then
          return redis.error_reply('ERR leaderboard: incrementing ' .. member .. ' leaves the finite range')
        end
      else
        new = s
        if op == 'best' and old and not better(s, old) then new = old end
      end
    end
    cur[ki][member] = new
    if ki == 1 then
      if op == 'remove' then results[j + 1] = old else results[j + 1] = new end
    end
  end
end

local function fmt(x)
  if x == 0 then x = 0 end -- no negative zero
  return string.format('%.17g', x)
end

-- pass 2: write
for i, ki in ipairs(touched_ki) do
  local member = touched_m[i]
  local old, new = orig[ki][member], cur[ki][member]
  if old ~= new then
    if new == false then
      redis.call('ZREM', KEYS[ki], member)
    else
      redis.call('ZADD', KEYS[ki], fmt(new), member)
    end
    if ki == 1 and dense then
      if old ~= false then
        local os = fmt(old)
        if redis.call('HINCRBY', CKEY, os, -1) <= 0 then
          redis.call('HDEL', CKEY, os)
          redis.call('ZREM', UKEY, os)
        end
      end
      if new ~= false then
        local ns = fmt(new)
        if redis.call('HINCRBY', CKEY, ns, 1) == 1 then
          redis.call('ZADD', UKEY, ns, ns)
        end
      end
    end
  end
end
for j = 1, nops do
  if op_of[j] == 'remove' then
    redis.call('HDEL', KEYS[2], member_of[j])
  elseif data_of[j] then
    redis.call('HSET', KEYS[2], member_of[j], data_of[j])
  end
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  if dense then
    redis.call('PEXPIRE', UKEY, ttl)
    redis.call('PEXPIRE', CKEY, ttl)
  end
end
for i = 1, nw do
  local a = 2 + 4 * (i - 1)
  local left = math.floor((tonumber(ARGV[a + 3]) - now) / 1000) + tonumber(ARGV[a + 2])
  if left < 1 then left = 1 end
  redis.call('PEXPIRE', KEYS[2 + i], left)
end
for j = 2, nops + 1 do
  if results[j] then results[j] = fmt(results[j]) end
end
return results
