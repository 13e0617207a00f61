-- name: lock_extend
-- summary: reset the lease iff the lock still holds our token; never recreates an expired lock
-- KEYS[1]: the lock key
-- ARGV[1]: the owner token
-- ARGV[2]: the new lease in milliseconds
-- returns: 1 extended; 0 free (our lease expired, nothing written); -1 held by another
-- read-only: no
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then
  return -1
end
return 0
