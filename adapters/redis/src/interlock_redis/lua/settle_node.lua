-- settle_node.lua: [settle.once] settle a WAITING node without tasks (FILTERED, SKIPPED,
-- FAILED), running the settle procedure, or the terminate procedure with fail_run.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] node index      ARGV[2] generation       ARGV[3] state (JSON text, e.g. '"skipped"')
-- ARGV[4] reason (JSON)   ARGV[5] fail_run (JSON text of a RunState, or '' for none)
-- ARGV[6] now (JSON)      ARGV[7 ..] child node indices
-- Returns a transition {outcome, run_state JSON text or '', ready child index, ...},
-- or {'illegal', ...} / {'nonode', index} before any write.

local index, state, reason, fail_run, now = ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n = node(index)
if n == nil then
  if run_field('state') == nil then
    return transition('stale')
  end
  return {'nonode', index}
end
if not same_int(n.generation, ARGV[2]) then
  return transition('stale')
end
if n.state ~= NS.waiting then
  -- an exact repeat is a duplicate even when the first call ended the run
  if n.state == state then
    return transition('duplicate')
  end
  return transition('stale')
end
if run_field('state') ~= RS.running then
  return transition('stale')
end
local illegal = check('node', n.state, state, '')
if illegal then
  return illegal
end
if state == NS.failed and fail_run ~= '' then
  illegal = check('run', RS.running, fail_run, '')
  if illegal then
    return illegal
  end
  n.state = state
  n.reason = reason
  put_node(index, n)
  return terminate(fail_run, reason, now)
end
local children = {}
for i = 7, #ARGV do
  children[#children + 1] = ARGV[i]
end
local missing = missing_node(children)
if missing then
  return {'nonode', missing}
end
return settle(index, n, state, reason, children, now)
