-- name: session_track_add
-- summary: append an event to one named track of a live session (a timeline ordered by server time), trimmed to the newest ARGV[3]
-- KEYS[1]: the session hash
-- KEYS[2]: the session's tracks zset (every track; members '<track>\0<time us>\0<seq>\0<event>', score 0)
-- ARGV[1]: the track name (no NUL byte)
-- ARGV[2]: the encoded event
-- ARGV[3]: the most events to keep in this track
-- returns: {events kept in the track, time in microseconds}, or {0, 0} when the session is absent or past its deadline
-- read-only: no
-- the deadline leads the times '_' ('[deadline,idle,created]'); '_abs' in the previous layout
local times = redis.call('HGET', KEYS[1], '_')
local deadline = times and string.match(times, '^%[(%d+)') or redis.call('HGET', KEYS[1], '_abs')
if not deadline then
  return {0, 0}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now_ms >= tonumber(deadline) then return {0, 0} end
local us = t[1] .. string.format('%06d', tonumber(t[2]))
local seq = redis.call('HINCRBY', KEYS[1], '_tn', 1)
local head = ARGV[1] .. '\0'
redis.call('ZADD', KEYS[2], 0, head .. us .. '\0' .. string.format('%012d', seq) .. '\0' .. ARGV[2])
local lo, hi = '[' .. head, '(' .. ARGV[1] .. '\1'
local n = redis.call('ZLEXCOUNT', KEYS[2], lo, hi)
local limit = tonumber(ARGV[3])
if n > limit then
  local old = redis.call('ZRANGEBYLEX', KEYS[2], lo, hi, 'LIMIT', 0, n - limit)
  redis.call('ZREM', KEYS[2], unpack(old))
  n = limit
end
-- like the event log, the tracks live until the absolute deadline
redis.call('PEXPIREAT', KEYS[2], deadline)
return {n, us}
