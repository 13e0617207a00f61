-- name: cache_lease
-- summary: read a cached value, or on a miss take the short fill lease, in one call (a cold miss is this and one store)
-- KEYS[1]: the cached value (an envelope string)
-- KEYS[2]: the fill lease of that value
-- ARGV[1]: our lease token
-- ARGV[2]: lease length in milliseconds
-- ARGV[3]: "1" to ignore a present value (it failed to decode and must be replaced); absent (or "0") to read it
-- returns: the stored envelope when present; 1 when we now hold the lease (taking over an invalidation tombstone "~"); 2 when we hold it and a value of another type sits under the key (to be replaced); 0 when another caller holds it
-- read-only: no
local foreign = false
if ARGV[3] ~= '1' then
  local v = redis.pcall('GET', KEYS[1])
  if type(v) == 'table' and v.err then
    foreign = true  -- another type under the key: absent, the store replaces it
  elseif v then
    return v
  end
end
local mine = foreign and 2 or 1
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return mine
end
if redis.call('GET', KEYS[2]) == '~' then
  -- an invalidation's tombstone: fills from before it must not store, but a new one may start
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return mine
end
return 0
