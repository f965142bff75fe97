-- api_rate: one request of a clinic's API budget (GCRA), on Redis's own clock so every node
-- agrees. Same rule as `store::rate::gcra`.
-- KEYS[1] the clinic's theoretical arrival time (µs)
-- ARGV[1] requests per second, ARGV[2] burst
-- Returns 0 (admitted) or the wait in µs (refused).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = math.max(tonumber(ARGV[1]), 1)
local burst = math.max(tonumber(ARGV[2]), 1)
local emission = math.floor(1000000 / rate)
local tolerance = emission * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
if tat - now > tolerance then
  return tat - tolerance - now
end
local next = tat + emission
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.floor((next - now) / 1000) + 1)
return 0
