-- name: cache_store
-- summary: write one cache envelope (soft expiry from the server clock), release our lease, record tags
-- KEYS[*]: KEYS[1] the value, KEYS[2] its fill lease, KEYS[3..] the tag sets of the value's bucket
-- ARGV[1]: the envelope after its soft expiry, built by the client: "<compute ms>:<version>|<codec payload>"
-- ARGV[2]: soft TTL in ms (after it the value is stale: served while one caller refreshes)
-- ARGV[3]: hard TTL in ms (the Redis TTL, >= the soft TTL)
-- ARGV[4]: our lease token ("" for none)
-- ARGV[5]: mode: absent (or "fill") writes while our lease holds, or, with no lease held by anyone (ours expired, or an empty token), only over an absent or stale value; "put" always writes and drops any lease
-- ARGV[6]: the value's version when > 0 (absent: unversioned); an older version never replaces a newer one
-- returns: 1 when written, 0 when skipped (another caller's lease, a fresh value written meanwhile, or a newer version stored)
-- read-only: no
-- Cost: every redis.call and every argument is measurable server time, so the common fill
-- (our lease held, no version, no tags) is TIME, GET, SET, DEL and four arguments.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local token = ARGV[4]
if ARGV[5] == 'put' then
  local version = tonumber(ARGV[6] or '0')
  if version > 0 then
    local ok, cur = pcall(redis.call, 'GET', KEYS[1])  -- another type (planted): absent
    if ok and cur then
      local old = string.match(cur, '^\1%d+:%d+:(%d+)|')
      if old and tonumber(old) > version then
        redis.call('DEL', KEYS[2])
        return 0
      end
    end
  end
  redis.call('DEL', KEYS[2])  -- any fill's lease: its result is older than ours
else
  local holder = redis.call('GET', KEYS[2])
  if token ~= '' and holder == token then
    redis.call('DEL', KEYS[2])
  else
    if token ~= '' and holder then
      return 0  -- our lease expired and another caller holds a new one: theirs is newer
    end
    local ok, cur = pcall(redis.call, 'GET', KEYS[1])
    if ok and cur and tonumber(string.match(cur, '^\1(%d+):') or '0') > now then
      return 0  -- a fresh value was written meanwhile (a put, or another fill)
    end
  end
end
local soft = now + ARGV[2]
if soft >= 1e14 then
  soft = string.format('%.0f', soft)  -- past 14 digits a number would print with an exponent
end
local hard = ARGV[3]
redis.call('SET', KEYS[1], '\1' .. soft .. ':' .. ARGV[1], 'PX', hard)
if #KEYS > 2 then
  hard = tonumber(hard)
  for i = 3, #KEYS do
    redis.call('SADD', KEYS[i], KEYS[1])
    if redis.call('PTTL', KEYS[i]) < hard then
      redis.call('PEXPIRE', KEYS[i], hard)
    end
  end
end
return 1
