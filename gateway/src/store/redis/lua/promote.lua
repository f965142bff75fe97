-- promote: move due scheduled messages back into their lane streams.
-- KEYS[1] delayed sorted set, KEYS[2..4] care, reminders, bulk streams (same {n:<pnid>} slot)
-- ARGV[1] now (unix ms), ARGV[2] max to move
-- Returns {moved, corrupt member or '', due time of the earliest still scheduled or ''}; stops at
-- the first member it cannot read.
local lanes = { care = KEYS[2], reminders = KEYS[3], bulk = KEYS[4] }
local max = tonumber(ARGV[2])
local moved = 0
if max > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, max)
  for _, member in ipairs(due) do
    local lane, id = string.match(member, '^([a-z]+)|([%w_%-]+)|')
    local stream = lane and lanes[lane]
    if not stream then
      return { moved, member, '' }
    end
    redis.pcall('XGROUP', 'CREATE', stream, 'dispatch', '0', 'MKSTREAM')
    redis.call('XADD', stream, '*', 'id', id)
    redis.call('ZREM', KEYS[1], member)
    moved = moved + 1
  end
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return { moved, '', next[2] or '' }
