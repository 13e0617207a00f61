-- name: cache_lease
-- summary: on a cold miss, return the value if it appeared, else try to take the short fill lease
-- KEYS[1]: the cached value (an envelope string)
-- KEYS[2]: the fill lease of that value
-- ARGV[1]: our lease token
-- ARGV[2]: lease length in milliseconds
-- ARGV[3]: "1" to ignore a present value (it failed to decode and must be replaced), else "0"
-- returns: the stored envelope when present; 1 when we now hold the lease (taking over an invalidation tombstone "~"); 0 when another caller holds it
-- read-only: no
if ARGV[3] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then
    return v
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[2]) == '~' then
  -- an invalidation's tombstone: fills from before it must not store, but a new one may start
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
