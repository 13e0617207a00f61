-- name: cache_fill
-- summary: a cold fill's common store: replace our lease, still in the value's key, with the value
-- KEYS[1]: the value's key, holding our lease
-- ARGV[1]: the envelope (as cache_store's ARGV[1])
-- ARGV[2]: hard TTL in ms
-- ARGV[3]: our lease as stored ("\2<token>")
-- returns: 1 when written, -1 when the key no longer holds our lease (the client then sends cache_store, which decides)
-- read-only: no
-- Cost: one key and three arguments (each is server time); every other case (the lease expired,
-- an invalidation, another type planted) is cache_store's, one more round trip when it happens.
if redis.pcall('GET', KEYS[1]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return -1
