-- name: stream_promote
-- summary: move the delayed entries that are due (server time) into the stream, oldest due first, and tell when the next one is due
-- KEYS[1]: the stream
-- KEYS[2]: the delayed sorted set (same hash tag), members '<seq>:' then <length>:<bytes> per field name and value
-- ARGV[1]: most entries to move in this call
-- ARGV[2]: trim strategy: MAXLEN, MINID or '' for none
-- ARGV[3]: '~' (approximate) or '=' (exact)
-- ARGV[4]: trim threshold
-- returns: {entries moved, milliseconds until the next one is due (0: more are due now, -1: none left)}
-- read-only: no
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(due) do
  local cmd = {'XADD', KEYS[1]}
  if ARGV[2] ~= '' then
    cmd[#cmd + 1] = ARGV[2]
    cmd[#cmd + 1] = ARGV[3]
    cmd[#cmd + 1] = ARGV[4]
  end
  cmd[#cmd + 1] = '*'
  local pos = string.find(m, ':', 1, true) + 1
  while pos <= #m do
    local colon = string.find(m, ':', pos, true)
    local n = tonumber(string.sub(m, pos, colon - 1))
    cmd[#cmd + 1] = string.sub(m, colon + 1, colon + n)
    pos = colon + n + 1
  end
  redis.call(unpack(cmd))
  redis.call('ZREM', KEYS[2], m)
end
if #due == limit then
  return {#due, 0}
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt == 0 then
  return {#due, -1}
end
return {#due, math.max(0, tonumber(nxt[2]) - now)}
