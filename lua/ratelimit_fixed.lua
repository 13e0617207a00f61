-- name: ratelimit_fixed
-- summary: fixed window aligned to the epoch for one subject: admit cost units while the window's count allows, and only then count them
-- KEYS[1]: the state key ("<window index>:<count>")
-- ARGV[1]: cost, an integer >= 0 (0 checks without consuming)
-- ARGV[2]: mode: 0 evaluate only (never writes), 1 hit, 2 hit with penalty (a denial is counted too, up to the limit)
-- ARGV[3]: limit, in units per window
-- ARGV[4]: window in integer microseconds
-- ARGV[5]: optional virtual now in integer microseconds (tests); absent: the server TIME
-- returns: one integer when (limit + 1) * window < 2^53: count * window + reset_after_us - 1 when admitted (count after the call), -(that) - 1 when denied (count as of now); else, or with garbage under the key, the table {now_us, remaining, retry_after_us (0 admitted, -1 never, > 0 denied), reset_after_us (to the window's end)[, 1 when the key held garbage]}
-- read-only: no
--
-- Garbage under the key (another type, unreadable text) counts as an empty window and the next
-- charged hit overwrites it; the reply then ends with a 1.

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

local idx = math.floor(now / period)  -- exact floor below
if (idx + 1) * period <= now then idx = idx + 1 elseif idx * period > now then idx = idx - 1 end

local count, same, bad = 0, false, false
local v = redis.pcall('GET', k)
if v then
  local sidx, scount
  if type(v) == 'string' then sidx, scount = string.match(v, '^(%-?%d+):(%d+)$') end
  if not sidx then
    bad = true
  elseif tonumber(sidx) == idx then
    count, same = tonumber(scount), min_ms == 0
  end
end

local reset = (idx + 1) * period - now
local function store(c)  -- the key expires at the window's end: set once per window
  if same then
    redis.call('SET', k, string.format('%d:%d', idx, c), 'KEEPTTL')
  else
    redis.call('SET', k, string.format('%d:%d', idx, c), 'PX', math.max(math.floor((reset + 999) / 1000), min_ms))
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
if not bad and count <= limit and (limit + 1) * period < 9007199254740992 then
  local x = shown * period + reset - 1
  if ok then return x end
  return -x - 1
end
if cost > limit then return {now, math.max(limit - count, 0), -1, reset, bad and 1 or nil} end
if ok then return {now, limit - shown, 0, reset, bad and 1 or nil} end
return {now, math.max(limit - count, 0), reset, reset, bad and 1 or nil}
