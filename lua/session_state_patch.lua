-- name: session_state_patch
-- summary: merge a patch into an app or user state hash (set and delete fields) and set its TTL
-- KEYS[1]: the state hash
-- ARGV[1]: TTL in ms, or 0 for none (an existing TTL is then kept)
-- ARGV[2]: n, the number of field/value pairs to set
-- ARGV[*]: the n pairs, then the fields to delete
-- returns: the number of fields in the hash afterwards
-- read-only: no
local n = tonumber(ARGV[2])
if n > 0 then
  local kv = {}
  for i = 3, 2 + 2 * n do
    kv[#kv + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(kv))
end
if #ARGV > 2 + 2 * n then
  local dels = {}
  for i = 3 + 2 * n, #ARGV do
    dels[#dels + 1] = ARGV[i]
  end
  redis.call('HDEL', KEYS[1], unpack(dels))
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('HLEN', KEYS[1])
