-- name: session_get
-- summary: read a session and slide its idle TTL, capped by the absolute deadline
-- KEYS[1]: the session hash
-- ARGV[1]: refresh only when less than ARGV[1]/1000 of the idle TTL is left (1000: every read)
-- returns: 0 when absent or past its deadline (then deleted), else the hash as field/value pairs
-- read-only: no
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then
  return 0
end
local deadline, idle, seen_at
for i = 1, #h, 2 do
  local f = h[i]
  if f == '_abs' then
    deadline = tonumber(h[i + 1])
  elseif f == '_i' then
    idle = tonumber(h[i + 1])
  elseif f == '_s' then
    seen_at = i + 1
  end
end
if not deadline or not idle then
  return 0
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
  if seen_at then
    h[seen_at] = tostring(now)
  end
end
return h
