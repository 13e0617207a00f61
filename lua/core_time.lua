-- name: core_time
-- summary: the server's clock, the one time source every pattern agrees on
-- returns: integer microseconds since the epoch (TIME seconds * 1e6 + microseconds)
-- read-only: yes
local t = redis.call('TIME')
return tonumber(t[1]) * 1000000 + tonumber(t[2])
