-- touch_window: a patient wrote; keep their latest inbound time, never moving it backwards.
-- KEYS[1] window key ({t:} slot); ARGV[1] inbound unix ms, ARGV[2] window end (unix ms)
-- The key expires when the window closes (at once if that is already past).
-- Returns 1 if moved forward, 0 if a later message was already recorded.
local cur = tonumber(redis.call('GET', KEYS[1]) or '')
if cur and cur >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
