-- name: leaderboard_read
-- summary: read entries (an index range, the page around a member, or one member) with ranks per rank mode and member data in one call; percentile counts; first builds a rolling union into KEYS[1] when it is missing and day buckets are given
-- KEYS[1]: the sorted set to read (the board, a window bucket, or a rolling-union cache)
-- KEYS[2]: the member-data hash
-- KEYS[3]: the distinct-score sorted set indexing KEYS[1] (used when ARGV[3] is "1")
-- KEYS[*]: KEYS[4..]: day buckets to union into KEYS[1] when it is missing (rolling views)
-- ARGV[1]: order: "desc" or "asc"
-- ARGV[2]: rank mode: standard | competition | dense
-- ARGV[3]: "1" when KEYS[3] indexes the distinct scores of KEYS[1]; else dense ranks walk the distinct scores above
-- ARGV[4]: TTL in ms of a rolling union built here
-- ARGV[5]: aggregate of the rolling union: MAX | MIN | SUM
-- ARGV[6]: query: range | around | member | percentile | count
-- ARGV[7]: range: first index (0-based); around, member, percentile: the member
-- ARGV[8]: range: last index; around: the page size
-- ARGV[9]: "1" to return member data
-- returns: range/around/member: {total (0 for range and member), first index, rank of the first row, {member, score text, ...}, then with data one or more arrays of member data (nil where absent), in row order}, or {total} when no row; the ranks of the other rows follow from the score texts; percentile: {total, members ranked strictly worse} or {total} when absent; count: {total}
-- read-only: yes (a rolling union it builds is a cache: rebuilding it is idempotent)

local src = KEYS[1]
local desc = ARGV[1] == 'desc'
local mode = ARGV[2]
local aux = ARGV[3] == '1'
local query = ARGV[6]

if #KEYS > 3 and redis.call('EXISTS', src) == 0 then
  local args = {'ZUNIONSTORE', src, #KEYS - 3}
  for i = 4, #KEYS do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'AGGREGATE'
  args[#args + 1] = ARGV[5]
  redis.call(unpack(args))
  redis.call('PEXPIRE', src, tonumber(ARGV[4]))
end

-- the size of the set, where the query needs it (0 for range and member reads)
local total = 0
if query ~= 'range' and query ~= 'member' then total = redis.call('ZCARD', src) end
if query == 'count' then return {total} end

local function index_of(member)
  if desc then return redis.call('ZREVRANK', src, member) end
  return redis.call('ZRANK', src, member)
end

if query == 'percentile' then
  local s = redis.call('ZSCORE', src, ARGV[7])
  if not s then return {total} end
  if desc then return {total, redis.call('ZCOUNT', src, '-inf', '(' .. s)} end
  return {total, redis.call('ZCOUNT', src, '(' .. s, '+inf')}
end

-- members strictly better than score text s
local function better_count(s)
  if desc then return redis.call('ZCOUNT', src, '(' .. s, '+inf') end
  return redis.call('ZCOUNT', src, '-inf', '(' .. s)
end
-- distinct scores strictly better than s: one ZCOUNT on the index, else a walk (O(distinct above * log N))
local function distinct_better(s)
  if aux then
    if desc then return redis.call('ZCOUNT', KEYS[3], '(' .. s, '+inf') end
    return redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. s)
  end
  local n, c = 0, s
  while true do
    local r
    if desc then
      r = redis.call('ZRANGEBYSCORE', src, '(' .. c, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    else
      r = redis.call('ZREVRANGEBYSCORE', src, '(' .. c, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    end
    if #r == 0 then return n end
    n = n + 1
    c = r[2]
  end
end

local start, stop
if query == 'range' then
  start, stop = tonumber(ARGV[7]), tonumber(ARGV[8])
else
  local idx = index_of(ARGV[7])
  if not idx then return {total} end
  if query == 'member' then
    start, stop = idx, idx
  else
    local size = tonumber(ARGV[8])
    start = idx - math.floor(size / 2)
    if start > total - size then start = total - size end
    if start < 0 then start = 0 end
    stop = start + size - 1
  end
end
if query == 'around' and stop >= total then stop = total - 1 end
if start > stop then return {total} end

local rows
if desc then
  rows = redis.call('ZREVRANGE', src, start, stop, 'WITHSCORES')
else
  rows = redis.call('ZRANGE', src, start, stop, 'WITHSCORES')
end
if #rows == 0 then return {total} end
-- only the first row's rank needs the server: the client ranks the rest from the score texts
local first = start + 1
if mode == 'competition' then
  first = better_count(rows[2]) + 1
elseif mode == 'dense' then
  first = distinct_better(rows[2]) + 1
end
-- the rows go back as they came; member data in HMGET replies of at most CHUNK members (unpack's limit)
local out = {total, start, first, rows}
if ARGV[9] == '1' then
  local CHUNK = 4000
  local n = #rows / 2
  for c = 1, n, CHUNK do
    local hm, k = {'HMGET', KEYS[2]}, 2
    for i = c, math.min(c + CHUNK - 1, n) do
      k = k + 1
      hm[k] = rows[2 * i - 1]
    end
    out[#out + 1] = redis.call(unpack(hm))
  end
end
return out
