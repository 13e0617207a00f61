-- name: ratelimit_fixed
-- summary: fixed window aligned to the epoch for one subject: admit cost units while the window's count allows, and only then count them
-- KEYS[1]: the state key (an integer: slot * (2 * limit + 1) + count, slot = window index mod m, plus 1)
-- ARGV[1]: limit, in units per window
-- ARGV[2]: window in integer microseconds
-- ARGV[3]: optional cost, an integer >= 0 (0 checks without consuming); absent: 1 (and ARGV[4] absent too)
-- ARGV[4]: mode (given with ARGV[3]): 0 evaluate only (never writes), 1 hit, 2 hit with penalty (a denial is counted too, up to the limit); absent: 1
-- ARGV[5]: optional virtual now in integer microseconds (tests); absent: the server TIME
-- returns: one integer when (limit + 1) * window < 2^53: count * window + reset_after_us - 1 when admitted (count after the call), -(that) - 1 when denied (count as of now); else, or with garbage under the key, the table {now_us, remaining, retry_after_us (0 admitted, -1 never, > 0 denied), reset_after_us (to the window's end)[, 1 when the key held garbage]}
-- read-only: no
--
-- The state is one integer, so a hit is one INCRBY, in place: it charges first and answers the
-- state after; a denial undoes it (DECRBY). The window is named by its index modulo
-- m = floor(2^53 / (2 * limit + 1)) - 2, plus 1 (0 is no state): m windows apart is at least
-- 4.5 million windows (limit 10^9), far past the key's expiry at its window's end, so a state is
-- never read in another window. The count stays <= limit between calls (a denial is undone, a
-- penalty caps it), so count + cost fits below 2 * limit + 1.
-- Garbage under the key (another type, text, a count above the limit) counts as an empty window
-- and the next charged hit overwrites it; the reply then ends with a 1.

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
local size = 2 * limit + 1  -- one slot's span of states
local m = floor(9007199254740992 / size) - 2
local slot = idx - floor(idx / m) * m
if slot < 0 then slot = slot + m elseif slot >= m then slot = slot - m end
slot = slot + 1
local base = slot * size
local reset = (idx + 1) * period - now
local small = (limit + 1) * period < 9007199254740992  -- the reply fits one integer

if mode == '1' and cost > 0 and cost <= limit then
  local v = redis.pcall('INCRBY', k, ARGV[3] or '1')  -- the state after charging, or an error reply (garbage)
  if type(v) == 'number' and v < 9007199254740992 then
    local old = v - cost
    if old >= base and old <= base + limit then  -- this window's state
      if v - base <= limit then
        if small then return (v - base) * period + reset - 1 end
        return {now, limit - (v - base), 0, reset}
      end
      redis.call('DECRBY', k, ARGV[3] or '1')  -- denied: undo the charge
      if small then return -((old - base) * period + reset - 1) - 1 end
      return {now, limit - (old - base), reset, reset}
    end
    -- no key, an earlier window's state, or garbage (0 < old < size, or a count above the limit)
    redis.call('SET', k, string.format('%d', base + cost), 'PX', string.format('%d', math.max(floor((reset + 999) / 1000), min_ms)))
    local q = floor(old / size)
    if (q + 1) * size <= old then q = q + 1 elseif q * size > old then q = q - 1 end
    if old == 0 or (old >= size and old - q * size <= limit) then
      if small then return cost * period + reset - 1 end
      return {now, limit - cost, 0, reset}
    end
    return {now, limit - cost, 0, reset, 1}
  end
  -- another type or text under the key: the general path below reads it as garbage
end

local count, same, bad = 0, false, false
local v = redis.pcall('GET', k)
if v then
  local n = tonumber(v)  -- nil for an error reply (another type) or text that is no number
  if n and n >= size and n < 9007199254740992 and n == floor(n) then
    local q = floor(n / size)
    if (q + 1) * size <= n then q = q + 1 elseif q * size > n then q = q - 1 end
    local c = n - q * size
    if c > limit then
      bad = true
    elseif q == slot then
      count, same = c, min_ms == 0
    end
  else
    bad = true
  end
end

local function store(c)  -- the key expires at the window's end: set once per window
  if same then
    redis.call('SET', k, string.format('%d', base + c), 'KEEPTTL')
  else
    redis.call('SET', k, string.format('%d', base + c), 'PX', math.max(floor((reset + 999) / 1000), min_ms))
  end
end
local ok = cost <= limit and count + cost <= limit
local shown = count  -- the count the reply reports: after this call when it is charged
if ok then
  if mode ~= '0' and cost > 0 then
    shown = count + cost
    store(shown)
  end
elseif mode == '2' and cost > 0 and cost <= limit then
  store(limit)
end
if not bad and small then
  local x = shown * period + reset - 1
  if ok then return x end
  return -x - 1
end
if cost > limit then return {now, math.max(limit - count, 0), -1, reset, bad and 1 or nil} end
if ok then return {now, limit - shown, 0, reset, bad and 1 or nil} end
return {now, math.max(limit - count, 0), reset, reset, bad and 1 or nil}
