-- reach_patient: count a patient against a portfolio's moving-window limit of unique patients.
-- KEYS[1] the portfolio's sorted set ({p:} slot): member patient, score last reached (unix ms)
-- ARGV[1] patient, ARGV[2] limit, ARGV[3] now (unix ms), ARGV[4] window (ms)
-- Returns {1, used} if allowed (counted now or already), {0, limit, frees_at} if reached.
local limit, now, w = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - w))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return { 1, redis.call('ZCARD', KEYS[1]) }
end
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return { 1, n + 1 }
end
-- Room comes back when the count drops below the limit: when the (n - limit)-th oldest leaves.
local frees = now + w
local m = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
if m[2] then
  frees = tonumber(m[2]) + w
end
return { 0, limit, frees }
