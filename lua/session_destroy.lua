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
-- the user leads '_a' (JSON '["user",{meta}]') and the deadline '_' ('[deadline,idle,created]');
-- a hash of the previous layout has them in '_u' and '_abs'
local meta = redis.call('HMGET', KEYS[1], '_a', '_', '_u', '_abs')
local user, deadline = meta[3], meta[4]
if meta[1] then -- a '_a' that does not decode (a foreign write) names no user: false, not nil,
  -- so a revoke that names one is refused, and a logout by token still deletes the session
  local ok, about = pcall(cjson.decode, meta[1])
  user = ok and type(about) == 'table' and type(about[1]) == 'string' and about[1]
end
if meta[2] then
  deadline = string.match(meta[2], '^%[(%d+)')
end
if ARGV[2] ~= '' and user ~= nil and user ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
local reply = 0
if user then
  reply = user
  if ARGV[3] == '1' then
    deadline = tonumber(deadline)
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
