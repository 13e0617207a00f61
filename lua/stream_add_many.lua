-- name: stream_add_many
-- summary: XADD several entries in order in one call (one command on the wire instead of one per entry); their ids
-- KEYS[1]: the stream
-- ARGV[1]: trim strategy: MAXLEN, MINID or '' for none
-- ARGV[2]: '~' (approximate) or '=' (exact)
-- ARGV[3]: trim threshold (a count for MAXLEN, an id for MINID)
-- ARGV[4]: the number of entries, n
-- ARGV[*]: then n field counts (names plus values, per entry), then every entry's field, value, ... in order
-- returns: the new entries' ids, in order
-- read-only: no
local n = tonumber(ARGV[4])
local ids = {}
local pos = 5 + n
local key, how, mark, threshold = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
for i = 1, n do
  local last = pos + tonumber(ARGV[4 + i]) - 1
  if how == '' then
    ids[i] = redis.call('XADD', key, '*', unpack(ARGV, pos, last))
  else
    ids[i] = redis.call('XADD', key, how, mark, threshold, '*', unpack(ARGV, pos, last))
  end
  pos = last + 1
end
return ids
