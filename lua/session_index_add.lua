-- name: session_index_add
-- summary: add a session id to a user's index, scored by its absolute deadline; prune dead entries
-- KEYS[1]: the user's index (a sorted set of session ids)
-- ARGV[1]: the session id
-- ARGV[2]: the session's absolute lifetime in ms (used when ARGV[3] is '')
-- ARGV[3]: an absolute deadline in ms since the epoch, or '' to compute now + ARGV[2]
-- returns: the deadline, integer ms since the epoch
-- read-only: no
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline
if ARGV[3] ~= '' then
  deadline = tonumber(ARGV[3])
else
  deadline = now + tonumber(ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return deadline
