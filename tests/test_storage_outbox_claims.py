"""Claims counting and release agree across stores, whatever the order of outbox calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from supportflow.storage import Storage
from supportflow.storage.memory import MemoryStore
from supportflow.storage.sqlite import SqliteStore
from supportflow.testing.storage_contract import at, notification

KEYS = ("n-0", "n-1", "n-2")
OWNERS = ("w0", "w1", "w2")
LEASE = timedelta(minutes=5)

_retry = st.one_of(st.none(), st.integers(0, 20))
_step = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from(KEYS)),
    st.tuples(st.just("claim"), st.sampled_from(OWNERS), st.integers(1, 3)),
    st.tuples(st.just("fail"), st.sampled_from(KEYS), _retry, st.sampled_from((None, *OWNERS))),
    st.tuples(st.just("deliver"), st.sampled_from(KEYS)),
    st.tuples(
        st.just("release"), st.lists(st.sampled_from(KEYS), max_size=3), st.sampled_from(OWNERS)
    ),
    st.tuples(st.just("requeue"), st.sampled_from(KEYS)),
    st.tuples(st.just("wait"), st.integers(1, 7)),
)


def _apply(store: Storage, minute: int, step: tuple[Any, ...]) -> object:
    with store.transaction() as uow:
        kind = step[0]
        if kind == "enqueue":
            uow.enqueue([notification(step[1], 0)])
        elif kind == "claim":
            claimed = uow.claim_notifications(at(minute), step[2], step[1], LEASE)
            return [(e.key, e.claims, e.attempts) for e in claimed]
        elif kind == "fail":
            retry = at(minute + step[2]) if step[2] is not None else None
            uow.mark_failed(step[1], "timeout", retry, step[3])
        elif kind == "deliver":
            uow.mark_delivered(step[1], at(minute))
        elif kind == "release":
            uow.release_notifications(step[1], step[2])
        elif kind == "requeue":
            uow.requeue(step[1], at(minute))
        return None


def _state(store: Storage) -> dict[str, tuple[Any, ...]]:
    with store.transaction() as uow:
        found = {key: uow.outbox_entry(key) for key in KEYS}
    return {
        key: (e.status, e.attempts, e.claims, e.next_attempt_at, e.last_error)
        for key, e in found.items()
        if e is not None
    }


@settings(max_examples=75, deadline=None)
@given(st.lists(_step, max_size=25))
def test_stores_agree_on_claims_and_releases(steps: list[tuple[Any, ...]]) -> None:
    from supportflow.storage.sql import SqlStore

    stores: list[Storage] = [MemoryStore(), SqliteStore(), SqlStore("sqlite://", create=True)]
    minute = 0
    try:
        for step in steps:
            if step[0] == "wait":
                minute += step[1]
                continue
            answers = [_apply(store, minute, step) for store in stores]
            assert answers == [answers[0]] * len(stores), step
            states = [_state(store) for store in stores]
            assert states == [states[0]] * len(stores), step
        assert all(claims >= 0 for _, _, claims, _, _ in _state(stores[0]).values())
    finally:
        for store in stores:
            store.close()
