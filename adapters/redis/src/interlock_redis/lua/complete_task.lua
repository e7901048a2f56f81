-- complete_task.lua: [complete.once] complete a RUNNING task under its current attempt,
-- publish its outputs, count the node down and, at zero, run the settle procedure.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id      ARGV[2] attempt id (JSON)     ARGV[3] now (JSON)
-- ARGV[4] number M of outputs
-- ARGV[5 .. 4+2M] per output: artifact id (JSON text), body: the JSON members
--                 '"fields":{...},"data":...' (no braces), encoded by Python
-- ARGV[5+2M ..]   the node's children (indices)
-- Each output is appended to <prefix>:arts:<node>:<generation> as Artifact JSON with the next
-- run-wide seq and origin = artifact id ('self'), null ('broadcast') or the task's origin.
-- Returns a transition {outcome, run_state JSON text or '', ready child index, ...}
-- ('duplicate': already COMPLETED under this attempt, nothing published; 'stale': fenced out),
-- or {'nonode', index} before any write. (The body is complete_one in _common.lua.)

local outputs, children = {}, {}
local count = tonumber(ARGV[4])
for k = 1, count do
  outputs[k] = {ARGV[3 + 2 * k], ARGV[4 + 2 * k]}
end
for i = 5 + 2 * count, #ARGV do
  children[#children + 1] = ARGV[i]
end
local missing, read = complete_precheck(ARGV[1], children, false)
if missing then
  return missing
end
return complete_one(ARGV[1], ARGV[2], outputs, children, ARGV[3], nil, read)
