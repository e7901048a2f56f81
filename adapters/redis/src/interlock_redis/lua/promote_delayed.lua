-- promote_delayed.lua: move due delayed task refs from the delayed ZSET to the task stream.
--
-- KEYS[1] the task stream <ns>:queue:{<stream>}
-- KEYS[2] the delayed ZSET <ns>:queue:{<stream>}:delayed (member: ref JSON, score: not_before)
--         (both keys carry the hash tag {<stream>}: one slot in Redis Cluster)
-- ARGV[1] now (seconds, JSON number)   ARGV[2] at most this many refs are moved
-- Returns {moved, next_due}: how many refs were XADDed (field 'ref'), and the score of the
-- earliest ref still delayed as a string ('' when none), so a receiver can block until then.

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due do
  redis.call('XADD', KEYS[1], '*', 'ref', due[i])
  redis.call('ZREM', KEYS[2], due[i])
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or ''}
