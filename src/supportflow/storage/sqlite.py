"""``SqliteStore``: the storage port in one SQLite file, with the standard library only.

* The file runs in WAL mode (readers never block the writer) with ``foreign_keys=ON`` and
  ``synchronous=NORMAL``.
* Every unit of work is ``BEGIN IMMEDIATE`` ... ``COMMIT``: it takes the write lock up front, so
  two threads or processes never interleave their read-modify-write steps, and a timer or
  outbox row is claimed by one of them only. Waiting for the lock is bounded by
  ``busy_timeout`` seconds.
* Each thread gets its own connection; ``":memory:"`` uses one shared connection guarded by a
  lock (an in-memory database exists only on the connection that made it).
* The schema is created and migrated forward when the store opens, inside ``BEGIN IMMEDIATE``
  so that processes opening the same file at once do it exactly once.
* Instants are stored as integer microseconds since the epoch (UTC), so SQL comparisons and
  ``ORDER BY`` are chronological; they come back as aware UTC datetimes (the same instants).
  Documents (tickets, notifications, event and record data) are JSON text.
* Decoded tickets are kept (bounded) with the JSON text they came from: a ticket whose stored
  text is unchanged is not decoded again. An update writes only the columns and tag rows that
  differ from the version this unit of work read.

>>> store = SqliteStore()
>>> with store.transaction() as uow:
...     uow.next_ticket_number()
1
>>> store.close()
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from supportflow.clock import ensure_aware
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
    load_json,
    micros_to_instant,
    notification_from_doc,
    notification_to_doc,
    ticket_columns,
    ticket_json,
    unfindable,
)
from supportflow.storage._port import OutboxEntry, OutboxStatus, Record, TicketQuery, UnitOfWork

__all__ = ["MIGRATIONS", "SqliteStore"]

_EVENT_BATCH = 500
# Bounds of the decoded-ticket cache: entries, and characters of JSON they may hold together.
_DECODED_TICKETS = 2048
_DECODED_CHARS = 32_000_000
_OCCURRENCE_MEMORY = timedelta(days=1)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial schema. Never edit a released step: append a new one.
    (
        """CREATE TABLE tickets (
            id TEXT PRIMARY KEY,
            number INTEGER NOT NULL UNIQUE,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            assignee TEXT,
            "group" TEXT,
            customer_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            priority TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            doc TEXT NOT NULL
        )""",
        "CREATE INDEX tickets_status ON tickets (status)",
        "CREATE INDEX tickets_assignee ON tickets (assignee)",
        'CREATE INDEX tickets_group ON tickets ("group")',
        "CREATE INDEX tickets_customer ON tickets (customer_id)",
        "CREATE INDEX tickets_created ON tickets (created_at)",
        """CREATE TABLE ticket_tags (
            ticket_id TEXT NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (ticket_id, tag)
        )""",
        "CREATE INDEX ticket_tags_tag ON ticket_tags (tag)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('ticket_number', 0)",
        """CREATE TABLE events (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            ticket_id TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            type TEXT NOT NULL,
            at BIGINT NOT NULL,
            actor TEXT NOT NULL,
            data TEXT NOT NULL,
            UNIQUE (ticket_id, sequence)
        )""",
        "CREATE INDEX events_at ON events (at, position)",
        """CREATE TABLE timers (
            ticket_id TEXT NOT NULL,
            key TEXT NOT NULL,
            due_at BIGINT NOT NULL,
            kind TEXT NOT NULL,
            lease_owner TEXT,
            lease_until BIGINT,
            PRIMARY KEY (ticket_id, key)
        )""",
        "CREATE INDEX timers_due ON timers (due_at)",
        """CREATE TABLE outbox (
            key TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            next_attempt_at BIGINT,
            attempts INTEGER NOT NULL,
            lease_owner TEXT,
            lease_until BIGINT,
            doc TEXT NOT NULL,
            last_error TEXT,
            delivered_at BIGINT,
            created_at BIGINT NOT NULL
        )""",
        "CREATE INDEX outbox_due ON outbox (status, next_attempt_at, key)",
        "CREATE INDEX outbox_created ON outbox (status, created_at, key)",
        """CREATE TABLE records (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            ticket_id TEXT,
            status TEXT,
            version INTEGER NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (kind, id)
        )""",
        "CREATE INDEX records_created ON records (kind, created_at)",
        "CREATE INDEX records_ticket ON records (kind, ticket_id)",
        """CREATE TABLE occurrences (
            key TEXT NOT NULL,
            ticket_id TEXT NOT NULL,
            at BIGINT NOT NULL
        )""",
        "CREATE INDEX occurrences_key_at ON occurrences (key, at)",
    ),
    # 2: one index fewer to write with every notification. Listing dead letters (the only
    # reader ordered by creation) reads the few rows of that status through outbox_due.
    ("DROP INDEX IF EXISTS outbox_created",),
    # 3: claims take timers due at the same instant in the order their deadlines were set (as
    # MemoryStore does): a generation is drawn from the counter whenever a deadline is set.
    # Timers stored before are numbered in rowid order, the order claims took them in so far.
    (
        "ALTER TABLE timers ADD COLUMN generation BIGINT NOT NULL DEFAULT 0",
        "UPDATE timers SET generation = rowid",
        "INSERT INTO counters (name, value)"
        " SELECT 'timer_generation', COALESCE(MAX(generation), 0) FROM timers",
        "DROP INDEX timers_due",
        "CREATE INDEX timers_due ON timers (due_at, generation)",
    ),
    # 4: outbox rows count their claims, so a row whose deliveries never finish (they kill
    # the worker) can be parked. Adding a column with a constant default rewrites nothing. A
    # pending row counts the claims its recorded failures came from, and the claim it is
    # leased under (its worker's result is yet to come, or never will).
    (
        "ALTER TABLE outbox ADD COLUMN claims INTEGER NOT NULL DEFAULT 0",
        "UPDATE outbox SET claims = attempts + (lease_owner IS NOT NULL)"
        " WHERE status = 'pending' AND (attempts > 0 OR lease_owner IS NOT NULL)",
    ),
)
"""Forward migrations: step ``n`` (1-based) brings the schema from version ``n - 1`` to ``n``."""

SCHEMA_VERSION = len(MIGRATIONS)


def _is_memory(path: str) -> bool:
    return path in ("", ":memory:")


class SqliteStore:
    """The storage port on SQLite; see the module docstring for how it keeps its promises.

    ``path`` is a file (created if absent) or ``":memory:"``. ``busy_timeout`` is how many
    seconds a unit of work waits for another writer before failing with
    ``sqlite3.OperationalError("database is locked")``.

    A ``transaction()`` opened while the same thread already has one joins it (the outer block
    decides commit or rollback), as with :class:`~supportflow.storage.MemoryStore`.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:", *, busy_timeout: float = 30.0):
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise ValidationError("busy_timeout", busy_timeout, "a number of seconds >= 0")
        if busy_timeout < 0:
            raise ValidationError("busy_timeout", busy_timeout, "a number of seconds >= 0")
        self._path = os.fspath(path)
        self._busy_timeout = float(busy_timeout)
        self._memory = _is_memory(self._path)
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        # Decoded tickets, each with the exact JSON text it came from (or was written as).
        self._decoded = TicketCache(_DECODED_TICKETS, _DECODED_CHARS)
        # The shared in-memory connection is used by one unit of work at a time.
        self._shared_lock: threading.RLock | None = threading.RLock() if self._memory else None
        self._shared: sqlite3.Connection | None = None
        connection = self._connect()
        if self._memory:
            self._shared = connection
        else:
            self._local.connection = connection
        _migrate(connection)

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._path

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._guard():
            row = self._connection().execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """Open a unit of work: ``BEGIN IMMEDIATE``, commit at the end, roll back if it raises."""
        current: _SqliteUnitOfWork | None = getattr(self._local, "uow", None)
        if current is not None:
            yield current
            return
        with self._guard():
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            uow = _SqliteUnitOfWork(self, connection)
            self._local.uow = uow
            try:
                yield uow
            except BaseException:
                self._local.uow = None
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            else:
                self._local.uow = None
                try:
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        """Close every connection this store opened (from any thread)."""
        with self._registry_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._shared = None
        self._local = threading.local()
        self._decoded.clear()

    # -- connections -----------------------------------------------------------------------
    def _guard(self) -> AbstractContextManager[Any]:
        return self._shared_lock if self._shared_lock is not None else nullcontext()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("SqliteStore is closed")
        if self._shared is not None:
            return self._shared
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the module never opens transactions behind our back;
        # check_same_thread=False only so close() may close other threads' connections.
        connection = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        connection.execute("PRAGMA foreign_keys = ON")
        if not self._memory:
            _retry_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"), self)
        connection.execute("PRAGMA synchronous = NORMAL")
        with self._registry_lock:
            if self._closed:
                connection.close()
                raise sqlite3.ProgrammingError("SqliteStore is closed")
            self._connections.append(connection)
        return connection

    # -- decoded tickets -------------------------------------------------------------------
    def _ticket_of(self, ticket_id: str, doc: str) -> Ticket:
        """The ticket stored as ``doc``: decoding it is the costliest step of a command."""
        return self._decoded.ticket(ticket_id, doc)

    def _remember(self, ticket_id: str, doc: str, ticket: Ticket) -> None:
        self._decoded.remember(ticket_id, doc, ticket)

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one query on this thread's connection (used by event streams between batches)."""
        with self._guard():
            return self._connection().execute(sql, params).fetchall()


def _retry_locked(step: Any, store: SqliteStore) -> None:
    # Switching to WAL needs a moment of exclusive access; the busy handler does not cover it.
    deadline = time.monotonic() + store._busy_timeout
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`; a no-op when it is there already."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        current = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if current > SCHEMA_VERSION:
            raise ValidationError(
                "schema_version",
                current,
                f"at most {SCHEMA_VERSION}: the database was written by a newer supportflow",
            )
        for number, statements in enumerate(MIGRATIONS, start=1):
            if number <= current:
                continue
            for statement in statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, time.time_ns() // 1000),
            )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _utc(value: datetime, field: str) -> int:
    return instant_to_micros(ensure_aware(value, field), field)


def _opt_instant(value: int | None) -> datetime | None:
    return micros_to_instant(value) if value is not None else None


_TICKET_COLUMNS = (
    'id, number, version, status, assignee, "group", customer_id, channel, priority,'
    " created_at, doc"
)


# The columns of ``_TICKET_COLUMNS`` an update may set, in order (all but ``id``).
_UPDATABLE_COLUMNS = (
    "number",
    "version",
    "status",
    "assignee",
    '"group"',
    "customer_id",
    "channel",
    "priority",
    "created_at",
    "doc",
)


def _ticket_row(ticket: Ticket) -> tuple[Any, ...]:
    return (*_ticket_columns(ticket), ticket_json(ticket))


def _ticket_columns(ticket: Ticket) -> tuple[Any, ...]:
    """The ticket's row without its document."""
    *columns, created_at = ticket_columns(ticket)
    return (*columns, _utc(created_at, "ticket.created_at"))


def _event_of(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    ticket_id, sequence, type_, at, actor, data = row
    return Event(ticket_id, sequence, type_, micros_to_instant(at), actor, load_json(data))


_OUTBOX_COLUMNS = "doc, status, attempts, next_attempt_at, last_error, delivered_at, claims"


def _outbox_entry(row: tuple[Any, ...], claimed: int = 0) -> OutboxEntry:
    """The entry of a row read with ``_OUTBOX_COLUMNS``; ``claimed`` adds a claim made since."""
    doc, status, attempts, next_attempt_at, last_error, delivered_at, claims = row
    return OutboxEntry(
        notification=notification_from_doc(load_json(doc)),
        status=OutboxStatus(status),
        attempts=attempts,
        next_attempt_at=_opt_instant(next_attempt_at),
        last_error=last_error,
        delivered_at=_opt_instant(delivered_at),
        claims=claims + claimed,
    )


_RECORD_COLUMNS = "kind, id, data, created_at, updated_at, ticket_id, status, version"


def _record_of(row: tuple[Any, ...]) -> Record:
    kind, id_, data, created_at, updated_at, ticket_id, status, version = row
    return Record(
        kind=kind,
        id=id_,
        data=load_json(data),
        created_at=micros_to_instant(created_at),
        updated_at=micros_to_instant(updated_at),
        ticket_id=ticket_id,
        status=status,
        version=version,
    )


class _SqliteUnitOfWork:
    """The port's calls on one connection inside ``BEGIN IMMEDIATE``."""

    __slots__ = ("_c", "_seen", "_store")

    def __init__(self, store: SqliteStore, connection: sqlite3.Connection) -> None:
        self._store = store
        self._c = connection
        # Tickets as stored in this transaction (read or written by it), to tell what changed.
        self._seen: dict[str, Ticket] = {}

    # -- tickets ---------------------------------------------------------------------------
    def next_ticket_number(self) -> int:
        row = self._c.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'ticket_number' RETURNING value"
        ).fetchone()
        return int(row[0])

    def get_ticket(self, ticket_id: str) -> Ticket:
        if unfindable(ticket_id):
            raise TicketNotFound(ticket_id)
        row = self._c.execute("SELECT doc FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise TicketNotFound(ticket_id)
        ticket = self._seen[ticket_id] = self._store._ticket_of(ticket_id, row[0])
        return ticket

    def insert_ticket(self, ticket: Ticket) -> None:
        row = _ticket_row(ticket)
        try:
            self._c.execute(f"INSERT INTO tickets ({_TICKET_COLUMNS}) VALUES ({_marks(11)})", row)
        except sqlite3.IntegrityError:
            raise ConcurrencyConflict(ticket.id, 0, self._version(ticket.id)) from None
        self._write_tags(ticket)
        self._written(ticket, row[-1])

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        row = _ticket_row(ticket)
        check_new_version(ticket.version, expected_version, "ticket.version")
        # If the version check passes, a ticket this transaction saw at ``expected_version`` is
        # what the row and its tag rows hold: write only what changed, since SQLite rewrites
        # the index entries of every column an UPDATE sets, changed or not.
        before = self._seen.get(ticket.id)
        if before is not None and before.version != expected_version:
            before = None
        # (``old`` has no document, so the new one is always written.)
        old = _ticket_columns(before) if before is not None else ()
        names: list[str] = []
        values: list[Any] = []
        for index, name in enumerate(_UPDATABLE_COLUMNS, start=1):
            if index >= len(old) or old[index] != row[index]:
                names.append(f"{name} = ?")
                values.append(row[index])
        try:
            cursor = self._c.execute(
                f"UPDATE tickets SET {', '.join(names)} WHERE id = ? AND version = ?",
                (*values, ticket.id, expected_version),
            )
        except sqlite3.IntegrityError:  # the new number is another ticket's
            raise ConcurrencyConflict(ticket.id, expected_version, None) from None
        if cursor.rowcount != 1:
            actual = self._version(ticket.id)
            if actual is None:
                raise TicketNotFound(ticket.id)
            raise ConcurrencyConflict(ticket.id, expected_version, actual)
        if before is None or before.tags != ticket.tags:
            self._c.execute("DELETE FROM ticket_tags WHERE ticket_id = ?", (ticket.id,))
            self._write_tags(ticket)
        self._written(ticket, row[-1])

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        if not isinstance(query, TicketQuery):
            raise ValidationError("query", query, "a TicketQuery")
        clauses: list[str] = []
        params: list[Any] = []
        statuses = check_statuses(query.status)
        if unfindable(query.assignee, query.group, query.customer_id, query.tag):
            return []  # no stored ticket holds such text (the database would refuse it)
        if statuses is not None:
            statuses = [status for status in statuses if not unfindable(status)]
            if not statuses:
                return []
            clauses.append(f"status IN ({_marks(len(statuses))})")
            params.extend(statuses)
        for column, value in (
            ("assignee", query.assignee),
            ('"group"', query.group),
            ("customer_id", query.customer_id),
            ("channel", _enum_value(query.channel)),
            ("priority", _enum_value(query.priority)),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.tag is not None:
            clauses.append("id IN (SELECT ticket_id FROM ticket_tags WHERE tag = ?)")
            params.append(query.tag)
        if query.created_from is not None:
            clauses.append("created_at >= ?")
            params.append(_utc(query.created_from, "created_from"))
        if query.created_to is not None:
            clauses.append("created_at < ?")
            params.append(_utc(query.created_to, "created_to"))
        sql = "SELECT id, doc FROM tickets"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY number"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(check_limit(query.limit))
        ticket_of = self._store._ticket_of
        return [ticket_of(id_, doc) for id_, doc in self._c.execute(sql, params)]

    def _written(self, ticket: Ticket, doc: str) -> None:
        self._seen[ticket.id] = ticket
        # Kept even if this unit of work rolls back: a hit needs the stored text to match.
        self._store._remember(ticket.id, doc, ticket)

    def _version(self, ticket_id: str) -> int | None:
        row = self._c.execute("SELECT version FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        return int(row[0]) if row is not None else None

    def _write_tags(self, ticket: Ticket) -> None:
        if ticket.tags:
            self._c.executemany(
                "INSERT INTO ticket_tags (ticket_id, tag) VALUES (?, ?)",
                [(ticket.id, tag) for tag in sorted(ticket.tags)],
            )

    # -- events ----------------------------------------------------------------------------
    def append_events(self, events: Sequence[Event]) -> None:
        rows: list[tuple[Any, ...]] = []
        first: dict[str, int] = {}  # each ticket's first sequence in this batch
        next_sequence: dict[str, int] = {}
        for event in events:
            check_event(event)
            expected = next_sequence.get(event.ticket_id)
            if expected is not None and event.sequence != expected:
                raise ConcurrencyConflict(event.ticket_id, expected, event.sequence)
            first.setdefault(event.ticket_id, event.sequence)
            next_sequence[event.ticket_id] = event.sequence + 1
            data = dump_json(dict(event.data), "event.data")
            at = _utc(event.at, "event.at")
            rows.append((event.ticket_id, event.sequence, event.type, at, event.actor, data))
        if not rows:
            return
        # Each row goes in only if it follows the ticket's last stored event (the rows before
        # it in the batch included): one statement instead of a read of the last sequence.
        try:
            inserted = self._c.executemany(
                "INSERT INTO events (ticket_id, sequence, type, at, actor, data)"
                " SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE ?2 = 1 + COALESCE("
                "(SELECT MAX(sequence) FROM events WHERE ticket_id = ?1), 0)",
                rows,
            ).rowcount
        except sqlite3.IntegrityError as exc:  # unreachable under BEGIN IMMEDIATE; kept safe
            raise ConcurrencyConflict(rows[0][0], 0, None) from exc
        if inserted == len(rows):
            return
        # A gap or a repeat: take back what went in (the newest positions: this transaction
        # is the only writer), and say what was expected.
        self._c.execute(
            "DELETE FROM events WHERE position IN"
            " (SELECT position FROM events ORDER BY position DESC LIMIT ?)",
            (inserted,),
        )
        for ticket_id, sequence in first.items():
            last = self._c.execute(
                "SELECT MAX(sequence) FROM events WHERE ticket_id = ?", (ticket_id,)
            ).fetchone()[0]
            if sequence != (last or 0) + 1:
                raise ConcurrencyConflict(ticket_id, (last or 0) + 1, sequence)
        raise ConcurrencyConflict(rows[0][0], 0, None)

    def history(self, ticket_id: str) -> list[Event]:
        if unfindable(ticket_id):
            return []  # no stored one holds such text
        cursor = self._c.execute(
            "SELECT ticket_id, sequence, type, at, actor, data FROM events"
            " WHERE ticket_id = ? ORDER BY sequence",
            (ticket_id,),
        )
        return [_event_of(row) for row in cursor]

    def iter_events(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Event]:
        low = _utc(start, "start") if start is not None else None
        high = _utc(end, "end") if end is not None else None
        return self._event_batches(low, high)

    def _event_batches(self, low: int | None, high: int | None) -> Iterator[Event]:
        bounds: list[str] = []
        bound_params: list[Any] = []
        if low is not None:
            bounds.append("at >= ?")
            bound_params.append(low)
        if high is not None:
            bounds.append("at < ?")
            bound_params.append(high)
        after: tuple[int, int] | None = None
        while True:
            clauses = list(bounds)
            params = list(bound_params)
            if after is not None:
                # Keyset pagination on the (at, position) index: constant cost per batch.
                clauses.append("at >= ? AND (at, position) > (?, ?)")
                params.extend((after[0], after[0], after[1]))
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            rows = self._store._read(
                "SELECT at, position, ticket_id, sequence, type, at, actor, data FROM events"
                f"{where} ORDER BY at, position LIMIT ?",
                (*params, _EVENT_BATCH),
            )
            for row in rows:
                yield _event_of(row[2:])
            if len(rows) < _EVENT_BATCH:
                return
            after = (rows[-1][0], rows[-1][1])

    # -- timers ----------------------------------------------------------------------------
    def replace_timers(self, ticket_id: str, timers: Sequence[Timer]) -> None:
        wanted = check_timers(ticket_id, timers)
        stored = {
            key: (due_at, kind)
            for key, due_at, kind in self._c.execute(
                "SELECT key, due_at, kind FROM timers WHERE ticket_id = ?", (ticket_id,)
            )
        }
        gone = [(ticket_id, key) for key in stored if key not in wanted]
        if gone:
            self._c.executemany("DELETE FROM timers WHERE ticket_id = ? AND key = ?", gone)
        rows: list[tuple[str, str, int, str]] = []  # the new deadlines, in the order given
        for key, timer in wanted.items():
            due = _utc(timer.due_at, "timer.due_at")
            previous = stored.get(key)
            if previous is not None and previous[0] == due:
                if previous[1] != timer.kind:  # same deadline: keep the lease and the place
                    self._c.execute(
                        "UPDATE timers SET kind = ? WHERE ticket_id = ? AND key = ?",
                        (timer.kind, ticket_id, key),
                    )
                continue
            rows.append((ticket_id, key, due, timer.kind))
        if not rows:
            return
        (last,) = self._c.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'timer_generation' RETURNING value",
            (len(rows),),
        ).fetchone()
        self._c.executemany(
            "INSERT INTO timers (ticket_id, key, due_at, kind, generation) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (ticket_id, key) DO UPDATE SET due_at = excluded.due_at,"
            " kind = excluded.kind, generation = excluded.generation, lease_owner = NULL,"
            " lease_until = NULL",
            [(*row, generation) for generation, row in enumerate(rows, last - len(rows) + 1)],
        )

    def timers(self, ticket_id: str) -> list[Timer]:
        if unfindable(ticket_id):
            return []  # no stored one holds such text
        cursor = self._c.execute(
            "SELECT ticket_id, key, due_at, kind FROM timers WHERE ticket_id = ?"
            " ORDER BY due_at, key",
            (ticket_id,),
        )
        return [Timer(t, k, micros_to_instant(d), kind) for t, k, d, kind in cursor]

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        at = _utc(now, "now")
        until = _utc(now + check_lease(lease), "now")
        check_text(owner, "owner")
        if check_limit(limit) == 0:
            return []
        # Walks the (due_at, generation) index from the earliest; leased rows are skipped,
        # never sorted.
        rows = self._c.execute(
            "SELECT ticket_id, key, due_at, kind FROM timers"
            " WHERE due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
            " ORDER BY due_at, generation LIMIT ?",
            (at, at, limit),
        ).fetchall()
        self._c.executemany(
            "UPDATE timers SET lease_owner = ?, lease_until = ? WHERE ticket_id = ? AND key = ?",
            [(owner, until, ticket_id, key) for ticket_id, key, _, _ in rows],
        )
        return [Timer(t, k, micros_to_instant(d), kind) for t, k, d, kind in rows]

    def release_timer(self, timer: Timer, owner: str) -> None:
        if not isinstance(timer, Timer):
            raise ValidationError("timer", timer, "a Timer")
        if unfindable(timer.ticket_id, timer.key):
            return  # no stored timer has such a key
        self._c.execute(
            "DELETE FROM timers WHERE ticket_id = ? AND key = ? AND due_at = ?",
            (timer.ticket_id, timer.key, _utc(timer.due_at, "timer.due_at")),
        )

    def next_timer_due(self) -> datetime | None:
        return _opt_instant(self._c.execute("SELECT MIN(due_at) FROM timers").fetchone()[0])

    # -- outbox ----------------------------------------------------------------------------
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        rows = []
        for notification in notifications:
            if not isinstance(notification, Notification):
                raise ValidationError("notifications", notification, "Notification instances")
            created = _utc(notification.created_at, "notification.created_at")
            doc = dump_json(notification_to_doc(notification), "notification")
            rows.append((notification.idempotency_key, created, doc, created))
        self._c.executemany(
            "INSERT INTO outbox (key, status, next_attempt_at, attempts, doc, created_at)"
            " VALUES (?, 'pending', ?, 0, ?, ?) ON CONFLICT (key) DO NOTHING",
            rows,
        )

    def claim_notifications(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[OutboxEntry]:
        at = _utc(now, "now")
        until = _utc(now + check_lease(lease), "now")
        check_text(owner, "owner")
        if check_limit(limit) == 0:
            return []
        rows = self._c.execute(
            f"SELECT key, {_OUTBOX_COLUMNS} FROM outbox"
            " WHERE status = 'pending' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until <= ?)"
            " ORDER BY next_attempt_at, key LIMIT ?",
            (at, at, limit),
        ).fetchall()
        self._c.executemany(
            "UPDATE outbox SET lease_owner = ?, lease_until = ?, claims = claims + 1 WHERE key = ?",
            [(owner, until, row[0]) for row in rows],
        )
        return [_outbox_entry(row[1:], claimed=1) for row in rows]

    def release_notifications(self, keys: Sequence[str], owner: str) -> None:
        keys = check_keys(keys)
        check_text(owner, "owner")
        self._c.executemany(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL,"
            " claims = MAX(claims - 1, 0)"
            " WHERE key = ? AND status = 'pending' AND lease_owner = ?",
            [(key, owner) for key in keys if not unfindable(key)],
        )

    def mark_delivered(self, key: str, at: datetime) -> None:
        if unfindable(key):
            return  # no row has such a key
        self._c.execute(
            "UPDATE outbox SET status = 'delivered', delivered_at = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE key = ?",
            (_utc(at, "at"), key),
        )

    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        if unfindable(key):
            return  # no row has such a key
        retry = _utc(retry_at, "retry_at") if retry_at is not None else None
        if owner is not None:
            check_text(owner, "owner")
        # A late report (its worker's lease ran out) must not revive a delivered or dead row,
        # nor count against a row another worker has claimed since.
        self._c.execute(
            "UPDATE outbox SET status = ?, attempts = attempts + 1, next_attempt_at = ?,"
            " last_error = ?, lease_owner = NULL, lease_until = NULL"
            " WHERE key = ? AND status = 'pending' AND (? IS NULL OR lease_owner = ?)",
            ("pending" if retry is not None else "dead", retry, diagnostic_text(error), key,
             owner, owner),
        )  # fmt: skip

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        if unfindable(key):
            return None  # no stored one holds such text
        row = self._c.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE key = ?", (key,)
        ).fetchone()
        return _outbox_entry(row) if row is not None else None

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxEntry]:
        value = coerce_enum(OutboxStatus, status, "status").value
        cursor = self._c.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = ?"
            " ORDER BY created_at, key LIMIT ?",
            (value, check_limit(limit)),
        )
        return [_outbox_entry(row) for row in cursor]

    def requeue(self, key: str, at: datetime) -> None:
        if unfindable(key):
            return  # no row has such a key
        self._c.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, claims = 0, next_attempt_at = ?,"
            " lease_owner = NULL, lease_until = NULL WHERE key = ? AND status = 'dead'",
            (_utc(at, "at"), key),
        )

    # -- records ---------------------------------------------------------------------------
    def put_record(self, record: Record, expected_version: int | None = None) -> None:
        if not isinstance(record, Record):
            raise ValidationError("record", record, "a Record")
        check_unicode(
            {"record.kind": record.kind, "record.id": record.id, "record.status": record.status,
             "record.ticket_id": record.ticket_id}
        )  # fmt: skip
        values = (
            record.ticket_id,
            record.status,
            record.version,
            _utc(record.created_at, "record.created_at"),
            _utc(record.updated_at, "record.updated_at"),
            dump_json(dict(record.data), "record.data"),
        )
        name = f"{record.kind}/{record.id}"
        if expected_version is None:
            try:
                self._c.execute(
                    "INSERT INTO records (kind, id, ticket_id, status, version, created_at,"
                    " updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.kind, record.id, *values),
                )
            except sqlite3.IntegrityError:
                raise ConcurrencyConflict(name, 0, self._record_version(record)) from None
            return
        check_new_version(record.version, expected_version, "record.version")
        cursor = self._c.execute(
            "UPDATE records SET ticket_id = ?, status = ?, version = ?, created_at = ?,"
            " updated_at = ?, data = ? WHERE kind = ? AND id = ? AND version = ?",
            (*values, record.kind, record.id, expected_version),
        )
        if cursor.rowcount != 1:
            raise ConcurrencyConflict(name, expected_version, self._record_version(record))

    def _record_version(self, record: Record) -> int | None:
        row = self._c.execute(
            "SELECT version FROM records WHERE kind = ? AND id = ?", (record.kind, record.id)
        ).fetchone()
        return int(row[0]) if row is not None else None

    def get_record(self, kind: str, record_id: str) -> Record | None:
        if unfindable(kind, record_id):
            return None  # no stored one holds such text
        row = self._c.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        ).fetchone()
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
        if unfindable(kind, ticket_id, status):
            return []
        clauses = ["kind = ?"]
        params: list[Any] = [kind]
        if ticket_id is not None:
            clauses.append("ticket_id = ?")
            params.append(ticket_id)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if created_from is not None:
            clauses.append("created_at >= ?")
            params.append(_utc(created_from, "created_from"))
        if created_to is not None:
            clauses.append("created_at < ?")
            params.append(_utc(created_to, "created_to"))
        cursor = self._c.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE {' AND '.join(clauses)}"
            " ORDER BY created_at, id",
            params,
        )
        return [_record_of(row) for row in cursor]

    # -- occurrences -----------------------------------------------------------------------
    def record_occurrence(self, key: str, ticket_id: str, at: datetime) -> None:
        check_strings({"key": key, "ticket_id": ticket_id})
        check_unicode({"key": key, "ticket_id": ticket_id})
        when = _utc(at, "at")
        self._c.execute(
            "INSERT INTO occurrences (key, ticket_id, at) VALUES (?, ?, ?)", (key, ticket_id, when)
        )
        # Forgetting what is older than a day keeps the table as small as the window.
        horizon = _utc(at - _OCCURRENCE_MEMORY, "at")
        self._c.execute("DELETE FROM occurrences WHERE key = ? AND at < ?", (key, horizon))

    def occurrences(self, key: str, since: datetime) -> list[str]:
        if unfindable(key):
            return []  # no stored one holds such text
        cursor = self._c.execute(
            "SELECT ticket_id FROM occurrences WHERE key = ? AND at >= ? ORDER BY at, ticket_id",
            (key, _utc(since, "since")),
        )
        return [ticket_id for (ticket_id,) in cursor]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)
