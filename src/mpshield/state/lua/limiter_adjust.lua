-- Adjust one bucket after the marketplace spoke, on the server's clock.
--
-- KEYS[1]: the bucket's state key, KEYS[2]: its cool-down key.
-- ARGV: op ('sync' | 'charge' | 'cool'), kind (0 GCRA, 1 window), limit,
--   period ms, burst, amount (remaining for sync, extra cost for charge,
--   milliseconds for cool).
-- Every op only ever tightens the bucket.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
-- Full precision: tostring would round a millisecond time to 14 digits.
local function ms(x) return string.format('%.3f', x) end
local key, cool_key = KEYS[1], KEYS[2]
local op = ARGV[1]
local kind = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local amount = tonumber(ARGV[6])

if op == 'cool' then
  local until_ms = now + amount
  local current = tonumber(redis.call('GET', cool_key) or '0')
  if until_ms > current then
    redis.call('SET', cool_key, ms(until_ms), 'PX', math.ceil(amount) + 1000)
  end
  return 1
end

if kind == 0 then
  local interval = period / limit
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local new_tat = tat
  if op == 'sync' then
    -- `amount` more may go now: the TAT that leaves exactly that many.
    new_tat = math.max(tat, now + interval * (burst - math.max(amount, 0)))
  elseif op == 'charge' then
    new_tat = tat + interval * amount
  end
  redis.call('SET', key, ms(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  return 1
end

-- Sliding window: fill the log with `now` stamps until only `amount` slots
-- are left (sync), or add `amount` stamps (charge).
local used = 0
local entries = redis.call('LRANGE', key, 0, limit - 1)
for _, stamp in ipairs(entries) do
  if tonumber(stamp) > now - period then
    used = used + 1
  end
end
local add = 0
if op == 'sync' then
  add = math.max(limit - used - math.max(amount, 0), 0)
elseif op == 'charge' then
  add = math.min(amount, limit)
end
for _ = 1, add do
  redis.call('LPUSH', key, ms(now))
end
redis.call('LTRIM', key, 0, limit - 1)
redis.call('PEXPIRE', key, math.ceil(period) + 1000)
return 1
