-- name: cache_store
-- summary: write one cache envelope (built by the client, soft expiry from the writer's clock), release our lease, record tags
-- KEYS[*]: KEYS[1] the value, KEYS[2] its fill lease, KEYS[3..] the tag sets of the value's bucket
-- ARGV[1]: the envelope: "\1<soft expiry, ms since the epoch>:<compute ms>:<version>|<codec payload>"
-- ARGV[2]: hard TTL in ms (the Redis TTL, >= the soft TTL: the value stays servable, stale, until then)
-- ARGV[3]: our lease token ("" for none)
-- ARGV[4]: the writer's wall clock in ms: a stored value whose soft expiry is not past it is fresh
-- ARGV[5]: mode: absent (a fill) writes while our lease holds, or, with no lease held by anyone (ours expired, or an empty token), only over an absent or stale value; "put" always writes and drops any lease
-- ARGV[6]: the value's version when > 0 (absent: unversioned); an older version never replaces a newer one
-- returns: 1 when written, 0 when skipped (another caller's lease, a fresh value written meanwhile, or a newer version stored)
-- read-only: no
-- Cost: every redis.call and every argument is measurable server time, so the common fill (our
-- lease held, no version, no tags) is GET, DEL, SET and four arguments. The soft expiry only
-- decides freshness (readers compare it with their own clocks); the TTLs are the server's.
local token = ARGV[3]
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
    if ok and cur and tonumber(string.match(cur, '^\1(%d+):') or '0') > tonumber(ARGV[4]) then
      return 0  -- a fresh value was written meanwhile (a put, or another fill)
    end
  end
end
local hard = ARGV[2]
redis.call('SET', KEYS[1], ARGV[1], 'PX', hard)
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
