-- heartbeat.lua: [lease.renew] extend the lease of a RUNNING task under its current attempt.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id   ARGV[2] attempt id (JSON)   ARGV[3] lease_until (JSON number)
-- Returns 1 when extended, 0 when the attempt is not current (stale).

local id = ARGV[1]
local t = get_task(id)
if t == nil or t.state ~= TS.running or t.attempt_id ~= ARGV[2] then
  return 0
end
t.lease_until = ARGV[3]
put_task(id, t)
return 1
