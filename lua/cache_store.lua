-- name: cache_store
-- summary: write one cache envelope (soft expiry from the server clock), release our lease, record tags
-- KEYS[*]: KEYS[1] the value, KEYS[2] its fill lease, KEYS[3..] the tag sets of the value's bucket
-- ARGV[1]: the encoded payload
-- ARGV[2]: soft TTL in ms (after it the value is stale: served while one caller refreshes)
-- ARGV[3]: hard TTL in ms (the Redis TTL, >= the soft TTL)
-- ARGV[4]: measured compute time in ms (for early refresh)
-- ARGV[5]: the value's version (integer; 0 = unversioned); an older version never replaces a newer one
-- ARGV[6]: mode: "fill" writes while our lease holds, or, with no lease held by anyone (ours expired, or an empty token), only over an absent or stale value; "put" always writes and drops any lease
-- ARGV[7]: our lease token ("" for none)
-- returns: 1 when written, 0 when skipped (another caller's lease, a fresh value written meanwhile, or a newer version stored)
-- read-only: no
local mode = ARGV[6]
local token = ARGV[7]
local function current(k)  -- the stored string; a value of another type (planted, corrupted) is absent
  local ok, v = pcall(redis.call, 'GET', k)
  if ok then return v end
  return false
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = false
if mode == 'fill' then
  holder = redis.call('GET', KEYS[2])
  if token == '' or holder ~= token then
    if token ~= '' and holder then
      return 0  -- our lease expired and another caller holds a new one: theirs is newer
    end
    local cur = current(KEYS[1])
    if cur then
      local soft = tonumber(string.match(cur, '^\1(%d+):') or '0')
      if soft > now_ms then
        return 0  -- a fresh value was written meanwhile (a put, or another fill)
      end
    end
  end
end
local version = tonumber(ARGV[5])
if version > 0 then
  local cur = current(KEYS[1])
  if cur then
    local old = string.match(cur, '^\1%d+:%d+:(%d+)|')
    if old and tonumber(old) > version then
      if mode == 'put' then
        redis.call('DEL', KEYS[2])
      end
      return 0
    end
  end
end
local soft = now_ms + tonumber(ARGV[2])
local hard = tonumber(ARGV[3])
local env = '\1' .. string.format('%.0f', soft) .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. '|' .. ARGV[1]
redis.call('SET', KEYS[1], env, 'PX', hard)
if mode == 'put' or (token ~= '' and holder == token) then
  redis.call('DEL', KEYS[2])  -- ours, or any fill's lease on a put
end
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  local left = redis.call('PTTL', KEYS[i])
  if left < hard then
    redis.call('PEXPIRE', KEYS[i], hard)
  end
end
return 1
