-- Quarantine a proxy for one marketplace, longer for a repeat offender.
--
-- KEYS: quarantine key, escalation level key.
-- ARGV: base ms, cap ms, memory ms (how long after release a new
--   quarantine still counts as a repeat).
-- Returns the quarantine left in ms. A proxy already in quarantine is not
-- escalated again: many workers see the same ban at once.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, cap, memory = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > now then
  return tostring(current - now)
end
local level = tonumber(redis.call('GET', KEYS[2]) or '0')
local duration = math.min(base * (2 ^ level), cap)
redis.call('SET', KEYS[1], tostring(now + duration), 'PX', math.ceil(duration))
redis.call('SET', KEYS[2], tostring(level + 1), 'PX', math.ceil(duration + memory))
return tostring(duration)
