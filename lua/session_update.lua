-- name: session_update
-- summary: set and delete fields of a live session atomically, bumping its version
-- KEYS[1]: the session hash
-- ARGV: the common call is field/value pairs only (every data field name starts with 'd:');
--   otherwise ARGV[1] is the version the caller expects ('' to skip the check), ARGV[2] n, the
--   number of field/value pairs to set, then the n pairs, then the fields to delete
-- returns: the new version; 0 when the session is absent or past its deadline; -1 version mismatch
-- read-only: no
-- No TIME: every writer of the hash (create, get's slide) caps its TTL at the absolute deadline,
-- so Redis has expired it by then and a hash that is still there is a live session; '_v' is in
-- every session hash (either storage format), so one HGET tells liveness and the version.
-- Hot path: one HGET and one HSET that carries the new version with the fields; the pairs go to
-- HSET straight from ARGV (no copied table, no header arguments for the common call); the
-- version goes as a string (a number argument costs a '%.17g' format).
local v = redis.call('HGET', KEYS[1], '_v')
if not v then
  return 0
end
if string.byte(ARGV[1]) == 100 then -- 'd': pairs only
  v = v + 1
  redis.call('HSET', KEYS[1], '_v', string.format('%d', v), unpack(ARGV))
  return v
end
if ARGV[1] ~= '' and v ~= ARGV[1] then
  return -1
end
v = v + 1
local last = 2 + 2 * ARGV[2]
redis.call('HSET', KEYS[1], '_v', string.format('%d', v), unpack(ARGV, 3, last))
if #ARGV > last then
  redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1))
end
return v
