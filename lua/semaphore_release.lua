-- name: semaphore_release
-- summary: give back our lease iff we still hold it, and wake one waiter when someone waits
-- KEYS[1]: the leases (sorted set)
-- KEYS[2]: the wake-up signal list
-- KEYS[3]: the waiters marker
-- ARGV[1]: the owner token
-- ARGV[2]: how long a signal waits for a waiter, in milliseconds
-- ARGV[3]: the limit (the signal list never holds more entries)
-- returns: 1 released; 0 not held (our lease expired, or was never ours)
-- read-only: no
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if tonumber(score) <= now then
  return 0
end
return 1
