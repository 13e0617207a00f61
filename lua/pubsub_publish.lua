-- name: pubsub_publish
-- summary: number a message on its channel and publish it in the same step, so subscribers can count what they missed
-- KEYS[1]: the channel's sequence counter (shares the channel's hash tag)
-- ARGV[1]: the channel name (same hash tag as KEYS[1])
-- ARGV[2]: the encoded payload
-- ARGV[3]: optional: the counter's TTL in milliseconds, refreshed on every publish ('0': none)
-- ARGV[4]: optional: '1' to SPUBLISH (sharded pub/sub) instead of PUBLISH
-- returns: the number of receivers (subscribers on this node only); the message sent is '#rp1:<seq>:<payload>'
-- read-only: no
local seq = redis.call('INCR', KEYS[1])
if ARGV[3] and ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if ARGV[4] == '1' then
  return redis.call('SPUBLISH', ARGV[1], '#rp1:' .. seq .. ':' .. ARGV[2])
end
return redis.call('PUBLISH', ARGV[1], '#rp1:' .. seq .. ':' .. ARGV[2])
