-- claim: take a single-key lock (a business number's owner, an API key's lookup) for a value.
-- KEYS[1] the key; ARGV[1] the value
-- Returns {1, ''} if claimed now, {0, ''} if already held by this value, {-1, holder} if another
-- value holds it (nothing changes then).
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return { 1, '' }
end
if cur == ARGV[1] then
  return { 0, '' }
end
return { -1, cur }
