-- _common.lua: prelude prepended to every operation script of interlock_redis before SCRIPT LOAD
-- (each operation stays one script, one EVALSHA; this file only holds the shared helpers).
--
-- Every operation script receives the same five KEYS, all of one run and all carrying the hash
-- tag {run_id}, so Redis Cluster keeps the run on one slot:
--   KEYS[1] <ns>:{<run_id>}:run     hash  attribute -> JSON text of that RunRecord attribute
--   KEYS[2] <ns>:{<run_id>}:nodes   hash  node index -> jmap of the NodeRecord
--   KEYS[3] <ns>:{<run_id>}:tasks   hash  task id -> jmap of the TaskRecord without its plan
--   KEYS[4] <ns>:{<run_id>}:plans   hash  task id -> JSON text of TaskRecord.plan
--   KEYS[5] <ns>:{<run_id>}:leases  zset  task id -> lease_until, for RUNNING tasks with a lease
-- and derives from the same prefix (same hash tag, same slot):
--   <ns>:{<run_id>}:unfin:<node>         set   ids of QUEUED/RUNNING/WAITING tasks of the node
--   <ns>:{<run_id>}:ntasks:<node>        set   ids of every task of the node
--   <ns>:{<run_id>}:arts:<node>:<gen>    list  Artifact JSON, in publication (seq) order
--
-- A "jmap" is a JSON object whose values are JSON *texts* (strings) produced by Python's json
-- module: {"state":"\"running\"","lease_until":"1712345678.123456",...}. cjson only ever decodes
-- and encodes strings, so user values, floats and big integers are never re-formatted by Lua:
-- they are copied byte for byte. Integers the scripts compute (counters, attempt, seq) are
-- written with %d. States are compared as JSON texts ('"running"').
--
-- Error convention: a state change the transition tables refuse returns, before any write,
--   {'illegal', kind, from_state, to_state, what}
-- and a missing node returns {'nonode', index}. The Python side raises on both.

local K_RUN, K_NODES, K_TASKS, K_PLANS, K_LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local PREFIX = string.sub(K_RUN, 1, -5) -- strip ':run'
local NULL = 'null'

local RS = {pending = '"pending"', running = '"running"', completed = '"completed"',
            failed = '"failed"', crashed = '"crashed"', cancelled = '"cancelled"'}
local NS = {waiting = '"waiting"', launched = '"launched"', completed = '"completed"',
            filtered = '"filtered"', skipped = '"skipped"', failed = '"failed"',
            cancelled = '"cancelled"'}
local TS = {queued = '"queued"', running = '"running"', waiting = '"waiting"',
            completed = '"completed"', failed = '"failed"', crashed = '"crashed"',
            cancelled = '"cancelled"'}

-- mirror of interlock.states (RUN_TRANSITIONS, NODE_TRANSITIONS, TASK_TRANSITIONS): one
-- |kind:from>to| entry per legal transition (the Redis tests compare it with those tables). A
-- string, not a table of tables: a constant is part of the compiled script, while the body of
-- this prelude runs on every EVALSHA and would build the tables again (~3 us of server time
-- per call, measured with INFO commandstats).
-- node -> waiting only through reopen_run (a new generation), see interlock.states
local LEGAL = [[
|run:pending>running|run:pending>cancelled|run:running>completed|run:running>failed|
|run:running>crashed|run:running>cancelled|run:failed>running|run:crashed>running|
|run:cancelled>running|
|node:waiting>launched|node:waiting>filtered|node:waiting>skipped|node:waiting>failed|
|node:waiting>cancelled|node:launched>completed|node:launched>failed|node:launched>cancelled|
|node:failed>waiting|node:skipped>waiting|node:cancelled>waiting|node:completed>waiting|
|node:filtered>waiting|
|task:queued>running|task:queued>cancelled|task:running>completed|task:running>failed|
|task:running>crashed|task:running>waiting|task:running>queued|task:running>cancelled|
|task:waiting>queued|task:waiting>cancelled|
]]

local function unquote(text)
  return string.sub(text, 2, -2)
end

-- nil when legal, else the error reply (returned by the caller before any write)
local function check(kind, from_text, to_text, what)
  local from, to = unquote(from_text), unquote(to_text)
  if string.find(LEGAL, '|' .. kind .. ':' .. from .. '>' .. to .. '|', 1, true) then
    return nil
  end
  return {'illegal', kind, from, to, what or ''}
end

local function int(text)
  return tonumber(text)
end

local function itext(n)
  return string.format('%d', n)
end

local function same_int(a, b)
  return tonumber(a) == tonumber(b)
end

local function unfinished(state)
  return state == TS.queued or state == TS.running or state == TS.waiting
end

-- ---- run ---------------------------------------------------------------------------------

local function run_field(name)
  return redis.call('HGET', K_RUN, name)
end

-- ---- nodes: read through a cache, written once at the end (flush_nodes) -----------------

local node_cache, node_dirty = {}, {}

local function node(index)
  local k = tostring(index)
  local n = node_cache[k]
  if n == nil then
    local raw = redis.call('HGET', K_NODES, k)
    if not raw then
      return nil
    end
    n = cjson.decode(raw)
    node_cache[k] = n
  end
  return n
end

local function put_node(index, n)
  local k = tostring(index)
  node_cache[k] = n
  node_dirty[k] = true
end

local function flush_nodes()
  for k, _ in pairs(node_dirty) do
    redis.call('HSET', K_NODES, k, cjson.encode(node_cache[k]))
  end
  node_dirty = {}
end

-- ---- tasks: written through, keeping the unfinished sets and the lease zset in step ---------

local function get_task(id)
  local raw = redis.call('HGET', K_TASKS, id)
  if not raw then
    return nil, nil
  end
  return cjson.decode(raw), raw
end

-- ``member``: the caller knows the task is in its node's unfinished set already and stays
-- there (e.g. QUEUED -> RUNNING), so the set is left alone
local function index_task(id, t, member)
  local pending = PREFIX .. ':unfin:' .. t.node_index
  if not member then
    if unfinished(t.state) then
      redis.call('SADD', pending, id)
    else
      redis.call('SREM', pending, id)
    end
  end
  if t.state == TS.running and t.lease_until ~= NULL then
    redis.call('ZADD', K_LEASES, t.lease_until, id)
  else
    redis.call('ZREM', K_LEASES, id)
  end
end

local function put_task(id, t, member)
  local raw = cjson.encode(t)
  redis.call('HSET', K_TASKS, id, raw)
  index_task(id, t, member)
  return raw
end

-- the first index of ``children`` with no node record, or nil (checked before any write)
local function missing_node(children)
  for i = 1, #children do
    if node(children[i]) == nil then
      return children[i]
    end
  end
  return nil
end

-- ---- replies -----------------------------------------------------------------------------

local function transition(outcome, run_state, ready)
  local reply = {outcome, run_state or ''}
  if ready then
    for i = 1, #ready do
      reply[#reply + 1] = ready[i]
    end
  end
  return reply
end

-- ---- the settle procedure (interlock.protocols) -----------------------------------------

local function settle(index, n, state, reason, children, now)
  n.state = state
  n.reason = reason
  put_node(index, n)
  local fields = redis.call('HMGET', K_RUN, 'state', 'unsettled', 'failed_nodes')
  local unsettled = int(fields[2]) - 1
  local failed_nodes = int(fields[3])
  if state == NS.failed then
    failed_nodes = failed_nodes + 1
  end
  local ready = {}
  for i = 1, #children do
    local child = node(children[i]) -- existence checked by the caller (missing_node)
    local remaining = int(child.remaining_parents) - 1
    child.remaining_parents = itext(remaining)
    put_node(children[i], child)
    if remaining == 0 and child.state == NS.waiting then
      ready[#ready + 1] = tonumber(children[i])
    end
  end
  local run_state = nil
  local update = {'unsettled', itext(unsettled), 'failed_nodes', itext(failed_nodes),
                  'updated_at', now}
  if unsettled == 0 then
    if failed_nodes == 0 then
      run_state = RS.completed
    else
      run_state = RS.failed
    end
    -- RUNNING -> COMPLETED/FAILED is always legal; callers only settle RUNNING runs
    update[#update + 1] = 'state'
    update[#update + 1] = run_state
  end
  redis.call('HSET', K_RUN, unpack(update))
  flush_nodes()
  return transition('applied', run_state, ready)
end

-- ---- claim and complete, shared by the single and the batched scripts -------------------

-- the total_tasks text of node ``index`` ('0' when there is no such node)
local function node_total(index)
  local n = node(index)
  if n == nil then
    return '0'
  end
  return n.total_tasks
end

-- [claim.cas] one claim; {outcome} when the task does not exist, else {outcome, jmap, plan,
-- the run's artifact_seq, the total_tasks of the task's node} (what lets the caller predict
-- the facts of the task's completion: the follow ability).
-- ``run``: {state = ..., seq = ...}, the run's state and artifact_seq texts when the caller
-- has read them already (a claim changes neither, so a batch of claims reads them once),
-- else nil.
local function claim_one(id, attempt_id, worker, lease_until, now, run)
  local t, raw = get_task(id)
  if t == nil then
    return {'stale'}
  end
  local outcome = 'applied'
  if t.state == TS.running and t.attempt_id == attempt_id then
    outcome = 'duplicate'
  elseif (run and run.state or run_field('state')) ~= RS.running or t.state ~= TS.queued
      or tonumber(now) < tonumber(t.not_before) then
    outcome = 'stale'
  else
    -- QUEUED -> RUNNING is in the task table: no check can fail here
    t.state = TS.running
    t.attempt = itext(int(t.attempt) + 1)
    t.attempt_id = attempt_id
    t.worker = worker
    t.lease_until = lease_until
    t.updated_at = now
    raw = put_task(id, t, true) -- QUEUED -> RUNNING: unfinished before and after
  end
  return {outcome, raw, redis.call('HGET', K_PLANS, id),
          run and run.seq or run_field('artifact_seq'), node_total(t.node_index)}
end

-- ``command key items...`` in calls of at most 1,000 items (unpack's stack limit); items
-- pair up (field value, score member) for HSET and ZADD, so the chunks are even. No call
-- when there are no items.
local function variadic(command, key, items)
  for i = 1, #items, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- [launch.atomic] claim WAITING node ``index`` of ``generation`` and write the tasks given as
-- (id, jmap without plan, plan JSON) triples in ARGV[first ..]: 'applied', 'duplicate' (node
-- already LAUNCHED: only tasks not stored yet are written), 'stale', or a {'illegal'|'nonode'}
-- reply
local function launch(index, generation, total, first)
  if run_field('state') ~= RS.running then
    return 'stale'
  end
  local n = node(index)
  if n == nil then
    return {'nonode', index}
  end
  if not same_int(n.generation, generation) then
    return 'stale'
  end
  local outcome
  if n.state == NS.waiting then
    local illegal = check('node', n.state, NS.launched, '')
    if illegal then
      return illegal
    end
    n.state = NS.launched
    n.total_tasks = itext(int(total))
    n.remaining_tasks = itext(int(total))
    put_node(index, n)
    outcome = 'applied'
  elseif n.state == NS.launched then
    outcome = 'duplicate'
  else
    return 'stale'
  end
  -- the tasks to write, each id once with its last triple (as writing them one by one would
  -- leave them); 'duplicate' skips ids stored before this call
  local ids, at = {}, {}
  for i = first, #ARGV, 3 do
    local id = ARGV[i]
    if at[id] then
      if outcome == 'applied' then
        at[id] = i
      end
    elseif outcome == 'applied' or redis.call('HEXISTS', K_TASKS, id) == 0 then
      ids[#ids + 1] = id
      at[id] = i
    end
  end
  -- then variadic writes, a few per batch instead of five per task
  local tasks, plans, sets, zadd, zrem = {}, {}, {}, {}, {}
  for _, id in ipairs(ids) do
    local i = at[id]
    local t = cjson.decode(ARGV[i + 1])
    tasks[#tasks + 1] = id
    tasks[#tasks + 1] = ARGV[i + 1]
    plans[#plans + 1] = id
    plans[#plans + 1] = ARGV[i + 2]
    local node_sets = sets[t.node_index]
    if node_sets == nil then
      node_sets = {all = {}, add = {}, rem = {}}
      sets[t.node_index] = node_sets
    end
    node_sets.all[#node_sets.all + 1] = id
    if unfinished(t.state) then
      node_sets.add[#node_sets.add + 1] = id
    else
      node_sets.rem[#node_sets.rem + 1] = id
    end
    if t.state == TS.running and t.lease_until ~= NULL then
      zadd[#zadd + 1] = t.lease_until
      zadd[#zadd + 1] = id
    else
      zrem[#zrem + 1] = id
    end
  end
  variadic('HSET', K_TASKS, tasks)
  variadic('HSET', K_PLANS, plans)
  for node_index, node_sets in pairs(sets) do
    variadic('SADD', PREFIX .. ':ntasks:' .. node_index, node_sets.all)
    variadic('SADD', PREFIX .. ':unfin:' .. node_index, node_sets.add)
    variadic('SREM', PREFIX .. ':unfin:' .. node_index, node_sets.rem)
  end
  variadic('ZADD', K_LEASES, zadd)
  variadic('ZREM', K_LEASES, zrem)
  flush_nodes()
  return outcome
end

-- nil when a completion of task ``id`` can run without meeting a missing node; else the
-- {'nonode', index} reply. ``always``: check the children even if the node will not settle.
-- The second result is the decoded task record it read (nil when there is none), which the
-- caller may hand to complete_one as long as nothing has written the task since.
local function complete_precheck(id, children, always)
  local t = get_task(id)
  if t == nil then
    return nil, nil
  end
  local n = node(t.node_index)
  if n == nil then
    return {'nonode', t.node_index}, t
  end
  if always or (t.state == TS.running and same_int(n.generation, t.generation)
                and n.state == NS.launched and int(n.remaining_tasks) <= 1) then
    local missing = missing_node(children)
    if missing then
      return {'nonode', missing}, t
    end
  end
  return nil, t
end

-- [complete.once] one completion (call complete_precheck first); a transition reply.
-- ``outputs``: list of {artifact id JSON text, body} (body: '"fields":...,"data":...').
-- ``read``: the task record as complete_precheck decoded it, when unchanged since (else nil:
-- it is read here). ``batch``: nil for a completion alone; for the items of complete_tasks, a table shared by
-- them ({seq = artifact_seq so far or nil}) so that the run's artifact_seq/updated_at and the
-- node records are written once per batch, by complete_flush, instead of once per item (the
-- node cache and batch.seq hold the current values meanwhile: every read goes through them).
local function complete_one(id, attempt_id, outputs, children, now, batch, read)
  local t = read or get_task(id)
  if t == nil then
    return transition('stale')
  end
  if t.state == TS.completed and t.attempt_id == attempt_id then
    return transition('duplicate')
  end
  if t.state ~= TS.running or t.attempt_id ~= attempt_id or run_field('state') ~= RS.running then
    return transition('stale')
  end
  -- RUNNING -> COMPLETED is in the task table: no check can fail here
  t.state = TS.completed
  t.lease_until = NULL
  t.updated_at = now
  put_task(id, t)
  local seq
  if batch and batch.seq then
    seq = batch.seq
  else
    seq = int(run_field('artifact_seq'))
  end
  if #outputs > 0 then
    local key = PREFIX .. ':arts:' .. t.node_index .. ':' .. t.generation
    local head = '{"node_index":' .. t.node_index .. ',"generation":' .. t.generation
                 .. ',"task_id":' .. t.task_id .. ',"seq":'
    for k = 1, #outputs do
      local artifact_id, body = outputs[k][1], outputs[k][2]
      local origin
      if t.origin_mode == '"self"' then
        origin = artifact_id
      elseif t.origin_mode == '"broadcast"' then
        origin = NULL
      else
        origin = t.origin
      end
      redis.call('RPUSH', key, head .. itext(seq + k) .. ',"artifact_id":' .. artifact_id
                 .. ',"origin":' .. origin .. ',' .. body .. '}')
    end
  end
  if batch then
    batch.seq = seq + #outputs
  else
    redis.call('HSET', K_RUN, 'artifact_seq', itext(seq + #outputs), 'updated_at', now)
  end
  local n = node(t.node_index)
  if not (same_int(n.generation, t.generation) and n.state == NS.launched) then
    return transition('applied')
  end
  local remaining = int(n.remaining_tasks) - 1
  n.remaining_tasks = itext(remaining)
  if remaining > 0 then
    put_node(t.node_index, n)
    if not batch then
      flush_nodes()
    end
    return transition('applied')
  end
  return settle(t.node_index, n, NS.completed, NULL, children, now)
end

-- the deferred writes of complete_one calls sharing ``batch``
local function complete_flush(batch, now)
  if batch.seq then
    redis.call('HSET', K_RUN, 'artifact_seq', itext(batch.seq), 'updated_at', now)
  end
  flush_nodes()
end

-- ---- the terminate procedure (callers check the run transition before any write) --------

local function terminate(state, reason, now)
  local all = redis.call('HGETALL', K_NODES)
  for i = 1, #all, 2 do
    local k = all[i]
    local pending = redis.call('SMEMBERS', PREFIX .. ':unfin:' .. k)
    for j = 1, #pending do
      local t = get_task(pending[j])
      if t ~= nil and unfinished(t.state) then
        t.state = TS.cancelled
        t.lease_until = NULL
        t.updated_at = now
        put_task(pending[j], t)
      end
    end
    local n = node_cache[k]
    if n == nil then
      n = cjson.decode(all[i + 1])
      node_cache[k] = n
    end
    if n.state == NS.waiting or n.state == NS.launched then
      n.state = NS.cancelled
      put_node(k, n)
    end
  end
  redis.call('HSET', K_RUN, 'state', state, 'reason', reason, 'updated_at', now)
  flush_nodes()
  return transition('applied', state, nil)
end

-- ---- the prefetch facts, shared by complete_task_prefetch and complete_follow --------------

-- complete_task_prefetch.lua's ARGV: task id, attempt id, now, M outputs (id, body pairs),
-- C children each with its parents: the child's index, then its count, one of
--   'P'   the P parent indices follow;
--   'sP'  they follow, and are stored under PREFIX:parents:<child> (comma-joined, SET NX)
--         for later calls (a child with many parents: sending them with every parent's
--         completion would make a join of N parents cost O(N) per completion, O(N^2) in all;
--         each client sends them once);
--   '-P'  none follow: an earlier call stored them; read here if the child is ready, and if
--         they are missing the script answers {'parents', child} before any write.
-- Returns outputs, children, parents_of (child index text -> its parents, or false: stored),
-- the index of the first ARGV after them, and the lists to store (child -> joined text).
local function prefetch_args()
  local outputs, children, parents_of, store = {}, {}, {}, {}
  local count = tonumber(ARGV[4])
  for k = 1, count do
    outputs[k] = {ARGV[3 + 2 * k], ARGV[4 + 2 * k]}
  end
  local i = 5 + 2 * count
  local nchildren = tonumber(ARGV[i])
  i = i + 1
  for c = 1, nchildren do
    local child, spec = ARGV[i], ARGV[i + 1]
    i = i + 2
    local parents = false
    if string.sub(spec, 1, 1) ~= '-' then
      local keep = string.sub(spec, 1, 1) == 's'
      local nparents = tonumber(keep and string.sub(spec, 2) or spec)
      parents = {}
      for p = 1, nparents do
        parents[p] = ARGV[i]
        i = i + 1
      end
      if keep then
        store[child] = table.concat(parents, ',')
      end
    end
    children[c] = child
    parents_of[child] = parents
  end
  return outputs, children, parents_of, i, store
end

-- Before any write: {'parents', child} when a child's parents are to be read from the run
-- but no call stored them yet (the client repeats the call with them, 'sP'); nil otherwise.
local function parents_precheck(children, parents_of)
  for _, child in ipairs(children) do
    if parents_of[child] == false
        and redis.call('EXISTS', PREFIX .. ':parents:' .. child) == 0 then
      return {'parents', child}
    end
  end
  return nil
end

-- Store the parents lists prefetch_args was asked to keep (after the prechecks passed).
local function store_parents(store)
  for child, joined in pairs(store) do
    redis.call('SET', PREFIX .. ':parents:' .. child, joined, 'NX')
  end
end

-- [complete.prefetch] the facts of every node the completion ``reply`` readied and of each of
-- its parents, each once: index, node jmap, number A of artifacts, the A artifact texts
local function prefetch_facts(reply, parents_of)
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
    local parents = parents_of[child]
    if parents == false then
      local joined = redis.call('GET', PREFIX .. ':parents:' .. child)
      parents = {}
      for parent in string.gmatch(joined, '[^,]+') do
        parents[#parents + 1] = parent
      end
    end
    for _, parent in ipairs(parents) do
      add(parent)
    end
  end
  return facts
end
