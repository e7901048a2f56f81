-- launch_and_claim.lua: [launch.claim] launch_node, then, only when that applied, claim one
-- of the tasks just written, in the same script (ability 'handover').
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] node index          ARGV[2] generation        ARGV[3] total_tasks
-- ARGV[4] now (JSON number)   ARGV[5] task id to claim  ARGV[6] attempt id (JSON)
-- ARGV[7] worker (JSON)       ARGV[8] lease_until (JSON number or null)
-- ARGV[9 ..] task id, task jmap (without plan), plan JSON triples (as launch_node.lua)
-- Returns {launch outcome} when the launch is not 'applied' (nothing claimed), else
-- {'applied', claim outcome, task jmap, plan JSON, artifact_seq, node total} as claim_task.lua
-- would reply after the launch; or {'nonode', index} / {'illegal', ...}.

local outcome = launch(ARGV[1], ARGV[2], ARGV[3], 9)
if type(outcome) == 'table' then
  return outcome
end
if outcome ~= 'applied' then
  return {outcome}
end
local claimed = claim_one(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[4])
return {outcome, claimed[1], claimed[2], claimed[3], claimed[4], claimed[5]}
