-- name: session_summary_set
-- summary: store a summary of a live session under a filter key unless a fresher one is there (kept in the session hash, so it is rotated, destroyed and expired with it)
-- KEYS[1]: the session hash
-- ARGV[1]: the filter key
-- ARGV[2]: the encoded summary
-- ARGV[3]: how many events it covers
-- ARGV[4]: the session's appended-event count when those events were read (orders concurrent jobs)
-- returns: the time in milliseconds it was stored at; 0 when the session is absent or past its deadline; -1 when a summary of later events is stored already
-- read-only: no
-- the deadline leads the times '_' ('[deadline,idle,created]'); '_abs' in the previous layout
local times = redis.call('HGET', KEYS[1], '_')
local deadline = times and string.match(times, '^%[(%d+)') or redis.call('HGET', KEYS[1], '_abs')
if not deadline then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(deadline) then return 0 end
local old = redis.call('HGET', KEYS[1], 'st:' .. ARGV[1])
if old then
  local seen = tonumber(string.match(old, '^%d+:%d+:(%d+)$'))
  if seen and seen > tonumber(ARGV[4]) then return -1 end
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[2], 'st:' .. ARGV[1], now .. ':' .. ARGV[3] .. ':' .. ARGV[4])
return now
