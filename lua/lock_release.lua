-- name: lock_release
-- summary: release iff the lock holds our token; with waiters, hand it to the next one (FIFO wake-up) instead of freeing it
-- KEYS[1]: the lock key
-- KEYS[2]: the wake-up signal list
-- KEYS[3]: the release latch (the last token released, kept for retries after a lost reply)
-- KEYS[4]: the waiters marker
-- ARGV[1]: the owner token (also the hand-over nonce the woken waiter presents)
-- ARGV[2]: how long the latch lives, in milliseconds
-- ARGV[3]: how long a hand-over stays reserved for the woken waiter, in milliseconds
-- returns: 1 released now; 2 already released by this token (a retry); 0 free (our lease expired); -1 held by another
-- read-only: no
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('SET', KEYS[1], 'handoff:' .. ARGV[1], 'PX', ARGV[3])
    redis.call('DEL', KEYS[2])
    redis.call('RPUSH', KEYS[2], ARGV[1])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  else
    redis.call('DEL', KEYS[1])
  end
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  return 1
end
if redis.call('GET', KEYS[3]) == ARGV[1] then
  return 2
end
if current then
  return -1
end
return 0
