-- create_run.lua: [run.create] insert the run and its node records unless the run exists.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1]           number F of run attributes
-- ARGV[2 .. 1+2F]   attribute, JSON text pairs of the RunRecord
-- ARGV[2+2F .. ]    node index, node jmap pairs
-- Returns {1} when created, or {0, attr1, text1, attr2, text2, ...} (the stored run) when the
-- run already existed (nothing is written then).

if redis.call('EXISTS', K_RUN) == 1 then
  local reply = {0}
  local stored = redis.call('HGETALL', K_RUN)
  for i = 1, #stored do
    reply[#reply + 1] = stored[i]
  end
  return reply
end
local fields = tonumber(ARGV[1])
for i = 2, 1 + 2 * fields, 2 do
  redis.call('HSET', K_RUN, ARGV[i], ARGV[i + 1])
end
for i = 2 + 2 * fields, #ARGV, 2 do
  redis.call('HSET', K_NODES, ARGV[i], ARGV[i + 1])
end
return {1}
