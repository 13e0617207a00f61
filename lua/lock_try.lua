-- name: lock_try
-- summary: the uncontended acquire: take the lock iff free, with the next fencing token, in the shape of a bare SET NX PX + INCR
-- KEYS[1]: the lock key
-- KEYS[2]: the fence counter (never expires: fencing tokens must only grow)
-- ARGV[1]: the owner token
-- ARGV[2]: the lease in milliseconds
-- returns: the fence (>= 1) when acquired; when held or reserved, -1 - the holder's pttl (<= 0; 0: no expiry), nothing written (a waiter follows up with lock_acquire)
-- read-only: no
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return -1 - redis.call('PTTL', KEYS[1])
