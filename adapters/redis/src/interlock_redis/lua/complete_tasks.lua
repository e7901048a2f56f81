-- complete_tasks.lua: [batch.complete] complete_task for each item, atomically together and
-- in order (each result is what complete_task alone would return at that point).
--
-- KEYS: the five run keys of _common.lua (run, nodes, tasks, plans, leases).
-- ARGV[1] now (JSON)    ARGV[2] number of items
-- then per item: task id, attempt id (JSON), M outputs, C children, M (artifact id JSON, body)
-- pairs as in complete_task.lua, C child indices
-- Returns one complete_task transition per item, in order; or {'nonode', index} before any
-- write when an item names a missing node (every item's children are checked up front).

local now, items, pos = ARGV[1], {}, 3
for _ = 1, tonumber(ARGV[2]) do
  local item = {id = ARGV[pos], attempt_id = ARGV[pos + 1], outputs = {}, children = {}}
  local m, c = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
  pos = pos + 4
  for k = 1, m do
    item.outputs[k] = {ARGV[pos], ARGV[pos + 1]}
    pos = pos + 2
  end
  for k = 1, c do
    item.children[k] = ARGV[pos]
    pos = pos + 1
  end
  items[#items + 1] = item
end
local times = {} -- per task id, how many items name it
for i = 1, #items do
  local missing, read = complete_precheck(items[i].id, items[i].children, true)
  if missing then
    return missing
  end
  items[i].read = read
  times[items[i].id] = (times[items[i].id] or 0) + 1
end
local replies, batch = {}, {}
for i = 1, #items do
  -- the record the precheck decoded is current unless an earlier item wrote the same task
  local read = nil
  if times[items[i].id] == 1 then
    read = items[i].read
  end
  replies[i] = complete_one(items[i].id, items[i].attempt_id, items[i].outputs,
                            items[i].children, now, batch, read)
end
complete_flush(batch, now)
return replies
