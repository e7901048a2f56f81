"""The memory store runs the conformance harness exactly as a third-party store would."""

from interlock.testing import DagStoreConformance
from interlock_memory import MemoryStore


class TestMemoryConformance(DagStoreConformance):
    def make_store(self) -> MemoryStore:
        return MemoryStore()
