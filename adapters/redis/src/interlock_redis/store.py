"""A :class:`~interlock.protocols.DagStore` on Redis: one Lua script per mutating operation.

Semantics are exactly those of :mod:`interlock.storekit` (fences, counters, the settle and
terminate procedures, transition tables), re-implemented in Lua so that every mutation is one
EVALSHA: atomic, serialised with every other command on the server, and applied once or not at
all. A plain task completion is one round trip. See docs/adapters/redis.md for the key layout.

Records are stored as JSON produced by Python's :mod:`json`. Fields the scripts change are kept
as *jmaps* (a JSON object of JSON texts, see ``lua/_common.lua``) so Lua never re-formats a
number or a user value: what Python wrote is what Python reads back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis

from interlock.protocols import ClaimRequest
from interlock.records import (
    CompletionItem,
    Followed,
    FollowUp,
    NewArtifact,
    NodeFacts,
    NodeLaunch,
    NodeRecord,
    Outcome,
    RunRecord,
    TaskRecord,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState
from interlock_redis.codec import (
    decode_jmap,
    dumps,
    encode_jmap,
)
from interlock_redis.follow import Predictions, predicted_facts
from interlock_redis.keys import Keys
from interlock_redis.reach import RedisUnavailable, reachable, split_url
from interlock_redis.reads import RedisReads
from interlock_redis.replies import (
    checked,
    decode_facts,
    decode_outcome,
    decode_run,
    decode_task_replies,
    decode_task_reply,
    decode_transition,
    index_args,
    launch_args,
    opt_arg,
    output_args,
    prefetch_args,
    wants_parents,
    wide_children,
)
from interlock_redis.scripts import (
    STORE_SCRIPTS,
    Arg,
    Command,
    ScriptCall,
    Scripts,
    lua_source,
    text,
)

__all__ = ["RedisStore", "RedisUnavailable", "decode_jmap", "dumps", "encode_jmap", "from_url",
           "split_url"]

class RedisStore(RedisReads):
    """Durable, multi-process :class:`~interlock.protocols.DagStore` on Redis (>= 6.2).

    ``client`` is a ``redis.Redis`` (any ``decode_responses`` setting) or a ``redis://`` URL
    (whose ``?namespace=`` query parameter, if any, replaces the ``namespace`` argument).
    ``namespace`` prefixes every key, so several deployments (or test runs) share a server.
    Thread-safe: the client's connection pool serialises nothing but sockets; every mutation
    is one atomic script on the server. Declares the ``batched`` ability
    (:class:`~interlock.protocols.BatchedDagStore`): ``claim_tasks`` and ``complete_tasks``
    are one script each too; ``prefetch``, ``handover``, ``follow`` (a chain step in one
    script, planned from predicted facts: :mod:`interlock_redis.follow`), ``stream`` (a wide
    node's artifacts handed over as the stored texts, :class:`~interlock.packed.ArtifactTexts`)
    and ``launch_many`` (several nodes' launches pipelined in one round trip).

    Script calls are packed and sent straight on a connection of the client's pool, under the
    connection's retry policy (~10 us less client CPU per call than ``client.evalsha``);
    ``direct_calls=False`` sends them through redis-py's command layer instead — for a client
    whose ``execute_command`` is wrapped (tracing instrumentation, say) and must see them.
    """

    abilities: frozenset[str] = frozenset({"batched", "prefetch", "handover", "follow",
                                           "stream", "launch_many", "launch_ahead",
                                           "read_many"})

    def __init__(self, client: redis.Redis | str, namespace: str = "interlock", *,
                 direct_calls: bool = True) -> None:
        if isinstance(client, str):
            url, namespace = split_url(client, namespace)
            client = redis.Redis.from_url(url)
        self.client: redis.Redis = client
        self.keys = Keys(namespace)
        self.namespace = namespace
        self.scripts = Scripts(self.client, STORE_SCRIPTS, prelude=lua_source("_common"),
                               direct=direct_calls)
        self._predictions = Predictions()
        self._parents_sent: set[tuple[str, int]] = set()  # (run, wide child) this object sent
        self._parents_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisStore({self.client!r}, namespace={self.namespace!r})"

    # ---- mutations -----------------------------------------------------------------------

    def _call(self, name: str, run_id: str, args: Sequence[Arg]) -> Any:
        return checked(self.scripts.call(name, self.keys.run_keys_bytes(run_id), args), run_id)

    def _call_leased(self, name: str, run_id: str, args: Sequence[Arg]) -> Any:
        """The script, then SADD of the run to the namespace's leased-runs set, pipelined in
        one round trip: the set is updated *after* the lease exists (see list_expired)."""
        return checked(self.scripts.call(name, self.keys.run_keys_bytes(run_id), args,
                                         ("SADD", self.keys.leased_runs, run_id)), run_id)

    @reachable
    def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> tuple[RunRecord, bool]:
        fields = run.to_dict()
        args: list[Arg] = [len(fields)]
        for name, value in fields.items():
            args += [name, dumps(value)]
        for node in nodes:
            args += [str(node.index), encode_jmap(node.to_dict())]
        reply = self._call("create_run", run.run_id, args)
        if int(reply[0]) == 1:
            return run, True
        stored = reply[1:]
        return decode_run(dict(zip(stored[::2], stored[1::2], strict=True))), False

    @reachable
    def launch_node(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        tasks: Sequence[TaskRecord],
        total_tasks: int,
        now: float,
    ) -> Outcome:
        triples, leased = launch_args(tasks)
        args: list[Arg] = [str(node_index), str(generation), str(total_tasks), dumps(now),
                           *triples]
        if not leased:
            return decode_outcome(self._call("launch_node", run_id, args))
        return decode_outcome(self._call_leased("launch_node", run_id, args))

    @reachable
    def launch_node_ahead(self, run_id: str, node_index: int, generation: int,
                          tasks: Sequence[TaskRecord], total_tasks: int, now: float
                          ) -> Callable[[], Outcome]:
        """[launch.ahead] ``launch_node``'s script call written now, its reply read by the
        returned function (the connection is held until then)."""
        triples, leased = launch_args(tasks)
        args: list[Arg] = [str(node_index), str(generation), str(total_tasks), dumps(now),
                           *triples]
        after: list[Command] = [("SADD", self.keys.leased_runs, run_id)] if leased else []
        replies = self.scripts.begin(
            [("launch_node", self.keys.run_keys_bytes(run_id), args)], *after)

        @reachable
        def launch_node_ahead() -> Outcome:
            return decode_outcome(checked(replies()[0], run_id))

        return launch_node_ahead

    @reachable
    def launch_nodes(self, run_id: str, launches: Sequence[NodeLaunch], now: float
                     ) -> list[Outcome]:
        """[launch.many] one ``launch_node.lua`` call per launch, pipelined: one round trip
        (each script atomic; the leased-runs SADD after them when a task carries a lease)."""
        keys = self.keys.run_keys_bytes(run_id)
        calls: list[ScriptCall] = []
        any_leased = False
        for launch in launches:
            triples, leased = launch_args(launch.tasks)
            any_leased = any_leased or leased
            calls.append(("launch_node", keys, [
                str(launch.node_index), str(launch.generation), str(launch.total_tasks),
                dumps(now), *triples]))
        after: list[Command] = [("SADD", self.keys.leased_runs, run_id)] if any_leased else []
        replies = self.scripts.calls(calls, *after)
        return [decode_outcome(checked(reply, run_id)) for reply in replies]

    @reachable
    def launch_and_claim(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        tasks: Sequence[TaskRecord],
        total_tasks: int,
        now: float,
        claim: ClaimRequest,
    ) -> tuple[Outcome, tuple[Outcome, TaskRecord | None]]:
        """[launch.claim] ``launch_and_claim.lua``: one round trip (the leased-runs SADD rides
        in the same pipeline, after the script, as for ``claim_task``)."""
        task_id, attempt_id, worker, lease_until = claim
        triples, leased = launch_args(tasks)
        args: list[Arg] = [str(node_index), str(generation), str(total_tasks), dumps(now),
                           task_id, dumps(attempt_id), dumps(worker), dumps(lease_until),
                           *triples]
        reply = (self._call_leased("launch_and_claim", run_id, args)
                 if leased or lease_until is not None
                 else self._call("launch_and_claim", run_id, args))
        if len(reply) == 1:
            return decode_outcome(reply[0]), ("stale", None)
        claimed = decode_task_reply(reply[1:])
        self._predictions.note(run_id, claimed[1], reply[1:])
        return decode_outcome(reply[0]), claimed

    @reachable
    def settle_node(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        state: NodeState,
        reason: str | None,
        children: Sequence[int],
        fail_run: RunState | None,
        now: float,
    ) -> Transition:
        args: list[Arg] = [str(node_index), str(generation), dumps(state.value), dumps(reason),
                           opt_arg(fail_run), dumps(now), *index_args(children)]
        return decode_transition(self._call("settle_node", run_id, args))

    @reachable
    def claim_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        worker: str,
        lease_until: float | None,
        now: float,
    ) -> tuple[Outcome, TaskRecord | None]:
        args: list[Arg] = [task_id, dumps(attempt_id), dumps(worker), dumps(lease_until),
                           dumps(now)]
        if lease_until is None:
            reply = self._call("claim_task", run_id, args)
        else:
            # the run joins the namespace's leased-runs set after its lease exists (same
            # pipeline, same round trip): list_expired can always find it
            reply = self._call_leased("claim_task", run_id, args)
        claimed = decode_task_reply(reply)
        self._predictions.note(run_id, claimed[1], reply)
        return claimed

    @reachable
    def claim_tasks(
        self,
        run_id: str,
        claims: Sequence[tuple[str, str]],
        worker: str,
        lease_until: float | None,
        now: float,
    ) -> list[tuple[Outcome, TaskRecord | None]]:
        if not claims:
            return []
        args: list[Arg] = [dumps(worker), dumps(lease_until), dumps(now)]
        for task_id, attempt_id in claims:
            args += [task_id, dumps(attempt_id)]
        if lease_until is None:
            replies = self._call("claim_tasks", run_id, args)
        else:
            replies = self._call_leased("claim_tasks", run_id, args)
        claimed = decode_task_replies(replies)
        for reply, (_, task) in zip(replies, claimed, strict=True):
            self._predictions.note(run_id, task, reply)
        return claimed

    @reachable
    def heartbeat(self, run_id: str, task_id: str, attempt_id: str, lease_until: float) -> bool:
        args: list[Arg] = [task_id, dumps(attempt_id), dumps(lease_until)]
        return int(self._call_leased("heartbeat", run_id, args)) == 1

    @reachable
    def complete_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        now: float,
    ) -> Transition:
        args: list[Arg] = [task_id, dumps(attempt_id), dumps(now), len(outputs),
                           *output_args(outputs), *index_args(children)]
        return decode_transition(self._call("complete_task", run_id, args))

    @reachable
    def complete_task_prefetch(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        parents: Sequence[Sequence[int]],
        now: float,
    ) -> tuple[Transition, list[NodeFacts]]:
        """[complete.prefetch] One script: the completion and the facts of what it readied."""
        head: list[Arg] = [task_id, dumps(attempt_id), dumps(now), len(outputs),
                           *output_args(outputs)]
        reply, flat = self._prefetching("complete_task_prefetch", run_id, head, children,
                                        parents, (), False)
        return decode_transition(reply), decode_facts(flat)

    def _prefetching(self, name: str, run_id: str, head: Sequence[Arg],
                     children: Sequence[int], parents: Sequence[Sequence[int]],
                     tail: Sequence[Arg], leased: bool) -> Any:
        """A prefetching script (``head``, the children block, ``tail``). A wide child's
        parents (``replies.WIDE_PARENTS``) go with the first call of this store object that
        names the child in the run, which stores them; later calls name them. If the run has
        lost them (deleted keys), the script answers so before any write
        (``replies.wants_parents``) and the call is repeated with them."""
        call = self._call_leased if leased else self._call
        wide = wide_children(children, parents)
        with self._parents_lock:
            send = [child for child in wide if (run_id, child) not in self._parents_sent]
        reply = call(name, run_id, [*head, *prefetch_args(children, parents, send), *tail])
        if wants_parents(reply):
            send = wide
            reply = call(name, run_id, [*head, *prefetch_args(children, parents, send), *tail])
        if send:
            with self._parents_lock:
                if len(self._parents_sent) >= 4096:  # bounded: forgetting costs a resend
                    self._parents_sent.clear()
                self._parents_sent.update((run_id, child) for child in send)
        return reply

    @reachable
    def complete_and_follow(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        parents: Sequence[Sequence[int]],
        now: float,
        follow: Callable[[Sequence[NodeFacts]], FollowUp | None],
    ) -> Followed:
        """[complete.follow] ``complete_follow.lua`` when this store claimed the task (its
        node's only one) and exactly one of the node's children has no other parent:
        ``follow`` is called first, on the predicted facts, and the script applies its
        follow-up only where the completion confirms them (:mod:`interlock_redis.follow`);
        otherwise ``complete_task_prefetch``. One round trip either way."""
        known = self._predictions.get(run_id, task_id, attempt_id)
        if known is None:
            return self._prefetched(run_id, task_id, attempt_id, outputs, children, parents, now)
        task, seq = known
        only = [child for child, its in zip(children, parents, strict=True)
                if len(its) == 1 and its[0] == task.node_index]
        if len(only) != 1:  # no child, or several, readied by this node alone
            self._predictions.drop(run_id, task_id)
            return self._prefetched(run_id, task_id, attempt_id, outputs, children, parents, now)
        facts = predicted_facts(task, int(seq), outputs, only[0])
        follow_up = follow(facts)  # if it raises, nothing was sent (the prediction is kept)
        self._predictions.drop(run_id, task_id)  # this attempt's completion goes out now
        child = facts[0].node
        if follow_up is None or (follow_up.node_index, follow_up.generation) != (
                child.index, child.generation):
            return self._prefetched(run_id, task_id, attempt_id, outputs, children, parents, now)
        claim = follow_up.claim
        triples, leased = launch_args(follow_up.tasks)
        head: list[Arg] = [task_id, dumps(attempt_id), dumps(now), len(outputs),
                           *output_args(outputs)]
        tail: list[Arg] = [seq, str(child.index), str(child.generation),
                           str(len(follow_up.tasks))]
        tail += ([claim[0], dumps(claim[1]), dumps(claim[2]), dumps(claim[3])]
                 if claim is not None else ["", "", "", ""])
        tail += triples
        leased = leased or (claim is not None and claim[3] is not None)
        reply = self._prefetching("complete_follow", run_id, head, children, parents, tail,
                                  leased)
        transition = decode_transition(reply[0])
        if not (len(reply) >= 3 and isinstance(reply[1], bytes | str)
                and text(reply[1]) == "followed"):
            return Followed(transition, tuple(decode_facts(reply[1])))
        if decode_outcome(reply[2]) != "applied":
            return Followed(transition, facts)
        claimed = None
        if len(reply) > 3:
            outcome, record = decode_task_reply(reply[3:])
            claimed = record if outcome == "applied" else None
            self._predictions.note(run_id, claimed, reply[3:])
        return Followed(transition, facts, follow_up, claimed)

    def _prefetched(self, run_id: str, task_id: str, attempt_id: str,
                    outputs: Sequence[NewArtifact], children: Sequence[int],
                    parents: Sequence[Sequence[int]], now: float) -> Followed:
        """A completion without follow-up: the facts for the caller's planning."""
        transition, facts = self.complete_task_prefetch(run_id, task_id, attempt_id, outputs,
                                                        children, parents, now)
        return Followed(transition, tuple(facts))

    @reachable
    def complete_tasks(
        self, run_id: str, items: Sequence[CompletionItem], now: float
    ) -> list[Transition]:
        if not items:
            return []
        args: list[Arg] = [dumps(now), len(items)]
        for item in items:
            args += [item.task_id, dumps(item.attempt_id), len(item.outputs), len(item.children),
                     *output_args(item.outputs), *index_args(item.children)]
        return [decode_transition(reply) for reply in self._call("complete_tasks", run_id, args)]

    @reachable
    def fail_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        error: str,
        retry_at: float | None,
        final_state: TaskState,
        children: Sequence[int],
        fail_run: RunState | None,
        now: float,
    ) -> Transition:
        reason = f"task {task_id} {final_state.value}: {error}"
        args: list[Arg] = [task_id, dumps(attempt_id), dumps(error), opt_arg(retry_at),
                           dumps(final_state.value), opt_arg(fail_run), dumps(reason), dumps(now),
                           *index_args(children)]
        return decode_transition(self._call("fail_task", run_id, args))

    @reachable
    def suspend_task(
        self, run_id: str, task_id: str, attempt_id: str, reason: str, now: float
    ) -> Outcome:
        args: list[Arg] = [task_id, dumps(attempt_id), dumps(reason or None), dumps(now)]
        return decode_outcome(self._call("suspend_task", run_id, args))

    @reachable
    def resume_task(
        self, run_id: str, task_id: str, payload: object, now: float
    ) -> tuple[Outcome, TaskRecord | None]:
        args: list[Arg] = [task_id, dumps(payload), dumps(now)]
        return decode_task_reply(self._call("resume_task", run_id, args))

    @reachable
    def cancel_run(self, run_id: str, reason: str, now: float) -> Transition:
        args: list[Arg] = [dumps(reason), dumps(now)]
        return decode_transition(self._call("cancel_run", run_id, args))

    @reachable
    def reopen_run(
        self, run_id: str, expected_retries: int, nodes: Sequence[NodeRecord], now: float
    ) -> Outcome:
        args: list[Arg] = [str(expected_retries), dumps(now)]
        for node in nodes:
            args += [str(node.index), encode_jmap(node.to_dict())]
        return decode_outcome(self._call("reopen_run", run_id, args))


# ---- URLs ------------------------------------------------------------------------------------


def from_url(url: str) -> RedisStore:
    """Entry point for ``redis://host:port/db[?namespace=ns]`` store URLs."""
    client_url, namespace = split_url(url)
    return RedisStore(redis.Redis.from_url(client_url), namespace=namespace)
