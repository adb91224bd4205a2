-- Check and take every bucket of one request, all or none, on the server's clock.
--
-- KEYS: per bucket, its state key then its cool-down key.
-- ARGV[1]: 1 to take the buckets, 0 to only look (peek).
-- ARGV per bucket, from ARGV[2]: kind (0 = GCRA, 1 = sliding window), limit,
--   period in ms, burst, cost.
-- Returns {granted, wait_ms, limiting bucket index (1-based, 0 if none), now_ms};
-- wait and now are strings because Redis truncates Lua numbers to integers.
-- Times are milliseconds written with string.format: Lua's tostring keeps only
-- 14 digits, which would round a stored TAT to 0.1 ms and let the rate creep.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function ms(x) return string.format('%.3f', x) end
-- A wait is rounded up, so that a refusal never reads as a zero wait.
local function ms_up(x) return string.format('%.3f', math.ceil(x * 1000) / 1000) end
local take = ARGV[1] == '1'
local n = #KEYS / 2

local worst_wait, worst_index = 0, 0
local plans = {}

for i = 1, n do
  local key, cool_key = KEYS[2 * i - 1], KEYS[2 * i]
  local base = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[base])
  local limit = tonumber(ARGV[base + 1])
  local period = tonumber(ARGV[base + 2])
  local burst = tonumber(ARGV[base + 3])
  local cost = tonumber(ARGV[base + 4])
  local wait = 0

  local cool = tonumber(redis.call('GET', cool_key) or '0')
  if cool > now then
    wait = cool - now
  end

  if kind == 0 then
    -- GCRA: one number, the theoretical arrival time; `burst` requests may
    -- go back to back from idle, then one per emission interval. A request
    -- dearer than the burst is checked as a full burst (else it could never
    -- go) but charged in full, which pushes the next ones out.
    local interval = period / limit
    local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
    local new_tat = tat + interval * cost
    local allow_at = tat + interval * (math.min(cost, burst) - burst)
    if allow_at > now then
      wait = math.max(wait, allow_at - now)
    end
    plans[i] = {kind, key, new_tat}
  else
    -- Sliding log of at most `limit` timestamps, newest first: the request
    -- fits when the entry `limit - cost` places back left the window.
    local blocking = redis.call('LINDEX', key, limit - cost)
    if blocking then
      local until_free = tonumber(blocking) + period - now
      if until_free > 0 then
        wait = math.max(wait, until_free)
      end
    end
    plans[i] = {kind, key, limit, period, cost}
  end

  if wait > worst_wait then
    worst_wait, worst_index = wait, i
  end
end

if worst_wait > 0 or not take then
  return {worst_wait > 0 and 0 or 1, ms_up(worst_wait), worst_index, ms(now)}
end

for i = 1, n do
  local plan = plans[i]
  if plan[1] == 0 then
    redis.call('SET', plan[2], ms(plan[3]), 'PX', math.ceil(plan[3] - now) + 1000)
  else
    local stamp = ms(now)
    for _ = 1, plan[5] do
      redis.call('LPUSH', plan[2], stamp)
    end
    redis.call('LTRIM', plan[2], 0, plan[3] - 1)
    redis.call('PEXPIRE', plan[2], math.ceil(plan[4]) + 1000)
  end
end
return {1, '0', 0, ms(now)}
