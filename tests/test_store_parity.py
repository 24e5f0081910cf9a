"""Timer rows on the memory store and on SQLite: the same input gives the same answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from supportflow.errors import ValidationError
from supportflow.model import Timer
from supportflow.storage import MemoryStore, Storage
from supportflow.storage.sqlite import SqliteStore

T0 = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
STORES: dict[str, Callable[[], Storage]] = {
    "memory": MemoryStore,
    "sqlite": lambda: SqliteStore(":memory:"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Iterator[Storage]:
    made = STORES[request.param]()
    yield made
    made.close()


def timer(ticket_id: str, key: str, minutes: int, kind: str = "sla_warning") -> Timer:
    return Timer(ticket_id, key, T0 + timedelta(minutes=minutes), kind)


def stored(store: Storage, ticket_id: str) -> list[tuple[str, datetime, str]]:
    with store.transaction() as uow:
        return [(t.key, t.due_at, t.kind) for t in uow.timers(ticket_id)]


@pytest.mark.parametrize(
    ("timers", "field"),
    [
        ([timer("t-1", "a", 5), timer("t-2", "b", 6)], "timer.ticket_id"),
        ([timer("t-1", "a", 5), timer("t-1", "a", 5)], "timer.key"),
    ],
    ids=["another ticket's timer", "a key twice"],
)
def test_bad_timers_are_refused_whole_even_when_the_deadlines_match(
    store: Storage, timers: list[Timer], field: str
) -> None:
    with store.transaction() as uow:
        uow.replace_timers("t-1", [timer("t-1", "a", 5), timer("t-1", "b", 6)])
    before = stored(store, "t-1")
    with pytest.raises(ValidationError) as raised, store.transaction() as uow:
        uow.replace_timers("t-1", timers)
    assert raised.value.field == field
    assert stored(store, "t-1") == before


def test_a_new_kind_on_the_same_deadline_is_stored_and_keeps_the_lease(store: Storage) -> None:
    with store.transaction() as uow:
        uow.replace_timers("t-1", [timer("t-1", "a", 5, "sla_warning")])
    with store.transaction() as uow:
        claimed = uow.claim_due_timers(T0 + timedelta(minutes=5), 10, "w-1", timedelta(hours=1))
    assert [t.key for t in claimed] == ["a"]
    with store.transaction() as uow:
        uow.replace_timers("t-1", [timer("t-1", "a", 5, "sla_breach")])
    assert stored(store, "t-1") == [("a", T0 + timedelta(minutes=5), "sla_breach")]
    with store.transaction() as uow:  # still leased to w-1: nobody else claims it
        assert uow.claim_due_timers(T0 + timedelta(minutes=6), 10, "w-2", timedelta(hours=1)) == []
