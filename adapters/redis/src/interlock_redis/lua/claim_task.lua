-- claim_task.lua: [claim.cas] compare-and-set a QUEUED task to RUNNING under a new attempt.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id     ARGV[2] attempt id (JSON)   ARGV[3] worker (JSON)
-- ARGV[4] lease_until (JSON number or null)       ARGV[5] now (JSON)
-- Returns {outcome} when the task does not exist, else {outcome, task jmap, plan JSON, the
-- run's artifact_seq, the node's total_tasks} with the task as stored after the call. 'applied': attempt += 1, attempt_id, worker, lease set;
-- 'duplicate': already RUNNING under this attempt id; 'stale': the run is not RUNNING, the
-- task is not QUEUED or now < not_before. (The body is claim_one in _common.lua.)

return claim_one(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
