-- Erases one patient: record, phone index entry; logs the change in the clinic's feed.
-- KEYS: 1 patients hash, 2 phone index (lex zset), 3 version counter, 4 feed stream,
--       5 index entries hash
-- ARGV: 1 external id, 2 feed length to keep (approximate)
-- Returns the change's version, or 0 if there was no such patient.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local ok, rec = pcall(cjson.decode, old)
if ok and type(rec) == 'table' and type(rec.phone) == 'string' then
  local digits = string.gsub(rec.phone, '^%+', '')
  redis.call('ZREM', KEYS[2], digits .. '|' .. ARGV[1])
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], v .. '-0', 'id', ARGV[1])
return v
