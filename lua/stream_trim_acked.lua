-- name: stream_trim_acked
-- summary: trim the entries every consumer group has read and acknowledged, never a pending or unread one
-- KEYS[1]: the stream
-- ARGV[1]: '~' (approximate, cheaper: may keep a few more) or '=' (exact)
-- returns: the number of entries removed (0 when the stream has no group)
-- read-only: no
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local best_ms, best_seq = nil, nil
local function keep(ms, seq)
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
  return 0
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do
    info[g[i]] = g[i + 1]
  end
  local summary = redis.call('XPENDING', KEYS[1], info['name'])
  if summary[1] > 0 then
    keep(parse(summary[2]))  -- the oldest pending entry stays
  else
    local ms, seq = parse(info['last-delivered-id'])
    keep(ms, seq + 1)  -- everything up to the last delivered id is acked
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1], string.format('%d-%d', best_ms, best_seq))
