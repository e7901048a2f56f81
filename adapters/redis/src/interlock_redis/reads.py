"""The read half of :class:`~interlock_redis.store.RedisStore`: plain commands (no scripts),
each decoding the records the scripts wrote, and ``list_expired``'s sweep of the namespace's
leased runs. Kept apart so each module stays small."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import redis

from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord
from interlock.states import TaskState
from interlock_redis.codec import artifacts, dumps, task_record, task_records, wide_artifacts
from interlock_redis.keys import Keys
from interlock_redis.reach import reachable
from interlock_redis.replies import decode_node, decode_run
from interlock_redis.scripts import text

__all__ = ["RedisReads"]

_UNFINISHED = frozenset({TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING})
_CHUNK = 1000
"""Fields per HMGET / HSCAN step of a large read."""


class RedisReads:
    """Needs ``client`` and ``keys`` (set by the store)."""

    client: redis.Redis
    keys: Keys

    @reachable
    def get_run(self, run_id: str) -> RunRecord | None:
        pairs = self.client.hgetall(self.keys.run(run_id))
        return decode_run(pairs) if pairs else None

    @reachable
    def get_nodes(self, run_id: str, indices: Sequence[int] | None = None) -> list[NodeRecord]:
        key = self.keys.nodes(run_id)
        if indices is None:
            raws = list(self.client.hvals(key))
        else:
            wanted = sorted(set(indices))
            if not wanted:
                return []
            raws = [raw for raw in self.client.hmget(key, [str(i) for i in wanted])
                    if raw is not None]
        return sorted((decode_node(raw) for raw in raws), key=lambda n: n.index)

    @reachable
    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(self.keys.tasks(run_id), task_id)
        pipe.hget(self.keys.plans(run_id), task_id)
        raw, plan = pipe.execute()
        return None if raw is None else task_record(raw, plan)

    @reachable
    def list_tasks(
        self,
        run_id: str,
        *,
        node_index: int | None = None,
        states: Collection[TaskState] | None = None,
    ) -> list[TaskRecord]:
        wanted = None if states is None else frozenset(states)
        if wanted is not None and not wanted:
            return []
        ids: list[str] | None = None
        if wanted is not None and wanted <= _UNFINISHED:
            # only unfinished states: the per-node unfinished sets hold every candidate
            indices = ([node_index] if node_index is not None
                       else [int(text(i)) for i in self.client.hkeys(self.keys.nodes(run_id))])
            pipe = self.client.pipeline(transaction=False)
            for index in indices:
                pipe.smembers(self.keys.unfinished(run_id, index))
            ids = sorted({text(m) for members in pipe.execute() for m in members})
        elif node_index is not None:
            ids = sorted(text(m) for m in
                         self.client.smembers(self.keys.node_tasks(run_id, node_index)))
        if ids is None:
            # HSCAN, not HGETALL: a run's whole task hash in one command blocks the server for
            # every client (~60 ms per 100,000 tasks); tasks are never removed, so a scan sees
            # every task that existed when it began
            pairs = [(text(k), v) for k, v in dict(self.client.hscan_iter(
                self.keys.tasks(run_id), count=_CHUNK)).items()]
        elif ids:
            pairs = [(i, v) for i, v in zip(ids, self._hmget(self.keys.tasks(run_id), ids),
                                            strict=True) if v is not None]
        else:
            pairs = []
        if wanted is not None or node_index is not None:
            state_texts = None if wanted is None else {dumps(w.value) for w in wanted}
            index_text = None if node_index is None else dumps(node_index)
            kept = []
            for task_id, raw in pairs:
                texts = json.loads(raw)  # filter on the JSON texts, decode the rest later
                if (state_texts is None or texts["state"] in state_texts) and (
                        index_text is None or texts["node_index"] == index_text):
                    kept.append((task_id, raw))
            pairs = kept
        out = self._with_plans(run_id, pairs)
        return sorted(out, key=lambda t: (t.node_index, t.generation, t.seq))

    def _with_plans(self, run_id: str, heads: list[tuple[str, Any]]) -> list[TaskRecord]:
        """Task records from their jmaps, their plans fetched by :meth:`_hmget`."""
        if not heads:
            return []
        plans = self._hmget(self.keys.plans(run_id), [task_id for task_id, _ in heads])
        return task_records([(raw, plan) for (_, raw), plan in zip(heads, plans, strict=True)])

    def _hmget(self, key: str, fields: Sequence[str]) -> list[Any]:
        """``HMGET key fields`` as pipelined commands of :data:`_CHUNK` fields (one round
        trip): one command of 100,000 fields would hold the server for all of them."""
        if len(fields) <= _CHUNK:
            return list(self.client.hmget(key, fields))
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(fields), _CHUNK):
            pipe.hmget(key, fields[start:start + _CHUNK])
        return [value for chunk in pipe.execute() for value in chunk]

    @reachable
    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> list[Artifact]:
        return artifacts(self.client.lrange(
            self.keys.artifacts(run_id, node_index, generation), 0, -1))

    @reachable
    def iter_artifacts(self, run_id: str, node_index: int, generation: int
                       ) -> Iterable[Artifact]:
        """[artifacts.stream] ``get_artifacts``, read in one LRANGE; from
        :data:`~interlock.packed.PACK_MIN` artifacts on as the stored texts
        (:class:`~interlock.packed.ArtifactTexts`), each record built when read."""
        return wide_artifacts(self.client.lrange(
            self.keys.artifacts(run_id, node_index, generation), 0, -1))

    @reachable
    def get_artifacts_many(self, run_id: str, generations: Sequence[tuple[int, int]]
                           ) -> list[Sequence[Artifact]]:
        """[artifacts.many] One LRANGE per pair in one MULTI/EXEC: one round trip, one
        snapshot; from :data:`~interlock.packed.PACK_MIN` artifacts on a list comes as the
        stored texts (as ``iter_artifacts`` gives it)."""
        if not generations:
            return []
        pipe = self.client.pipeline(transaction=True)
        for node_index, generation in generations:
            pipe.lrange(self.keys.artifacts(run_id, node_index, generation), 0, -1)
        return [wide_artifacts(raws) for raws in pipe.execute()]

    @reachable
    def list_expired(self, now: float, limit: int) -> list[TaskRecord]:
        """RUNNING tasks whose lease ran out, of any run of the namespace.

        Runs that may hold leases are in the namespace-level set ``<ns>:leased-runs`` (added by
        the claim and heartbeat round trips, *after* their script, in the same pipeline). Each
        candidate is verified against the run's own task record. A run whose lease zset is
        empty is removed from the set, then the zset is checked again and the run re-added if a
        claim slipped in: a claim's SADD always follows its lease, so no leased run is lost.
        """
        if limit <= 0:
            return []
        run_ids = sorted(text(r) for r in self.client.smembers(self.keys.leased_runs))
        if not run_ids:
            return []
        bound = f"({dumps(float(now))}"
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.zrangebyscore(self.keys.leases(run_id), "-inf", bound, start=0, num=limit)
            pipe.zcard(self.keys.leases(run_id))
        replies = pipe.execute()
        candidates: dict[str, list[str]] = {}
        idle: list[str] = []
        for k, run_id in enumerate(run_ids):
            ids, card = replies[2 * k], replies[2 * k + 1]
            if ids:
                candidates[run_id] = [text(i) for i in ids]
            elif card == 0:
                idle.append(run_id)
        if idle:
            self._forget_idle_runs(idle)
        if not candidates:
            return []
        pipe = self.client.pipeline(transaction=False)
        order = list(candidates)
        for run_id in order:
            pipe.hmget(self.keys.tasks(run_id), candidates[run_id])
            pipe.hmget(self.keys.plans(run_id), candidates[run_id])
        replies = pipe.execute()
        out: list[TaskRecord] = []
        for k, _run_id in enumerate(order):
            for raw, plan in zip(replies[2 * k], replies[2 * k + 1], strict=True):
                if raw is None:
                    continue
                task = task_record(raw, plan)
                if (task.state is TaskState.RUNNING and task.lease_until is not None
                        and task.lease_until < now):
                    out.append(task)
        out.sort(key=lambda t: (t.lease_until or 0.0, t.run_id, t.task_id))
        return out[:limit]

    def _forget_idle_runs(self, run_ids: list[str]) -> None:
        self.client.srem(self.keys.leased_runs, *run_ids)
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.zcard(self.keys.leases(run_id))
        back = [r for r, card in zip(run_ids, pipe.execute(), strict=True) if card]
        if back:
            self.client.sadd(self.keys.leased_runs, *back)
