-- commit: compare-and-set of a record's mutable fields. The decision itself (transitions.rs) ran
-- in Rust on the version read; this applies it only if nobody changed the record since.
-- KEYS[1] record hash, KEYS[2] timeline list, KEYS[3] wamid index key (KEYS[1] when unused),
-- KEYS[4] the number's lease
-- ARGV[1] expected version
-- ARGV[2] TTL in seconds for record and timeline ('0': keep; only terminal records expire)
-- ARGV[3] message id to store under KEYS[3] ('' : none), ARGV[4] its TTL in seconds
-- ARGV[5] the lease value the writer holds ('' : not fenced): written only while KEYS[4] has it
-- ARGV[6] n, then n field/value pairs to HSET
-- then m, then m field names to HDEL
-- then the timeline events (JSON) to append
-- Returns 1 (written), 0 (version changed: read again), -1 (record gone), -2 (fenced out).
if ARGV[5] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[5] then
  return -2
end
local ver = redis.call('HGET', KEYS[1], 'ver')
if not ver then
  return -1
end
if ver ~= ARGV[1] then
  return 0
end
local i = 6
local n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
local m = tonumber(ARGV[i])
for j = 1, m do
  redis.call('HDEL', KEYS[1], ARGV[i + j])
end
i = i + m + 1
for j = i, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[j])
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
end
if ARGV[2] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
