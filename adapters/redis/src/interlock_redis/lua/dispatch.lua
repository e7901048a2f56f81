-- dispatch.lua: append task refs to the task stream, in order, in one script (a launch of
-- 1,000 tasks is one command to send and one reply to parse, not 1,000 XADDs).
--
-- KEYS[1] the task stream <ns>:queue:{<stream>}
-- ARGV[1 ..] the refs (JSON), each XADDed with field 'ref' and an automatic id
-- Returns the number of refs added.

for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'ref', ARGV[i])
end
return #ARGV
