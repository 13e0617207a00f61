-- name: ratelimit_multi
-- summary: check one subject against all its rate-limit policies and, only when every one admits, consume cost from each
-- KEYS[*]: one state key per policy, in policy order, all sharing the subject's hash tag
-- ARGV[*]: two per policy, in policy order: limit * 10 + kind (limit in units, the burst for GCRA; kind 1 sliding log, 2 GCRA/token bucket, 3 clock-aligned fixed window, 4 sliding-window counter), then the period in integer microseconds (the window; the emission interval for GCRA); after them, unless the call is a hit of cost 1 on the server clock: cost (an integer >= 0, 0 checks without consuming), mode (0 evaluate only, never writes; 1 hit, all or nothing; 2 hit with penalty, a denial is charged too) and optionally a virtual now in integer microseconds (tests)
-- returns: {now_us, allowed 1|0, then per policy: allowed 1|0, remaining (after this request when it is charged, else as of now), retry_after_us (0 admitted, -1 never), reset_after_us (after the commit, if any)[, then 1 when a key held garbage]}
-- read-only: no
--
-- One policy alone goes to its own script (ratelimit_bucket, _log, _fixed, _counter): this one
-- is for several at once. State of the wrong type or shape under a key (planted, or corrupted)
-- counts as absent, a committing call replaces it, and the reply ends with a 1: a subject is
-- never denied forever by garbage. Sliding-log members are the time itself, made unique with
-- ZADD NX and a suffix when two units share a microsecond.
--
-- With a virtual now, every expiry is at least 60 s of real time: virtual time does not move the
-- server's clock, so a TTL measured on it (1 ms at 1000/s) could lapse between two calls of a test.
-- State never needs its TTL to be correct (each kind reads time from its own contents).
--
-- All arithmetic is on integers below 2^53 (doubles are exact there); values are written with
-- string.format('%d') because tostring() keeps only 14 significant digits.

local n = #KEYS
-- a hit of cost 1 on the server clock sends the policies alone: every argument costs a string
-- to intern and a number to parse
local cost, mode, now, min_ttl_ms = 1, 1, nil, 60000
if ARGV[2 * n + 1] then
  cost, mode, now = tonumber(ARGV[2 * n + 1]), tonumber(ARGV[2 * n + 2]), tonumber(ARGV[2 * n + 3])
end
if not now then
  local t = redis.call('TIME')
  now, min_ttl_ms = t[1] * 1000000 + t[2], 0
end

local function fmt(x) return string.format('%d', x) end
local function ceil_ms(us) return fmt(math.max(math.floor((us + 999) / 1000), min_ttl_ms)) end  -- as text
local function idiv(a, b) -- floor(a / b) for integers, exact
  local q = math.floor(a / b)
  if (q + 1) * b <= a then q = q + 1 elseif q * b > a then q = q - 1 end
  return q
end

local function read(...)  -- the reply, or nil when the key holds another type
  local v = redis.pcall(...)
  if type(v) == 'table' and v.err then return nil end
  return v
end

local res = {now, 1}
local plan = {}   -- per policy: the state to commit
local all_ok = true
local never = false  -- some policy can never admit this cost: nothing is charged, even on penalty
local garbage = false  -- some key held garbage (reported by a trailing 1)

for i = 1, n do
  local k = KEYS[i]
  local lk = tonumber(ARGV[2 * i - 1])
  local limit = math.floor(lk / 10)
  local kind = lk - limit * 10
  local period = tonumber(ARGV[2 * i])
  local ok, remaining, retry, reset
  local p = {kind = kind, limit = limit, period = period}

  if kind == 1 then
    -- exact sliding log: an entry scored t counts while now < t + period
    local lo = '(' .. fmt(now - period)
    local live = read('ZCOUNT', k, lo, '+inf')
    if live == nil then live, p.corrupt = 0, true end
    p.lo = now - period
    p.live = live
    if cost > limit then
      ok, remaining, retry = false, math.max(limit - live, 0), -1
    elseif live + cost <= limit then
      ok, remaining, retry = true, limit - live - cost, 0
    else
      -- the (limit - cost + 1)-th newest decides (live entries hold the top ranks): O(log n)
      local r = fmt(cost - limit - 1)
      local e = redis.call('ZRANGE', k, r, r, 'WITHSCORES')
      ok, remaining, retry = false, math.max(limit - live, 0), tonumber(e[2]) + period - now
    end
    reset = 0  -- filled in below: after a commit it is the window, else the newest entry's expiry
  elseif kind == 2 then
    -- GCRA: tat is the theoretical arrival time; the bucket is full when tat <= now
    local tau = limit * period
    local stored = read('GET', k)
    local tat = now
    local at = stored and tonumber(stored)
    if at and at < 9007199254740992 then tat = math.max(at, now) elseif stored ~= false then p.corrupt = true end
    local avail = idiv(now + tau - tat, period)
    local new = tat + cost * period
    p.tat, p.tau = tat, tau
    if not p.corrupt then p.at = at end
    if cost > limit then
      ok, remaining, retry, reset = false, avail, -1, tat - now
    elseif now >= new - tau then
      ok, remaining, retry, reset = true, avail - cost, 0, tat - now
      p.new = new
    else
      ok, remaining, retry, reset = false, avail, new - tau - now, tat - now
      p.new = math.max(tat, math.min(new, now + tau))  -- penalty: at most an empty bucket
    end
  elseif kind == 4 then
    -- sliding-window counter (approximate): state "<window index>:<current count>:<previous count>";
    -- estimate = prev * (period - elapsed) / period + cur, compared scaled by period (integers)
    local idx = idiv(now, period)
    local e = now - idx * period
    -- (or, for a limit up to about two million, one integer: see lua/ratelimit_counter.lua,
    -- which shares the key)
    local cur, prev = 0, 0
    local wide = 2 * limit + 1
    local span = (limit + 1) * wide
    local m = math.floor(9007199254740992 / span) - 2
    local stored = read('GET', k)
    if stored == nil then p.corrupt = true end
    if stored and m >= 1024 then
      local slot = idx - idiv(idx, m) * m + 1
      local n = tonumber(stored)
      p.base, p.wide = slot * span, wide
      if n and n >= span and n < 9007199254740992 and n == math.floor(n) then
        local q = idiv(n, span)
        local pv = idiv(n - q * span, wide)
        local c = n - q * span - pv * wide
        if c > limit or pv > limit then p.corrupt = true
        elseif q == slot then cur, prev = c, pv
        elseif q == (slot == 1 and m or slot - 1) then prev = c end
      else
        p.corrupt = true
      end
    elseif stored then
      local sidx, scur, sprev = string.match(stored, '^(%-?%d+):(%d+):(%d+)$')
      if not sidx then p.corrupt = true end
      if sidx then
        sidx = tonumber(sidx)
        if sidx == idx then cur, prev = tonumber(scur), tonumber(sprev)
        elseif sidx == idx - 1 then prev = tonumber(scur) end
      end
    elseif m >= 1024 then
      p.base, p.wide = (idx - idiv(idx, m) * m + 1) * span, wide
    end
    p.idx, p.cur, p.prev = idx, cur, prev
    local room = limit * period - prev * (period - e) - cur * period  -- scaled free capacity
    local avail = math.max(idiv(room, period), 0)
    if cur > 0 then reset = (idx + 2) * period - now
    elseif prev > 0 then reset = (idx + 1) * period - now
    else reset = 0 end
    if cost > limit then
      ok, remaining, retry = false, avail, -1
    elseif room >= cost * period then
      ok, remaining, retry = true, avail - cost, 0
    elseif cur + cost > limit then
      -- wait for the next window, where this window's count becomes the decaying previous one
      local e2 = 0
      if cur > 0 then e2 = period - idiv((limit - cost) * period, cur) end
      ok, remaining, retry = false, avail, (idx + 1) * period + e2 - now
    else
      -- later in this window the previous count has decayed enough (prev > 0 here)
      local e2 = period - idiv((limit - cur - cost) * period, prev)
      ok, remaining, retry = false, avail, idx * period + e2 - now
    end
  else
    -- fixed window aligned to the epoch: one integer, slot * (2 * limit + 1) + count, the slot
    -- being the window index mod m, plus 1 (see lua/ratelimit_fixed.lua, which shares the key)
    local idx = idiv(now, period)
    local size = 2 * limit + 1
    local m = math.floor(9007199254740992 / size) - 2
    local slot = idx - idiv(idx, m) * m + 1
    local count = 0
    local stored = read('GET', k)
    if stored == nil then p.corrupt = true end
    if stored then
      local n = tonumber(stored)
      if n and n >= size and n < 9007199254740992 and n == math.floor(n) then
        local q = idiv(n, size)
        if n - q * size > limit then p.corrupt = true elseif q == slot then count = n - q * size end
      else
        p.corrupt = true
      end
    end
    p.idx, p.count, p.base = idx, count, slot * size
    reset = (idx + 1) * period - now
    if cost > limit then
      ok, remaining, retry = false, math.max(limit - count, 0), -1
    elseif count + cost <= limit then
      ok, remaining, retry = true, limit - count - cost, 0
    else
      ok, remaining, retry = false, math.max(limit - count, 0), reset
    end
  end

  p.ok = ok
  plan[i] = p
  if p.corrupt then garbage = true end
  if not ok then all_ok = false end
  if retry == -1 then never = true end
  res[#res + 1] = ok and 1 or 0
  res[#res + 1] = remaining
  res[#res + 1] = retry
  res[#res + 1] = reset
end

if not all_ok then res[2] = 0 end

-- commit: nothing on a denial (unless penalty mode), nothing when only evaluating or cost is 0
if mode == 0 or cost == 0 or never or (mode == 1 and not all_ok) then
  for i = 1, n do
    local p = plan[i]
    if p.ok then res[4 * i] = res[4 * i] + cost end  -- nothing charged: what is left now
    if p.kind == 1 and p.live > 0 then
      local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')  -- the newest, by rank
      res[2 + 4 * i] = tonumber(last[2]) + p.period - now
    end
  end
  if garbage then res[#res + 1] = 1 end
  return res
end

for i = 1, n do
  local k, p = KEYS[i], plan[i]
  if p.corrupt then redis.call('DEL', k) end
  -- a policy that denies on its own stays as it was unless penalty mode charges it;
  -- a policy that admits is charged only when the whole request is admitted (or on penalty)
  if p.kind == 1 then
    -- entries that left the window are dropped by about one commit in eight (they never count,
    -- and a penalty cap removes the oldest first); the key goes a window after the last entry
    if now % 8 == 0 then redis.call('ZREMRANGEBYSCORE', k, '-inf', fmt(p.lo)) end
    local m = fmt(now)
    local j, left = 0, cost
    if cost == 1 then
      if redis.call('ZADD', k, 'NX', m, m) == 1 then left = 0 else j = redis.call('ZCARD', k) end
    end
    while left > 0 do  -- unique members: a suffix, and NX tells which ones were taken already
      local args, c = {'NX'}, math.min(left, 500)
      for _ = 1, c do
        j = j + 1
        args[#args + 1] = m
        args[#args + 1] = m .. ':' .. j
      end
      left = left - redis.call('ZADD', k, unpack(args))
    end
    if not p.ok or mode == 2 then
      local card = redis.call('ZCARD', k)
      if card > p.limit then redis.call('ZREMRANGEBYRANK', k, 0, card - p.limit - 1) end
    end
    redis.call('PEXPIRE', k, ceil_ms(p.period))
    res[2 + 4 * i] = p.period  -- reset_after: the newest entry is now
  elseif p.kind == 2 then
    if p.new and p.new > now then
      -- expires at the second multiple of tau after the state, as lua/ratelimit_bucket.lua does
      -- (the two share keys): a write in the same multiple keeps the TTL set before
      local g = (math.floor(p.new / p.tau) + 2) * p.tau
      if p.at and min_ttl_ms == 0 and g == (math.floor(p.at / p.tau) + 2) * p.tau then
        redis.call('SET', k, fmt(p.new), 'KEEPTTL')
      else
        redis.call('SET', k, fmt(p.new), 'PX', ceil_ms(g - now))
      end
      res[2 + 4 * i] = p.new - now
    end
  elseif p.kind == 4 then
    local cur = p.cur + cost
    if cur > p.limit then cur = p.limit end
    local ttl = (p.idx + 2) * p.period - now  -- the count still weighs in the next window
    local state
    if p.base then state = fmt(p.base + p.prev * p.wide + cur)
    else state = fmt(p.idx) .. ':' .. fmt(cur) .. ':' .. fmt(p.prev) end
    redis.call('SET', k, state, 'PX', ceil_ms(ttl))
    res[2 + 4 * i] = ttl
  else
    local count = p.count + cost
    if count > p.limit then count = p.limit end
    local ttl = (p.idx + 1) * p.period - now
    redis.call('SET', k, fmt(p.base + count), 'PX', ceil_ms(ttl))
  end
end
if garbage then res[#res + 1] = 1 end
return res
