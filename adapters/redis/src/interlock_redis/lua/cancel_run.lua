-- cancel_run.lua: [terminal.once] the terminate procedure with CANCELLED, unless terminal.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] reason (JSON)   ARGV[2] now (JSON)
-- Returns a transition {outcome, run_state JSON text or ''}: 'applied' with '"cancelled"';
-- on a terminal run 'duplicate' if it is CANCELLED, else 'stale'; 'stale' if no such run.

local state = run_field('state')
if not state then
  return transition('stale')
end
if state == RS.completed or state == RS.failed or state == RS.crashed
    or state == RS.cancelled then
  if state == RS.cancelled then
    return transition('duplicate')
  end
  return transition('stale')
end
local illegal = check('run', state, RS.cancelled, '')
if illegal then
  return illegal
end
return terminate(RS.cancelled, ARGV[1], ARGV[2])
