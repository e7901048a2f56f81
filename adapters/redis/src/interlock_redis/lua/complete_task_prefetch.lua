-- complete_task_prefetch.lua: [complete.prefetch] complete_task.lua, plus the NodeFacts of every
-- node this completion made ready and of each of its parents, read in the same script, so a
-- completion that releases work costs two round trips (this one and the launch).
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id      ARGV[2] attempt id (JSON)     ARGV[3] now (JSON)
-- ARGV[4] number M of outputs
-- ARGV[5 .. 4+2M] per output: artifact id (JSON text), body (as in complete_task.lua)
-- ARGV[5+2M]      number C of children, then per child: its index, its parents' count and
--                 the parent indices (see prefetch_args in _common.lua: 'P', 'sP', '-P')
-- Returns {transition, facts}: ``transition`` as complete_task.lua returns it; ``facts`` a
-- flat list, per node (each once): index, node jmap, number A of artifacts, the A Artifact
-- JSON texts of its current generation (A = 0 unless the node is COMPLETED).
-- Or {'nonode', index} before any write; or {'parents', child} before any write when a child's
-- parents were to be read from the run ('-P') and no call stored them yet.

local outputs, children, parents_of, _, keep = prefetch_args()
local missing, read = complete_precheck(ARGV[1], children, false)
missing = missing or parents_precheck(children, parents_of)
if missing then
  return missing
end
store_parents(keep)
local reply = complete_one(ARGV[1], ARGV[2], outputs, children, ARGV[3], nil, read)
return {reply, prefetch_facts(reply, parents_of)}
