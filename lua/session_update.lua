-- name: session_update
-- summary: set and delete fields of a live session atomically, bumping its version
-- KEYS[1]: the session hash
-- ARGV[1]: the version the caller expects, or '' to skip the check
-- ARGV[2]: n, the number of field/value pairs to set
-- ARGV[*]: the n pairs, then the fields to delete
-- returns: the new version; 0 when the session is absent or past its deadline; -1 version mismatch
-- read-only: no
local meta = redis.call('HMGET', KEYS[1], '_abs', '_v')
if not meta[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(meta[1]) then
  return 0
end
if ARGV[1] ~= '' and meta[2] ~= ARGV[1] then
  return -1
end
local n = tonumber(ARGV[2])
if n > 0 then
  local pairs_ = {}
  for i = 3, 2 + 2 * n do
    pairs_[#pairs_ + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(pairs_))
end
if #ARGV > 2 + 2 * n then
  local dels = {}
  for i = 3 + 2 * n, #ARGV do
    dels[#dels + 1] = ARGV[i]
  end
  redis.call('HDEL', KEYS[1], unpack(dels))
end
return redis.call('HINCRBY', KEYS[1], '_v', 1)
