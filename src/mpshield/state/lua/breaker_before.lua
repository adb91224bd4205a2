-- May this shop call the marketplace now? One atomic step on the server clock.
--
-- KEYS: state, opened_at, probe lease, half_open_since.
-- ARGV: open ms, probe lease ms, half-open timeout ms, candidate probe token.
-- Returns {allowed, state, probe token or '', retry_after_ms}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state_key, opened_key, probe_key, half_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local open_ms, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local half_timeout_ms, token = tonumber(ARGV[3]), ARGV[4]

local state = redis.call('GET', state_key) or 'CLOSED'
if state == 'CLOSED' then
  return {1, state, '', '0'}
end

local function reopen()
  redis.call('SET', state_key, 'OPEN')
  redis.call('SET', opened_key, tostring(now))
  redis.call('DEL', probe_key, half_key)
  return {0, 'OPEN', '', tostring(open_ms)}
end

if state == 'OPEN' then
  local opened = tonumber(redis.call('GET', opened_key))
  if opened == nil then
    -- The opening time was lost: count the open period from now rather than
    -- leave a circuit that can never reach HALF_OPEN.
    opened = now
    redis.call('SET', opened_key, tostring(now))
  end
  local remaining = opened + open_ms - now
  if remaining > 0 then
    return {0, state, '', tostring(remaining)}
  end
  redis.call('SET', state_key, 'HALF_OPEN')
  redis.call('SET', half_key, tostring(now))
  redis.call('SET', probe_key, token, 'PX', lease_ms)
  return {1, 'HALF_OPEN', token, '0'}
end

-- HALF_OPEN: one probe for the whole fleet, held by an expiring lease.
local since = tonumber(redis.call('GET', half_key))
if since == nil then
  since = now
  redis.call('SET', half_key, tostring(now))
end
if now - since >= half_timeout_ms then
  return reopen()
end
local lease_left = redis.call('PTTL', probe_key)
if lease_left > 0 then
  return {0, state, '', tostring(lease_left)}
end
-- The prober died or lost its verdict: the next caller takes over.
redis.call('SET', probe_key, token, 'PX', lease_ms)
return {1, state, token, '0'}
