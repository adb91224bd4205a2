-- Lease a proxy for a shop: its sticky proxy if healthy for this marketplace,
-- else the healthy proxy with the fewest live leases.
--
-- KEYS[1]: the shop's sticky key; then per proxy: quarantine key, leases key.
-- ARGV: token, lease ms, sticky memory ms, tie-break offset, proxy id to
--   avoid ('' for none), then proxy ids in the same order as the keys.
-- Returns {1, proxy id} or {0, ms until the earliest quarantine release};
-- 0 ms when nothing is quarantined but the avoided proxy.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, lease_ms = ARGV[1], tonumber(ARGV[2])
local sticky_ms, offset, avoid = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local n = (#KEYS - 1) / 2
local sticky = redis.call('GET', KEYS[1])

local chosen, best_count, earliest = nil, nil, nil

-- The common case: the sticky proxy is healthy, and nothing else need be read.
if sticky and sticky ~= avoid then
  for i = 1, n do
    if ARGV[5 + i] == sticky then
      if tonumber(redis.call('GET', KEYS[2 * i]) or '0') <= now then
        chosen = i
      end
      break
    end
  end
end

for step = 0, (chosen and -1 or n - 1) do
  local i = ((offset + step) % n) + 1
  local q_key, leases_key = KEYS[2 * i], KEYS[2 * i + 1]
  local id = ARGV[5 + i]
  local until_ms = tonumber(redis.call('GET', q_key) or '0')
  if until_ms > now then
    if earliest == nil or until_ms < earliest then
      earliest = until_ms
    end
  elseif id ~= avoid then
    -- Leases of workers that died without releasing fall out here.
    redis.call('ZREMRANGEBYSCORE', leases_key, '-inf', now)
    local count = redis.call('ZCARD', leases_key)
    if id == sticky then
      chosen, best_count = i, -1
    elseif best_count == nil or count < best_count then
      chosen, best_count = i, count
    end
  end
end

if chosen == nil then
  return {0, tostring(earliest and earliest - now or 0)}
end
local leases_key, id = KEYS[2 * chosen + 1], ARGV[5 + chosen]
redis.call('ZADD', leases_key, now + lease_ms, token)
-- Every member expires by now + lease_ms, so the set may too.
if redis.call('PTTL', leases_key) < lease_ms then
  redis.call('PEXPIRE', leases_key, lease_ms + 1000)
end
redis.call('SET', KEYS[1], id, 'PX', sticky_ms)
return {1, id}
