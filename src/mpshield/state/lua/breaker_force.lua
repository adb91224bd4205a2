-- Set a circuit by hand: 'reset' closes it and forgets everything; 'open'
-- opens it at ARGV[2] (ms, or now when empty) unless it is already open.
--
-- KEYS: state, failures, exits, opened_at, probe lease, half_open_since.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'reset' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  redis.call('SET', KEYS[1], 'CLOSED')
  return 'CLOSED'
end
local state = redis.call('GET', KEYS[1]) or 'CLOSED'
if state ~= 'CLOSED' then
  return state
end
local opened = ARGV[2] ~= '' and tonumber(ARGV[2]) or now
redis.call('SET', KEYS[1], 'OPEN')
redis.call('SET', KEYS[4], tostring(math.min(opened, now)))
redis.call('DEL', KEYS[5], KEYS[6])
return 'OPEN'
