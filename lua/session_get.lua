-- name: session_get
-- summary: read a session and slide its idle TTL, capped by the absolute deadline
-- KEYS[1]: the session hash
-- ARGV[1]: refresh only when less than ARGV[1]/1000 of the idle TTL is left (1000: every read)
-- returns: 0 when absent or past its deadline (then deleted), else {user, created, seen, deadline,
--   idle, version, meta, field1, value1, ...}: the metadata by position (the five times and the
--   version as integers, 0 when unset; user and meta '' when unset), then the data fields without
--   their 'd:' prefix
-- read-only: no
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then
  return 0
end
local out = {'', '', '', '', '', '', ''}
local slot = {_u = 1, _c = 2, _s = 3, _abs = 4, _i = 5, _v = 6, _m = 7}
for i = 1, #h, 2 do
  local f = h[i]
  local at = slot[f]
  if at then
    out[at] = h[i + 1]
  elseif string.byte(f, 1) == 100 and string.byte(f, 2) == 58 then  -- 'd:' without a new string
    out[#out + 1] = string.sub(f, 3)
    out[#out + 1] = h[i + 1]
  end
end
local deadline, idle = tonumber(out[4]), tonumber(out[5])
if not deadline or not idle then
  return 0
end
for i = 2, 6 do
  out[i] = tonumber(out[i]) or 0  -- integer replies: the client parses no digits
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= deadline then
  redis.call('DEL', KEYS[1])  -- the event list expires at the same deadline on its own
  return 0
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 or pttl * 1000 < idle * tonumber(ARGV[1]) then
  local ttl = math.min(idle, deadline - now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('HSET', KEYS[1], '_s', now)
  out[3] = now
end
return out
