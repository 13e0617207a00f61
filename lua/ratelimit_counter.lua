-- name: ratelimit_counter
-- summary: sliding-window counter (approximate) for one subject: admit cost units while the weighted estimate allows, and only then count them
-- KEYS[1]: the state key: one integer ((slot * (limit + 1) + previous count) * (2 * limit + 1) + current count) when the limit allows it (see below), else the text "<window index>:<current count>:<previous count>"
-- ARGV[1]: limit, in units per trailing window
-- ARGV[2]: window in integer microseconds
-- ARGV[3]: optional cost, an integer >= 0 (0 checks without consuming); absent: 1 (and ARGV[4] absent too)
-- ARGV[4]: mode (given with ARGV[3]): 0 evaluate only (never writes), 1 hit, 2 hit with penalty (a denial is counted too, up to the limit); absent: 1
-- ARGV[5]: optional virtual now in integer microseconds (tests); absent: the server TIME
-- returns: when admitted and counted (and (limit + 1) * 2 * window < 2^53), the integer remaining * 2 * window + reset_after_us - 1; otherwise the table {now_us, remaining, retry_after_us (0 admitted, -1 never, > 0 denied), reset_after_us[, 1 when the key held garbage]}
-- read-only: no
--
-- estimate = prev * (window - elapsed) / window + cur, compared scaled by the window (integers,
-- below 2^53). Garbage under the key counts as no traffic and the next charged hit overwrites it;
-- the reply then ends with a 1.
--
-- The integer state serves every limit with m = floor(2^53 / ((limit + 1) * (2 * limit + 1))) - 2
-- >= 1024 (a limit up to about two million per window): the slot is the window index mod m, plus
-- 1 (0 is no state). A hit then charges first with one in-place INCRBY (undone by DECRBY on a
-- denial), so a counted hit in the same window costs TIME and INCRBY. A state lives two windows
-- (its TTL), so reading it m >= 1024 windows later cannot happen. Larger limits keep the text.

local floor = math.floor  -- one global lookup, not one per use
local k = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
-- the common hit sends two arguments: every one more is a string to intern and a number to parse
local cost, mode, now, min_ms = 1, '1', nil, 60000  -- mode compared as text: '0', '1' or '2'
if ARGV[3] then cost, mode, now = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]) end
if not now then
  local t = redis.call('TIME')
  now, min_ms = t[1] * 1000000 + t[2], 0
end

local idx = floor(now / period)  -- exact floor below
if (idx + 1) * period <= now then idx = idx + 1 elseif idx * period > now then idx = idx - 1 end
local e = now - idx * period
local wide = 2 * limit + 1  -- the current count's span (a charge may pass the limit before its undo)
local span = (limit + 1) * wide  -- one slot's span of states
local m = floor(9007199254740992 / span) - 2
local int = m >= 1024
local cur, prev, same, bad, charged = 0, 0, false, false, false
local slot, base

if int then
  slot = idx - floor(idx / m) * m
  if slot < 0 then slot = slot + m elseif slot >= m then slot = slot - m end
  slot = slot + 1
  base = slot * span
  local old
  if mode == '1' and cost > 0 and cost <= limit then
    local v = redis.pcall('INCRBY', k, ARGV[3] or '1')  -- charge first: the state after, or an error reply
    if type(v) == 'number' and v < 9007199254740992 then old, charged = v - cost, true end
  end
  if not charged then
    local v = redis.pcall('GET', k)
    if v then old = tonumber(v) else old = 0 end  -- nil: another type or text
  end
  if old and old ~= 0 then
    if old >= span and old < 9007199254740992 and old == floor(old) then
      local q = floor(old / span)
      if (q + 1) * span <= old then q = q + 1 elseif q * span > old then q = q - 1 end
      local r = old - q * span
      local p = floor(r / wide)
      if (p + 1) * wide <= r then p = p + 1 elseif p * wide > r then p = p - 1 end
      local c = r - p * wide
      if c > limit or p > limit then
        bad = true
      elseif q == slot then
        cur, prev, same = c, p, true
      elseif q == (slot == 1 and m or slot - 1) then
        prev = c
      end
    else
      bad = true
    end
  elseif not old then
    bad = true
  end
else
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
end

local room = limit * period - prev * (period - e) - cur * period  -- scaled free capacity
local ttl = (idx + 2) * period - now  -- a count still weighs in the next window
local ok = cost <= limit and room >= cost * period
if ok and charged and same then  -- the common hit: INCRBY counted it, the expiry is set already
  if not bad and (limit + 1) * 2 * period < 9007199254740992 then
    local avail = floor(room / period)
    if (avail + 1) * period <= room then avail = avail + 1 elseif avail * period > room then avail = avail - 1 end
    return (avail - cost) * 2 * period + ttl - 1
  end
end

local function idiv(a, b)  -- floor(a / b) for integers, exact
  local q = floor(a / b)
  if (q + 1) * b <= a then q = q + 1 elseif q * b > a then q = q - 1 end
  return q
end

local avail = math.max(idiv(room, period), 0)
local reset = 0
if cur > 0 then reset = ttl elseif prev > 0 then reset = (idx + 1) * period - now end

local retry
if cost > limit then
  retry = -1
elseif ok then
  retry = 0
elseif cur + cost > limit then
  -- wait for the next window, where this window's count becomes the decaying previous one
  local e2 = 0
  if cur > 0 then e2 = period - idiv((limit - cost) * period, cur) end
  retry = (idx + 1) * period + e2 - now
else
  -- later in this window the previous count has decayed enough (prev > 0 here)
  retry = idx * period + period - idiv((limit - cur - cost) * period, prev) - now
end

local function state(c)
  if int then return string.format('%d', base + prev * wide + c) end
  return string.format('%d:%d:%d', idx, c, prev)
end

local res
if charged and not ok then
  -- a denied hit charged by INCRBY: undo it (same window), or write the state as of now
  if same then
    redis.call('DECRBY', k, ARGV[3] or '1')
  else
    redis.call('SET', k, state(cur), 'PX', string.format('%d', math.max(floor((ttl + 999) / 1000), min_ms)))
  end
elseif cost > 0 and retry ~= -1 and (mode == '2' or (mode == '1' and ok)) then
  -- (a charged admitted hit in the same window returned above, unless its reply is a table)
  if not (charged and same) then
    local s = state(math.min(cur + cost, limit))
    if same and not charged and min_ms == 0 then  -- written before in this window: the expiry is set
      redis.call('SET', k, s, 'KEEPTTL')
    else
      redis.call('SET', k, s, 'PX', string.format('%d', math.max(floor((ttl + 999) / 1000), min_ms)))
    end
  end
  if ok and not bad and (limit + 1) * 2 * period < 9007199254740992 then
    return (avail - cost) * 2 * period + ttl - 1  -- admitted and counted: one integer
  end
  if ok then res = {now, avail - cost, 0, ttl} else res = {now, avail, retry, ttl} end
end
if not res then
  if ok then res = {now, avail, 0, reset} else res = {now, avail, retry, reset} end
end
if bad then res[5] = 1 end
return res
