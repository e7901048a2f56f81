-- complete_follow.lua: [complete.follow] complete_task_prefetch.lua; then, when the completion
-- confirms the facts the caller predicted and planned a follow-up from — the run's
-- artifact_seq before it was the expected one, it settled the task's node (its only task: the
-- node's artifacts are exactly these outputs, with the predicted seqs) and readied exactly the
-- expected child, WAITING, fresh, in the expected generation — that follow-up in the same
-- script: launch_node of its tasks and, if asked, claim_task of one of them.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1 ..] as complete_task_prefetch.lua: task id, attempt id (JSON), now (JSON), number M
--            of outputs, M (artifact id, body) pairs, number C of children, per child its
--            index, its parents' count and the parent indices ('P', 'sP', '-P'); then, from
--            ARGV[f]:
-- ARGV[f]    the expected artifact_seq (as stored)   ARGV[f+1] the expected child's index
-- ARGV[f+2]  its expected generation                 ARGV[f+3] total_tasks of the launch
-- ARGV[f+4]  task id to claim ('' for none)          ARGV[f+5] attempt id (JSON)
-- ARGV[f+6]  worker (JSON)                           ARGV[f+7] lease_until (JSON or null)
-- ARGV[f+8 ..] the launch's task id, task jmap (without plan), plan JSON triples
-- Returns {transition, 'followed', launch outcome, claim reply...} when it launched (the claim
-- reply as claim_task.lua's, absent when none was asked or the launch did not apply), else
-- {transition, facts} exactly as complete_task_prefetch.lua; or {'nonode', index} or
-- {'parents', child} before any write.

local outputs, children, parents_of, i, keep = prefetch_args()
local expected_seq, child, generation, total = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
local missing, read = complete_precheck(ARGV[1], children, false)
missing = missing or parents_precheck(children, parents_of)
if missing then
  return missing
end
store_parents(keep)
local seq_held = run_field('artifact_seq') == expected_seq
local reply = complete_one(ARGV[1], ARGV[2], outputs, children, ARGV[3], nil, read)

local function confirmed()
  if not (seq_held and read ~= nil and reply[1] == 'applied' and #reply == 3
          and tostring(reply[3]) == child) then
    return false
  end
  local p, c = node(read.node_index), node(child)
  return p.state == NS.completed and same_int(p.total_tasks, 1)
    and c.state == NS.waiting and same_int(c.generation, generation)
    and same_int(c.remaining_parents, 0) and same_int(c.total_tasks, 0)
    and same_int(c.remaining_tasks, 0) and c.reason == NULL
end

if confirmed() then
  local outcome = launch(child, generation, total, i + 8)
  if type(outcome) == 'table' then
    return outcome
  end
  local followed = {reply, 'followed', outcome}
  if outcome == 'applied' and ARGV[i + 4] ~= '' then
    local claimed = claim_one(ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[3])
    for k = 1, #claimed do
      followed[#followed + 1] = claimed[k]
    end
  end
  return followed
end

return {reply, prefetch_facts(reply, parents_of)}
