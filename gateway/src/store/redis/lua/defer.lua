-- defer: acknowledge a claimed entry and schedule its message again, atomically.
-- KEYS[1] lane stream, KEYS[2] delayed sorted set (same {n:<pnid>} slot)
-- ARGV[1] entry id, ARGV[2] due (unix ms), ARGV[3] member '<lane>|<message id>|<entry id>'
-- Returns 1 if scheduled, 0 if the entry was not pending (nothing changes).
local acked = redis.call('XACK', KEYS[1], 'dispatch', ARGV[1])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
return acked
