-- name: session_get
-- summary: read a session and slide its idle TTL, capped by the absolute deadline
-- KEYS[1]: the session hash
-- ARGV[1]: refresh only when less than ARGV[1]/1000 of the idle TTL is left ('1000': every read)
-- returns: 0 when absent or past its deadline (then deleted), else {user, created, seen, deadline,
--   idle, version, meta, 'd:field1', value1, ...}: the metadata by position (the five times and
--   the version as integers, 0 when unset; user and meta '' when unset), then the data fields with
--   their 'd:' prefix (the client strips it: no new Lua string per field)
-- read-only: no
-- Hot path: one pass over HGETALL with constant-string compares (interned: pointer equality), no
-- per-call lookup table, no string.sub per field; PTTL only when ARGV[1] is not '1000' (then the
-- stored last-seen time tells a slide made in this same ms, which needs no second write).
local h = redis.call('HGETALL', KEYS[1])
local n = #h
if n == 0 then
  return 0
end
local byte = string.byte
local out = {'', 0, 0, 0, 0, 0, ''}
local k = 7
for i = 1, n, 2 do
  local f = h[i]
  if f == '_s' then out[3] = h[i + 1]
  elseif f == '_abs' then out[4] = h[i + 1]
  elseif f == '_i' then out[5] = h[i + 1]
  elseif f == '_u' then out[1] = h[i + 1]
  elseif f == '_m' then out[7] = h[i + 1]
  elseif f == '_c' then out[2] = h[i + 1]
  elseif f == '_v' then out[6] = h[i + 1]
  else
    local a, b = byte(f, 1, 2)
    if a == 100 and b == 58 then -- 'd:'
      out[k + 1] = f
      out[k + 2] = h[i + 1]
      k = k + 2
    end
  end
end
local idle_text = out[5]
local deadline, idle = tonumber(out[4]), tonumber(idle_text)
if not deadline or not idle then
  return 0
end
-- every time and the version as integer replies: the client parses no digits
out[2], out[4], out[5], out[6] = tonumber(out[2]) or 0, deadline, idle, tonumber(out[6]) or 0
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if now >= deadline then
  redis.call('DEL', KEYS[1]) -- the event list expires at the same deadline on its own
  return 0
end
local seen = tonumber(out[3]) or 0
local due
if ARGV[1] == '1000' then
  due = seen ~= now -- a slide in this same ms has set this very TTL already
else
  due = redis.call('PTTL', KEYS[1]) * 1000 < idle * ARGV[1] -- (-1, no TTL: due)
end
if due then
  if deadline - now < idle then
    redis.call('PEXPIRE', KEYS[1], deadline - now)
  else
    redis.call('PEXPIRE', KEYS[1], idle_text) -- as stored: no number formatting
  end
  redis.call('HSET', KEYS[1], '_s', now)
  seen = now
end
out[3] = seen
return out
