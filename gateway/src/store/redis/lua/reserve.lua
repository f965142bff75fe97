-- reserve: hold funds for a message, once per message, with its ledger entry.
-- KEYS[1] wallet hash, KEYS[2] reservations hash, KEYS[3] ledger stream (one {t:} slot)
-- ARGV[1] message id, ARGV[2] amount (micro-units, >= 0), ARGV[3] now (unix ms)
-- Returns {1 held (now or before) | 0 insufficient, credited, settled, reserved}; {-1} if the
-- totals are unreadable. A zero amount is always held (and recorded, so settle/release stay
-- uniform).
local t = redis.call('HMGET', KEYS[1], 'credited', 'settled', 'reserved')
local c, s, r = tonumber(t[1] or '0'), tonumber(t[2] or '0'), tonumber(t[3] or '0')
if not (c and s and r) then
  return { -1 }
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return { 1, c, s, r }
end
local amount = tonumber(ARGV[2])
if amount > 0 and amount > c - s - r then
  return { 0, c, s, r }
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
r = redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'kind', 'reserve', 'amount', ARGV[2], 'reserved', '0',
  'reference', ARGV[1], 'available_after', string.format('%d', c - s - r), 'at', ARGV[3])
return { 1, c, s, r }
