-- name: ratelimit_log
-- summary: exact sliding log for one subject: admit cost units when the trailing window has room, and only then record them
-- KEYS[1]: the state key (a sorted set: one member per admitted unit, scored by its time in microseconds)
-- ARGV[1]: limit, in units per trailing window
-- ARGV[2]: window in integer microseconds
-- ARGV[3]: optional cost, an integer >= 0 (0 checks without consuming); absent: 1 (and ARGV[4] absent too)
-- ARGV[4]: mode (given with ARGV[3]): 0 evaluate only (never writes), 1 hit, 2 hit with penalty (a denial is recorded too, the log capped at the limit); absent: 1
-- ARGV[5]: optional virtual now in integer microseconds (tests); absent: the server TIME
-- returns: when admitted and recorded, the remaining units (one integer: retry_after 0, reset_after the window); a hit of cost 1 denied: the table {retry_after_us, reset_after_us} (remaining 0); otherwise the table {now_us, remaining, retry_after_us (0 admitted, -1 never, > 0 denied), reset_after_us[, 1 when the key held garbage]}
-- read-only: no
--
-- An entry scored t counts while now < t + window; every step is O(log n) in the log's size.
-- Entries that left the window are dropped by a hit of cost 1 before it counts (a limit above
-- 16), else by about one charging call in eight. The key outlives its newest entry by one to
-- two windows (two and a half after a busy stretch). A log above 16 keeps the key's expiry at
-- least two windows past its oldest entry: a hit of cost 1 that finds every entry still in the
-- window (so the oldest is where it was) leaves the TTL alone, one that starts an empty log
-- sets it to two windows, one that drops entries reads it and, under two windows, sets it to
-- two and a half; any other charge sets it to two windows (a log of 16 or less: a hit of cost
-- 1 sets it to the end of the window after the one it falls in, whole windows from the epoch,
-- reading it first when the log is busy; any other charge, two windows). So the log holds
-- little more than the live entries.
-- Members are the time itself (scored by the time they name, so a ZADD answering 0 means the
-- microsecond is taken), made unique with a suffix when two units share a microsecond. Garbage
-- under the key (another type) counts as an empty log and the next charged hit replaces it; the
-- reply then ends with a 1.

local k = KEYS[1]
-- '+ 0' converts a numeral once (tonumber() parses it twice): strtod is much of a short script
local limit = ARGV[1] + 0
local period = ARGV[2] + 0
-- the common hit sends two arguments: every one more is a string to intern and a number to parse
local cost, mode, now, min_ms, s, u = 1, '1', nil, 60000, nil, nil  -- mode compared as text: '0', '1' or '2'
if ARGV[3] then cost, mode, now = ARGV[3] + 0, ARGV[4], tonumber(ARGV[5]) end
if not now then
  local t = redis.call('TIME')
  s, u = t[1], t[2]  -- seconds and microseconds, as text: now is parsed from them where it is needed
  min_ms = 0  -- (an admitted hit parses the member's text, s .. u, once; the rest s * 1000000 + u)
end

if mode == '1' and cost == 1 then
  -- the common hit, kept free of closures and tables. A log of a small limit holds few entries:
  -- one ZCOUNT counts the live ones (it walks a small, listpack, set entry by entry) and one
  -- charging hit in eight drops what left the window. A larger one is counted by ZCARD, and when
  -- it holds entries, by dropping what left first (a trim that finds nothing to drop compares
  -- one score); a full one (ZCARD at the limit) is first asked for its deciding entry, so a
  -- denial costs no trim. Denied: TIME, the count and two ZRANGEs of members (a member names
  -- its time: '<µs>', or '<µs>:<n>' when that microsecond was taken, whose score says the same)
  local lo, small = nil, limit <= 16  -- entries scored above lo are live
  local live
  if small then
    now = now or s * 1000000 + u
    lo = now - period
    live = redis.pcall('ZCOUNT', k, string.format('(%d', lo), '+inf')
  else live = redis.pcall('ZCARD', k) end
  if type(live) == 'number' then
    if live >= limit then
      now = now or s * 1000000 + u
      lo = now - period
      -- the limit-th newest entry decides: still in the window (as it is when ZCOUNT counted
      -- the limit), denied: nothing written, remaining 0, the newest gives the reset; gone, fewer
      -- than limit entries are live
      local r = '-' .. ARGV[1]
      local a = redis.call('ZRANGE', k, r, r)[1]
      a = tonumber(a) or redis.call('ZSCORE', k, a) + 0
      if small or a > lo then
        local b = redis.call('ZRANGE', k, -1, -1)[1]
        return {a + period - now, (tonumber(b) or redis.call('ZSCORE', k, b)) + period - now}
      end
    end
    local m  -- the time as text, as string.format('%d', now) writes it
    if s then
      if #u < 6 then u = string.sub('00000' .. u, -6) end
      m = s .. u
      now = now or m + 0
    else
      m = string.format('%d', now)
    end
    lo = now - period
    local gone = 0  -- entries dropped: the oldest moved
    if not small and live > 0 then  -- drop what left the window: the rest is live
      gone = redis.call('ZREMRANGEBYSCORE', k, '-inf', string.format('%d', lo))
      live = live - gone
    end
    -- a member is scored by the time it names: ZADD answers 0 when it is there already
    if redis.call('ZADD', k, m, m) == 0 then  -- this microsecond is taken: a suffix
      local j = live
      repeat j = j + 1 until redis.call('ZADD', k, 'NX', m, m .. ':' .. j) == 1
    end
    if small and now % 8 == 0 then redis.call('ZREMRANGEBYSCORE', k, '-inf', string.format('%d', lo)) end
    if min_ms ~= 0 then
      local ms = math.floor((period + 999) / 1000)
      if ms < min_ms then ms = min_ms end
      redis.call('PEXPIRE', k, string.format('%d', ms))
    elseif small then
      local ms = math.floor((period + 999) / 1000)
      -- the key expires at the end of the window after the one now is in (windows of whole
      -- milliseconds counted from the epoch): between one and two windows after its newest
      -- entry. A log with 4 or more live entries is read for its TTL (more than a window left:
      -- set already), a read where a write costs half as much again, and is given it about once
      -- in `live` hits; a sparser one is given it at once (a read would seldom spare the write)
      if live < 4 or redis.call('PTTL', k) <= ms then
        redis.call('PEXPIREAT', k, string.format('%d', (math.floor(math.floor(now / 1000) / ms) + 2) * ms))
      end
    elseif live == 0 then  -- a new log: its oldest entry is now
      redis.call('PEXPIREAT', k, string.format('%d', math.floor((now + 2 * period) / 1000) + 1))
    elseif gone > 0 and redis.call('PTTL', k) < 2 * math.floor((period + 999) / 1000) + 2 then
      -- the oldest entry left: the key must outlive the new oldest, at most now, by two windows
      -- (2 ms for a PTTL counted from the script's start, or from the next millisecond)
      redis.call('PEXPIREAT', k, string.format('%d', math.floor((now + 2.5 * period) / 1000) + 1))
    end
    -- else every entry is still in the window: the oldest is where it was, and the key outlives
    -- it by two windows already, so this entry (now, within a window of it) by one
    return limit - live - 1
  end
end
now = now or s * 1000000 + u
local lo = string.format('(%d', now - period)  -- entries scored above it are live
local live = redis.pcall('ZCOUNT', k, lo, '+inf')
local bad = type(live) == 'table'
if bad then live = 0 end

local charge = mode ~= '0' and cost > 0
if (cost > limit or live + cost <= limit) and not (charge and cost <= limit) then
  -- never admissible, or a peek: the reset is the time until the newest live entry leaves (the
  -- last by rank); 0 when none
  local reset = 0
  if live > 0 then reset = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2] + period - now end
  if cost > limit then return {now, math.max(limit - live, 0), -1, reset, bad and 1 or nil} end
  return {now, limit - live, 0, reset, bad and 1 or nil}
end

local function record()
  if bad then redis.call('DEL', k) end
  local m = string.format('%d', now)
  local j, left = 0, cost
  if cost == 1 then
    if redis.call('ZADD', k, 'NX', m, m) == 1 then left = 0 else j = redis.call('ZCARD', k) end
  end
  while left > 0 do  -- unique members: a suffix, and NX tells which ones were taken already
    local args, n = {'NX'}, math.min(left, 500)
    for _ = 1, n do
      j = j + 1
      args[#args + 1] = m
      args[#args + 1] = m .. ':' .. j
    end
    left = left - redis.call('ZADD', k, unpack(args))
  end
  if now % 8 == 0 then redis.call('ZREMRANGEBYSCORE', k, '-inf', string.sub(lo, 2)) end
  -- two windows (and 2 ms): a log above 16 keeps its key two windows past its oldest entry
  redis.call('PEXPIRE', k, string.format('%d', math.max(2 * math.floor((period + 999) / 1000) + 2, min_ms)))
end

if live + cost <= limit then  -- admitted and charged
  record()
  if bad then return {now, limit - live - cost, 0, period, 1} end
  return limit - live - cost  -- admitted and recorded: remaining is all the caller lacks
end
-- denied: the request fits once live + cost - limit entries have left, so the one that decides
-- is the (limit - cost + 1)-th newest (live entries hold the top ranks): O(log n) by rank
local retry = redis.call('ZRANGE', k, cost - limit - 1, cost - limit - 1, 'WITHSCORES')[2] + period - now
if charge and mode == '2' then
  record()
  local card = redis.call('ZCARD', k)
  if card > limit then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', string.sub(lo, 2))
    card = redis.call('ZCARD', k)
    if card > limit then redis.call('ZREMRANGEBYRANK', k, 0, card - limit - 1) end
  end
  return {now, math.max(limit - live, 0), retry, period}
end
local reset = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2] + period - now
return {now, math.max(limit - live, 0), retry, reset, bad and 1 or nil}
