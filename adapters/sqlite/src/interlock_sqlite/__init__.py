"""SQLite store for Interlock: one database file shared by threads and processes (WAL mode).

``SqliteStore(path)`` or ``interlock.open_store("sqlite:///path.db")``; see docs/adapters/sqlite.md.
"""

from interlock_sqlite.connections import SqliteBusy
from interlock_sqlite.schema import SCHEMA_VERSION, SchemaVersionError
from interlock_sqlite.store import SqliteStore
from interlock_sqlite.url import from_url

__all__ = ["SCHEMA_VERSION", "SchemaVersionError", "SqliteBusy", "SqliteStore", "from_url"]
