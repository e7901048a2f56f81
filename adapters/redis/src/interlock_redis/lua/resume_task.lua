-- resume_task.lua: [wait.resume] WAITING -> QUEUED with resume = payload.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id   ARGV[2] payload (JSON)   ARGV[3] now (JSON)
-- Returns {outcome} when the task does not exist, else {outcome, task jmap, plan JSON} with
-- the task as stored after the call ('applied', or 'stale' when not WAITING / run not RUNNING).

local id, payload, now = ARGV[1], ARGV[2], ARGV[3]
local t, raw = get_task(id)
if t == nil then
  return {'stale'}
end
if t.state ~= TS.waiting or run_field('state') ~= RS.running then
  return {'stale', raw, redis.call('HGET', K_PLANS, id)}
end
local illegal = check('task', t.state, TS.queued, '')
if illegal then
  return illegal
end
t.state = TS.queued
t.resume = payload
t.error = NULL
t.not_before = '0.0'
t.updated_at = now
raw = put_task(id, t)
return {'applied', raw, redis.call('HGET', K_PLANS, id)}
