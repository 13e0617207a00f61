-- name: ratelimit_counter
-- summary: sliding-window counter (approximate) for one subject: admit cost units while the weighted estimate allows, and only then count them
-- KEYS[1]: the state key ("<window index>:<current count>:<previous count>")
-- ARGV[1]: cost, an integer >= 0 (0 checks without consuming)
-- ARGV[2]: mode: 0 evaluate only (never writes), 1 hit, 2 hit with penalty (a denial is counted too, up to the limit)
-- ARGV[3]: limit, in units per trailing window
-- ARGV[4]: window in integer microseconds
-- ARGV[5]: optional virtual now in integer microseconds (tests); absent: the server TIME
-- returns: when admitted and counted (and (limit + 1) * 2 * window < 2^53), the integer remaining * 2 * window + reset_after_us - 1; otherwise the table {now_us, remaining, retry_after_us (0 admitted, -1 never, > 0 denied), reset_after_us[, 1 when the key held garbage]}
-- read-only: no
--
-- estimate = prev * (window - elapsed) / window + cur, compared scaled by the window (integers,
-- below 2^53). Garbage under the key counts as no traffic and the next charged hit overwrites it;
-- the reply then ends with a 1.

local k = KEYS[1]
local cost = tonumber(ARGV[1])
local mode = ARGV[2]  -- compared as text: '0', '1' or '2'
local limit = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local now, min_ms = tonumber(ARGV[5]), 60000
if not now then
  local t = redis.call('TIME')
  now, min_ms = t[1] * 1000000 + t[2], 0
end

local function idiv(a, b)  -- floor(a / b) for integers, exact
  local q = math.floor(a / b)
  if (q + 1) * b <= a then q = q + 1 elseif q * b > a then q = q - 1 end
  return q
end

local idx = idiv(now, period)
local e = now - idx * period
local cur, prev, same, bad = 0, 0, false, false
local v = redis.pcall('GET', k)
if v then
  local sidx, scur, sprev
  if type(v) == 'string' then sidx, scur, sprev = string.match(v, '^(%-?%d+):(%d+):(%d+)$') end
  if not sidx then
    bad = true
  else
    sidx = tonumber(sidx)
    if sidx == idx then cur, prev, same = tonumber(scur), tonumber(sprev), min_ms == 0
    elseif sidx == idx - 1 then prev = tonumber(scur) end
  end
end

local room = limit * period - prev * (period - e) - cur * period  -- scaled free capacity
local avail = math.max(idiv(room, period), 0)
local reset = 0
if cur > 0 then reset = (idx + 2) * period - now elseif prev > 0 then reset = (idx + 1) * period - now end

local ok, retry
if cost > limit then
  ok, retry = false, -1
elseif room >= cost * period then
  ok, retry = true, 0
elseif cur + cost > limit then
  -- wait for the next window, where this window's count becomes the decaying previous one
  local e2 = 0
  if cur > 0 then e2 = period - idiv((limit - cost) * period, cur) end
  ok, retry = false, (idx + 1) * period + e2 - now
else
  -- later in this window the previous count has decayed enough (prev > 0 here)
  ok, retry = false, idx * period + period - idiv((limit - cur - cost) * period, prev) - now
end

local res
if cost > 0 and retry ~= -1 and (mode == '2' or (mode == '1' and ok)) then
  local c = math.min(cur + cost, limit)
  local ttl = (idx + 2) * period - now  -- the count still weighs in the next window
  local state = string.format('%d:%d:%d', idx, c, prev)
  if same then  -- written before in this window: the expiry is set already
    redis.call('SET', k, state, 'KEEPTTL')
  else
    redis.call('SET', k, state, 'PX', math.max(math.floor((ttl + 999) / 1000), min_ms))
  end
  if ok and not bad and (limit + 1) * 2 * period < 9007199254740992 then
    return (avail - cost) * 2 * period + ttl - 1  -- admitted and counted: one integer
  end
  if ok then res = {now, avail - cost, 0, ttl} else res = {now, avail, retry, ttl} end
elseif ok then
  res = {now, avail, 0, reset}
else
  res = {now, avail, retry, reset}
end
if bad then res[5] = 1 end
return res
