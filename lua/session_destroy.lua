-- name: session_destroy
-- summary: revoke a session id: mark it revoked first, then delete its hash and events
-- KEYS[1]: the session hash
-- KEYS[2]: the session's event list
-- KEYS[3]: the session's revocation marker
-- ARGV[1]: how long the marker lives, in ms
-- ARGV[2]: the user id the session must belong to, or '' for any
-- ARGV[3]: '1' to return the session's fields and events (rotation), '' otherwise
-- returns: 0 when there was no session (or another user's); else its user id, or {fields, events}
-- read-only: no
local user = redis.call('HGET', KEYS[1], '_u')
if ARGV[2] ~= '' and user and user ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
local reply = 0
if user then
  reply = user
  if ARGV[3] == '1' then
    local deadline = tonumber(redis.call('HGET', KEYS[1], '_abs'))
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if deadline and now < deadline then
      reply = {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
    else
      reply = 0
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return reply
