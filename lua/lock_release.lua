-- name: lock_release
-- summary: delete the lock iff it holds our token, remember that we did, and wake one waiter
-- KEYS[1]: the lock key
-- KEYS[2]: the wake-up signal list
-- KEYS[3]: the release latch (the last token released, kept for retries after a lost reply)
-- ARGV[1]: the owner token
-- ARGV[2]: how long the signal and the latch live, in milliseconds
-- returns: 1 released now; 2 already released by this token (a retry); 0 free (our lease expired); -1 held by another
-- read-only: no
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
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
