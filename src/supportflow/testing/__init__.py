"""Tools for testing with supportflow, and kits for integrators.

- :class:`ManualClock`: a clock that moves only when told to.
- :class:`StorageContract`: subclass it with a ``store`` fixture to prove a storage adapter.
- :class:`NotifierContract`: the same for a notifier.
- :func:`scenario_desk`: a desk on a memory store and a manual clock, in one call.
- :func:`supportflow.testing.postgres.private_schema`: a fresh, migrated PostgreSQL schema
  for one test run (dropped afterwards).

It is also a pytest plugin (entry point ``supportflow``) that provides the fixtures
``manual_clock``, ``memory_notifier`` and ``memory_desk`` (which delivers to
``memory_notifier``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from supportflow.clock import ManualClock
from supportflow.desk import Desk
from supportflow.storage import MemoryStore

if TYPE_CHECKING:
    from supportflow.testing.notifier_contract import NotifierContract
    from supportflow.testing.storage_contract import StorageContract

__all__ = ["DEFAULT_START", "ManualClock", "NotifierContract", "StorageContract", "scenario_desk"]

DEFAULT_START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday morning


def scenario_desk(start: datetime = DEFAULT_START, **options: Any) -> tuple[Desk, ManualClock]:
    """A desk on a fresh :class:`MemoryStore` driven by a :class:`ManualClock` at ``start``.

    >>> desk, clock = scenario_desk()
    >>> clock.advance(days=30) > start                  # doctest: +SKIP
    True
    """
    clock = ManualClock(start)
    options.setdefault("store", MemoryStore())
    return Desk(clock=clock, **options), clock


def __getattr__(name: str) -> object:
    # The kits import pytest; load them only when asked for.
    if name == "StorageContract":
        from supportflow.testing.storage_contract import StorageContract

        return StorageContract
    if name == "NotifierContract":
        from supportflow.testing.notifier_contract import NotifierContract

        return NotifierContract
    raise AttributeError(f"module 'supportflow.testing' has no attribute {name!r}")
