-- depth: per lane the entries not yet delivered to the group, the entries delivered and not
-- acknowledged, and the scheduled count.
-- KEYS[1..3] care, reminders, bulk streams, KEYS[4] delayed sorted set
-- Returns {ready care, ready reminders, ready bulk, in flight, delayed}.
local out = {}
local in_flight = 0
for i = 1, 3 do
  local len = redis.call('XLEN', KEYS[i])
  local pending = 0
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local p = redis.pcall('XPENDING', KEYS[i], 'dispatch')
    if type(p) == 'table' and p.err == nil then
      pending = tonumber(p[1]) or 0
    end
  end
  local ready = len - pending
  if ready < 0 then ready = 0 end
  out[i] = ready
  in_flight = in_flight + pending
end
out[4] = in_flight
out[5] = redis.call('ZCARD', KEYS[4])
return out
