-- reserve: hold funds for messages, once per message, each with its ledger entry; in order, each
-- seeing the holds before it. One message is a batch of one.
-- KEYS[1] wallet hash, KEYS[2] reservations hash, KEYS[3] ledger stream (one {t:} slot)
-- For message i: ARGV[3i-2] message id, ARGV[3i-1] amount (micro-units, >= 0), ARGV[3i] now
-- (unix ms)
-- Returns, per message, {1 held (now or before) | 0 insufficient, credited, settled, reserved}
-- flattened; {-1} if the totals are unreadable. A zero amount is always held (and recorded, so
-- settle/release stay uniform).
local t = redis.call('HMGET', KEYS[1], 'credited', 'settled', 'reserved')
local c, s, r = tonumber(t[1] or '0'), tonumber(t[2] or '0'), tonumber(t[3] or '0')
if not (c and s and r) then
  return { -1 }
end
local out = {}
for i = 1, #ARGV / 3 do
  local id, amount, now = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local code = 1
  if redis.call('HEXISTS', KEYS[2], id) == 0 then
    local a = tonumber(amount)
    if a > 0 and a > c - s - r then
      code = 0
    else
      redis.call('HSET', KEYS[2], id, amount)
      r = redis.call('HINCRBY', KEYS[1], 'reserved', amount)
      redis.call('XADD', KEYS[3], '*', 'kind', 'reserve', 'amount', amount, 'reserved', '0',
        'reference', id, 'available_after', string.format('%d', c - s - r), 'at', now)
    end
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = code, c, s, r
end
return out
