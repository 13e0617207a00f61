-- name: lock_delete_if
-- summary: delete a key iff it holds our token (a Redlock master's release: no signal, no latch)
-- KEYS[1]: the lock key on this master
-- ARGV[1]: the owner token
-- returns: 1 deleted; 0 the key held another token or none
-- read-only: no
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
