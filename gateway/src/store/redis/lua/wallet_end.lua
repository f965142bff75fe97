-- settle / release: end a message's reservation, with its ledger entry.
-- KEYS[1] wallet hash, KEYS[2] reservations hash, KEYS[3] ledger stream (one {t:} slot)
-- ARGV[1] 'settle' or 'release', ARGV[2] message id, ARGV[3] charge (micro-units, >= 0; settle
-- only), ARGV[4] now (unix ms)
-- Returns {1 ended now | 0 nothing reserved (nothing changes), credited, settled, reserved};
-- {-1} if the totals are unreadable, {-2} if the reservation is.
local t = redis.call('HMGET', KEYS[1], 'credited', 'settled', 'reserved')
local c, s, r = tonumber(t[1] or '0'), tonumber(t[2] or '0'), tonumber(t[3] or '0')
if not (c and s and r) then
  return { -1 }
end
local held = redis.call('HGET', KEYS[2], ARGV[2])
if not held then
  return { 0, c, s, r }
end
local h = tonumber(held)
if not h then
  return { -2 }
end
redis.call('HDEL', KEYS[2], ARGV[2])
r = redis.call('HINCRBY', KEYS[1], 'reserved', string.format('%d', -h))
if ARGV[1] == 'settle' then
  s = redis.call('HINCRBY', KEYS[1], 'settled', ARGV[3])
  redis.call('XADD', KEYS[3], '*', 'kind', 'settle', 'amount', ARGV[3], 'reserved', held,
    'reference', ARGV[2], 'available_after', string.format('%d', c - s - r), 'at', ARGV[4])
else
  redis.call('XADD', KEYS[3], '*', 'kind', 'release', 'amount', held, 'reserved', '0',
    'reference', ARGV[2], 'available_after', string.format('%d', c - s - r), 'at', ARGV[4])
end
return { 1, c, s, r }
