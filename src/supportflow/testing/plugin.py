"""The pytest plugin: fixtures for tests that drive a desk with a manual clock.

Installed with supportflow (entry point ``supportflow``); without installing, load it with
``pytest -p supportflow.testing.plugin``. Every fixture is made afresh for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from supportflow.clock import ManualClock
from supportflow.desk import Desk
from supportflow.model import RecipientRole
from supportflow.notify import MemoryNotifier
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
def memory_notifier(manual_clock: ManualClock) -> MemoryNotifier:
    """A :class:`MemoryNotifier` on ``manual_clock``: what ``memory_desk`` delivered."""
    return MemoryNotifier(clock=manual_clock)


@pytest.fixture
def memory_desk(manual_clock: ManualClock, memory_notifier: MemoryNotifier) -> Iterator[Desk]:
    """A :class:`Desk` with the default rules on a fresh memory store and ``manual_clock``;
    ``desk.deliver_pending()`` delivers every role's notifications to ``memory_notifier``."""
    store = MemoryStore()
    yield Desk(
        store=store,
        clock=manual_clock,
        notifiers=dict.fromkeys(RecipientRole, memory_notifier),
    )
    store.close()
