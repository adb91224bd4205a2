-- Extend a lease to now + lease ms (re-adding it if it had lapsed).
--
-- KEYS: the proxy's leases key.
-- ARGV: token, lease ms.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, lease_ms = ARGV[1], tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease_ms, token)
if redis.call('PTTL', KEYS[1]) < lease_ms then
  redis.call('PEXPIRE', KEYS[1], lease_ms + 1000)
end
return 1
