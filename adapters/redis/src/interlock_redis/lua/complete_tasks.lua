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
for i = 1, #items do
  local missing = complete_precheck(items[i].id, items[i].children, true)
  if missing then
    return missing
  end
end
local replies, batch = {}, {}
for i = 1, #items do
  replies[i] = complete_one(items[i].id, items[i].attempt_id, items[i].outputs,
                            items[i].children, now, batch)
end
complete_flush(batch, now)
return replies
