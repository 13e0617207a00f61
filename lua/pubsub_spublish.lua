-- name: pubsub_spublish
-- summary: number a message on its channel and SPUBLISH it (sharded pub/sub) in the same step, so subscribers can count what they missed
-- KEYS[1]: the channel's sequence counter: the channel name followed by ':seq' (same hash tag); the channel is this key without its last 4 characters
-- ARGV[1]: the encoded payload
-- ARGV[2]: optional: the counter's TTL in milliseconds, refreshed on every publish
-- returns: the number of receivers (subscribers on this node only); the message sent is '#rp1:<seq>:<payload>'
-- read-only: no
-- Hot path (measured with INFO commandstats): the channel comes from KEYS[1] (one argument less
-- to send and parse), and '%d' formats the number (a Lua number's default '%.14g' costs more).
local seq = redis.call('INCR', KEYS[1])
if ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SPUBLISH', string.sub(KEYS[1], 1, -5), '#rp1:' .. string.format('%d', seq) .. ':' .. ARGV[1])
