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
-- comparisons, and any other hash is scanned until both are found; below '1000' the key's own
-- PTTL says whether a slide is due (a read that is not due asks no clock and writes nothing);
-- at '1000' a read in the same ms as the last slide (stored last-seen == TIME) writes nothing;
-- the deadline is parsed only for a slide.
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
local every = ARGV[1] == '1000'
local t, now
if every then
  t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)
  if tonumber(h[si]) == now then
    return h -- a slide in this same ms has set this very TTL already
  end
end
if fixed then
  deadline, idle = string.match(fixed, '^%[(%d+),(%d+),')
end
idle_ms = tonumber(idle)
if not idle_ms then
  return 0
end
if not every then -- a slide is due when less than ARGV[1]/1000 of the idle TTL is left
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl >= 0 and ttl * 1000 >= idle_ms * ARGV[1] then
    return h -- not due: no clock, no write
  end
  t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)
end
deadline = tonumber(deadline)
if not deadline then
  return 0
end
local left = deadline - now
if left <= 0 then
  redis.call('DEL', KEYS[1]) -- the event list expires at the same deadline on its own
  return 0
end
if left < idle_ms then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', left))
else
  redis.call('PEXPIRE', KEYS[1], idle) -- as stored: no number formatting
end
redis.call('HSET', KEYS[1], '_s', string.format('%d', now)) -- cheaper than a number argument
h[si] = now
return h
