-- Changes of a clinic's patient directory after a version, with each changed patient's index
-- entry as it is now.
-- KEYS: 1 version counter, 2 feed stream, 3 index entries hash
-- ARGV: 1 since (version), 2 max entries to read
-- Returns {version, gap (1/0), upto, id1, entry1 or nil, id2, entry2 or nil, ...}.
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
if v <= since then return {v, 0, since} end
local entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', since + 1), '+', 'COUNT', ARGV[2])
if #entries == 0 then return {v, 1, since} end
local first = entries[1][1]
if first ~= string.format('%d-0', since + 1) then return {v, 1, since} end
local out = {v, 0, 0}
local seen = {}
local ids = {}
local upto = since
for _, e in ipairs(entries) do
  upto = tonumber(string.match(e[1], '^(%d+)-'))
  local fields = e[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'id' and not seen[fields[i + 1]] then
      seen[fields[i + 1]] = true
      ids[#ids + 1] = fields[i + 1]
    end
  end
end
out[3] = upto
-- HMGET in slices: Lua 5.1 cannot unpack more than a few thousand values at once.
local at = 1
while at <= #ids do
  local last = math.min(at + 499, #ids)
  local values = redis.call('HMGET', KEYS[3], unpack(ids, at, last))
  for i = at, last do
    out[#out + 1] = ids[i]
    out[#out + 1] = values[i - at + 1]
  end
  at = last + 1
end
return out
