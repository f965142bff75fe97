-- accept: outbox records, each with its first history line and its queue entry; every message
-- atomic (the whole call is), each decided as if accepted alone, in order. One message is a
-- batch of one.
-- KEYS[3i-2] record hash, KEYS[3i-1] timeline list, KEYS[3i] lane stream of message i (all in
-- one {n:<pnid>} slot)
-- ARGV[1] max ready entries in a lane; for message i: ARGV[3i-1] message id, ARGV[3i] NewMessage
-- JSON, ARGV[3i+1] first timeline event JSON
-- Returns one of 'created', 'exists' or 'full' per message.
local max = tonumber(ARGV[1])
-- Ready entries per lane (not yet delivered to the group; acknowledged entries are deleted),
-- read once per lane and counted on.
local ready = {}
local out = {}
for i = 1, #KEYS / 3 do
  local record, timeline, lane = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('EXISTS', record) == 1 then
    out[i] = 'exists'
  else
    if ready[lane] == nil then
      -- The consumer group reads from the start of the stream; BUSYGROUP (already there) is
      -- ignored.
      redis.pcall('XGROUP', 'CREATE', lane, 'dispatch', '0', 'MKSTREAM')
      ready[lane] = redis.call('XLEN', lane) - redis.call('XPENDING', lane, 'dispatch')[1]
    end
    if ready[lane] >= max then
      out[i] = 'full'
    else
      redis.call('HSET', record, 'msg', ARGV[3 * i], 'state', 'queued', 'attempts', '0', 'ver', '0')
      redis.call('RPUSH', timeline, ARGV[3 * i + 1])
      redis.call('XADD', lane, '*', 'id', ARGV[3 * i - 1])
      ready[lane] = ready[lane] + 1
      out[i] = 'created'
    end
  end
end
return out
