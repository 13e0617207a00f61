-- name: session_create
-- summary: write a new session hash (and any restored events) unless its id was revoked
-- KEYS[1]: the session hash
-- KEYS[2]: the session's event list
-- KEYS[3]: the session's revocation marker
-- ARGV[1]: absolute deadline, integer ms since the epoch (sliding never passes it)
-- ARGV[2]: idle TTL in ms
-- ARGV[3]: the version to start at ('1' for a new session; a rotation keeps its own)
-- ARGV[4]: the created time in ms ('' for now: a new session; a rotation keeps its own)
-- ARGV[5]: the user and meta, JSON '["user",{meta}]' (the '_a' field)
-- ARGV[6]: n, the number of events to restore, oldest first
-- ARGV[*]: the n events, then field/value pairs for the hash
-- returns: 1 created; 0 refused (the id is revoked or taken); -1 the deadline has already passed
-- read-only: no
-- The hash's first fields are '_s' (last seen), '_' (the times, JSON '[deadline,idle,created]'),
-- '_a', '_v' in this order: a small hash keeps insertion order, so session_get and its client
-- find the metadata at the front.
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local ttl = math.min(idle, deadline - now)
if ttl <= 0 then
  return -1
end
local created = ARGV[4]
if created == '' then
  created = string.format('%d', now)
end
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  redis.call('LPUSH', KEYS[2], ARGV[i])
  i = i + 1
end
local times = '[' .. ARGV[1] .. ',' .. ARGV[2] .. ',' .. created .. ']'
local fields = {'_s', now, '_', times, '_a', ARGV[5], '_v', ARGV[3]}
for j = i, #ARGV do
  fields[#fields + 1] = ARGV[j]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ttl)
if n > 0 then
  redis.call('PEXPIREAT', KEYS[2], deadline)
end
return 1
