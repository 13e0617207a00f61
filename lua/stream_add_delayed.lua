-- name: stream_add_delayed
-- summary: park an entry in the stream's delayed set until it is due (server time); a consumer's read moves it into the stream then; with an idempotency marker a duplicate returns the first id
-- KEYS[*]: the delayed sorted set, its sequence counter, then (optionally) the idempotency marker; all share the stream's hash tag
-- ARGV[1]: delay in milliseconds from now (server clock), or -1
-- ARGV[2]: due time in milliseconds since the epoch (when ARGV[1] is -1)
-- ARGV[3]: marker TTL in milliseconds
-- ARGV[4]: the entry's fields packed as <length>:<bytes> per field name and per value
-- returns: {'delayed-<n>', 1} when parked, {first id, 0} for a duplicate
-- read-only: no
if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then
    return {first, 0}
  end
end
local due = tonumber(ARGV[2])
if tonumber(ARGV[1]) >= 0 then
  local t = redis.call('TIME')
  due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
end
local seq = redis.call('INCR', KEYS[2])
local id = 'delayed-' .. seq
-- the member: a zero-padded sequence number (unique, and in order among equal due times), then the fields
redis.call('ZADD', KEYS[1], due, string.format('%015d', seq) .. ':' .. ARGV[4])
if KEYS[3] then
  redis.call('SET', KEYS[3], id, 'PX', tonumber(ARGV[3]))
end
return {id, 1}
