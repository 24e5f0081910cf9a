"""What ``SqliteStore`` promises beyond the port: its file settings, schema and locking."""

from __future__ import annotations

import functools
import math
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supportflow.errors import ConcurrencyConflict, ValidationError
from supportflow.events import Event
from supportflow.model import Timer
from supportflow.storage import Storage, TicketQuery
from supportflow.storage.sqlite import SCHEMA_VERSION, SqliteStore
from supportflow.testing.storage_contract import (
    _claim_in_process,
    make_ticket,
    notification,
    record,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "desk.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(path)
    yield store
    store.close()


def _pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]


def test_the_file_runs_in_wal_mode(store: SqliteStore, path: Path) -> None:
    assert _pragma(path, "journal_mode") == "wal"


def test_connections_enforce_foreign_keys_and_normal_sync(store: SqliteStore) -> None:
    with store.transaction():
        connection = store._connection()
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_new_file_gets_the_current_schema_version(store: SqliteStore, path: Path) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(path) as connection:
        versions = [v for (v,) in connection.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_reopening_migrates_nothing_and_keeps_the_data(path: Path) -> None:
    first = SqliteStore(path)
    with first.transaction() as uow:
        uow.insert_ticket(make_ticket())
        assert uow.next_ticket_number() == 1
    first.close()
    for _ in range(3):
        again = SqliteStore(path)
        with again.transaction() as uow:
            assert uow.get_ticket("t-1") == make_ticket()
            assert uow.next_ticket_number() > 1
        assert again.schema_version() == SCHEMA_VERSION
        again.close()
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM schema_version").fetchone()
    assert count == SCHEMA_VERSION


def test_a_file_from_a_newer_version_is_refused(path: Path) -> None:
    SqliteStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(ValidationError, match="newer supportflow"):
        SqliteStore(path)


def _open_sql_store(path: Path) -> Storage:
    from supportflow.storage.sql import SqlStore

    return SqlStore(f"sqlite:///{path}", create=True)


@pytest.mark.parametrize("opener", [SqliteStore, _open_sql_store], ids=["sqlite", "sql"])
def test_timers_of_a_version_2_file_keep_their_claim_order(
    path: Path, opener: Callable[[Path], Storage]
) -> None:
    # A file from before generations: ties were claimed in rowid order, and still are; a
    # deadline set after the upgrade goes behind them. Either adapter migrates it.
    from supportflow.storage.sqlite import MIGRATIONS

    due = int((T0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        for number, statements in enumerate(MIGRATIONS[:2], start=1):
            for statement in statements:
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version VALUES (?, 0)", (number,))
        connection.executemany(
            "INSERT INTO timers (ticket_id, key, due_at, kind) VALUES (?, ?, ?, 'sla')",
            [("t-2", "b", due), ("t-1", "c", due), ("t-3", "a", due - 1)],
        )
    connection.close()
    store = opener(path)
    try:
        with store.transaction() as uow:
            uow.replace_timers("t-0", [Timer("t-0", "a", T0)])
        with store.transaction() as uow:
            claimed = uow.claim_due_timers(T0, 10, "w", LEASE)
    finally:
        store.close()
    assert [f"{t.ticket_id}/{t.key}" for t in claimed] == ["t-3/a", "t-2/b", "t-1/c", "t-0/a"]
    with sqlite3.connect(path) as connection:
        versions = [v for (v,) in connection.execute("SELECT version FROM schema_version")]
        indexed = [row[2] for row in connection.execute("PRAGMA index_info(timers_due)")]
    connection.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert indexed == ["due_at", "generation"]


def _open_and_count(path: str) -> int:
    store = SqliteStore(path)
    try:
        with store.transaction() as uow:
            return uow.next_ticket_number()
    finally:
        store.close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        numbers = pool.map(_open_and_count, [str(path)] * 8)
    assert sorted(numbers) == list(range(1, 9))
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM schema_version").fetchone()
    assert count == SCHEMA_VERSION


def test_two_processes_never_claim_the_same_timer(store: SqliteStore, path: Path) -> None:
    with store.transaction() as uow:
        for n in range(400):
            due = T0 + timedelta(seconds=n % 97)
            uow.replace_timers(f"t-{n}", [Timer(f"t-{n}", "k", due, "sla")])
    opener = functools.partial(SqliteStore, str(path))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(
            _claim_in_process, [(opener, f"p{n}", T0 + timedelta(minutes=5)) for n in range(2)]
        )
    claimed = [key for result in results for key in result]
    assert len(claimed) == len(set(claimed)) == 400


def test_claiming_walks_the_due_index(store: SqliteStore) -> None:
    with store.transaction():
        plan = " ".join(
            row[3]
            for row in store._connection().execute(
                "EXPLAIN QUERY PLAN SELECT ticket_id, key, due_at, kind FROM timers"
                " WHERE due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
                " ORDER BY due_at, generation LIMIT ?",
                (0, 0, 10),
            )
        )
    assert "timers_due" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the matching rows


def test_event_pages_walk_the_time_index(store: SqliteStore) -> None:
    with store.transaction():
        plan = " ".join(
            row[3]
            for row in store._connection().execute(
                "EXPLAIN QUERY PLAN SELECT * FROM events WHERE at >= ? AND (at, position) > (?, ?)"
                " ORDER BY at, position LIMIT 500",
                (0, 0, 0),
            )
        )
    assert "events_at" in plan
    assert "TEMP B-TREE" not in plan


def test_each_thread_has_its_own_connection(store: SqliteStore) -> None:
    seen: list[int] = []

    def grab() -> None:
        seen.append(id(store._connection()))

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 3


def test_a_nested_transaction_joins_the_outer_one(store: SqliteStore) -> None:
    def nest() -> None:
        with store.transaction() as outer:
            outer.insert_ticket(make_ticket("t-1", 1))
            with store.transaction() as inner:
                assert inner is outer
                inner.insert_ticket(make_ticket("t-2", 2))
            raise RuntimeError("the outer block decides")

    with pytest.raises(RuntimeError):
        nest()
    with store.transaction() as uow:
        assert uow.find_tickets(TicketQuery()) == []


def test_a_busy_writer_makes_others_wait_then_fail(path: Path) -> None:
    patient = SqliteStore(path, busy_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"), patient.transaction():
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        patient.close()


def test_a_closed_store_refuses_work(path: Path) -> None:
    closed = SqliteStore(path)
    closed.close()
    with pytest.raises(sqlite3.ProgrammingError), closed.transaction():
        pass


def test_memory_stores_are_separate() -> None:
    one, two = SqliteStore(), SqliteStore(":memory:")
    with one.transaction() as uow:
        uow.insert_ticket(make_ticket())
    with two.transaction() as uow:
        assert uow.find_tickets(TicketQuery()) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda uow: uow.claim_due_timers(datetime(2026, 1, 1), 1, "w", LEASE),
        lambda uow: uow.claim_due_timers(T0, -1, "w", LEASE),
        lambda uow: uow.claim_due_timers(T0, 1, "w", timedelta(0)),
        lambda uow: uow.claim_due_timers(T0, 1, "", LEASE),
        lambda uow: uow.claim_notifications(T0, 1, "w", -LEASE),
        lambda uow: uow.find_tickets(TicketQuery(status="open")),
        lambda uow: uow.find_tickets(TicketQuery(limit=-1)),
        lambda uow: uow.replace_timers("t-1", [Timer("t-2", "k", T0)]),
        lambda uow: uow.replace_timers("t-1", [Timer("t-1", "k", T0), Timer("t-1", "k", T0)]),
        lambda uow: uow.append_events([Event("t-1", 1, "X", datetime(2026, 1, 1), "a", {})]),
        lambda uow: uow.append_events([Event("t-1", 0, "X", T0, "a", {})]),
        lambda uow: uow.append_events([Event("t-1", 1, "X", T0, "a", {"x": math.nan})]),
        lambda uow: uow.put_record(record("k", "1", data={"x": object()})),
        lambda uow: uow.list_outbox("lost"),
    ],
)
def test_bad_input_raises_validation_error(store: Storage, call: object) -> None:
    with pytest.raises(ValidationError), store.transaction() as uow:
        call(uow)  # type: ignore[operator]


def test_sqlstore_and_sqlitestore_read_each_others_files(path: Path) -> None:
    from supportflow.storage.sql import SqlStore, migrate

    assert migrate(f"sqlite:///{path}") == SCHEMA_VERSION
    via_sql = SqlStore(f"sqlite:///{path}")
    with via_sql.transaction() as uow:
        uow.insert_ticket(make_ticket("t-1", 1, tags={"a"}))
        uow.replace_timers("t-1", [Timer("t-1", "k", T0)])
    via_sql.close()
    via_sqlite = SqliteStore(path)
    with via_sqlite.transaction() as uow:
        assert uow.get_ticket("t-1") == make_ticket("t-1", 1, tags={"a"})
        assert [t.id for t in uow.find_tickets(TicketQuery(tag="a"))] == ["t-1"]
        assert uow.timers("t-1") == [Timer("t-1", "k", T0)]
        uow.insert_ticket(make_ticket("t-2", 2))
    via_sqlite.close()
    again = SqlStore(f"sqlite:///{path}")
    with again.transaction() as uow:
        assert uow.get_ticket("t-2") == make_ticket("t-2", 2)
    again.close()


def _event(ticket_id: str, sequence: int) -> Event:
    return Event(ticket_id, sequence, "NoteAdded", datetime(2026, 3, 2, tzinfo=timezone.utc), "a")


@pytest.mark.parametrize(
    "batch",
    [
        [("t-2", 1), ("t-1", 2), ("t-1", 3)],  # repeats after a good row of another ticket
        [("t-1", 3), ("t-1", 4)],  # a repeat, then what would be the next sequence
        [("t-2", 1), ("t-1", 5)],  # a gap
    ],
)
def test_a_refused_event_batch_leaves_nothing_even_in_the_same_unit_of_work(
    store: SqliteStore, batch: list[tuple[str, int]]
) -> None:
    with store.transaction() as uow:
        uow.append_events([_event("t-1", n) for n in (1, 2, 3)])
    with store.transaction() as uow:
        with pytest.raises(ConcurrencyConflict) as refused:
            uow.append_events([_event(ticket_id, n) for ticket_id, n in batch])
        assert (refused.value.ticket_id, refused.value.expected_version) == ("t-1", 4)
        assert [e.sequence for e in uow.history("t-1")] == [1, 2, 3]
        assert uow.history("t-2") == []


@pytest.mark.parametrize("opener", [SqliteStore, _open_sql_store], ids=["sqlite", "sql"])
def test_outbox_rows_of_a_version_3_file_are_kept_and_count_their_claims(
    path: Path, opener: Callable[[Path], Storage]
) -> None:
    # A file from before claims were counted. Its rows are kept as they were; a pending row
    # counts the claims its failures came from, and the lease it is under (that worker's
    # result may never come), so its deliveries that never finish are counted from the start.
    from supportflow.storage._codec import dump_json, notification_to_doc
    from supportflow.storage.sqlite import MIGRATIONS

    def micros(instant: datetime) -> int:
        return int(
            (instant - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1)
        )

    keys = ("n-new", "n-retry", "n-held", "n-dead", "n-sent")
    notes = {key: notification(key) for key in keys}
    rows = [  # key, status, attempts, lease owner, lease until, delivered at
        ("n-new", "pending", 0, None, None, None),
        ("n-retry", "pending", 2, None, None, None),
        ("n-held", "pending", 1, "dead-worker", micros(T0 + LEASE), None),
        ("n-dead", "dead", 6, None, None, None),
        ("n-sent", "delivered", 1, None, None, micros(T0)),
    ]
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        for number, statements in enumerate(MIGRATIONS[:3], start=1):
            for statement in statements:
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version VALUES (?, 0)", (number,))
        connection.executemany(
            "INSERT INTO outbox (key, status, next_attempt_at, attempts, lease_owner,"
            " lease_until, doc, last_error, delivered_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (key, status, micros(T0), attempts, owner, until,
                 dump_json(notification_to_doc(notes[key]), "notification"),
                 "timeout" if attempts else None, sent, micros(T0))
                for key, status, attempts, owner, until, sent in rows
            ],
        )  # fmt: skip
    connection.close()
    store = opener(path)
    try:
        with store.transaction() as uow:
            entries = {key: uow.outbox_entry(key) for key in notes}
        with store.transaction() as uow:
            claimed = uow.claim_notifications(T0 + LEASE, 10, "w", LEASE)
    finally:
        store.close()
    found = {
        key: (e.notification == notes[key], e.status.value, e.attempts, e.last_error, e.claims)
        for key, e in entries.items()
        if e is not None
    }
    assert found == {
        "n-new": (True, "pending", 0, None, 0),
        "n-retry": (True, "pending", 2, "timeout", 2),
        "n-held": (True, "pending", 1, "timeout", 2),
        "n-dead": (True, "dead", 6, "timeout", 0),
        "n-sent": (True, "delivered", 1, "timeout", 0),
    }
    assert [(e.key, e.claims) for e in claimed] == [("n-held", 3), ("n-new", 1), ("n-retry", 3)]
    with sqlite3.connect(path) as connection:
        versions = [v for (v,) in connection.execute("SELECT version FROM schema_version")]
    connection.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
