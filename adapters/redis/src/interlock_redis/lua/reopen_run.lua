-- reopen_run.lua: [retry.fenced] re-open a FAILED/CRASHED/CANCELLED run: the given node records
-- replace the stored ones; unsettled = their number, failed_nodes 0, retries += 1, RUNNING.
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] expected_retries   ARGV[2] now (JSON)   ARGV[3 ..] node index, node jmap pairs
-- Returns 'applied'; 'duplicate' when retries already passed expected_retries; 'stale'; or
-- {'illegal', ...} / {'nonode', index} before any write.

local fields = redis.call('HMGET', K_RUN, 'state', 'retries')
local state, retries = fields[1], fields[2]
if not state then
  return 'stale'
end
local expected = tonumber(ARGV[1])
if int(retries) ~= expected or not (state == RS.failed or state == RS.crashed
    or state == RS.cancelled) then
  if int(retries) > expected then
    return 'duplicate'
  end
  return 'stale'
end
local illegal = check('run', state, RS.running, '')
if illegal then
  return illegal
end
-- check every node move first (a repeated index sees the state written before it)
local seen = {}
for i = 3, #ARGV, 2 do
  local index = ARGV[i]
  local current = seen[index]
  if current == nil then
    local old = node(index)
    if old == nil then
      return {'nonode', index}
    end
    current = old.state
  end
  illegal = check('node', current, NS.waiting, index)
  if illegal then
    return illegal
  end
  seen[index] = cjson.decode(ARGV[i + 1]).state
end
local count = 0
for i = 3, #ARGV, 2 do
  redis.call('HSET', K_NODES, ARGV[i], ARGV[i + 1])
  count = count + 1
end
redis.call('HSET', K_RUN, 'state', RS.running, 'unsettled', itext(count), 'failed_nodes', '0',
           'retries', itext(int(retries) + 1), 'reason', NULL, 'updated_at', ARGV[2])
return 'applied'
