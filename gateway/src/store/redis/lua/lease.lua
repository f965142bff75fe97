-- lease: take, renew or give up a number's ownership lease.
-- KEYS[1] the lease (string `<node>|<token>`, with a TTL), KEYS[2] the fencing counter
-- ARGV[1] node id, ARGV[2] TTL in ms, ARGV[3] 'take' (take or renew) | 'release' | 'holder'
-- take: returns the token the node holds the lease with, or 0 while another node holds it.
-- release: returns 1 if the node held it (now free), else 0.
-- holder: returns the lease value, or false.
local current = redis.call('GET', KEYS[1])
if ARGV[3] == 'holder' then
  return current
end
local holder = false
local token = 0
if current then
  local bar = string.find(current, '|', 1, true)
  if bar then
    holder = string.sub(current, 1, bar - 1)
    token = tonumber(string.sub(current, bar + 1)) or 0
  end
end
if ARGV[3] == 'release' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if current then
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return token
  end
  return 0
end
local fresh = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fresh, 'PX', ARGV[2])
return fresh
