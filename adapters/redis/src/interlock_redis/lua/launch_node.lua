-- launch_node.lua: [launch.atomic] claim a WAITING node of a generation and write its tasks.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] node index          ARGV[2] generation        ARGV[3] total_tasks
-- ARGV[4] now (JSON number)   ARGV[5 ..] task id, task jmap (without plan), plan JSON triples
-- Returns 'applied' (node WAITING -> LAUNCHED with total/remaining = total_tasks, every task
-- written), 'duplicate' (node already LAUNCHED in this generation: only tasks whose id is not
-- stored yet are written), 'stale' (nothing written), or {'nonode', index}.
-- (The body is launch in _common.lua.)

return launch(ARGV[1], ARGV[2], ARGV[3], 5)
