-- name: ratelimit_multi
-- summary: check one subject against all its rate-limit policies and, only when every one admits, consume cost from each
-- KEYS[*]: one state key per policy, in policy order, all sharing the subject's hash tag
-- ARGV[*]: two per policy, in policy order: limit * 10 + kind (limit in units, the burst for GCRA; kind 1 sliding log, 2 GCRA/token bucket, 3 clock-aligned fixed window, 4 sliding-window counter), then the period in integer microseconds (the window; the emission interval for GCRA); after them, unless the call is a hit of cost 1 on the server clock: cost (an integer >= 0, 0 checks without consuming), mode (0 evaluate only, never writes; 1 hit, all or nothing; 2 hit with penalty, a denial is charged too) and optionally a virtual now in integer microseconds (tests)
-- returns: a hit of cost 1 that every policy admits: one integer per policy, in policy order (what each policy's own script returns for an admitted hit: see below); otherwise {now_us, allowed 1|0, then per policy: allowed 1|0, remaining (after this request when it is charged, else as of now), retry_after_us (0 admitted, -1 never), reset_after_us (after the commit, if any)[, then 1 when a key held garbage]}
-- read-only: no
--
-- One policy alone goes to its own script (ratelimit_bucket, _log, _fixed, _counter): this one
-- is for several at once. State of the wrong type or shape under a key (planted, or corrupted)
-- counts as absent, a committing call replaces it, and the reply ends with a 1: a subject is
-- never denied forever by garbage. Sliding-log members are the time itself (scored by the
-- time they name), made unique with a suffix when two units share a microsecond.
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
local cost, mode, now, min_ttl_ms, stamp = 1, 1, nil, 60000, nil
if ARGV[2 * n + 1] then
  cost, mode, now = tonumber(ARGV[2 * n + 1]), tonumber(ARGV[2 * n + 2]), tonumber(ARGV[2 * n + 3])
end
if not now then
  local t = redis.call('TIME')
  local usec = t[2]
  if #usec < 6 then usec = string.sub('00000' .. usec, -6) end
  stamp = t[1] .. usec  -- now as text, as format('%d', now) writes it: a log's member
  now, min_ttl_ms = stamp + 0, 0  -- one numeral parsed once (not seconds and microseconds, two, added)
end

-- The common request (cost 1, hit mode) first: each policy by its own short path, one pass, no
-- closures or tables per policy. The token bucket, the fixed window and the sliding counter
-- charge in place (INCRBY of the interval or 1: their states are integers, as their own scripts
-- write them); a sliding log is only counted here and recorded once every policy has admitted.
-- A denial, garbage, or a shape without a one-integer reply undoes the charges made so far
-- (DECRBY, or DEL of a key the charge created) and goes on to the general evaluation below,
-- which builds the full reply. Admitted, the reply is one integer per policy, in policy order,
-- each what that policy's own script returns for an admitted hit (the log: remaining; the
-- bucket: tat - now; the fixed window: count * window + reset - 1; the sliding counter:
-- remaining * 2 * window + reset - 1).
local counted = false  -- the short path's scratch table, when it went on to the general one
if mode == 1 and cost == 1 then
  -- globals looked up once (each use of one is a table lookup)
  local floor, format, rcall, rpcall, keys, argv = math.floor, string.format, redis.call, redis.pcall, KEYS, ARGV
  -- the reply, one integer per policy; and one scratch table, made at its size once (a table
  -- grown an item at a time is reallocated, and every table is garbage to collect): per policy
  -- i, w[i] what the commit writes (-window: a log; 2 to 4, false: nothing) and w[n + i],
  -- w[2n + i] its arguments; after them, the charges made so far (key, by: '' to DEL), up to w[nu]
  local out = n == 2 and {0, 0} or {}
  local w = {false, false, false, false, false, false, false, false, false, false}
  local nu, n2 = 3 * n, 2 * n
  local bail = false
  for i = 1, n do
    local k = keys[i]
    local lk = argv[2 * i - 1] + 0  -- ('+ 0' parses a numeral once, tonumber() twice)
    local kind = lk % 10  -- (no call: an operator)
    local limit = (lk - kind) / 10
    local period = argv[2 * i] + 0
    if kind == 1 then
      -- as ratelimit_log counts: a small limit's few entries by ZCOUNT (the commit drops what
      -- left one time in eight); a larger log by ZCARD, dropping what left first (no walk of a
      -- small, listpack, set entry by entry; no trim on a new key)
      local live, gone = nil, 0
      if limit <= 16 then live = rpcall('ZCOUNT', k, format('(%d', now - period), '+inf')
      else
        live = rpcall('ZCARD', k)
        if type(live) == 'number' and live > 0 then
          gone = rcall('ZREMRANGEBYSCORE', k, '-inf', format('%d', now - period))
          live = live - gone
        end
      end
      if type(live) ~= 'number' then bail = true break end
      -- the general evaluation reuses the count (a trim drops only what left); the commit, what
      -- the trim dropped (a log above 16 keeps its key two windows past its oldest entry)
      w[n + i], w[n2 + i] = live, limit > 16 and gone  -- false: a small log
      if live >= limit then bail = true break end
      out[i], w[i] = limit - live - 1, -period  -- a log: its window, negated
    elseif kind == 2 then
      local by = argv[2 * i]  -- the interval, as text
      local v = rpcall('INCRBY', k, by)
      if type(v) ~= 'number' then bail = true break end
      local at = v - period  -- the state before
      w[nu + 1], w[nu + 2], nu = k, at == 0 and '' or by, nu + 2
      local tau = limit * period
      if v >= 9007199254740992 or (at >= now and v - tau > now) then bail = true break end
      if at >= now then  -- a drawn bucket: the expiry moves when the state passes a multiple of tau
        local g = floor(v / tau)
        if min_ttl_ms ~= 0 or g ~= floor(at / tau) then
          w[i] = 2
          w[n + i] = format('%d', math.max(floor(((g + 2) * tau - now + 999) / 1000), min_ttl_ms))
        end
        out[i] = v - now
      else  -- a full bucket (no key, or a state behind now): it becomes now + interval
        local new = now + period
        local gn = floor(new / tau)
        w[i], w[n + i] = 3, format('%d', new)
        if min_ttl_ms ~= 0 or at <= 0 or gn ~= floor(at / tau) then
          w[n2 + i] = format('%d', math.max(floor(((gn + 2) * tau - now + 999) / 1000), min_ttl_ms))
        end
        out[i] = period
      end
    else
      -- the fixed window (3) and the sliding counter (4): one integer each, as their scripts keep it
      local idx = floor(now / period)  -- exact floor below
      if (idx + 1) * period <= now then idx = idx + 1 elseif idx * period > now then idx = idx - 1 end
      local wide = 2 * limit + 1
      local span = kind == 4 and (limit + 1) * wide or wide
      local m = floor(9007199254740992 / span) - 2
      -- shapes whose admitted reply is no single integer take the general path
      if kind == 4 and (m < 1024 or (limit + 1) * 2 * period >= 9007199254740992) then bail = true break end
      if kind == 3 and (limit + 1) * period >= 9007199254740992 then bail = true break end
      local slot = idx - floor(idx / m) * m
      if slot < 0 then slot = slot + m elseif slot >= m then slot = slot - m end
      slot = slot + 1
      local v = rpcall('INCRBY', k, '1')
      if type(v) ~= 'number' then bail = true break end
      local old = v - 1
      w[nu + 1], w[nu + 2], nu = k, old == 0 and '' or '1', nu + 2
      -- the state before: q its slot, c its current count (and p the previous one, kind 4)
      local q, c, p = 0, 0, 0
      if old ~= 0 then
        if old < span or v >= 9007199254740992 then bail = true break end
        q = floor(old / span)
        if (q + 1) * span <= old then q = q + 1 elseif q * span > old then q = q - 1 end
        c = old - q * span
        if kind == 4 then
          p = floor(c / wide)
          if (p + 1) * wide <= c then p = p + 1 elseif p * wide > c then p = p - 1 end
          c = c - p * wide
        end
        if c > limit or p > limit then bail = true break end  -- garbage
      end
      if kind == 3 then
        local reset = (idx + 1) * period - now
        if q == slot then
          if c >= limit then bail = true break end
        else  -- no key or an earlier window's state: this window's first count
          c = 0
          w[i], w[n + i] = 4, format('%d', slot * span + 1)
          w[n2 + i] = format('%d', math.max(floor((reset + 999) / 1000), min_ttl_ms))
        end
        out[i] = (c + 1) * period + reset - 1
      else
        local cur, prev = 0, 0
        if q == slot then cur, prev = c, p elseif q == (slot == 1 and m or slot - 1) then prev = c end
        local room = limit * period - prev * (period - now + idx * period) - cur * period  -- scaled
        if room < period then bail = true break end
        local ttl = (idx + 2) * period - now  -- a count still weighs in the next window
        if q ~= slot then  -- no key or an earlier window's state: write this window's
          w[i], w[n + i] = 4, format('%d', slot * span + prev * wide + 1)
          w[n2 + i] = format('%d', math.max(floor((ttl + 999) / 1000), min_ttl_ms))
        end
        local avail = floor(room / period)
        if (avail + 1) * period <= room then avail = avail + 1 elseif avail * period > room then avail = avail - 1 end
        out[i] = (avail - 1) * 2 * period + ttl - 1
      end
    end
  end
  if not bail then  -- every policy admits: commit
    for i = 1, n do
      local t = w[i]
      if t and t < 0 then
        local k, period = keys[i], -t
        local small = w[n2 + i] == false  -- a limit of 16 or less
        local s = stamp or format('%d', now)
        -- a member is scored by the time it names: ZADD answers 0 when it is there already
        if rcall('ZADD', k, s, s) == 0 then  -- this microsecond is taken: a suffix
          local c = rcall('ZCARD', k)
          repeat c = c + 1 until rcall('ZADD', k, 'NX', s, s .. ':' .. c) == 1
        end
        if small and now % 8 == 0 then rcall('ZREMRANGEBYSCORE', k, '-inf', format('%d', now - period)) end
        if not small and min_ttl_ms == 0 then
          -- as ratelimit_log keeps a log above 16: the key two windows past the oldest entry, set
          -- when the log was empty (the oldest is now) or when the trim moved the oldest and less
          -- than two windows (and 2 ms) are left; untouched when every entry is still in the window
          local live, ms = w[n + i], floor((period + 999) / 1000)
          if live == 0 then
            rcall('PEXPIREAT', k, format('%d', floor((now + 2 * period) / 1000) + 1))
          elseif w[n2 + i] > 0 and rcall('PTTL', k) < 2 * ms + 2 then
            rcall('PEXPIREAT', k, format('%d', floor((now + 2.5 * period) / 1000) + 1))
          end
        elseif min_ttl_ms == 0 and period % 1000 == 0 then  -- a window of whole ms: its text short of 000
          rcall('PEXPIRE', k, string.sub(argv[2 * i], 1, -4))
        else
          local ms = floor((period + 999) / 1000)
          if ms < min_ttl_ms then ms = min_ttl_ms end
          rcall('PEXPIRE', k, format('%d', ms))
        end
      elseif t == 2 then
        rcall('PEXPIRE', keys[i], w[n + i])
      elseif t then  -- 3, 4: a new state (with the expiry set before when no PX is given)
        if w[n2 + i] then rcall('SET', keys[i], w[n + i], 'PX', w[n2 + i])
        else rcall('SET', keys[i], w[n + i], 'KEEPTTL') end
      end
    end
    return out
  end
  counted = w  -- a log's live entries, counted above: w[n + i], a number
  for j = 3 * n + 1, nu, 2 do  -- undo the charges: the general evaluation below reads every state as it was
    if w[j + 1] == '' then rcall('DEL', w[j]) else rcall('DECRBY', w[j], w[j + 1]) end
  end
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
  local lk = ARGV[2 * i - 1] + 0  -- ours: a numeral (+ 0 parses once, tonumber() twice)
  local limit = math.floor(lk / 10)
  local kind = lk - limit * 10
  local period = ARGV[2 * i] + 0
  local ok, remaining, retry, reset
  local p = {kind = kind, limit = limit, period = period}

  if kind == 1 then
    -- exact sliding log: an entry scored t counts while now < t + period
    local live = counted and counted[n + i]
    if type(live) ~= 'number' then
      live = read('ZCOUNT', k, '(' .. fmt(now - period), '+inf')
      if live == nil then live, p.corrupt = 0, true end
    end
    p.lo = now - period
    p.live = live
    if cost > limit then
      ok, remaining, retry = false, math.max(limit - live, 0), -1
    elseif live + cost <= limit then
      ok, remaining, retry = true, limit - live - cost, 0
    else
      -- the (limit - cost + 1)-th newest decides (live entries hold the top ranks): O(log n)
      local r = fmt(cost - limit - 1)
      local m = redis.call('ZRANGE', k, r, r)[1]  -- a member names its time (a suffix: ask its score)
      ok, remaining, retry = false, math.max(limit - live, 0), (tonumber(m) or redis.call('ZSCORE', k, m) + 0) + period - now
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
      local m = redis.call('ZRANGE', KEYS[i], -1, -1)[1]  -- the newest, by rank; it names its time
      res[2 + 4 * i] = (tonumber(m) or redis.call('ZSCORE', KEYS[i], m) + 0) + p.period - now
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
    -- and a penalty cap removes the oldest first); the key goes two windows after the last entry
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
    -- two windows (and 2 ms): a log above 16 keeps its key two windows past its oldest entry
    redis.call('PEXPIRE', k, ceil_ms(2 * p.period + 2000))
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
