-- name: session_get
-- summary: read a session and slide its idle TTL, capped by the absolute deadline
-- KEYS[1]: the session hash
-- ARGV[1]: refresh only when less than ARGV[1]/1000 of the idle TTL is left ('1000': every read)
-- returns: 0 when absent or past its deadline (then deleted), else the hash's field/value pairs
--   as HGETALL gives them, with '_s' (last seen) set to the time of this read's slide if it made
--   one (an integer reply then); the client picks the metadata and the 'd:' data fields out
-- read-only: no
-- Layout: '_s' last seen, '_' the fixed times as JSON '[deadline,idle,created]' (ms), '_a' the
-- user and meta as JSON '["user",{meta}]', '_v' version, 'd:<name>' data. A hash of the previous
-- layout ('_abs' deadline and '_i' idle in their own fields, with '_u', '_c', '_m') is read
-- alike; the client tells the two apart.
-- Hot path: the reply is the HGETALL table itself (no second table); a hash written by create
-- starts with '_s' and '_' (a small hash keeps insertion order), so finding them is two
-- comparisons, and any other hash is scanned until both are found; the times are parsed only
-- when a slide is due; the stored last-seen is turned into a number once; at ARGV[1] '1000' a
-- read in the same ms as the last slide (stored last-seen == TIME) writes nothing and returns
-- at once; the time left is computed from the stored times (no PTTL call).
local h = redis.call('HGETALL', KEYS[1])
local n = #h
if n == 0 then
  return 0
end
local si, fixed, deadline, idle, idle_ms
if h[1] == '_s' and h[3] == '_' then
  si, fixed = 2, h[4]
else
  for i = 1, n, 2 do
    local f = h[i]
    if f == '_s' then
      si = i + 1
      if fixed then break end
    elseif f == '_' then
      fixed = h[i + 1]
      if si then break end
    elseif f == '_abs' then
      deadline = h[i + 1]
    elseif f == '_i' then
      idle = h[i + 1]
    end
  end
  if not si then -- no last-seen yet: one is added below
    si = n + 2
    h[n + 1], h[si] = '_s', '0'
  end
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local seen = tonumber(h[si])
local every = ARGV[1] == '1000'
if every and seen == now then
  return h -- a slide in this same ms has set this very TTL already
end
if fixed then
  deadline, idle = string.match(fixed, '^%[(%d+),(%d+),')
end
deadline, idle_ms = tonumber(deadline), tonumber(idle)
if not deadline or not idle_ms then
  return 0
end
local left = deadline - now
if left <= 0 then
  redis.call('DEL', KEYS[1]) -- the event list expires at the same deadline on its own
  return 0
end
-- not every read: the TTL the last slide set (capped by the deadline) less the time since is
-- what is left now (no PTTL call)
if every or (math.min(idle_ms, deadline - seen) - (now - seen)) * 1000 < idle_ms * ARGV[1] then
  if left < idle_ms then
    redis.call('PEXPIRE', KEYS[1], string.format('%d', left))
  else
    redis.call('PEXPIRE', KEYS[1], idle) -- as stored: no number formatting
  end
  redis.call('HSET', KEYS[1], '_s', string.format('%d', now)) -- cheaper than a number argument
  h[si] = now
end
return h
