-- Writes one patient with its index entry, its phone index entry and a change in the clinic's feed.
-- KEYS: 1 patients hash, 2 phone index (lex zset), 3 version counter, 4 feed stream,
--       5 index entries hash
-- ARGV: 1 external id, 2 phone digits, 3 JSON, 4 expectation ('*' any, '' absent, '=<json>'),
--       5 feed length to keep (approximate), 6 index entry
-- Returns {version, created (1/0)}, or {-1, 0} when the expectation does not hold.
local old = redis.call('HGET', KEYS[1], ARGV[1])
local expect = ARGV[4]
if expect == '' then
  if old then return {-1, 0} end
elseif expect ~= '*' then
  if (not old) or old ~= string.sub(expect, 2) then return {-1, 0} end
end
if old then
  local ok, rec = pcall(cjson.decode, old)
  if ok and type(rec) == 'table' and type(rec.phone) == 'string' then
    local digits = string.gsub(rec.phone, '^%+', '')
    redis.call('ZREM', KEYS[2], digits .. '|' .. ARGV[1])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
redis.call('ZADD', KEYS[2], 0, ARGV[2] .. '|' .. ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], v .. '-0', 'id', ARGV[1])
if old then return {v, 0} end
return {v, 1}
