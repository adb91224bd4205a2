-- Record a verdict on a request: 'success', 'failure' (auth) or 'release'.
--
-- KEYS: state, failures, exits (set of exits that saw a 401), opened_at,
--   probe lease, half_open_since.
-- ARGV: verdict, probe token or '', threshold, distinct exits required,
--   exit id ('direct' without proxies), failure memory ms.
-- Returns {state after, 1 if this call changed the state else 0}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state_key, failures_key, exits_key = KEYS[1], KEYS[2], KEYS[3]
local opened_key, probe_key, half_key = KEYS[4], KEYS[5], KEYS[6]
local verdict, token = ARGV[1], ARGV[2]
local threshold, distinct = tonumber(ARGV[3]), tonumber(ARGV[4])
local exit_id, memory_ms = ARGV[5], tonumber(ARGV[6])

local state = redis.call('GET', state_key) or 'CLOSED'
-- A probe's verdict counts while its lease is live, and also after the lease
-- lapsed as long as no other worker took the probe over: a slow answer is
-- still the key's answer.
local holds_probe = false
if token ~= '' then
  local current = redis.call('GET', probe_key)
  holds_probe = current == token or (current == false and state == 'HALF_OPEN')
end

if verdict == 'release' then
  if holds_probe then
    redis.call('DEL', probe_key)
  end
  return {state, 0}
end

if verdict == 'success' then
  if state == 'HALF_OPEN' and holds_probe then
    redis.call('SET', state_key, 'CLOSED')
    redis.call('DEL', failures_key, exits_key, opened_key, probe_key, half_key)
    return {'CLOSED', 1}
  end
  if state == 'CLOSED' then
    redis.call('DEL', failures_key, exits_key)
  end
  return {state, 0}
end

-- An auth failure.
if state == 'HALF_OPEN' then
  if holds_probe then
    redis.call('SET', state_key, 'OPEN')
    redis.call('SET', opened_key, tostring(now))
    redis.call('DEL', probe_key, half_key)
    return {'OPEN', 1}
  end
  return {state, 0}
end
if state == 'OPEN' then
  return {state, 0}
end

local failures = redis.call('INCR', failures_key)
redis.call('PEXPIRE', failures_key, memory_ms)
redis.call('SADD', exits_key, exit_id)
redis.call('PEXPIRE', exits_key, memory_ms)
-- A single proxy answering 401 is the proxy's fault, not the key's; without
-- proxies the count alone decides.
local exits_ok = redis.call('SCARD', exits_key) >= distinct
  or redis.call('SISMEMBER', exits_key, 'direct') == 1
if failures >= threshold and exits_ok then
  redis.call('SET', state_key, 'OPEN')
  redis.call('SET', opened_key, tostring(now))
  return {'OPEN', 1}
end
return {'CLOSED', 0}
