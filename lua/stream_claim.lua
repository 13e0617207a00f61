-- name: stream_claim
-- summary: take pending entries (idle ones of any consumer via XAUTOCLAIM, or this consumer's own), with their delivery counts; entries past max deliveries move to the dead-letter stream and are acked
-- KEYS[1]: the stream
-- KEYS[2]: the dead-letter stream (same hash tag)
-- ARGV[1]: consumer group
-- ARGV[2]: this consumer's name
-- ARGV[3]: mode: 'idle' (XAUTOCLAIM entries idle for at least ARGV[4] ms) or 'own' (this consumer's pending entries after the cursor)
-- ARGV[4]: min idle time in milliseconds ('idle' mode)
-- ARGV[5]: cursor: '0-0' to start; the returned cursor continues
-- ARGV[6]: max entries to take
-- ARGV[7]: max deliveries (0: never dead-letter)
-- ARGV[8]: dead-letter stream MAXLEN (approximate; 0 for no cap)
-- ARGV[9]: 1 to XDEL dead-lettered entries from the stream, else 0
-- returns: {next cursor ('0-0' when done), {id, delivery count, {field, value, ...}} ..., {ids gone from the stream}, {{id, deliveries} of each entry dead-lettered}}
-- read-only: no
local stream, dlq = KEYS[1], KEYS[2]
local group, me, mode = ARGV[1], ARGV[2], ARGV[3]
local count, maxd = tonumber(ARGV[6]), tonumber(ARGV[7])
local cursor, entries, gone = '0-0', {}, {}

if mode == 'idle' then
  local r = redis.call('XAUTOCLAIM', stream, group, me, ARGV[4], ARGV[5], 'COUNT', count)
  cursor, entries, gone = r[1], r[2], r[3] or {}
else
  local start = '-'
  if ARGV[5] ~= '0-0' then
    start = '(' .. ARGV[5]
  end
  local p = redis.call('XPENDING', stream, group, start, '+', count, me)
  local ids = {}
  for i, e in ipairs(p) do
    ids[i] = e[1]
  end
  if #ids > 0 then
    if #ids == count then
      cursor = ids[#ids]
    end
    local cmd = {'XCLAIM', stream, group, me, 0}
    for _, id in ipairs(ids) do
      cmd[#cmd + 1] = id
    end
    entries = redis.call(unpack(cmd))
    -- ids whose entry was deleted or trimmed come back without a body: drop them from the pending list
    local seen = {}
    for _, e in ipairs(entries) do
      if type(e) == 'table' and e[2] then
        seen[e[1]] = true
      end
    end
    for _, id in ipairs(ids) do
      if not seen[id] then
        redis.call('XACK', stream, group, id)
        gone[#gone + 1] = id
      end
    end
  end
end

local out, dead = {}, {}
local now = nil
for _, e in ipairs(entries) do
  if type(e) == 'table' and e[2] then
    local id = e[1]
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    local n = tonumber(p[1][4])
    if maxd > 0 and n > maxd then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000000 + tonumber(t[2])
      end
      local cmd = {'XADD', dlq}
      if tonumber(ARGV[8]) > 0 then
        cmd[#cmd + 1] = 'MAXLEN'
        cmd[#cmd + 1] = '~'
        cmd[#cmd + 1] = ARGV[8]
      end
      for _, v in ipairs({'*', 'rp:id', id, 'rp:group', group, 'rp:consumer', me,
          'rp:deliveries', n - 1, 'rp:error', 'no ack after ' .. (n - 1) .. ' deliveries (consumer crashed or timed out)',
          'rp:dead_us', now}) do
        cmd[#cmd + 1] = v
      end
      for _, v in ipairs(e[2]) do
        cmd[#cmd + 1] = v
      end
      redis.call(unpack(cmd))
      redis.call('XACK', stream, group, id)
      if ARGV[9] == '1' then
        redis.call('XDEL', stream, id)
      end
      dead[#dead + 1] = {id, n - 1}
    else
      out[#out + 1] = {id, n, e[2]}
    end
  end
end
return {cursor, out, gone, dead}
