-- name: ratelimit_bucket
-- summary: token bucket (GCRA) for one subject: admit cost tokens when the bucket holds them, and only then take them
-- KEYS[1]: the state key (an integer: the theoretical arrival time in microseconds)
-- ARGV[1]: capacity (the burst), in tokens
-- ARGV[2]: emission interval: integer microseconds per token
-- ARGV[3]: optional cost, an integer >= 0 (0 checks without consuming); absent: 1 (and ARGV[4] absent too)
-- ARGV[4]: mode (given with ARGV[3]): 0 evaluate only (never writes), 1 hit, 2 hit with penalty (a denial empties the bucket as far as cost allows); absent: 1
-- ARGV[5]: optional virtual now in integer microseconds (tests); absent: the server TIME
-- returns: mostly one integer x: tat - now (µs) after the call when admitted (x >= 0), -(tat - now) - 1 when denied (x < 0); a penalty charged on a denial, or garbage under the key, gives the table {now_us, remaining, retry_after_us (0 admitted, -1 never, > 0 denied), reset_after_us[, 1 when the key held garbage]}
-- read-only: no
--
-- The bucket is full when tat <= now; a request of cost c fits when now >= tat + c*interval - tau
-- (tau = capacity * interval). Garbage under the key (another type, a non-number) counts as a
-- full bucket and the next charged hit overwrites it; the reply then ends with a 1. The key
-- lives until the state is a full bucket again, at most twice the time an empty one takes to fill.
-- All arithmetic is on integers below 2^53, written with '%d' (exact).
--
-- A hit (mode 1) charges first and undoes on a denial: INCRBY adds cost * interval in place
-- and answers the old state plus it, so a drawn bucket that admits costs TIME and INCRBY alone
-- (no string crosses into Lua, nothing is re-encoded), and a denial one DECRBY more. A full
-- bucket (the state behind now, or no key) is written as now + cost * interval by one SET.

local floor = math.floor  -- one global lookup, not one per use
local k = KEYS[1]
local cap = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
-- the common hit sends two arguments: every one more is a string to intern and a number to parse
local cost, mode, now, min_ms = 1, '1', nil, 60000  -- mode compared as text: '0', '1' or '2'
if ARGV[3] then cost, mode, now = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]) end
if not now then
  local t = redis.call('TIME')
  now, min_ms = t[1] * 1000000 + t[2], 0
end

local tau = cap * interval
if mode == '1' and cost > 0 and cost <= cap then
  local inc = cost * interval
  local by = cost == 1 and ARGV[2] or string.format('%d', inc)  -- text: Lua numbers are sent as %.17g
  local v = redis.pcall('INCRBY', k, by)  -- the state after charging, or an error reply (garbage)
  if type(v) == 'number' and v < 9007199254740992 then
    local at = v - inc
    if at >= now then  -- a drawn bucket: tat is the state
      if v - tau > now then  -- denied: undo the charge
        redis.call('DECRBY', k, by)
        return now - at - 1
      end
      -- the key expires at the second multiple of tau after the state: a new multiple moves it
      local g = floor(v / tau)
      if min_ms ~= 0 or g ~= floor(at / tau) then
        redis.call('PEXPIRE', k, string.format('%d', math.max(floor(((g + 2) * tau - now + 999) / 1000), min_ms)))
      end
      return v - now
    end
    -- a full bucket (no key, or a state behind now): tat = now, so the state becomes now + inc
    local new = now + inc
    local gn = floor(new / tau)
    if min_ms == 0 and at > 0 and gn == floor(at / tau) then  -- the key's expiry still fits
      redis.call('SET', k, string.format('%d', new), 'KEEPTTL')
    else
      redis.call('SET', k, string.format('%d', new), 'PX', string.format('%d', math.max(floor(((gn + 2) * tau - now + 999) / 1000), min_ms)))
    end
    return inc
  end
  -- garbage under the key: the general path below reads it as such and replaces it
end

local tat, at, bad = now, nil, false
local v = redis.pcall('GET', k)
if v then
  at = tonumber(v)  -- nil for an error reply (another type) or text that is no number
  if at and at < 9007199254740992 then
    if at > now then tat = at end
  else
    at, bad = nil, true
  end
end

-- The key expires at the second multiple of tau after the state it holds, so most writes keep
-- the TTL the previous write set (same multiple) and about one in `capacity` sets a new one.
local function store(x)
  local g = (floor(x / tau) + 2) * tau
  if at and min_ms == 0 and g == (floor(at / tau) + 2) * tau then
    redis.call('SET', k, string.format('%d', x), 'KEEPTTL')
  else
    redis.call('SET', k, string.format('%d', x), 'PX', math.max(floor((g - now + 999) / 1000), min_ms))
  end
end

local new = tat + cost * interval
if not bad then
  -- the common replies, one integer each: tat - now after this call when admitted (>= 0), or
  -- -(tat - now) - 1 when denied; the caller knows cost, capacity and interval, and derives
  -- remaining (floor((tau - x) / interval)), retry_after (x + cost*interval - tau) and reset (x)
  if cost <= cap and now >= new - tau then
    if mode ~= '0' and cost > 0 then
      store(new)
      return new - now
    end
    return tat - now
  elseif mode ~= '2' or cost == 0 or cost > cap then
    return now - tat - 1
  end
end
-- tokens available now: floor((now + tau - tat) / interval), exactly
local span = now + tau - tat
local avail = floor(span / interval)
if (avail + 1) * interval <= span then avail = avail + 1 elseif avail * interval > span then avail = avail - 1 end

local res
if cost > cap then
  res = {now, avail, -1, tat - now}
elseif now >= new - tau then
  if mode ~= '0' and cost > 0 then
    store(new)
    res = {now, avail - cost, 0, new - now}
  else
    res = {now, avail, 0, tat - now}
  end
else
  local reset = tat - now
  if mode == '2' and cost > 0 then  -- penalty: charged, but never below an empty bucket
    local p = math.min(new, now + tau)
    if p > tat then tat = p end
    if tat > now then
      store(tat)
      reset = tat - now
    end
  end
  res = {now, avail, new - tau - now, reset}
end
if bad then res[5] = 1 end
return res
