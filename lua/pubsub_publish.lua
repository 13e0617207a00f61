-- name: pubsub_publish
-- summary: number a message on its channel and publish it in the same step, so subscribers can count what they missed
-- KEYS[1]: the channel's sequence counter (shares the channel's hash tag)
-- ARGV[1]: the channel name (same hash tag as KEYS[1])
-- ARGV[2]: the encoded payload
-- ARGV[3]: 1 to SPUBLISH (sharded pub/sub), 0 to PUBLISH
-- ARGV[4]: counter TTL in milliseconds, 0 for none (the TTL is refreshed on every publish)
-- ARGV[5]: the envelope marker put before the sequence number
-- returns: {sequence number, receivers}; receivers counts subscribers on this node only
-- read-only: no
local seq = redis.call('INCR', KEYS[1])
local ttl = tonumber(ARGV[4])
if ttl and ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local body = ARGV[5] .. seq .. ':' .. ARGV[2]
local n
if ARGV[3] == '1' then
  n = redis.call('SPUBLISH', ARGV[1], body)
else
  n = redis.call('PUBLISH', ARGV[1], body)
end
return {seq, n}
