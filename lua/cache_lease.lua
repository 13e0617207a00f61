-- name: cache_lease
-- summary: read a cached value, or on a miss take the short fill lease in its place, in one command (a cold miss is this and one store)
-- KEYS[1]: the cached value (an envelope string, or a fill lease: "\2" and its holder's token)
-- ARGV[1]: our lease ("\2" and our token)
-- ARGV[2]: lease length in milliseconds
-- returns: nil when we now hold the lease (the key was absent); else what the key holds: an envelope (the value), or another caller's lease
-- read-only: no
-- Cost: one SET (NX ... GET reads and leases at once); a script, not the bare command, because
-- redis-py turns a bare SET's reply into a boolean. A key of another type is the SET's WRONGTYPE.
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2], 'GET')
