-- ack: acknowledge and delete a claimed entry. An entry that is not pending (never claimed, or
-- already acknowledged) is left alone, like the memory store.
-- KEYS[1] lane stream; ARGV[1] entry id. Returns 1 if acknowledged.
local acked = redis.call('XACK', KEYS[1], 'dispatch', ARGV[1])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
end
return acked
