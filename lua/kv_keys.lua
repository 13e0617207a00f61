-- name: kv_keys
-- summary: one page of a mount's live key names in lexicographic order, from its index
-- KEYS[1]: the mount's index zset
-- KEYS[2]: the mount's expiry zset
-- ARGV[1]: list key names after this one ("" to start from the first)
-- ARGV[2]: the page size (at most this many names)
-- returns: up to ARGV[2] key names; records past their deadline are left out
-- read-only: yes
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx, exp = KEYS[1], KEYS[2]
local limit = tonumber(ARGV[2])
local start = '-'
if ARGV[1] ~= '' then start = '(' .. ARGV[1] end
-- records past their deadline are rare (every write purges them): check members only if any
local stale = redis.call('ZCOUNT', exp, '-inf', '(' .. now_ms) > 0
local out = {}
while #out < limit do
  local want = limit - #out
  local page = redis.call('ZRANGEBYLEX', idx, start, '+', 'LIMIT', 0, want)
  if #page == 0 then break end
  for _, member in ipairs(page) do
    local deadline = stale and redis.call('ZSCORE', exp, member)
    if not deadline or tonumber(deadline) >= now_ms then out[#out + 1] = member end
  end
  if #page < want then break end
  start = '(' .. page[#page]
end
return out
