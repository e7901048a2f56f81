-- claim_task.lua: [claim.cas] compare-and-set a QUEUED task to RUNNING under a new attempt.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id     ARGV[2] attempt id (JSON)   ARGV[3] worker (JSON)
-- ARGV[4] lease_until (JSON number or null)       ARGV[5] now (JSON)
-- Returns {outcome} when the task does not exist, else {outcome, task jmap, plan JSON} with
-- the task as stored after the call. 'applied': attempt += 1, attempt_id, worker, lease set;
-- 'duplicate': already RUNNING under this attempt id; 'stale': the run is not RUNNING, the
-- task is not QUEUED or now < not_before.

local id, attempt_id, now = ARGV[1], ARGV[2], ARGV[5]
local t, raw = get_task(id)
if t == nil then
  return {'stale'}
end
if t.state == TS.running and t.attempt_id == attempt_id then
  return {'duplicate', raw, redis.call('HGET', K_PLANS, id)}
end
if run_field('state') ~= RS.running or t.state ~= TS.queued
    or tonumber(now) < tonumber(t.not_before) then
  return {'stale', raw, redis.call('HGET', K_PLANS, id)}
end
local illegal = check('task', t.state, TS.running, '')
if illegal then
  return illegal
end
t.state = TS.running
t.attempt = itext(int(t.attempt) + 1)
t.attempt_id = attempt_id
t.worker = ARGV[3]
t.lease_until = ARGV[4]
t.updated_at = now
raw = put_task(id, t)
return {'applied', raw, redis.call('HGET', K_PLANS, id)}
