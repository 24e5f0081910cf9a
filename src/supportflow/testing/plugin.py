"""The pytest plugin: fixtures for tests that drive a desk with a manual clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from supportflow.clock import ManualClock
from supportflow.desk import Desk
from supportflow.storage import MemoryStore
from supportflow.testing import DEFAULT_START

# Failing assertions of the kits explain themselves in integrators' test runs.
pytest.register_assert_rewrite(
    "supportflow.testing.storage_contract", "supportflow.testing.notifier_contract"
)


@pytest.fixture
def manual_clock() -> ManualClock:
    """A :class:`ManualClock` at Monday 2 March 2026, 09:00 UTC."""
    return ManualClock(DEFAULT_START)


@pytest.fixture
def memory_desk(manual_clock: ManualClock) -> Iterator[Desk]:
    """A :class:`Desk` with the default rules on a fresh memory store and ``manual_clock``."""
    store = MemoryStore()
    yield Desk(store=store, clock=manual_clock)
    store.close()
