"""The memory store runs the conformance harness exactly as a third-party store would."""

from typing import ClassVar

from interlock.testing import DagStoreConformance
from interlock_memory import MemoryStore


class TestMemoryConformance(DagStoreConformance):
    # one store object is thread-safe; it implements claim_tasks / complete_tasks
    abilities: ClassVar[frozenset[str]] = frozenset({"threads", "batched", "handover", "follow",
                                                     "launch_many", "launch_ahead"})

    def make_store(self) -> MemoryStore:
        return MemoryStore()
