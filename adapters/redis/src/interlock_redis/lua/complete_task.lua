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
-- ('duplicate': already COMPLETED under this attempt, nothing published; 'stale': fenced out).

local id, attempt_id, now = ARGV[1], ARGV[2], ARGV[3]
local t = get_task(id)
if t == nil then
  return transition('stale')
end
if t.state == TS.completed and t.attempt_id == attempt_id then
  return transition('duplicate')
end
if t.state ~= TS.running or t.attempt_id ~= attempt_id or run_field('state') ~= RS.running then
  return transition('stale')
end
local illegal = check('task', t.state, TS.completed, '')
if illegal then
  return illegal
end
local outputs = tonumber(ARGV[4])
local children = {}
for i = 5 + 2 * outputs, #ARGV do
  children[#children + 1] = ARGV[i]
end
local n = node(t.node_index)
if n == nil then
  return {'nonode', t.node_index}
end
local counts = same_int(n.generation, t.generation) and n.state == NS.launched
if counts and int(n.remaining_tasks) <= 1 then
  local missing = missing_node(children)
  if missing then
    return {'nonode', missing}
  end
end

-- checks done: write
t.state = TS.completed
t.lease_until = NULL
t.updated_at = now
put_task(id, t)
local seq = int(run_field('artifact_seq'))
if outputs > 0 then
  local key = PREFIX .. ':arts:' .. t.node_index .. ':' .. t.generation
  local head = '{"node_index":' .. t.node_index .. ',"generation":' .. t.generation
               .. ',"task_id":' .. t.task_id .. ',"seq":'
  for k = 1, outputs do
    local artifact_id, body = ARGV[3 + 2 * k], ARGV[4 + 2 * k]
    local origin
    if t.origin_mode == '"self"' then
      origin = artifact_id
    elseif t.origin_mode == '"broadcast"' then
      origin = NULL
    else
      origin = t.origin
    end
    redis.call('RPUSH', key, head .. itext(seq + k) .. ',"artifact_id":' .. artifact_id
               .. ',"origin":' .. origin .. ',' .. body .. '}')
  end
end
redis.call('HSET', K_RUN, 'artifact_seq', itext(seq + outputs), 'updated_at', now)
if not counts then
  return transition('applied')
end
local remaining = int(n.remaining_tasks) - 1
n.remaining_tasks = itext(remaining)
if remaining > 0 then
  put_node(t.node_index, n)
  flush_nodes()
  return transition('applied')
end
return settle(t.node_index, n, NS.completed, NULL, children, now)
