-- name: semaphore_extend
-- summary: push our lease's expiry out iff it is still live (never revives an expired lease)
-- KEYS[1]: the leases (sorted set)
-- ARGV[1]: the owner token
-- ARGV[2]: the new lease in milliseconds
-- returns: 1 extended; 0 not held (expired or never ours)
-- read-only: no
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) <= now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return 1
