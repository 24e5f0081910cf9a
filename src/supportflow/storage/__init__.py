"""The storage port and its adapters.

A :class:`Storage` hands out units of work; inside one, a handful of coarse calls read and
write tickets, events, timers, outbox rows and records. Either everything written inside a
unit of work is committed, or none of it is.

Adapters: :class:`MemoryStore` (tests, benchmarks), ``SqliteStore`` (the embedded default) and
``SqlStore`` (SQLAlchemy 2 Core, PostgreSQL; extra ``sql``).
"""

from __future__ import annotations

from supportflow.storage._port import (
    OutboxEntry,
    OutboxStatus,
    Record,
    Storage,
    TicketQuery,
    UnitOfWork,
)
from supportflow.storage.memory import MemoryStore

__all__ = [
    "MemoryStore",
    "OutboxEntry",
    "OutboxStatus",
    "Record",
    "SqlStore",
    "SqliteStore",
    "Storage",
    "TicketQuery",
    "UnitOfWork",
    "open_store",
]


def open_store(location: str) -> Storage:
    """A store from a location string: ``"memory"``, a SQLAlchemy URL (``"postgresql+psycopg://
    ..."``, ``"sqlite:///desk.db"``) or a SQLite file path (``"desk.db"``, ``":memory:"``)."""
    if location == "memory":
        return MemoryStore()
    if "://" in location:
        from supportflow.storage.sql import SqlStore

        return SqlStore(location, create=True)
    from supportflow.storage.sqlite import SqliteStore

    return SqliteStore(location)


def __getattr__(name: str) -> object:
    # Adapters with optional dependencies load on first use.
    if name == "SqliteStore":
        from supportflow.storage.sqlite import SqliteStore

        return SqliteStore
    if name == "SqlStore":
        from supportflow.storage.sql import SqlStore

        return SqlStore
    raise AttributeError(f"module 'supportflow.storage' has no attribute {name!r}")
