-- name: session_index_list
-- summary: a user's session ids with their deadlines, after pruning those past their deadline
-- KEYS[1]: the user's index
-- ARGV[1]: '1' to empty the index as well (log out everywhere), '' to keep it
-- returns: flat id/deadline pairs (deadlines as strings of integer ms)
-- read-only: no
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
end
return entries
