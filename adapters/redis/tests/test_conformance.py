"""The Interlock store conformance suite, run against RedisStore exactly as a user would."""

from __future__ import annotations

from typing import ClassVar

import pytest
import redis

from interlock.protocols import DagStore
from interlock.testing import DagStoreConformance
from interlock_redis import RedisStore


class TestRedisConformance(DagStoreConformance):
    # one store object is thread-safe; separate store objects (separate clients, as in
    # separate worker processes) on one namespace share their data; batched claim/complete;
    # prefetch, handover, stream, launch_many, launch_ahead, read_many
    abilities: ClassVar[frozenset[str]] = frozenset(
        {"threads", "processes", "batched", "prefetch", "handover", "follow", "stream",
         "launch_many", "launch_ahead", "read_many"})

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def make_store(self) -> DagStore:
        return RedisStore(redis.Redis.from_url(self.redis_url), self.unique_namespace())

    def cleanup_store(self, store: DagStore) -> None:
        assert isinstance(store, RedisStore)
        pattern = "".join(f"[{c}]" if c in "*?[]\\" else c for c in store.namespace) + ":*"
        keys = list(store.client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            store.client.delete(*keys[start:start + 500])
        store.client.close()
