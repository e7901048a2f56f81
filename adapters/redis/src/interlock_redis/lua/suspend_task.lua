-- suspend_task.lua: [wait.fenced] RUNNING under the current attempt -> WAITING.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id   ARGV[2] attempt id (JSON)   ARGV[3] reason (JSON, null when empty)
-- ARGV[4] now (JSON)
-- Returns 'applied', 'duplicate' (already WAITING under this attempt) or 'stale'.

local id, attempt_id, now = ARGV[1], ARGV[2], ARGV[4]
local t = get_task(id)
if t == nil then
  return 'stale'
end
if t.state == TS.waiting and t.attempt_id == attempt_id then
  return 'duplicate'
end
if t.state ~= TS.running or t.attempt_id ~= attempt_id or run_field('state') ~= RS.running then
  return 'stale'
end
local illegal = check('task', t.state, TS.waiting, '')
if illegal then
  return illegal
end
t.state = TS.waiting
t.error = ARGV[3]
t.lease_until = NULL
t.updated_at = now
put_task(id, t)
return 'applied'
