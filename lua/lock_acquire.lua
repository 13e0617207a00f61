-- name: lock_acquire
-- summary: take the lock iff free, and hand out the next fencing token in the same step
-- KEYS[1]: the lock key
-- KEYS[2]: the fence counter (never expires: fencing tokens must only grow)
-- KEYS[3]: the wake-up signal list (a stale signal is dropped once the lock is taken)
-- ARGV[1]: the owner token
-- ARGV[2]: the lease in milliseconds
-- returns: {fence, 0} when acquired (fence >= 1); {0, pttl} when held by another (pttl -1: no expiry)
-- read-only: no
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('DEL', KEYS[3])
  return {fence, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
