"""The storage contract, run against every adapter.

PostgreSQL runs when ``SUPPORTFLOW_PG_URL`` is set (``.ci/run`` starts a throw-away server and
sets it). Without it the PostgreSQL tests are skipped, except on CI (``CI=true``), where a
missing server is a failure.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

# The kit's plain asserts should explain themselves when they fail.
pytest.register_assert_rewrite("supportflow.testing.storage_contract")

from supportflow.errors import ConcurrencyConflict, ValidationError  # noqa: E402
from supportflow.model import Timer  # noqa: E402
from supportflow.storage import MemoryStore, Storage, UnitOfWork  # noqa: E402
from supportflow.storage.sqlite import SqliteStore  # noqa: E402
from supportflow.testing.postgres import private_schema  # noqa: E402
from supportflow.testing.storage_contract import (  # noqa: E402
    StorageContract,
    event,
    make_ticket,
    notification,
    record,
)


class TestMemoryStore(StorageContract):
    @pytest.fixture
    def store(self) -> Iterator[Storage]:
        store = MemoryStore()
        yield store
        store.close()


class TestSqliteMemory(StorageContract):
    @pytest.fixture
    def store(self) -> Iterator[Storage]:
        store = SqliteStore(":memory:")
        yield store
        store.close()


class TestSqliteFile(StorageContract):
    supports_multiple_processes = True

    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "desk.db"

    @pytest.fixture
    def store(self, path: Path) -> Iterator[Storage]:
        store = SqliteStore(path)
        yield store
        store.close()

    @pytest.fixture
    def store_opener(self, path: Path) -> Callable[[], Storage]:
        return functools.partial(SqliteStore, str(path))


class TestSqlStoreOnSqlite(StorageContract):
    supports_multiple_processes = True

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'desk-sql.db'}"

    @pytest.fixture
    def store(self, url: str) -> Iterator[Storage]:
        from supportflow.storage.sql import SqlStore

        store = SqlStore(url, create=True)
        yield store
        store.close()

    @pytest.fixture
    def store_opener(self, url: str) -> Callable[[], Storage]:
        from supportflow.storage.sql import SqlStore

        return functools.partial(SqlStore, url)


def _pg_url() -> str:
    url = os.environ.get("SUPPORTFLOW_PG_URL", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but SUPPORTFLOW_PG_URL is not set: .ci/run should start PostgreSQL"
            )
        pytest.skip("SUPPORTFLOW_PG_URL is not set (run .ci/run, or point it at a PostgreSQL)")
    return url


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A URL whose connections use a private schema, created once and dropped at the end."""
    with private_schema(_pg_url(), "sf_test") as url:
        yield url


def _truncate_all(url: str) -> None:
    import sqlalchemy as sa

    from supportflow.storage.sql import make_engine, metadata

    engine = make_engine(url)
    names = ", ".join(
        f'"{table.name}"' for table in metadata.sorted_tables if table.name != "schema_version"
    )
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
        connection.execute(sa.text("ALTER SEQUENCE ticket_number_seq RESTART WITH 1"))
        connection.execute(
            sa.text("INSERT INTO counters (name, value) VALUES ('ticket_number', 0)")
        )
    engine.dispose()


@pytest.mark.postgres
class TestSqlStoreOnPostgres(StorageContract):
    supports_multiple_processes = True

    @pytest.fixture
    def store(self, pg_schema_url: str) -> Iterator[Storage]:
        from supportflow.storage.sql import SqlStore

        _truncate_all(pg_schema_url)
        store = SqlStore(pg_schema_url)
        yield store
        store.close()

    @pytest.fixture
    def store_opener(self, pg_schema_url: str) -> Callable[[], Storage]:
        from supportflow.storage.sql import SqlStore

        return functools.partial(SqlStore, pg_schema_url)


# -- SqlStore specifics ---------------------------------------------------------------------------
def test_sqlalchemy_is_imported_only_by_the_sql_adapter() -> None:
    code = (
        "import sys, supportflow.storage as s; s.SqliteStore; "
        "assert 'sqlalchemy' not in sys.modules, 'imported early'; "
        "s.SqlStore; assert 'sqlalchemy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_a_database_without_the_schema_is_refused_with_advice(tmp_path: Path) -> None:
    from supportflow.storage.sql import SqlStore

    with pytest.raises(ValidationError, match="supportflow migrate"):
        SqlStore(f"sqlite:///{tmp_path / 'empty.db'}")


def test_migrate_is_idempotent_on_sqlite(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from supportflow.storage.sql import SCHEMA_VERSION, SqlStore, migrate

    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert migrate(url) == SCHEMA_VERSION
    assert migrate(url) == SCHEMA_VERSION
    store = SqlStore(url)
    with store.engine.connect() as connection:
        count = connection.execute(sa.text("SELECT COUNT(*) FROM schema_version")).scalar()
    store.close()
    assert count == SCHEMA_VERSION


def test_sqlstore_accepts_an_in_memory_sqlite_url() -> None:
    from supportflow.storage.sql import SqlStore

    store = SqlStore("sqlite://", create=True)
    with store.transaction() as uow:
        assert uow.next_ticket_number() == 1
    store.close()


# A SqlStore on an engine made with plain `sqlalchemy.create_engine`, without the
# `json_serializer` that make_engine sets: its documents must still be written by dump_json.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def plain_engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_schema_url")
        _truncate_all(url)
        return url
    return f"sqlite:///{tmp_path / 'plain-engine.db'}"


@pytest.fixture
def plain_engine_store(plain_engine_url: str) -> Iterator[Storage]:
    import sqlalchemy as sa

    from supportflow.storage.sql import SqlStore

    engine = sa.create_engine(plain_engine_url)
    store = SqlStore(engine, create=True)
    yield store
    store.close()
    engine.dispose()


_LARGE_FLOATS = {"v0": 1e16, "v1": -2.5e300, "v2": [{"v": 1e20}]}  # keys jsonb keeps in order


def test_a_store_on_a_plain_engine_reads_large_floats_back_as_floats(
    plain_engine_store: Storage, plain_engine_url: str
) -> None:
    import sqlalchemy as sa

    from supportflow.storage._codec import dump_json
    from supportflow.storage.sql import SqlStore

    data = _LARGE_FLOATS
    with plain_engine_store.transaction() as uow:
        uow.insert_ticket(make_ticket(fields=data))
        uow.append_events([event("t-1", 1, 0, **data)])
        uow.put_record(record("survey", "r-1", data=data))
        uow.enqueue([notification("n-1", data=data)])
    reader = SqlStore(plain_engine_url)  # decodes afresh: no cache of what was written
    try:
        with reader.transaction() as uow:
            stored = uow.get_record("survey", "r-1")
            entry = uow.outbox_entry("n-1")
            assert stored is not None
            assert entry is not None
            read = [
                uow.get_ticket("t-1").fields,
                uow.history("t-1")[0].data,
                stored.data,
                entry.notification.data,
            ]
        with reader.engine.connect() as connection:
            text = connection.execute(sa.text("SELECT CAST(data AS TEXT) FROM records")).scalar()
    finally:
        reader.close()
    for found in read:
        assert repr(dict(found)) == repr(data)  # 1e16, not 10000000000000000
    if not plain_engine_url.startswith("postgresql"):  # jsonb keeps no text
        assert text == dump_json(data)


@pytest.mark.parametrize(
    ("write", "field"),
    [
        (lambda uow: uow.insert_ticket(make_ticket(fields={"score": math.nan})), "ticket"),
        (lambda uow: uow.append_events([event("t-1", 1, 0, score=math.nan)]), "event.data"),
        (lambda uow: uow.put_record(record("r", "1", data={"score": math.nan})), "record.data"),
        (lambda uow: uow.enqueue([notification("n-1", data={"s": math.inf})]), "notification"),
    ],
    ids=["ticket", "event", "record", "notification"],
)
def test_a_store_on_a_plain_engine_refuses_nan_by_name(
    plain_engine_store: Storage, write: Callable[[UnitOfWork], object], field: str
) -> None:
    with plain_engine_store.transaction() as uow:
        with pytest.raises(ValidationError) as refused:
            write(uow)
        assert refused.value.field == field
        uow.put_record(record("kept", "r-2"))  # the unit of work goes on
    with plain_engine_store.transaction() as uow:
        assert uow.get_record("kept", "r-2") is not None
        assert uow.get_record("r", "1") is None


@pytest.mark.postgres
def test_postgres_migrations_from_many_threads_run_once(pg_schema_url: str) -> None:
    import sqlalchemy as sa

    from supportflow.storage.sql import SCHEMA_VERSION, create_schema, make_engine

    engine = make_engine(pg_schema_url)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            create_schema(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT COUNT(*) FROM schema_version")).scalar()
    engine.dispose()
    assert errors == []
    assert count == SCHEMA_VERSION


@pytest.mark.postgres
def test_postgres_keeps_instants_as_timestamptz_to_the_microsecond(pg_schema_url: str) -> None:
    import sqlalchemy as sa

    from supportflow.model import Timer
    from supportflow.storage.sql import SqlStore

    _truncate_all(pg_schema_url)
    store = SqlStore(pg_schema_url)
    due = datetime(2026, 3, 2, 17, 0, 0, 654321, tzinfo=timezone(timedelta(hours=8)))
    with store.transaction() as uow:
        uow.replace_timers("t-1", [Timer("t-1", "k", due)])
    with store.engine.connect() as connection:
        kind = connection.execute(
            sa.text("SELECT pg_typeof(due_at)::text FROM timers WHERE key = 'k'")
        ).scalar()
    with store.transaction() as uow:
        (timer,) = uow.timers("t-1")
    store.close()
    assert kind == "timestamp with time zone"
    assert timer.due_at == due
    assert timer.due_at.tzinfo == timezone.utc


@pytest.mark.postgres
def test_postgres_timers_of_a_version_2_schema_get_generations() -> None:
    # Step 3 on a schema from before generations (its own schema: this one is taken back to
    # version 2 first): the timers stored are numbered, and new deadlines draw after them.
    import sqlalchemy as sa

    from supportflow.storage.sql import SCHEMA_VERSION, SqlStore, make_engine, migrate

    due = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    with private_schema(_pg_url(), "sf_test") as url:
        engine = make_engine(url)
        with engine.begin() as connection:
            for statement in (
                "DROP INDEX timers_due",
                "ALTER TABLE timers DROP COLUMN generation",
                "DROP SEQUENCE timer_generation_seq",
                "CREATE INDEX timers_due ON timers (due_at)",
                "DELETE FROM schema_version WHERE version >= 3",
                "INSERT INTO timers (ticket_id, key, due_at, kind)"
                " VALUES ('t-2', 'b', :due, 'sla'), ('t-1', 'c', :due, 'sla')",
            ):
                connection.execute(sa.text(statement), {"due": due})
        assert migrate(url) == SCHEMA_VERSION
        store = SqlStore(engine)
        with store.transaction() as uow:
            uow.replace_timers("t-0", [Timer("t-0", "a", due)])
        with store.transaction() as uow:
            claimed = uow.claim_due_timers(due, 10, "w", timedelta(minutes=5))
        with engine.connect() as connection:
            numbers = connection.execute(
                sa.text("SELECT ticket_id, generation FROM timers ORDER BY generation")
            ).all()
        store.close()
        engine.dispose()
    assert [ticket_id for ticket_id, _ in numbers][-1] == "t-0"
    assert len({generation for _, generation in numbers}) == 3
    assert [f"{t.ticket_id}/{t.key}" for t in claimed][-1] == "t-0/a"


@pytest.mark.postgres
def test_postgres_outbox_rows_of_a_version_3_schema_are_kept_and_count_their_claims() -> None:
    # Step 4 on a schema from before claims were counted (its own schema, taken back to
    # version 3 first): rows are kept; a pending row counts the claims its failures came
    # from and the lease it is under.
    import sqlalchemy as sa

    from supportflow.storage._codec import dump_json, notification_to_doc
    from supportflow.storage.sql import SCHEMA_VERSION, SqlStore, make_engine, migrate
    from supportflow.testing.storage_contract import notification

    t0 = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    lease = timedelta(minutes=5)
    rows = [  # key, status, attempts, lease owner, lease until
        ("n-new", "pending", 0, None, None),
        ("n-retry", "pending", 2, None, None),
        ("n-held", "pending", 1, "dead-worker", t0 + lease),
        ("n-dead", "dead", 6, None, None),
    ]
    with private_schema(_pg_url(), "sf_test") as url:
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE outbox DROP COLUMN claims"))
            connection.execute(sa.text("DELETE FROM schema_version WHERE version >= 4"))
            for key, status, attempts, owner, until in rows:
                connection.execute(
                    sa.text(
                        "INSERT INTO outbox (key, status, next_attempt_at, attempts, lease_owner,"
                        " lease_until, doc, created_at) VALUES (:key, :status, :t0, :attempts,"
                        " :owner, :until, CAST(:doc AS jsonb), :t0)"
                    ),
                    {
                        "key": key,
                        "status": status,
                        "t0": t0,
                        "attempts": attempts,
                        "owner": owner,
                        "until": until,
                        "doc": dump_json(notification_to_doc(notification(key)), "notification"),
                    },
                )
        assert migrate(url) == SCHEMA_VERSION
        store = SqlStore(engine)
        with store.transaction() as uow:
            entries = {key: uow.outbox_entry(key) for key, *_ in rows}
        with store.transaction() as uow:
            claimed = uow.claim_notifications(t0 + lease, 10, "w", lease)
        with store.transaction() as uow:
            uow.enqueue([notification("n-later")])
            later = uow.outbox_entry("n-later")
        store.close()
        engine.dispose()
    found = {
        key: (e.notification == notification(key), e.status.value, e.attempts, e.claims)
        for key, e in entries.items()
        if e is not None
    }
    assert found == {
        "n-new": (True, "pending", 0, 0),
        "n-retry": (True, "pending", 2, 2),
        "n-held": (True, "pending", 1, 2),
        "n-dead": (True, "dead", 6, 0),
    }
    assert [(e.key, e.claims) for e in claimed] == [("n-held", 3), ("n-new", 1), ("n-retry", 3)]
    assert later is not None
    assert later.claims == 0


@pytest.mark.postgres
def test_postgres_claims_walk_the_due_index(pg_schema_url: str) -> None:
    import sqlalchemy as sa

    from supportflow.storage.sql import make_engine

    _truncate_all(pg_schema_url)
    engine = make_engine(pg_schema_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO timers (ticket_id, key, due_at, kind)"
                " SELECT 't-' || n, 'k', now() + n * interval '1 second', 'sla'"
                " FROM generate_series(1, 20000) AS n"
            )
        )
        connection.execute(sa.text("ANALYZE timers"))
        plan = "\n".join(
            connection.execute(
                sa.text(
                    "EXPLAIN SELECT ticket_id, key FROM timers WHERE due_at <= now() + interval"
                    " '1 hour' AND (lease_until IS NULL OR lease_until <= now())"
                    " ORDER BY due_at, generation LIMIT 100 FOR UPDATE SKIP LOCKED"
                )
            ).scalars()
        )
    engine.dispose()
    assert "timers_due" in plan
    assert "Sort" not in plan


def test_sqlstore_takes_back_its_batch_when_a_row_goes_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On databases other than PostgreSQL events go in one row at a time. A writer that commits
    # one of the sequences meanwhile makes a row go missing (here: the third); the rows of the
    # batch already in are taken back, so a caller that goes on and commits keeps none.
    from supportflow.events import Event
    from supportflow.storage import sql

    store = sql.SqlStore("sqlite://", create=True)
    at = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    batch = [Event("t-1", n, "Noted", at, "agent_1", {"n": n}) for n in (1, 2, 3)]
    insert_new = sql._SqlUnitOfWork._insert_new

    def lose_the_third(
        self: sql._SqlUnitOfWork, table: object, rows: list[dict[str, object]]
    ) -> int:
        if rows[0].get("sequence") == 3:
            return 0
        return insert_new(self, table, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(sql._SqlUnitOfWork, "_insert_new", lose_the_third)
    with store.transaction() as uow, pytest.raises(ConcurrencyConflict):
        uow.append_events(batch)
    with store.transaction() as uow:
        assert uow.history("t-1") == []
    store.close()


def test_memory_store_timer_queues_stay_bounded_under_repeated_claims() -> None:
    # A worker that claims a timer, dies, and lets the lease run out, again and again: each
    # claim leaves stale queue entries behind, which compaction after a commit clears.
    store = MemoryStore()
    start = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    with store.transaction() as uow:
        uow.replace_timers("t-1", [Timer("t-1", "sla:resolution:breach", start, "sla_breach")])
    for step in range(5_000):
        with store.transaction() as uow:
            now = start + timedelta(minutes=6 * step)
            assert len(uow.claim_due_timers(now, 10, "w", timedelta(minutes=5))) == 1
            assert uow.next_timer_due() == start
    queued = store._due.size + store._leased.size
    held = store._held.size + len(store._unheld_rows)
    assert max(queued, held) <= 2_048
