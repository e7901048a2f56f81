-- launch_node.lua: [launch.atomic] claim a WAITING node of a generation and write its tasks.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] node index          ARGV[2] generation        ARGV[3] total_tasks
-- ARGV[4] now (JSON number)   ARGV[5 ..] task id, task jmap (without plan), plan JSON triples
-- Returns 'applied' (node WAITING -> LAUNCHED with total/remaining = total_tasks, every task
-- written), 'duplicate' (node already LAUNCHED in this generation: only tasks whose id is not
-- stored yet are written), 'stale' (nothing written), or {'nonode', index}.

if run_field('state') ~= RS.running then
  return 'stale'
end
local index = ARGV[1]
local n = node(index)
if n == nil then
  return {'nonode', index}
end
if not same_int(n.generation, ARGV[2]) then
  return 'stale'
end
local outcome
if n.state == NS.waiting then
  local illegal = check('node', n.state, NS.launched, '')
  if illegal then
    return illegal
  end
  n.state = NS.launched
  n.total_tasks = itext(int(ARGV[3]))
  n.remaining_tasks = itext(int(ARGV[3]))
  put_node(index, n)
  outcome = 'applied'
elseif n.state == NS.launched then
  outcome = 'duplicate'
else
  return 'stale'
end
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  if outcome == 'applied' or redis.call('HEXISTS', K_TASKS, id) == 0 then
    local t = cjson.decode(ARGV[i + 1])
    redis.call('HSET', K_TASKS, id, ARGV[i + 1])
    redis.call('HSET', K_PLANS, id, ARGV[i + 2])
    redis.call('SADD', PREFIX .. ':ntasks:' .. t.node_index, id)
    index_task(id, t)
  end
end
flush_nodes()
return outcome
