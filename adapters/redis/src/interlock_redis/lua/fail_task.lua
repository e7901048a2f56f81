-- fail_task.lua: [fail.fenced] end the current attempt of a RUNNING task in failure: back to
-- QUEUED for a retry, or final (task FAILED/CRASHED, the node's other unfinished tasks of the
-- generation CANCELLED, node FAILED, then the settle procedure or the terminate procedure).
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id         ARGV[2] attempt id (JSON)   ARGV[3] error (JSON)
-- ARGV[4] retry_at (JSON number, or '' for no retry)  ARGV[5] final_state (JSON text)
-- ARGV[6] fail_run (JSON text of a RunState, or '')   ARGV[7] node reason (JSON)
-- ARGV[8] now (JSON)      ARGV[9 ..] the node's children (indices)
-- Returns a transition {outcome, run_state JSON text or '', ready child index, ...},
-- or {'illegal', ...} / {'nonode', index} before any write.

local id, attempt_id, err, retry_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local final_state, fail_run, reason, now = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local t = get_task(id)
if t == nil then
  return transition('stale')
end
if t.attempt_id == attempt_id and (t.state == TS.failed or t.state == TS.crashed
    or (t.state == TS.queued and t.error ~= NULL)) then
  return transition('duplicate')
end
if t.state ~= TS.running or t.attempt_id ~= attempt_id or run_field('state') ~= RS.running then
  return transition('stale')
end
if retry_at ~= '' then
  local illegal = check('task', t.state, TS.queued, '')
  if illegal then
    return illegal
  end
  t.state = TS.queued
  t.not_before = retry_at
  t.error = err
  t.lease_until = NULL
  t.updated_at = now
  put_task(id, t)
  return transition('applied')
end
local illegal = check('task', t.state, final_state, '')
if illegal then
  return illegal
end
local children = {}
for i = 9, #ARGV do
  children[#children + 1] = ARGV[i]
end
local n = node(t.node_index)
if n == nil then
  return {'nonode', t.node_index}
end
local counts = same_int(n.generation, t.generation) and n.state == NS.launched
if counts then
  if fail_run ~= '' then
    illegal = check('run', RS.running, fail_run, '')
    if illegal then
      return illegal
    end
  else
    local missing = missing_node(children)
    if missing then
      return {'nonode', missing}
    end
  end
end

-- checks done: write
t.state = final_state
t.error = err
t.lease_until = NULL
t.updated_at = now
put_task(id, t)
local siblings = redis.call('SMEMBERS', PREFIX .. ':unfin:' .. t.node_index)
for i = 1, #siblings do
  local s = get_task(siblings[i])
  if s ~= nil and unfinished(s.state) and same_int(s.generation, t.generation) then
    s.state = TS.cancelled
    s.updated_at = now
    put_task(siblings[i], s)
  end
end
if not counts then
  return transition('applied')
end
if fail_run ~= '' then
  n.state = NS.failed
  n.reason = reason
  put_node(t.node_index, n)
  return terminate(fail_run, reason, now)
end
return settle(t.node_index, n, NS.failed, reason, children, now)
