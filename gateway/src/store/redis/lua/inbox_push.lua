-- inbox_push: queues an inbound message for the clinic's owner.
-- KEYS[1] the clinic's inbound stream; ARGV[1] the message JSON. Returns the entry id.
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'inbox', '0', 'MKSTREAM')
return redis.call('XADD', KEYS[1], '*', 'm', ARGV[1])
