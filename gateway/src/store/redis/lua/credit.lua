-- credit: add funds to a wallet once per reference, with its ledger entry.
-- KEYS[1] wallet hash, KEYS[2] credit references set, KEYS[3] ledger stream (one {t:} slot)
-- ARGV[1] amount (micro-units, >= 0), ARGV[2] reference, ARGV[3] now (unix ms)
-- Returns {1 applied | 0 seen before, credited, settled, reserved}; {-1} if the totals are
-- unreadable (nothing changes then).
-- Lua numbers are doubles: totals are exact up to 2^53 micro-units.
local t = redis.call('HMGET', KEYS[1], 'credited', 'settled', 'reserved')
local c, s, r = tonumber(t[1] or '0'), tonumber(t[2] or '0'), tonumber(t[3] or '0')
if not (c and s and r) then
  return { -1 }
end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then
  return { 0, c, s, r }
end
c = redis.call('HINCRBY', KEYS[1], 'credited', ARGV[1])
redis.call('XADD', KEYS[3], '*', 'kind', 'credit', 'amount', ARGV[1], 'reserved', '0',
  'reference', ARGV[2], 'available_after', string.format('%d', c - s - r), 'at', ARGV[3])
return { 1, c, s, r }
