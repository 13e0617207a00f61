-- name: semaphore_acquire
-- summary: take one of `limit` leases (a sorted set of owner -> expiry, server time), dropping expired leases first
-- KEYS[1]: the leases (sorted set: member = owner token, score = expiry in ms)
-- KEYS[2]: the waiters marker (set by a failed attempt, so a release knows to signal)
-- ARGV[1]: the owner token
-- ARGV[2]: the lease in milliseconds
-- ARGV[3]: the limit (how many leases at most)
-- ARGV[4]: how long the waiters marker lives past the next expiry, in milliseconds (0: a single try, not a waiter)
-- returns: {1, 0} when a lease was taken; {0, ms until the earliest lease expires} when all are taken
-- read-only: no
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = math.max(0, tonumber(first[2]) - now)
local mark = tonumber(ARGV[4])
if mark > 0 then
  redis.call('SET', KEYS[2], '1', 'PX', wait + mark)
end
return {0, wait}
