"""In-memory, thread-safe DAG store for Interlock: unit tests of pipelines and local runs."""

from interlock_memory.store import MemoryStore, from_url

__all__ = ["MemoryStore", "from_url"]
