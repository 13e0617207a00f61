-- name: session_update
-- summary: set and delete fields of a live session atomically, bumping its version
-- KEYS[1]: the session hash
-- ARGV[1]: the version the caller expects, or '' to skip the check
-- ARGV[2]: n, the number of field/value pairs to set
-- ARGV[*]: the n pairs, then the fields to delete
-- returns: the new version; 0 when the session is absent or past its deadline; -1 version mismatch
-- read-only: no
-- No TIME: every writer of the hash (create, get's slide) caps its TTL at the absolute deadline,
-- so Redis has expired it by then and a hash that is still there is a live session.
-- Hot path: the new version rides in the same HSET as the fields (no HINCRBY), and the pairs go
-- to HSET / HDEL straight from ARGV (unpack of a range, no copied table).
local meta = redis.call('HMGET', KEYS[1], '_abs', '_v')
if not meta[1] then
  return 0
end
if ARGV[1] ~= '' and meta[2] ~= ARGV[1] then
  return -1
end
local v = (tonumber(meta[2]) or 0) + 1
local last = 2 + 2 * ARGV[2]
redis.call('HSET', KEYS[1], '_v', v, unpack(ARGV, 3, last))
if #ARGV > last then
  redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1))
end
return v
