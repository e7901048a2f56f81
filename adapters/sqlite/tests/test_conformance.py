"""The store contract, checked by the public conformance harness, exactly as a user would.

Every test gets its own database file (named by the harness's ``unique_namespace()``); the
stores ``make_store()`` returns within one test open the same file, so the ``processes`` ability
holds: separate store objects share their data like worker processes on one file do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.protocols import DagStore
from interlock.testing import DagStoreConformance
from interlock_sqlite import SqliteStore


class TestSqliteConformance(DagStoreConformance):
    abilities = frozenset({"threads", "processes", "batched", "handover", "follow", "stream",
                           "launch_many", "launch_ahead"})

    @pytest.fixture(autouse=True)
    def _database_dir(self, tmp_path: Path) -> None:
        self.database_dir = tmp_path

    def make_store(self) -> SqliteStore:
        return SqliteStore(self.database_dir / f"{self.unique_namespace()}.db")

    def cleanup_store(self, store: DagStore) -> None:
        assert isinstance(store, SqliteStore)
        store.close()  # the file itself goes with tmp_path
