-- accept: the outbox record, its first history line and its queue entry in one atomic step.
-- KEYS[1] record hash, KEYS[2] timeline list, KEYS[3] lane stream (all in one {n:<pnid>} slot)
-- ARGV[1] max ready entries in the lane, ARGV[2] message id, ARGV[3] NewMessage JSON,
-- ARGV[4] first timeline event JSON
-- Returns 'created', 'exists' or 'full'.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists'
end
-- The consumer group reads from the start of the stream; BUSYGROUP (already there) is ignored.
redis.pcall('XGROUP', 'CREATE', KEYS[3], 'dispatch', '0', 'MKSTREAM')
-- Ready = entries not yet delivered to the group (acknowledged entries are deleted).
local ready = redis.call('XLEN', KEYS[3]) - redis.call('XPENDING', KEYS[3], 'dispatch')[1]
if ready >= tonumber(ARGV[1]) then
  return 'full'
end
redis.call('HSET', KEYS[1], 'msg', ARGV[3], 'state', 'queued', 'attempts', '0', 'ver', '0')
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[2])
return 'created'
