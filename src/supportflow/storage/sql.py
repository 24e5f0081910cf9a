"""``SqlStore``: the storage port on SQLAlchemy 2 Core, for PostgreSQL (and SQLite).

Needs the ``sql`` extra (``pip install supportflow[sql]``): this module is the only one that
imports SQLAlchemy. Tested on PostgreSQL through psycopg 3 (``postgresql+psycopg://...``) and
on SQLite URLs for quick local checks.

* **Schema.** The tables live in :data:`metadata`. Create or upgrade them explicitly with
  :func:`migrate` (the ``supportflow migrate URL`` command) or :func:`create_schema`, or pass
  ``create=True`` to :class:`SqlStore`. A ``schema_version`` table records each applied step;
  migrations run in one transaction under a lock (a PostgreSQL advisory lock, or SQLite's
  write lock), so workers starting together migrate once.
* **Several workers.** Timer and outbox claims select with ``FOR UPDATE SKIP LOCKED`` and set a
  lease, so any number of processes can poll one database: a row being claimed by one worker
  is skipped by the others, and a leased row is not handed out again before its lease ends.
* **Optimistic concurrency.** ``UPDATE tickets ... WHERE id = :id AND version = :expected``;
  no row updated means another writer won (``ConcurrencyConflict``).
* **Hot path.** On PostgreSQL the calls every command makes are pre-written SQL run with
  ``exec_driver_sql``, one round trip each (see ``_PgUnitOfWork``); decoded tickets are kept
  with the exact JSON text they came from. Pooled connections are pinged only after sitting
  idle (:func:`make_engine`).
* **Types.** Documents are ``JSONB`` on PostgreSQL and ``JSON`` elsewhere, written by the
  store's own JSON writer on any engine (:class:`Document`). Instants are ``timestamptz`` on
  PostgreSQL (microsecond precision) and integer microseconds since the epoch elsewhere; both
  compare chronologically and come back as aware UTC datetimes.
* **Claim order.** Timers due at the same instant are claimed in the order their deadlines
  were set (``timers.generation``, drawn whenever a deadline is set), as ``MemoryStore`` does.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.pool import StaticPool

from supportflow.clock import ensure_aware, to_utc
from supportflow.errors import ConcurrencyConflict, TicketNotFound, ValidationError
from supportflow.events import Event
from supportflow.model import Notification, Ticket, Timer, coerce_enum
from supportflow.storage._codec import (
    TicketCache,
    check_event,
    check_keys,
    check_lease,
    check_limit,
    check_new_version,
    check_statuses,
    check_strings,
    check_text,
    check_timers,
    check_unicode,
    diagnostic_text,
    dump_json,
    instant_to_micros,
    micros_to_instant,
    notification_from_doc,
    notification_to_doc,
    refuse_text_at,
    refuse_texts,
    ticket_columns,
    ticket_from_doc,
    ticket_json,
    ticket_to_doc,
    unfindable,
)
from supportflow.storage._port import OutboxEntry, OutboxStatus, Record, TicketQuery, UnitOfWork

__all__ = ["SCHEMA_VERSION", "SqlStore", "create_schema", "metadata", "migrate"]

_EVENT_BATCH = 500
_OCCURRENCE_MEMORY = timedelta(days=1)
# Any fixed 64-bit number; it names the advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x5F5F_5350_4F52_5446
# Seconds a pooled connection may sit idle before it is pinged at checkout.
_PING_AFTER_IDLE = 1.0


# -- column types -------------------------------------------------------------------------------
class Instant(sa.types.TypeDecorator[datetime]):
    """An aware instant: ``timestamptz`` on PostgreSQL, epoch microseconds (BIGINT) elsewhere.

    Both order chronologically in SQL and round-trip to the microsecond; values come back as
    UTC datetimes.
    """

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return to_utc(value)
        return instant_to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            # psycopg hands back the session's zone; astimezone is the cheap exact path to UTC.
            if value.tzinfo is None:
                return value.replace(tzinfo=timezone.utc)
            return value.astimezone(timezone.utc)
        return micros_to_instant(int(value))


class Document(sa.types.TypeDecorator[Any]):
    """A JSON document: ``JSONB`` on PostgreSQL (indexable), ``JSON`` text elsewhere.

    Written by the store's own JSON writer whatever ``json_serializer`` the engine has (one
    made with plain :func:`sqlalchemy.create_engine` has none): compact, floats of 1e16 and
    more with a fraction (``jsonb`` would read ``1e+16`` back as an int), NaN and infinities
    refused. Reading, and the JSON operators (``records.c.data["score"]``), are the engine's.
    """

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.JSON())

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None]:
        # Replaces the JSON type's processor rather than feeding it (process_bind_param
        # would): that one serialises with the engine's serializer. Text goes to the driver as
        # it is; psycopg sends it untyped, and PostgreSQL reads it as the column's jsonb.
        def process(value: Any) -> str | None:
            if isinstance(value, sa.sql.elements.Null):
                return None
            return dump_json(None if value is sa.JSON.NULL else value)

        return process


# BIGINT identity on PostgreSQL; SQLite only auto-numbers an INTEGER PRIMARY KEY.
_Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


# -- schema -------------------------------------------------------------------------------------
metadata = sa.MetaData()
"""Every table of the store (SQLAlchemy Core ``Table`` objects)."""

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.BigInteger, nullable=False),
)

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("number", sa.BigInteger, nullable=False, unique=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("assignee", sa.Text),
    sa.Column("group", sa.Text),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("priority", sa.Text, nullable=False),
    sa.Column("created_at", Instant, nullable=False),
    sa.Column("doc", Document, nullable=False),
    sa.Index("tickets_status", "status"),
    sa.Index("tickets_assignee", "assignee"),
    sa.Index("tickets_group", "group"),
    sa.Index("tickets_customer", "customer_id"),
    sa.Index("tickets_created", "created_at"),
)

ticket_tags = sa.Table(
    "ticket_tags",
    metadata,
    sa.Column(
        "ticket_id", sa.Text, sa.ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("tag", sa.Text, primary_key=True),
    sa.Index("ticket_tags_tag", "tag"),
)

counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

ticket_number_seq = sa.Sequence("ticket_number_seq", metadata=metadata, start=1)
"""Ticket numbers on databases with sequences (never reused, no lock held until commit)."""

events = sa.Table(
    "events",
    metadata,
    sa.Column("position", _Position, primary_key=True, autoincrement=True),
    sa.Column("ticket_id", sa.Text, nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("at", Instant, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("data", Document, nullable=False),
    sa.UniqueConstraint("ticket_id", "sequence", name="events_ticket_sequence"),
    sa.Index("events_at", "at", "position"),
    sqlite_autoincrement=True,
)

timer_generation_seq = sa.Sequence("timer_generation_seq", metadata=metadata, start=1)
"""Timer generations on PostgreSQL (the ``timers.generation`` default); elsewhere they come
from the ``timer_generation`` row of ``counters``."""

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("ticket_id", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("due_at", Instant, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", Instant),
    # Drawn afresh whenever the deadline is set: claims take timers due at the same instant
    # in the order their deadlines were set, as MemoryStore does.
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("timers_due", "due_at", "generation"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("next_attempt_at", Instant),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", Instant),
    sa.Column("doc", Document, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", Instant),
    sa.Column("created_at", Instant, nullable=False),
    # Claims since enqueued or requeued: beyond ``attempts`` they are deliveries that never
    # finished (schema step 4).
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
    sa.Index("outbox_due", "status", "next_attempt_at", "key"),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("ticket_id", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", Instant, nullable=False),
    sa.Column("updated_at", Instant, nullable=False),
    sa.Column("data", Document, nullable=False),
    sa.Index("records_created", "kind", "created_at"),
    sa.Index("records_ticket", "kind", "ticket_id"),
)

occurrences = sa.Table(
    "occurrences",
    metadata,
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("ticket_id", sa.Text, nullable=False),
    sa.Column("at", Instant, nullable=False),
    sa.Index("occurrences_key_at", "key", "at"),
)


# -- migrations ---------------------------------------------------------------------------------
def _initial_schema(connection: Connection) -> None:
    # Step 1 creates the tables from ``metadata`` (today's schema); later steps use explicit
    # DDL that also works on a database step 1 made long ago (``IF EXISTS``, ...).
    metadata.create_all(connection, checkfirst=True)
    if connection.dialect.name == "postgresql":
        # Leases rewrite these rows often: room on each page keeps the updates HOT (no index
        # writes, less bloat).
        connection.execute(sa.text("ALTER TABLE timers SET (fillfactor = 70)"))
        connection.execute(sa.text("ALTER TABLE outbox SET (fillfactor = 70)"))
    exists = connection.execute(
        sa.select(counters.c.value).where(counters.c.name == "ticket_number")
    ).first()
    if exists is None:
        connection.execute(sa.insert(counters).values(name="ticket_number", value=0))


def _drop_outbox_created(connection: Connection) -> None:
    # One index fewer to write with every notification; listing dead letters (the only reader
    # ordered by creation) reads the few rows of that status through outbox_due.
    connection.execute(sa.text("DROP INDEX IF EXISTS outbox_created"))


def _order_timer_ties(connection: Connection) -> None:
    # Claims order timers due at the same instant by generation, drawn whenever a deadline is
    # set (MemoryStore's order). Also runs on a database step 1 made today, which has it all.
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(sa.text("CREATE SEQUENCE IF NOT EXISTS timer_generation_seq"))
    columns = {column["name"] for column in sa.inspect(connection).get_columns("timers")}
    if "generation" not in columns:
        connection.execute(
            sa.text("ALTER TABLE timers ADD COLUMN generation BIGINT NOT NULL DEFAULT 0")
        )
        # Timers stored before: on SQLite in rowid order, the order its claims took them in
        # until now; PostgreSQL's claims had no order for them.
        numbers = "nextval('timer_generation_seq')" if postgres else "rowid"
        connection.execute(sa.text(f"UPDATE timers SET generation = {numbers}"))
    if postgres:
        connection.execute(
            sa.text(
                "ALTER TABLE timers ALTER COLUMN generation"
                " SET DEFAULT nextval('timer_generation_seq')"
            )
        )
    else:
        connection.execute(
            sa.text(
                "INSERT INTO counters (name, value) SELECT 'timer_generation',"
                " COALESCE(MAX(generation), 0) FROM timers WHERE NOT EXISTS"
                " (SELECT 1 FROM counters WHERE name = 'timer_generation')"
            )
        )
    # Claims walk (due_at, generation) in order: no sort, however many timers are due.
    connection.execute(sa.text("DROP INDEX IF EXISTS timers_due"))
    connection.execute(sa.text("CREATE INDEX timers_due ON timers (due_at, generation)"))


def _count_outbox_claims(connection: Connection) -> None:
    # Outbox rows count their claims, so a row whose deliveries never finish (they kill the
    # worker) can be parked. A column with a constant default rewrites no row on either
    # database. A pending row counts the claims its recorded failures came from, and the claim
    # it is leased under (its worker's result is yet to come, or never will); the update
    # reads the pending rows through outbox_due. Also runs on a database step 1 made today.
    columns = {column["name"] for column in sa.inspect(connection).get_columns("outbox")}
    if "claims" not in columns:
        connection.execute(
            sa.text("ALTER TABLE outbox ADD COLUMN claims INTEGER NOT NULL DEFAULT 0")
        )
    connection.execute(
        sa.text(
            "UPDATE outbox SET claims = attempts"
            " + CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END"
            " WHERE status = 'pending' AND (attempts > 0 OR lease_owner IS NOT NULL)"
        )
    )


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _initial_schema,
    _drop_outbox_created,
    _order_timer_ties,
    _count_outbox_claims,
)
"""Forward migrations: step ``n`` (1-based) brings the schema from version ``n - 1`` to ``n``."""

SCHEMA_VERSION = len(MIGRATIONS)


def create_schema(engine: Engine) -> int:
    """Create the tables or bring them up to :data:`SCHEMA_VERSION`; return that version.

    Idempotent, and safe when several processes call it at once: the steps run in one
    transaction that first takes a lock (``pg_advisory_xact_lock`` on PostgreSQL).
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        schema_version.create(connection, checkfirst=True)
        current = connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
        current = int(current or 0)
        if current > SCHEMA_VERSION:
            raise ValidationError(
                "schema_version",
                current,
                f"at most {SCHEMA_VERSION}: the database was written by a newer supportflow",
            )
        for number, step in enumerate(MIGRATIONS, start=1):
            if number > current:
                step(connection)
                connection.execute(
                    sa.insert(schema_version).values(
                        version=number, applied_at=time.time_ns() // 1000
                    )
                )
    return SCHEMA_VERSION


def migrate(url: str | Engine) -> int:
    """Create or upgrade the schema at ``url`` (what ``supportflow migrate URL`` runs).

    Returns the schema version now in place. An engine is used as given; a URL gets an engine
    that is disposed of before returning.
    """
    if isinstance(url, Engine):
        return create_schema(url)
    engine = make_engine(url)
    try:
        return create_schema(engine)
    finally:
        engine.dispose()


def schema_version_of(engine: Engine) -> int:
    """The schema version recorded in the database (0 when there is no schema yet)."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("schema_version"):
            return 0
        value = connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
    return int(value or 0)


# -- engines ------------------------------------------------------------------------------------
def _is_memory_sqlite(url: sa.engine.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: str | sa.engine.URL, **kwargs: Any) -> Engine:
    """An engine set up for the store.

    On SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (claims are write
    transactions), WAL mode, ``foreign_keys=ON``, a 30 s busy timeout; ``sqlite://`` (memory)
    shares one connection.

    Elsewhere a pooled connection that sat idle for over a second is pinged before use and
    replaced if it is dead (a restarted server, a dropped idle connection); pass
    ``pool_pre_ping=True`` to ping at every checkout instead.

    JSON columns of your own on this engine are written as the store writes its documents
    (compact, NaN refused); the store's documents are written that way on any engine.
    """
    parsed = sa.make_url(url)
    kwargs.setdefault("json_serializer", dump_json)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(parsed, **kwargs)
        if not kwargs.get("pool_pre_ping"):
            _ping_idle_connections(engine)
        return engine
    if _is_memory_sqlite(parsed):
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    engine = sa.create_engine(parsed, **kwargs)
    memory = _is_memory_sqlite(parsed)

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN instead of the driver's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout only if it sat idle: a ping at every checkout
    (``pool_pre_ping``) is one more round trip per unit of work, a third of a small command."""

    @sa_event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa_event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= _PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool drops this connection and checks out another (a new one if need be).
            raise sa_exc.DisconnectionError(str(exc)) from exc


# -- the store ----------------------------------------------------------------------------------
class SqlStore:
    """The storage port on a SQLAlchemy engine (PostgreSQL in production, SQLite for checks).

    ``url_or_engine`` is a database URL (``postgresql+psycopg://user@host/db``) or an
    :class:`~sqlalchemy.Engine`. With ``create=True`` the schema is created or migrated on
    open; otherwise it must already be at :data:`SCHEMA_VERSION` (run ``supportflow migrate
    URL``), else ``ValidationError`` says what to do.

    A ``transaction()`` opened while the same thread already has one joins it (the outer block
    decides commit or rollback).
    """

    def __init__(self, url_or_engine: str | Engine, *, create: bool = False) -> None:
        if isinstance(url_or_engine, Engine):
            self._engine = url_or_engine
            self._owns_engine = False
        elif isinstance(url_or_engine, (str, sa.engine.URL)):
            try:
                self._engine = make_engine(url_or_engine)
            except sa_exc.ArgumentError as exc:
                raise ValidationError(
                    "url", str(url_or_engine), f"a database URL ({exc})"
                ) from None
            self._owns_engine = True
        else:
            raise ValidationError("url_or_engine", url_or_engine, "a database URL or an Engine")
        self._postgres = self._engine.dialect.name == "postgresql"
        self._uow_class = _PgUnitOfWork if self._postgres else _SqlUnitOfWork
        # Decoded tickets with the exact JSON text PostgreSQL renders for them.
        self._decoded = TicketCache()
        self._local = threading.local()
        memory = _is_memory_sqlite(self._engine.url)
        self._shared_lock: threading.RLock | None = threading.RLock() if memory else None
        if create:
            create_schema(self._engine)
        else:
            found = schema_version_of(self._engine)
            if found != SCHEMA_VERSION:
                where = self._engine.url.render_as_string(hide_password=True)
                raise ValidationError(
                    "schema_version",
                    found,
                    f"{SCHEMA_VERSION} in {where}: run `supportflow migrate URL` first,"
                    " or open the store with create=True",
                )

    @property
    def engine(self) -> Engine:
        """The engine the store runs on."""
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """Open a unit of work on one connection: commit at the end, roll back if it raises."""
        current: _SqlUnitOfWork | None = getattr(self._local, "uow", None)
        if current is not None:
            yield current
            return
        with self._guard(), self._engine.connect() as connection, connection.begin():
            uow = self._uow_class(self, connection)
            self._local.uow = uow
            try:
                yield uow
            finally:
                self._local.uow = None

    def close(self) -> None:
        """Dispose of the engine's pool if the store created the engine."""
        if self._owns_engine:
            self._engine.dispose()
        self._decoded.clear()

    def _guard(self) -> AbstractContextManager[Any]:
        return self._shared_lock if self._shared_lock is not None else nullcontext()

    def _read(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        """Run one query on a short connection (event streams read between units of work)."""
        current: _SqlUnitOfWork | None = getattr(self._local, "uow", None)
        if current is not None:
            return list(current._c.execute(statement))
        with self._guard(), self._engine.connect() as connection, connection.begin():
            return list(connection.execute(statement))


def _utc(value: datetime, field: str) -> datetime:
    return to_utc(ensure_aware(value, field), field)


def _ticket_values(ticket: Ticket) -> dict[str, Any]:
    if not isinstance(ticket, Ticket):
        raise ValidationError("ticket", ticket, "a Ticket")
    doc = ticket_to_doc(ticket)
    dump_json(doc, "ticket")  # refuse NaN and non-JSON values before the database sees them
    return {
        "id": ticket.id,
        "number": ticket.number,
        "version": ticket.version,
        "status": ticket.status,
        "assignee": ticket.assignee,
        "group": ticket.group,
        "customer_id": ticket.customer.id,
        "channel": ticket.channel.value,
        "priority": ticket.priority.value,
        "created_at": _utc(ticket.created_at, "ticket.created_at"),
        "doc": doc,
    }


def _claim_window(
    now: datetime, limit: int, owner: str, lease: timedelta
) -> tuple[datetime, datetime] | None:
    """A timer claim's checked arguments: ``now`` in UTC and the lease's end, or ``None`` when
    ``limit`` is zero and there is nothing to claim."""
    at = _utc(now, "now")
    until = at + check_lease(lease)
    check_text(owner, "owner")
    return None if check_limit(limit) == 0 else (at, until)


def _event_of(row: Any) -> Event:
    return Event(row.ticket_id, row.sequence, row.type, row.at, row.actor, row.data)


_EVENT_COLUMNS = (
    events.c.ticket_id,
    events.c.sequence,
    events.c.type,
    events.c.at,
    events.c.actor,
    events.c.data,
)
_TIMER_COLUMNS = (timers.c.ticket_id, timers.c.key, timers.c.due_at, timers.c.kind)
_OUTBOX_COLUMNS = (
    outbox.c.key,
    outbox.c.doc,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.next_attempt_at,
    outbox.c.last_error,
    outbox.c.delivered_at,
    outbox.c.claims,
)


def _timer_of(row: Any) -> Timer:
    return Timer(row.ticket_id, row.key, row.due_at, row.kind)


def _outbox_entry(row: Any, claimed: int = 0) -> OutboxEntry:
    """The entry of a row read with ``_OUTBOX_COLUMNS``; ``claimed`` adds a claim made since."""
    return OutboxEntry(
        notification=notification_from_doc(row.doc),
        status=OutboxStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        claims=row.claims + claimed,
    )


def _record_of(row: Any) -> Record:
    return Record(
        kind=row.kind,
        id=row.id,
        data=row.data,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ticket_id=row.ticket_id,
        status=row.status,
        version=row.version,
    )


class _SqlUnitOfWork:
    """The port's calls on one connection inside one database transaction."""

    __slots__ = ("_c", "_store")

    def __init__(self, store: SqlStore, connection: Connection) -> None:
        self._store = store
        self._c = connection

    def _insert_new(self, table: sa.Table, rows: list[dict[str, Any]]) -> int:
        """Insert rows, skipping any that hit a unique key; return how many went in.

        ``ON CONFLICT DO NOTHING`` instead of catching IntegrityError: on PostgreSQL an error
        would abort the whole transaction, and the port lets callers go on after a conflict.
        """
        if not rows:
            return 0
        dialect = self._c.dialect.name
        if dialect in ("postgresql", "sqlite"):
            module: Any = postgresql if dialect == "postgresql" else sqlite_dialect
            # Count RETURNING rows: the driver's rowcount is not reliable here (-1 on psycopg).
            statement = module.insert(table).on_conflict_do_nothing().returning(*table.primary_key)
            return sum(len(self._c.execute(statement, row).all()) for row in rows)
        inserted = 0
        for row in rows:  # other databases: a savepoint per row
            try:
                with self._c.begin_nested():
                    self._c.execute(sa.insert(table), row)
                inserted += 1
            except sa_exc.IntegrityError:
                pass
        return inserted

    # What this database cannot hold, checked before it sees a value: PostgreSQL adds NUL.
    def _unfindable(self, *keys: object) -> bool:
        return unfindable(*keys)

    def _check_texts(self, texts: Mapping[str, object]) -> None:
        check_unicode(texts)

    def _check_json(self, text: str, doc: Any, field: str) -> None:
        """``text`` is ``doc`` as :func:`dump_json` wrote it (which refused the rest)."""

    def _plain(self, data: Mapping[str, Any], field: str) -> dict[str, Any]:
        """``data`` as a dict the database can store (NaN and non-JSON values refused)."""
        plain = dict(data)
        self._check_json(dump_json(plain, field), plain, field)
        return plain

    # -- tickets ---------------------------------------------------------------------------
    def next_ticket_number(self) -> int:
        if self._c.dialect.supports_sequences:
            return int(self._c.execute(sa.select(ticket_number_seq.next_value())).scalar_one())
        where = counters.c.name == "ticket_number"
        self._c.execute(sa.update(counters).where(where).values(value=counters.c.value + 1))
        return int(self._c.execute(sa.select(counters.c.value).where(where)).scalar_one())

    def get_ticket(self, ticket_id: str) -> Ticket:
        if self._unfindable(ticket_id):
            raise TicketNotFound(ticket_id)
        doc = self._c.execute(sa.select(tickets.c.doc).where(tickets.c.id == ticket_id)).scalar()
        if doc is None:
            raise TicketNotFound(ticket_id)
        return ticket_from_doc(doc)

    def insert_ticket(self, ticket: Ticket) -> None:
        if self._insert_new(tickets, [_ticket_values(ticket)]) != 1:
            raise ConcurrencyConflict(ticket.id, 0, self._version(ticket.id))
        self._write_tags(ticket)

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        values = _ticket_values(ticket)
        check_new_version(ticket.version, expected_version, "ticket.version")
        del values["id"]
        statement = (
            sa.update(tickets)
            .where(tickets.c.id == ticket.id, tickets.c.version == expected_version)
            .values(**values)
        )
        try:
            updated = self._c.execute(statement).rowcount
        except sa_exc.IntegrityError:  # the new number is another ticket's
            raise ConcurrencyConflict(ticket.id, expected_version, None) from None
        if updated != 1:
            actual = self._version(ticket.id)
            if actual is None:
                raise TicketNotFound(ticket.id)
            raise ConcurrencyConflict(ticket.id, expected_version, actual)
        self._c.execute(sa.delete(ticket_tags).where(ticket_tags.c.ticket_id == ticket.id))
        self._write_tags(ticket)

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        if not isinstance(query, TicketQuery):
            raise ValidationError("query", query, "a TicketQuery")
        statement = sa.select(tickets.c.doc).order_by(tickets.c.number)
        statuses = check_statuses(query.status)
        if self._unfindable(query.assignee, query.group, query.customer_id, query.tag):
            return []  # no stored ticket holds such text (the database would refuse it)
        if statuses is not None:
            statuses = [status for status in statuses if not self._unfindable(status)]
            if not statuses:
                return []
            statement = statement.where(tickets.c.status.in_(statuses))
        for column, value in (
            (tickets.c.assignee, query.assignee),
            (tickets.c.group, query.group),
            (tickets.c.customer_id, query.customer_id),
            (tickets.c.channel, _enum_value(query.channel)),
            (tickets.c.priority, _enum_value(query.priority)),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if query.tag is not None:
            tagged = sa.select(ticket_tags.c.ticket_id).where(ticket_tags.c.tag == query.tag)
            statement = statement.where(tickets.c.id.in_(tagged))
        if query.created_from is not None:
            statement = statement.where(
                tickets.c.created_at >= _utc(query.created_from, "created_from")
            )
        if query.created_to is not None:
            statement = statement.where(tickets.c.created_at < _utc(query.created_to, "created_to"))
        if query.limit is not None:
            statement = statement.limit(check_limit(query.limit))
        return [ticket_from_doc(doc) for doc in self._c.execute(statement).scalars()]

    def _version(self, ticket_id: str) -> int | None:
        value = self._c.execute(
            sa.select(tickets.c.version).where(tickets.c.id == ticket_id)
        ).scalar()
        return int(value) if value is not None else None

    def _write_tags(self, ticket: Ticket) -> None:
        if ticket.tags:
            self._c.execute(
                sa.insert(ticket_tags),
                [{"ticket_id": ticket.id, "tag": tag} for tag in sorted(ticket.tags)],
            )

    # -- events ----------------------------------------------------------------------------
    def append_events(self, events_: Sequence[Event]) -> None:
        rows: list[dict[str, Any]] = []
        next_sequence: dict[str, int] = {}
        for event in events_:
            check_event(event)
            expected = next_sequence.get(event.ticket_id)
            if expected is None:
                last = self._c.execute(
                    sa.select(sa.func.max(events.c.sequence)).where(
                        events.c.ticket_id == event.ticket_id
                    )
                ).scalar()
                expected = int(last or 0) + 1
            if event.sequence != expected:
                raise ConcurrencyConflict(event.ticket_id, expected, event.sequence)
            next_sequence[event.ticket_id] = expected + 1
            rows.append(
                {
                    "ticket_id": event.ticket_id,
                    "sequence": event.sequence,
                    "type": event.type,
                    "at": _utc(event.at, "event.at"),
                    "actor": event.actor,
                    "data": self._plain(event.data, "event.data"),
                }
            )
        # A writer that committed the same sequence since our check makes a row go missing;
        # the rows this call put in before it are taken back, so that a caller who goes on
        # after the conflict commits none of the batch.
        for written, row in enumerate(rows):
            if self._insert_new(events, [row]) != 1:
                for ours in rows[:written]:
                    self._c.execute(
                        sa.delete(events).where(
                            events.c.ticket_id == ours["ticket_id"],
                            events.c.sequence == ours["sequence"],
                        )
                    )
                raise ConcurrencyConflict(row["ticket_id"], row["sequence"], None)

    def history(self, ticket_id: str) -> list[Event]:
        if self._unfindable(ticket_id):
            return []
        statement = (
            sa.select(*_EVENT_COLUMNS)
            .where(events.c.ticket_id == ticket_id)
            .order_by(events.c.sequence)
        )
        return [_event_of(row) for row in self._c.execute(statement)]

    def iter_events(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Event]:
        low = _utc(start, "start") if start is not None else None
        high = _utc(end, "end") if end is not None else None
        return self._event_batches(low, high)

    def _event_batches(self, low: datetime | None, high: datetime | None) -> Iterator[Event]:
        base = sa.select(events.c.position, *_EVENT_COLUMNS).order_by(
            events.c.at, events.c.position
        )
        if low is not None:
            base = base.where(events.c.at >= low)
        if high is not None:
            base = base.where(events.c.at < high)
        after: tuple[datetime, int] | None = None
        while True:
            statement = base
            if after is not None:
                # Keyset pagination on the (at, position) index: constant cost per batch.
                statement = statement.where(
                    events.c.at >= after[0],
                    sa.tuple_(events.c.at, events.c.position)
                    > sa.tuple_(
                        sa.literal(after[0], Instant()), sa.literal(after[1], sa.BigInteger())
                    ),
                )
            rows = self._store._read(statement.limit(_EVENT_BATCH))
            for row in rows:
                yield _event_of(row)
            if len(rows) < _EVENT_BATCH:
                return
            after = (rows[-1].at, rows[-1].position)

    # -- timers ----------------------------------------------------------------------------
    def replace_timers(self, ticket_id: str, timers_: Sequence[Timer]) -> None:
        wanted = check_timers(ticket_id, timers_)
        stored = {
            row.key: row
            for row in self._c.execute(
                sa.select(timers.c.key, timers.c.due_at, timers.c.kind)
                .where(timers.c.ticket_id == ticket_id)
                .with_for_update()
            )
        }
        gone = [key for key in stored if key not in wanted]
        if gone:
            self._c.execute(
                sa.delete(timers).where(timers.c.ticket_id == ticket_id, timers.c.key.in_(gone))
            )
        rescheduled: list[tuple[str, Timer, datetime]] = []  # new deadlines, in order
        for key, timer in wanted.items():
            due = _utc(timer.due_at, "timer.due_at")
            previous = stored.get(key)
            if previous is not None and previous.due_at == due:
                if previous.kind != timer.kind:  # same deadline: keep the lease and the place
                    self._c.execute(
                        sa.update(timers)
                        .where(timers.c.ticket_id == ticket_id, timers.c.key == key)
                        .values(kind=timer.kind)
                    )
                continue
            rescheduled.append((key, timer, due))
        generation = self._next_generations(len(rescheduled))
        for key, timer, due in rescheduled:
            generation += 1
            values = {"due_at": due, "kind": timer.kind, "generation": generation}
            if key in stored:
                self._c.execute(
                    sa.update(timers)
                    .where(timers.c.ticket_id == ticket_id, timers.c.key == key)
                    .values(**values, lease_owner=None, lease_until=None)
                )
            elif self._insert_new(timers, [{"ticket_id": ticket_id, "key": key, **values}]) != 1:
                raise ConcurrencyConflict(ticket_id, 0, None)

    def _next_generations(self, count: int) -> int:
        """Reserve ``count`` timer generations; return the one before the first."""
        if count == 0:
            return 0
        where = counters.c.name == "timer_generation"
        self._c.execute(sa.update(counters).where(where).values(value=counters.c.value + count))
        return int(self._c.execute(sa.select(counters.c.value).where(where)).scalar_one()) - count

    def timers(self, ticket_id: str) -> list[Timer]:
        if self._unfindable(ticket_id):
            return []
        statement = (
            sa.select(*_TIMER_COLUMNS)
            .where(timers.c.ticket_id == ticket_id)
            .order_by(timers.c.due_at, timers.c.key)
        )
        return [_timer_of(row) for row in self._c.execute(statement)]

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        window = _claim_window(now, limit, owner, lease)
        if window is None:
            return []
        at, until = window
        # (PostgreSQL claims in _PgUnitOfWork.)
        statement = (
            sa.select(*_TIMER_COLUMNS)
            .where(
                timers.c.due_at <= at,
                sa.or_(timers.c.lease_until.is_(None), timers.c.lease_until <= at),
            )
            .order_by(timers.c.due_at, timers.c.generation)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list(self._c.execute(statement))
        if rows:
            self._c.execute(
                sa.update(timers)
                .where(
                    timers.c.ticket_id == sa.bindparam("b_ticket_id"),
                    timers.c.key == sa.bindparam("b_key"),
                )
                .values(lease_owner=owner, lease_until=until),
                [{"b_ticket_id": row.ticket_id, "b_key": row.key} for row in rows],
            )
        return [_timer_of(row) for row in rows]

    def release_timer(self, timer: Timer, owner: str) -> None:
        if not isinstance(timer, Timer):
            raise ValidationError("timer", timer, "a Timer")
        if self._unfindable(timer.ticket_id, timer.key):
            return  # no stored timer has such a key
        self._c.execute(
            sa.delete(timers).where(
                timers.c.ticket_id == timer.ticket_id,
                timers.c.key == timer.key,
                timers.c.due_at == _utc(timer.due_at, "timer.due_at"),
            )
        )

    def next_timer_due(self) -> datetime | None:
        value: datetime | None = self._c.execute(sa.select(sa.func.min(timers.c.due_at))).scalar()
        return value

    # -- outbox ----------------------------------------------------------------------------
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        rows = []
        for notification in notifications:
            if not isinstance(notification, Notification):
                raise ValidationError("notifications", notification, "Notification instances")
            created = _utc(notification.created_at, "notification.created_at")
            doc = notification_to_doc(notification)
            dump_json(doc, "notification")
            rows.append(
                {
                    "key": notification.idempotency_key,
                    "status": OutboxStatus.PENDING.value,
                    "next_attempt_at": created,
                    "attempts": 0,
                    "doc": doc,
                    "created_at": created,
                }
            )
        self._insert_new(outbox, rows)

    def claim_notifications(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[OutboxEntry]:
        at = _utc(now, "now")
        until = at + check_lease(lease)
        check_text(owner, "owner")
        self._check_texts({"owner": owner})
        if check_limit(limit) == 0:
            return []
        statement = (
            sa.select(*_OUTBOX_COLUMNS)
            .where(
                outbox.c.status == OutboxStatus.PENDING.value,
                outbox.c.next_attempt_at <= at,
                sa.or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= at),
            )
            .order_by(outbox.c.next_attempt_at, outbox.c.key)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if self._store._postgres:
            leased = (
                sa.update(outbox)
                .where(outbox.c.key.in_(statement.with_only_columns(outbox.c.key)))
                .values(lease_owner=owner, lease_until=until, claims=outbox.c.claims + 1)
                .returning(*_OUTBOX_COLUMNS)
            )
            found = sorted(self._c.execute(leased), key=lambda row: (row.next_attempt_at, row.key))
            return [_outbox_entry(row) for row in found]
        rows = list(self._c.execute(statement))
        if rows:
            self._c.execute(
                sa.update(outbox)
                .where(outbox.c.key == sa.bindparam("b_key"))
                .values(lease_owner=owner, lease_until=until, claims=outbox.c.claims + 1),
                [{"b_key": row.key} for row in rows],
            )
        return [_outbox_entry(row, claimed=1) for row in rows]

    def release_notifications(self, keys: Sequence[str], owner: str) -> None:
        keys = check_keys(keys)
        check_text(owner, "owner")
        found = [key for key in keys if not self._unfindable(key)]
        if not found or self._unfindable(owner):
            return  # no row has such a key, or is claimed by such an owner
        self._c.execute(
            sa.update(outbox)
            .where(
                outbox.c.key.in_(found),
                outbox.c.status == OutboxStatus.PENDING.value,
                outbox.c.lease_owner == owner,
            )
            .values(
                lease_owner=None,
                lease_until=None,
                claims=sa.case((outbox.c.claims > 0, outbox.c.claims - 1), else_=0),
            )
        )

    def mark_delivered(self, key: str, at: datetime) -> None:
        if self._unfindable(key):
            return  # no row has such a key
        self._c.execute(
            sa.update(outbox)
            .where(outbox.c.key == key)
            .values(
                status=OutboxStatus.DELIVERED.value,
                delivered_at=_utc(at, "at"),
                lease_owner=None,
                lease_until=None,
            )
        )

    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        if self._unfindable(key):
            return  # no row has such a key
        retry = _utc(retry_at, "retry_at") if retry_at is not None else None
        if owner is not None:
            check_text(owner, "owner")
        status = OutboxStatus.PENDING if retry is not None else OutboxStatus.DEAD
        # A late report (its worker's lease ran out) must not revive a delivered or dead row,
        # nor count against a row another worker has claimed since.
        claimed = outbox.c.lease_owner == owner if owner is not None else sa.true()
        self._c.execute(
            sa.update(outbox)
            .where(outbox.c.key == key, outbox.c.status == OutboxStatus.PENDING.value, claimed)
            .values(
                status=status.value,
                attempts=outbox.c.attempts + 1,
                next_attempt_at=retry,
                last_error=diagnostic_text(error),
                lease_owner=None,
                lease_until=None,
            )
        )

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        if self._unfindable(key):
            return None
        row = self._c.execute(sa.select(*_OUTBOX_COLUMNS).where(outbox.c.key == key)).first()
        return _outbox_entry(row) if row is not None else None

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxEntry]:
        value = coerce_enum(OutboxStatus, status, "status").value
        statement = (
            sa.select(*_OUTBOX_COLUMNS)
            .where(outbox.c.status == value)
            .order_by(outbox.c.created_at, outbox.c.key)
            .limit(check_limit(limit))
        )
        return [_outbox_entry(row) for row in self._c.execute(statement)]

    def requeue(self, key: str, at: datetime) -> None:
        if self._unfindable(key):
            return  # no row has such a key
        self._c.execute(
            sa.update(outbox)
            .where(outbox.c.key == key, outbox.c.status == OutboxStatus.DEAD.value)
            .values(
                status=OutboxStatus.PENDING.value,
                attempts=0,
                claims=0,
                next_attempt_at=_utc(at, "at"),
                lease_owner=None,
                lease_until=None,
            )
        )

    # -- records ---------------------------------------------------------------------------
    def put_record(self, record: Record, expected_version: int | None = None) -> None:
        if not isinstance(record, Record):
            raise ValidationError("record", record, "a Record")
        self._check_texts(
            {"record.kind": record.kind, "record.id": record.id, "record.status": record.status,
             "record.ticket_id": record.ticket_id}
        )  # fmt: skip
        values = {
            "ticket_id": record.ticket_id,
            "status": record.status,
            "version": record.version,
            "created_at": _utc(record.created_at, "record.created_at"),
            "updated_at": _utc(record.updated_at, "record.updated_at"),
            "data": self._plain(record.data, "record.data"),
        }
        name = f"{record.kind}/{record.id}"
        if expected_version is None:
            row = {"kind": record.kind, "id": record.id, **values}
            if self._insert_new(records, [row]) != 1:
                raise ConcurrencyConflict(name, 0, self._record_version(record))
            return
        check_new_version(record.version, expected_version, "record.version")
        updated = self._c.execute(
            sa.update(records)
            .where(
                records.c.kind == record.kind,
                records.c.id == record.id,
                records.c.version == expected_version,
            )
            .values(**values)
        ).rowcount
        if updated != 1:
            raise ConcurrencyConflict(name, expected_version, self._record_version(record))

    def _record_version(self, record: Record) -> int | None:
        value = self._c.execute(
            sa.select(records.c.version).where(
                records.c.kind == record.kind, records.c.id == record.id
            )
        ).scalar()
        return int(value) if value is not None else None

    def get_record(self, kind: str, record_id: str) -> Record | None:
        if self._unfindable(kind, record_id):
            return None
        row = self._c.execute(
            sa.select(records).where(records.c.kind == kind, records.c.id == record_id)
        ).first()
        return _record_of(row) if row is not None else None

    def find_records(
        self,
        kind: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[Record]:
        if self._unfindable(kind, ticket_id, status):
            return []
        statement = (
            sa.select(records)
            .where(records.c.kind == kind)
            .order_by(records.c.created_at, records.c.id)
        )
        if ticket_id is not None:
            statement = statement.where(records.c.ticket_id == ticket_id)
        if status is not None:
            statement = statement.where(records.c.status == status)
        if created_from is not None:
            statement = statement.where(records.c.created_at >= _utc(created_from, "created_from"))
        if created_to is not None:
            statement = statement.where(records.c.created_at < _utc(created_to, "created_to"))
        return [_record_of(row) for row in self._c.execute(statement)]

    # -- occurrences -----------------------------------------------------------------------
    def record_occurrence(self, key: str, ticket_id: str, at: datetime) -> None:
        check_strings({"key": key, "ticket_id": ticket_id})
        self._check_texts({"key": key, "ticket_id": ticket_id})
        when = _utc(at, "at")
        self._c.execute(sa.insert(occurrences).values(key=key, ticket_id=ticket_id, at=when))
        # Forgetting what is older than a day keeps the table as small as the window.
        self._c.execute(
            sa.delete(occurrences).where(
                occurrences.c.key == key, occurrences.c.at < when - _OCCURRENCE_MEMORY
            )
        )

    def occurrences(self, key: str, since: datetime) -> list[str]:
        if self._unfindable(key):
            return []
        statement = (
            sa.select(occurrences.c.ticket_id)
            .where(occurrences.c.key == key, occurrences.c.at >= _utc(since, "since"))
            .order_by(occurrences.c.at, occurrences.c.ticket_id)
        )
        return list(self._c.execute(statement).scalars())


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


# -- PostgreSQL ---------------------------------------------------------------------------------
# The calls every command makes, written out once for PostgreSQL and run with
# ``exec_driver_sql``: one round trip each, and no statement building or compiling per call
# (which costs more than the round trip). psycopg prepares them server-side after five runs.
# Documents travel as JSON text cast to ``jsonb``; instants as aware datetimes.

_PG_GET_TICKET = "SELECT doc::text FROM tickets WHERE id = %s"

# ``RETURNING doc::text``: the text PostgreSQL will hand back on the next read, so that read
# can reuse the ticket instead of decoding it again.
_PG_INSERT_TICKET = (
    'INSERT INTO tickets (id, number, version, status, assignee, "group", customer_id, channel,'
    " priority, created_at, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
    " ON CONFLICT DO NOTHING RETURNING doc::text"
)

_PG_UPDATE_TICKET = (
    'UPDATE tickets SET number = %s, version = %s, status = %s, assignee = %s, "group" = %s,'
    " customer_id = %s, channel = %s, priority = %s, created_at = %s, doc = %s::jsonb"
    " WHERE id = %s AND version = %s RETURNING doc::text"
)

_PG_SET_TAGS = (
    "WITH gone AS (DELETE FROM ticket_tags"
    " WHERE ticket_id = %(id)s AND tag <> ALL(%(tags)b::text[]))"
    " INSERT INTO ticket_tags (ticket_id, tag) SELECT %(id)s, unnest(%(tags)b::text[])"
    " ON CONFLICT DO NOTHING"
)

# Each ticket's first new event must follow its last stored one, else nothing is inserted (a
# gap or a repeat); a writer that committed the same sequence meanwhile makes rows go missing.
_PG_APPEND_EVENTS = (
    "INSERT INTO events (ticket_id, sequence, type, at, actor, data)"
    " SELECT e.ticket_id, e.sequence, e.type, e.at, e.actor, e.data::jsonb"
    " FROM unnest(%(ticket_ids)b::text[], %(sequences)b::int[], %(types)b::text[],"
    " %(ats)b::timestamptz[], %(actors)b::text[], %(datas)b::text[])"
    " WITH ORDINALITY AS e(ticket_id, sequence, type, at, actor, data, n)"
    " WHERE NOT EXISTS (SELECT FROM unnest(%(firsts)b::text[], %(first_sequences)b::int[])"
    " AS f(ticket_id, sequence) WHERE f.sequence <> 1 + COALESCE("
    "(SELECT max(s.sequence) FROM events s WHERE s.ticket_id = f.ticket_id), 0))"
    " ORDER BY e.n ON CONFLICT DO NOTHING RETURNING ticket_id, sequence"
)

_PG_TAKE_BACK_EVENTS = (
    "DELETE FROM events WHERE (ticket_id, sequence) IN"
    " (SELECT * FROM unnest(%(ticket_ids)b::text[], %(sequences)b::int[]))"
)

_PG_LAST_SEQUENCE = "SELECT max(sequence) FROM events WHERE ticket_id = %s"

# One statement whatever changed. An unchanged timer is not rewritten and keeps its lease; a
# new deadline drops the lease. ON CONFLICT waits for a claimer's row lock, then sees its lease.
# Each proposed row draws its generation (the column's default, nextval) in the order given; a
# timer keeps its own unless its deadline changes.
_PG_REPLACE_TIMERS = (
    "WITH gone AS (DELETE FROM timers WHERE ticket_id = %(id)s AND key <> ALL(%(keys)b::text[]))"
    " INSERT INTO timers (ticket_id, key, due_at, kind)"
    " SELECT %(id)s, w.key, w.due_at, w.kind"
    " FROM unnest(%(keys)b::text[], %(dues)b::timestamptz[], %(kinds)b::text[])"
    " WITH ORDINALITY AS w(key, due_at, kind, n) ORDER BY w.n"
    " ON CONFLICT (ticket_id, key) DO UPDATE SET due_at = excluded.due_at, kind = excluded.kind,"
    " lease_owner = CASE WHEN timers.due_at = excluded.due_at THEN timers.lease_owner END,"
    " lease_until = CASE WHEN timers.due_at = excluded.due_at THEN timers.lease_until END,"
    " generation = CASE WHEN timers.due_at = excluded.due_at THEN timers.generation"
    " ELSE excluded.generation END"
    " WHERE (timers.due_at, timers.kind) IS DISTINCT FROM (excluded.due_at, excluded.kind)"
)

# Walks the timers_due index (due_at, generation) from the earliest, skipping rows others are
# claiming, and leases what it found in the same statement.
_PG_CLAIM_TIMERS = (
    "UPDATE timers AS t SET lease_owner = %(owner)s, lease_until = %(until)s"
    " FROM (SELECT ticket_id, key FROM timers"
    " WHERE due_at <= %(now)s AND (lease_until IS NULL OR lease_until <= %(now)s)"
    " ORDER BY due_at, generation LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS due"
    " WHERE t.ticket_id = due.ticket_id AND t.key = due.key"
    " RETURNING t.ticket_id, t.key, t.due_at, t.kind, t.generation"
)

_PG_ENQUEUE = (
    "INSERT INTO outbox (key, status, next_attempt_at, attempts, doc, created_at)"
    " SELECT n.key, 'pending', n.created_at, 0, n.doc::jsonb, n.created_at"
    " FROM unnest(%(keys)b::text[], %(created)b::timestamptz[], %(docs)b::text[])"
    " WITH ORDINALITY AS n(key, created_at, doc, i)"
    " ORDER BY n.i ON CONFLICT (key) DO NOTHING"
)


def _ticket_params(ticket: Ticket) -> tuple[tuple[Any, ...], str]:
    """The ticket's columns (``id`` first, no document) and its document as JSON text."""
    *columns, created_at = ticket_columns(ticket)
    text = ticket_json(ticket)
    if "\\u0000" in text:  # the document is built only to name where the NUL is
        _refuse_nul(text, ticket_to_doc(ticket), "ticket")
    return (*columns, _utc(created_at, "ticket.created_at")), text


# U+0000 as JSON writes it, ``\u0000``, and not a backslash of the text followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


_NO_NUL = "text without U+0000 (NUL) characters: PostgreSQL cannot store them"


def _has_nul(text: str) -> bool:
    return "\x00" in text


def _refuse_nul(text: str, doc: Any, field: str) -> None:
    """Raise ``ValidationError`` naming where ``doc`` holds U+0000, if its JSON ``text`` does.

    PostgreSQL stores no U+0000 in text, nor in a ``jsonb`` string: refused here with the path
    to it rather than by the database, whose error would also end the transaction.
    """
    if "\\u0000" in text and _ESCAPED_NUL.search(text) is not None:
        refuse_text_at(doc, field, _has_nul, _NO_NUL)


def _from_pg(value: datetime) -> datetime:
    # psycopg hands back the session's zone; astimezone is the cheap exact path to UTC.
    return value.astimezone(timezone.utc)


class _PgUnitOfWork(_SqlUnitOfWork):
    """The port's calls on PostgreSQL: the hot ones as pre-written SQL (see above)."""

    __slots__ = ("_seen",)

    def __init__(self, store: SqlStore, connection: Connection) -> None:
        super().__init__(store, connection)
        # Tickets as stored in this transaction (read or written by it), to tell what changed.
        self._seen: dict[str, Ticket] = {}

    # -- tickets ---------------------------------------------------------------------------
    def get_ticket(self, ticket_id: str) -> Ticket:
        if self._unfindable(ticket_id):
            raise TicketNotFound(ticket_id)
        text = self._c.exec_driver_sql(_PG_GET_TICKET, (ticket_id,)).scalar()
        if text is None:
            raise TicketNotFound(ticket_id)
        ticket = self._seen[ticket_id] = self._store._decoded.ticket(ticket_id, text)
        return ticket

    def insert_ticket(self, ticket: Ticket) -> None:
        columns, doc = _ticket_params(ticket)
        text = self._c.exec_driver_sql(_PG_INSERT_TICKET, (*columns, doc)).scalar()
        if text is None:
            raise ConcurrencyConflict(ticket.id, 0, self._version(ticket.id))
        if ticket.tags:
            self._set_tags(ticket)
        self._written(ticket, text)

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        columns, doc = _ticket_params(ticket)
        check_new_version(ticket.version, expected_version, "ticket.version")
        try:
            text = self._c.exec_driver_sql(
                _PG_UPDATE_TICKET, (*columns[1:], doc, ticket.id, expected_version)
            ).scalar()
        except sa_exc.IntegrityError:  # the new number is another ticket's
            raise ConcurrencyConflict(ticket.id, expected_version, None) from None
        if text is None:
            actual = self._version(ticket.id)
            if actual is None:
                raise TicketNotFound(ticket.id)
            raise ConcurrencyConflict(ticket.id, expected_version, actual)
        # The version check passed: a ticket this transaction saw at ``expected_version`` is
        # what the row held, tag rows included.
        before = self._seen.get(ticket.id)
        if before is None or before.version != expected_version or before.tags != ticket.tags:
            self._set_tags(ticket)
        self._written(ticket, text)

    def _set_tags(self, ticket: Ticket) -> None:
        self._c.exec_driver_sql(_PG_SET_TAGS, {"id": ticket.id, "tags": sorted(ticket.tags)})

    def _written(self, ticket: Ticket, text: str) -> None:
        self._seen[ticket.id] = ticket
        # Kept even if this unit of work rolls back: a hit needs the stored text to match.
        self._store._decoded.remember(ticket.id, text, ticket)

    # -- events ----------------------------------------------------------------------------
    def append_events(self, events_: Sequence[Event]) -> None:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        ticket_ids, sequences, types, ats, actors, datas = columns
        last: dict[str, int] = {}  # the sequence of each ticket's previous event in the batch
        firsts: list[str] = []
        first_sequences: list[int] = []
        for event in events_:
            check_event(event)
            previous = last.get(event.ticket_id)
            if previous is None:
                firsts.append(event.ticket_id)
                first_sequences.append(event.sequence)
            elif event.sequence != previous + 1:
                raise ConcurrencyConflict(event.ticket_id, previous + 1, event.sequence)
            last[event.ticket_id] = event.sequence
            ticket_ids.append(event.ticket_id)
            sequences.append(event.sequence)
            types.append(event.type)
            ats.append(_utc(event.at, "event.at"))
            actors.append(event.actor)
            if "\x00" in f"{event.ticket_id}{event.type}{event.actor}":
                refuse_texts(
                    {"event.ticket_id": event.ticket_id, "event.type": event.type,
                     "event.actor": event.actor}, _has_nul, _NO_NUL,
                )  # fmt: skip
            data = dump_json(dict(event.data), "event.data")
            self._check_json(data, event.data, "event.data")
            datas.append(data)
        if not ticket_ids:
            return
        inserted = self._c.exec_driver_sql(
            _PG_APPEND_EVENTS,
            {
                "ticket_ids": ticket_ids,
                "sequences": sequences,
                "types": types,
                "ats": ats,
                "actors": actors,
                "datas": datas,
                "firsts": firsts,
                "first_sequences": first_sequences,
            },
        ).all()
        if len(inserted) == len(ticket_ids):
            return
        if inserted:
            # A writer committed one of these sequences while this statement waited for it:
            # take back the rows that went in, so that a caller who goes on after the
            # conflict commits none of the batch.
            self._c.exec_driver_sql(
                _PG_TAKE_BACK_EVENTS,
                {
                    "ticket_ids": [row[0] for row in inserted],
                    "sequences": [row[1] for row in inserted],
                },
            )
        for ticket_id, sequence in zip(firsts, first_sequences, strict=True):
            stored = self._c.exec_driver_sql(_PG_LAST_SEQUENCE, (ticket_id,)).scalar()
            expected = int(stored or 0) + 1
            if sequence != expected:
                raise ConcurrencyConflict(ticket_id, expected, sequence)
        raise ConcurrencyConflict(firsts[0], first_sequences[0], None)

    # -- what PostgreSQL cannot hold: NUL, besides what no database can ----------------------
    def _unfindable(self, *keys: object) -> bool:
        return super()._unfindable(*keys) or any(
            isinstance(key, str) and _has_nul(key) for key in keys
        )

    def _check_texts(self, texts: Mapping[str, object]) -> None:
        super()._check_texts(texts)
        refuse_texts(texts, _has_nul, _NO_NUL)

    def _check_json(self, text: str, doc: Any, field: str) -> None:
        _refuse_nul(text, doc, field)

    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        if owner is not None and _has_nul(owner):
            return  # no claim is held by such an owner: PostgreSQL stores no NUL
        # PostgreSQL stores no NUL: written as "\x00" (see ``diagnostic_text``).
        text = diagnostic_text(error).replace("\x00", "\\x00")
        super().mark_failed(key, text, retry_at, owner)

    # -- timers ----------------------------------------------------------------------------
    def replace_timers(self, ticket_id: str, timers_: Sequence[Timer]) -> None:
        wanted = check_timers(ticket_id, timers_)
        refuse_texts({"ticket_id": ticket_id}, _has_nul, _NO_NUL)
        for timer in wanted.values():
            refuse_texts({"timer.key": timer.key, "timer.kind": timer.kind}, _has_nul, _NO_NUL)
        self._c.exec_driver_sql(
            _PG_REPLACE_TIMERS,
            {
                "id": ticket_id,
                "keys": list(wanted),
                "dues": [_utc(timer.due_at, "timer.due_at") for timer in wanted.values()],
                "kinds": [timer.kind for timer in wanted.values()],
            },
        )

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        window = _claim_window(now, limit, owner, lease)
        refuse_texts({"owner": owner}, _has_nul, _NO_NUL)
        if window is None:
            return []
        at, until = window
        rows = self._c.exec_driver_sql(
            _PG_CLAIM_TIMERS, {"owner": owner, "until": until, "now": at, "limit": limit}
        ).all()
        # RETURNING keeps no order: the claim's is (due_at, generation).
        ordered = sorted(rows, key=lambda row: (row[2], row[4]))
        return [Timer(t, key, _from_pg(due), kind) for t, key, due, kind, _ in ordered]

    # -- outbox ----------------------------------------------------------------------------
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        keys: list[str] = []
        created: list[datetime] = []
        docs: list[str] = []
        for notification in notifications:
            if not isinstance(notification, Notification):
                raise ValidationError("notifications", notification, "Notification instances")
            created.append(_utc(notification.created_at, "notification.created_at"))
            keys.append(notification.idempotency_key)
            doc = notification_to_doc(notification)
            text = dump_json(doc, "notification")
            self._check_json(text, doc, "notification")
            docs.append(text)
        if keys:
            self._c.exec_driver_sql(_PG_ENQUEUE, {"keys": keys, "created": created, "docs": docs})
