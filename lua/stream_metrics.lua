-- name: stream_metrics
-- summary: one consistent snapshot of a stream and one consumer group: length, lag, pending, oldest pending age, dead letters
-- KEYS[1]: the stream
-- KEYS[2]: the dead-letter stream (same hash tag)
-- ARGV[1]: consumer group
-- returns: {length, group exists 0/1, pending, lag (-1 when the server cannot tell), oldest pending id or '', oldest pending idle ms, server time ms, dead-letter length, consumers, last delivered id}
-- read-only: yes
local length = redis.call('XLEN', KEYS[1])
local dead = redis.call('XLEN', KEYS[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if length == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0, -1, '', 0, now_ms, dead, 0, ''}
end
local found, lag, consumers, last = 0, -1, 0, ''
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do
    info[g[i]] = g[i + 1]
  end
  if info['name'] == ARGV[1] then
    found = 1
    consumers = info['consumers']
    last = info['last-delivered-id']
    if type(info['lag']) == 'number' then
      lag = info['lag']
    end
  end
end
if found == 0 then
  return {length, 0, 0, -1, '', 0, now_ms, dead, 0, ''}
end
local pending, oldest, idle = 0, '', 0
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)
if #p == 1 then
  oldest = p[1][1]
  idle = p[1][3]
  pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
end
return {length, 1, pending, lag, oldest, idle, now_ms, dead, consumers, last}
