-- complete_task_prefetch.lua: [complete.prefetch] complete_task.lua, plus the NodeFacts of every
-- node this completion made ready and of each of its parents, read in the same script, so a
-- completion that releases work costs two round trips (this one and the launch).
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] task id      ARGV[2] attempt id (JSON)     ARGV[3] now (JSON)
-- ARGV[4] number M of outputs
-- ARGV[5 .. 4+2M] per output: artifact id (JSON text), body (as in complete_task.lua)
-- ARGV[5+2M]      number C of children, then per child: its index, its number P of parents,
--                 the P parent indices
-- Returns {transition, facts}: ``transition`` as complete_task.lua returns it; ``facts`` a
-- flat list, per node (each once): index, node jmap, number A of artifacts, the A Artifact
-- JSON texts of its current generation (A = 0 unless the node is COMPLETED).
-- Or {'nonode', index} before any write.

local outputs, children, parents_of = {}, {}, {}
local count = tonumber(ARGV[4])
for k = 1, count do
  outputs[k] = {ARGV[3 + 2 * k], ARGV[4 + 2 * k]}
end
local i = 5 + 2 * count
local nchildren = tonumber(ARGV[i])
i = i + 1
for c = 1, nchildren do
  local child, nparents = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local parents = {}
  for p = 1, nparents do
    parents[p] = ARGV[i]
    i = i + 1
  end
  children[c] = child
  parents_of[child] = parents
end
local missing, read = complete_precheck(ARGV[1], children, false)
if missing then
  return missing
end
local reply = complete_one(ARGV[1], ARGV[2], outputs, children, ARGV[3], nil, read)

local facts, seen = {}, {}
local function add(index)
  if seen[index] then
    return
  end
  seen[index] = true
  local raw = redis.call('HGET', K_NODES, index)
  local n = cjson.decode(raw)
  local arts = {}
  if n.state == NS.completed then
    arts = redis.call('LRANGE', PREFIX .. ':arts:' .. index .. ':' .. n.generation, 0, -1)
  end
  facts[#facts + 1] = index
  facts[#facts + 1] = raw
  facts[#facts + 1] = #arts
  for a = 1, #arts do
    facts[#facts + 1] = arts[a]
  end
end
for r = 3, #reply do
  local child = tostring(reply[r])
  add(child)
  for _, parent in ipairs(parents_of[child]) do
    add(parent)
  end
end
return {reply, facts}
