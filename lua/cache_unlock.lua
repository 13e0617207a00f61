-- name: cache_unlock
-- summary: drop a fill lease iff it still holds our token (quietly: an expired lease is no error)
-- KEYS[1]: the fill lease: a refresh lease's key, or the value's own key while a cold fill holds it ("\2" and the token)
-- ARGV[1]: our lease token (as stored)
-- returns: 1 when released, 0 when the lease had expired or belongs to another caller
-- read-only: no
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
