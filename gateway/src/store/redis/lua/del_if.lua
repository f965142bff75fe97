-- del_if: delete a key only while it still holds the given value (releasing a claim).
-- KEYS[1] the key; ARGV[1] the value. Returns 1 if deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
