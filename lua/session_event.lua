-- name: session_event
-- summary: append an event to a live session's log, keeping only the newest ARGV[2]
-- KEYS[1]: the session hash
-- KEYS[2]: the session's event list (newest first)
-- ARGV[1]: the encoded event (stored as '<server time: 16 digits of microseconds>\0<event>')
-- ARGV[2]: the most events to keep
-- ARGV[3]: optional: '1' also counts the append in the hash (field _n, the summary policy's counter)
-- returns: the number of events kept, or 0 when the session is absent or past its deadline; with ARGV[3] '1', {that number, the append count}
-- read-only: no
-- the deadline leads the times '_' ('[deadline,idle,created]'); '_abs' in the previous layout
local times = redis.call('HGET', KEYS[1], '_')
local deadline = times and string.match(times, '^%[(%d+)') or redis.call('HGET', KEYS[1], '_abs')
if not deadline then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(deadline) then
  return 0
end
local n = redis.call('LPUSH', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])) .. '\0' .. ARGV[1])
local limit = tonumber(ARGV[2])
if n > limit then
  redis.call('LTRIM', KEYS[2], 0, limit - 1)
  n = limit
end
-- the log lives until the absolute deadline, so sliding reads never have to touch it
redis.call('PEXPIREAT', KEYS[2], deadline)
if ARGV[3] == '1' then
  return {n, redis.call('HINCRBY', KEYS[1], '_n', 1)}
end
return n
