"""Key layout of the Redis adapter (see docs/adapters/redis.md).

Every key of one run carries the hash tag ``{run_id}``: Redis Cluster hashes only the part between
the first ``{`` and the next ``}``, so all keys of a run live on one slot and each operation
script may touch all of them. Keys that span runs (the namespace's set of runs holding leases,
the task queue) live outside the run slots and are only ever written by separate commands.
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    """Builds every key of one namespace. The namespace may not contain ``{`` or ``}``."""

    def __init__(self, namespace: str) -> None:
        if not namespace or "{" in namespace or "}" in namespace:
            raise ValueError(f"namespace must be non-empty and free of '{{' and '}}': "
                             f"{namespace!r}")
        self.namespace = namespace
        self._encoded: dict[str, tuple[bytes, ...]] = {}

    def prefix(self, run_id: str) -> str:
        """``<ns>:{<run_id>}``: the prefix (and hash tag) of every key of the run."""
        return f"{self.namespace}:{{{run_id}}}"

    def run_keys(self, run_id: str) -> tuple[str, str, str, str, str]:
        """KEYS of every operation script: run, nodes, tasks, plans, leases."""
        p = self.prefix(run_id)
        return f"{p}:run", f"{p}:nodes", f"{p}:tasks", f"{p}:plans", f"{p}:leases"

    def run_keys_bytes(self, run_id: str) -> tuple[bytes, ...]:
        """``run_keys`` encoded (UTF-8), kept for the last runs used: the client then sends
        them as they are (each script call names all five)."""
        cached = self._encoded.get(run_id)
        if cached is None:
            if len(self._encoded) >= 1024:
                self._encoded.clear()
            cached = tuple(key.encode() for key in self.run_keys(run_id))
            self._encoded[run_id] = cached
        return cached

    def run(self, run_id: str) -> str:
        return f"{self.prefix(run_id)}:run"

    def nodes(self, run_id: str) -> str:
        return f"{self.prefix(run_id)}:nodes"

    def tasks(self, run_id: str) -> str:
        return f"{self.prefix(run_id)}:tasks"

    def plans(self, run_id: str) -> str:
        return f"{self.prefix(run_id)}:plans"

    def leases(self, run_id: str) -> str:
        return f"{self.prefix(run_id)}:leases"

    def unfinished(self, run_id: str, node_index: int) -> str:
        return f"{self.prefix(run_id)}:unfin:{node_index}"

    def node_tasks(self, run_id: str, node_index: int) -> str:
        return f"{self.prefix(run_id)}:ntasks:{node_index}"

    def artifacts(self, run_id: str, node_index: int, generation: int) -> str:
        return f"{self.prefix(run_id)}:arts:{node_index}:{generation}"

    def parents(self, run_id: str, node_index: int) -> str:
        """The parent indices (comma-joined) of a node with more than
        :data:`~interlock_redis.replies.WIDE_PARENTS` parents, stored by the completion that
        sent them (complete_task_prefetch.lua, complete_follow.lua: ``sP``) for the completions
        that name them (``-P``)."""
        return f"{self.prefix(run_id)}:parents:{node_index}"

    @property
    def leased_runs(self) -> str:
        """Namespace-level set of run ids that may hold task leases (for ``list_expired``)."""
        return f"{self.namespace}:leased-runs"

    def stream(self, stream: str) -> str:
        """The task stream; hash tag ``{<stream>}`` so it shares a slot with its delayed set."""
        return f"{self.namespace}:queue:{{{stream}}}"

    def delayed(self, stream: str) -> str:
        """ZSET of refs whose ``not_before`` is in the future, scored by ``not_before``."""
        return f"{self.stream(stream)}:delayed"
