-- name: cache_store
-- summary: write one cache envelope (built by the client, soft expiry from the writer's clock), ending our lease, and record tags
-- KEYS[*]: KEYS[1] the value, KEYS[2] its refresh lease (or an invalidation's tombstone "~"), KEYS[3..] the tag sets of the value's bucket
-- ARGV[1]: the envelope: "\1<soft expiry, ms since the epoch>:<compute ms>:<version>|<codec payload>"
-- ARGV[2]: hard TTL in ms (the Redis TTL, >= the soft TTL: the value stays servable, stale, until then)
-- ARGV[3]: our lease: "\2<token>" held in the value's own key (a cold fill), a token held in KEYS[2] (a refresh), or "" for none
-- ARGV[4]: the writer's wall clock in ms: a stored value whose soft expiry is not past it is fresh
-- ARGV[5]: mode: absent (a fill) writes while our lease holds, or, with our lease gone (expired), only over an absent, stale or abandoned value and never after an invalidation (tombstone); "put" always writes and drops any refresh lease
-- ARGV[6]: the value's version when > 0 (absent: unversioned); an older version never replaces a newer one
-- returns: 1 when written, 0 when skipped (another caller's lease, a fresh value written meanwhile, an invalidation, or a newer version stored)
-- read-only: no
-- Cost: every redis.call and every argument is measurable server time, so the common fill (our
-- lease in the value's key, no version, no tags) is GET and SET with four arguments. The soft
-- expiry only decides freshness (readers compare it with their own clocks); the TTLs are the server's.
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
  redis.call('DEL', KEYS[2])  -- a refresh's lease: its result is older than ours (a fill's lease, in KEYS[1], goes with the SET)
elseif string.byte(token) == 2 then
  local cur = redis.pcall('GET', KEYS[1])
  if cur ~= token then
    if type(cur) == 'table' then
      cur = false  -- another type planted meanwhile: absent, replaced
    end
    if cur then
      if string.byte(cur) == 2 then
        return 0  -- our lease expired and another caller holds a new one: theirs is newer
      end
      if tonumber(string.match(cur, '^\1(%d+):') or '0') > tonumber(ARGV[4]) then
        return 0  -- a fresh value was written meanwhile (a put, or another fill)
      end
    elseif redis.call('GET', KEYS[2]) == '~' then
      return 0  -- invalidated since our lease was taken: our result may be older
    end
  end
else
  local holder = redis.call('GET', KEYS[2])
  if token ~= '' and holder == token then
    redis.call('DEL', KEYS[2])
  else
    if token ~= '' and holder then
      return 0  -- our lease expired and another caller holds a new one (or an invalidation's tombstone)
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
