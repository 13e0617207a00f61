-- name: lock_acquire
-- summary: take the lock iff free (or handed to us by a release), and hand out the next fencing token in the same step
-- KEYS[1]: the lock key
-- KEYS[2]: the fence counter (never expires: fencing tokens must only grow)
-- KEYS[3]: the wake-up signal list (dropped once the lock is taken: what is left is stale)
-- KEYS[4]: the waiters marker (set by a failed attempt, so a release knows to hand over)
-- ARGV[1]: the owner token
-- ARGV[2]: the lease in milliseconds
-- ARGV[3]: the hand-over nonce a release signal gave this waiter, or '' for none
-- ARGV[4]: how long the waiters marker outlives the holder's lease, in milliseconds (0: a single try, not a waiter)
-- returns: {fence, 0} when acquired (fence >= 1); {0, pttl} when held or reserved for another waiter (pttl -1: no expiry)
-- read-only: no
local current = redis.call('GET', KEYS[1])
if (not current) or (ARGV[3] ~= '' and current == 'handoff:' .. ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local fence = redis.call('INCR', KEYS[2])
  redis.call('DEL', KEYS[3])
  return {fence, 0}
end
local pttl = redis.call('PTTL', KEYS[1])
local mark = tonumber(ARGV[4])
if mark > 0 then
  if pttl > 0 then
    mark = mark + pttl
  end
  redis.call('SET', KEYS[4], '1', 'PX', mark)
end
return {0, pttl}
