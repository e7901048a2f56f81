-- claim_tasks.lua: [batch.claim] claim_task for each (task id, attempt id), atomically
-- together and in order (each result is what claim_task alone would return at that point).
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] worker (JSON)   ARGV[2] lease_until (JSON number or null)   ARGV[3] now (JSON)
-- ARGV[4 ..] task id, attempt id (JSON) pairs
-- Returns one claim_task reply per pair, in order: {outcome} or {outcome, task jmap, plan,
-- the run's artifact_seq, the node's total_tasks}.

-- claims never change the run's state nor its artifact_seq: read them once for the batch
local fields = redis.call('HMGET', K_RUN, 'state', 'artifact_seq')
local replies, run = {}, {state = fields[1], seq = fields[2]}
for i = 4, #ARGV, 2 do
  replies[#replies + 1] = claim_one(ARGV[i], ARGV[i + 1], ARGV[1], ARGV[2], ARGV[3], run)
end
return replies
