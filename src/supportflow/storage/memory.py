"""``MemoryStore``: the whole port in process memory, for tests, examples and benchmarks.

Units of work are serialised by one re-entrant lock and undone from a log when they raise,
so the store keeps the same all-or-nothing promise as a database. Timers sit in a queue keyed
by due time (entries are invalidated lazily, and the queue is rebuilt from the live timers
when stale entries outnumber them), so claiming the next due ones never scans.

Events are kept compactly, since a desk stores a dozen or more per ticket: a ticket's stream
is one flat tuple of ``(schema, at, values)`` triples, where ``schema`` is a shared
``(type, actor, keys)`` tuple and ``values`` holds the data's values in that order (shared too
when it is only strings and ``None``, as most status changes are). ``Event`` objects are built
again on reading.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from supportflow.clock import ensure_aware
from supportflow.errors import ConcurrencyConflict, TicketNotFound
from supportflow.events import Event
from supportflow.model import Notification, Ticket, Timer
from supportflow.storage._codec import check_new_version
from supportflow.storage._port import OutboxEntry, OutboxStatus, Record, TicketQuery

__all__ = ["MemoryStore"]

_OCCURRENCE_MEMORY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BUCKET = timedelta(minutes=10)

_Entry = tuple[datetime, int, str, str]  # (due_at, generation, ticket_id, key)
_Schema = tuple[str, str, tuple[str, ...]]  # an event's (type, actor, data keys)
_STRIDE = 3  # an event is three items of its ticket's flat stream: schema, at, values
_SHARED_LIMIT = 100_000  # entries of each sharing table before it starts over
_SHARING_TRIAL = 64  # events of one schema tried before sharing may stop for it
_COMPACT_ABOVE = 1_024  # queue entries below which stale ones are not worth a rebuild


class _DueQueue:
    """Timer entries in due order: a heap of ten-minute buckets, each bucket a small heap.

    One heap of a million entries pays a cache miss at each of its twenty levels on every
    pop; here a pop works inside one bucket's entries, and the heap of bucket keys is touched
    only when a bucket empties.
    """

    __slots__ = ("_buckets", "_keys", "size")

    def __init__(self) -> None:
        self._buckets: dict[int, list[_Entry]] = {}
        self._keys: list[int] = []
        self.size = 0  # entries held, live and stale

    def __bool__(self) -> bool:
        return bool(self._keys)

    def push(self, entry: _Entry) -> None:
        self.size += 1
        key = (entry[0] - _EPOCH) // _BUCKET
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [entry]
            heapq.heappush(self._keys, key)
        else:
            heapq.heappush(bucket, entry)

    def first(self) -> _Entry:
        return self._buckets[self._keys[0]][0]

    def pop(self) -> _Entry:
        self.size -= 1
        key = self._keys[0]
        bucket = self._buckets[key]
        entry = heapq.heappop(bucket)
        if not bucket:
            del self._buckets[key]
            heapq.heappop(self._keys)
        return entry

    def rebuild(self, entries: list[_Entry]) -> None:
        """Hold exactly ``entries`` (the stale ones are dropped)."""
        buckets: dict[int, list[_Entry]] = {}
        for entry in entries:
            buckets.setdefault((entry[0] - _EPOCH) // _BUCKET, []).append(entry)
        for bucket in buckets.values():
            heapq.heapify(bucket)
        self._buckets, self._keys, self.size = buckets, list(buckets), len(entries)
        heapq.heapify(self._keys)


@attrs.define(slots=True)
class _TimerRow:
    timer: Timer
    generation: int
    lease_owner: str | None = None
    lease_until: datetime | None = None


@attrs.define(slots=True)
class _OutboxRow:
    entry: OutboxEntry
    lease_until: datetime | None = None


class MemoryStore:
    """The storage port kept in memory.

    >>> store = MemoryStore()
    >>> with store.transaction() as uow:
    ...     uow.next_ticket_number()
    1
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tickets: dict[str, Ticket] = {}
        self._numbers = itertools.count(1)
        self._events: dict[str, tuple[Any, ...]] = {}  # ticket id -> flat (schema, at, values)*
        self._event_log: list[str] = []  # the ticket id of every event, in insertion order
        self._schemas: dict[_Schema, _Schema] = {}
        self._shared_values: dict[tuple[object, ...], tuple[object, ...]] = {}
        self._sharing: dict[_Schema, list[int]] = {}  # schema -> [values tried, found shared]
        self._timers: dict[str, dict[str, _TimerRow]] = {}
        self._live_timers = 0  # rows in ``_timers``; the due queue holds these and stale ones
        self._due = _DueQueue()
        self._generations = itertools.count(1)
        # In enqueue order (keys are never inserted again). A notification nobody has claimed
        # yet is kept as it is: its row and entry are made when a worker first touches it.
        self._outbox: dict[str, _OutboxRow | Notification] = {}
        self._records: dict[tuple[str, str], Record] = {}
        self._occurrences: dict[str, deque[tuple[datetime, str]]] = defaultdict(deque)
        self._undo: list[Callable[[], object]] | None = None
        self._uow = _MemoryUnitOfWork(self)  # stateless: one serves every unit of work

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def close(self) -> None:
        """Nothing to release; present for the port."""

    def _log(self, undo: Callable[[], object]) -> None:
        assert self._undo is not None, "MemoryStore used outside a transaction"
        self._undo.append(undo)

    def _compact_due(self) -> None:
        """Rebuild the due queue from the live timers once stale entries outnumber them.

        Every change of a deadline leaves its old entry behind until it comes up; a closed
        ticket's entries could stay for weeks. Done only after a commit (never undone), with
        each row's one live entry: its lease expiry while leased, else its due time.
        """
        due = self._due
        if due.size <= _COMPACT_ABOVE or due.size <= 2 * self._live_timers:
            return
        due.rebuild(
            [
                (row.lease_until or row.timer.due_at, row.generation, ticket_id, key)
                for ticket_id, rows in self._timers.items()
                for key, row in rows.items()
            ]
        )

    def _schema(self, schema: _Schema) -> _Schema:
        shared = self._schemas.setdefault(schema, schema)
        if len(self._schemas) > _SHARED_LIMIT:
            self._schemas.clear()  # bounded: already stored events keep theirs
        return shared

    def _values(self, schema: _Schema, values: tuple[object, ...]) -> tuple[object, ...]:
        """``values``, or an equal tuple stored before (one object serves many events).

        Tuples of strings, None and numbers are shared. Equal numbers may differ in type
        (1, 1.0, True) or sign (0.0, -0.0), and a shared value must read back exactly as
        written: with numbers the key spells each one exactly. Kinds of event whose values
        hardly ever repeat (a ticket's number, a message id) stop being tried, since each
        try keeps a table entry.
        """
        exact = False
        for value in values:
            kind = type(value)
            if value is None or kind is str:
                continue
            if kind is not int and kind is not float and kind is not bool:
                return values  # lists, dicts, ...: not shared
            exact = True
        stats = self._sharing.get(schema)
        if stats is None:
            stats = self._sharing[schema] = [0, 0]
        tries, hits = stats
        if tries >= _SHARING_TRIAL and hits * 4 < tries:
            return values  # this kind of event rarely repeats its values
        key = tuple(map(_exact, values)) if exact else values
        shared = self._shared_values.setdefault(key, values)
        stats[0], stats[1] = tries + 1, hits + (shared is not values)
        if len(self._shared_values) > _SHARED_LIMIT:
            self._shared_values.clear()
            self._sharing.clear()  # and every kind gets a new trial
        return shared


class _Transaction:
    """One unit of work on a :class:`MemoryStore` (a class rather than a generator: every
    command opens one, and this is the cheaper context manager)."""

    __slots__ = ("_outer", "_store")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._outer = False

    def __enter__(self) -> _MemoryUnitOfWork:
        store = self._store
        store._lock.acquire()
        if store._undo is None:
            store._undo = []
            self._outer = True
        # else a nested unit of work joins the outer one, as a savepoint-free database would.
        return store._uow

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        store = self._store
        try:
            if self._outer:
                undo, store._undo = store._undo, None
                if kind is not None:
                    for step in reversed(undo or ()):
                        step()
                else:
                    store._compact_due()
        finally:
            store._lock.release()


class _MemoryUnitOfWork:
    __slots__ = ("_s",)

    def __init__(self, store: MemoryStore) -> None:
        self._s = store

    # -- tickets ---------------------------------------------------------------------------
    def next_ticket_number(self) -> int:
        return next(self._s._numbers)

    def get_ticket(self, ticket_id: str) -> Ticket:
        try:
            return self._s._tickets[ticket_id]
        except KeyError:
            raise TicketNotFound(ticket_id) from None

    def insert_ticket(self, ticket: Ticket) -> None:
        tickets = self._s._tickets
        if ticket.id in tickets:
            raise ConcurrencyConflict(ticket.id, 0, tickets[ticket.id].version)
        tickets[ticket.id] = ticket
        self._s._log(lambda: tickets.pop(ticket.id, None))

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        tickets = self._s._tickets
        check_new_version(ticket.version, expected_version, "ticket.version")
        current = tickets.get(ticket.id)
        if current is None:
            raise TicketNotFound(ticket.id)
        if current.version != expected_version:
            raise ConcurrencyConflict(ticket.id, expected_version, current.version)
        tickets[ticket.id] = ticket
        self._s._log(lambda: tickets.__setitem__(ticket.id, current))

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        found = [t for t in self._s._tickets.values() if _matches(t, query)]
        found.sort(key=lambda t: t.number)
        return found[: query.limit] if query.limit is not None else found

    # -- events ----------------------------------------------------------------------------
    def append_events(self, events: Sequence[Event]) -> None:
        store = self._s
        streams, log = store._events, store._event_log
        added: dict[str, list[Any]] = {}
        for event in events:
            ticket_id = event.ticket_id
            pieces = added.get(ticket_id)
            if pieces is None:
                pieces = added[ticket_id] = []
            expected = (len(streams.get(ticket_id, ())) + len(pieces)) // _STRIDE + 1
            if event.sequence != expected:
                raise ConcurrencyConflict(ticket_id, expected, event.sequence)
            data = event.data
            schema = store._schema((event.type, event.actor, tuple(data)))
            pieces += (schema, event.at, store._values(schema, tuple(data.values())))
        # Checked whole before anything is written: a conflict half-way leaves nothing.
        previous = {ticket_id: streams.get(ticket_id) for ticket_id in added}
        store._log(functools.partial(_unappend, streams, log, len(log), previous))
        for ticket_id, pieces in added.items():
            # A tuple of exactly the size needed: a list would keep room to grow per ticket.
            streams[ticket_id] = streams.get(ticket_id, ()) + tuple(pieces)
        log.extend(event.ticket_id for event in events)

    def history(self, ticket_id: str) -> list[Event]:
        stream = self._s._events.get(ticket_id, ())
        return [_event(ticket_id, stream, index) for index in range(len(stream) // _STRIDE)]

    def iter_events(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Event]:
        streams = self._s._events
        seen: dict[str, int] = {}  # events of each ticket met so far in the log
        selected: list[tuple[datetime, str, int]] = []
        for ticket_id in self._s._event_log:
            index = seen.get(ticket_id, 0)
            seen[ticket_id] = index + 1
            at: datetime = streams[ticket_id][index * _STRIDE + 1]
            if (start is None or at >= start) and (end is None or at < end):
                selected.append((at, ticket_id, index))
        # Stable sort: ties keep insertion order.
        selected.sort(key=lambda item: item[0])
        return (_event(ticket_id, streams[ticket_id], index) for _, ticket_id, index in selected)

    # -- timers ----------------------------------------------------------------------------
    def replace_timers(self, ticket_id: str, timers: Sequence[Timer]) -> None:
        store = self._s
        old = store._timers.get(ticket_id, {})
        if len(old) == len(timers) and all(
            (row := old.get(timer.key)) is not None and row.timer.due_at == timer.due_at
            for timer in timers
        ):
            return  # the same deadlines (most commands move none): rows and leases stay
        new: dict[str, _TimerRow] = {}
        for timer in timers:
            previous = old.get(timer.key)
            if previous is not None and previous.timer.due_at == timer.due_at:
                new[timer.key] = previous
                continue
            row = _TimerRow(timer, next(store._generations))
            new[timer.key] = row
            store._due.push((timer.due_at, row.generation, ticket_id, timer.key))
        if new:
            store._timers[ticket_id] = new
        else:
            store._timers.pop(ticket_id, None)
        store._live_timers += len(new) - len(old)
        # Heap entries of replaced rows turn stale and are skipped; restoring the dict suffices.
        store._log(functools.partial(_restore, store, ticket_id, old, len(new)))

    def timers(self, ticket_id: str) -> list[Timer]:
        rows = self._s._timers.get(ticket_id, {})
        return sorted((row.timer for row in rows.values()), key=lambda t: t.due_at)

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        ensure_aware(now, "now")
        store = self._s
        due = store._due
        claimed: list[Timer] = []
        popped: list[_Entry] = []
        while due and len(claimed) < limit and due.first()[0] <= now:
            entry = due.pop()
            popped.append(entry)
            _, generation, ticket_id, key = entry
            row = store._timers.get(ticket_id, {}).get(key)
            if row is None or row.generation != generation:
                continue  # replaced or deleted since it was pushed
            if row.lease_until is not None and row.lease_until > now:
                continue  # leased: a fresh entry at lease expiry is already in the heap
            previous_lease = (row.lease_owner, row.lease_until)
            row.lease_owner, row.lease_until = owner, now + lease
            due.push((row.lease_until, generation, ticket_id, key))
            claimed.append(row.timer)
            store._log(functools.partial(_unlease, row, previous_lease))
        store._log(lambda: _repush(due, popped))
        return claimed

    def release_timer(self, timer: Timer, owner: str) -> None:
        store = self._s
        rows = store._timers.get(timer.ticket_id)
        if rows is None:
            return
        row = rows.get(timer.key)
        if row is None or row.timer.due_at != timer.due_at:
            return
        del rows[timer.key]
        if not rows:
            del store._timers[timer.ticket_id]
        store._live_timers -= 1

        def undo() -> None:
            store._timers.setdefault(timer.ticket_id, {})[timer.key] = row
            store._live_timers += 1

        store._log(undo)

    def next_timer_due(self) -> datetime | None:
        store = self._s
        due = store._due
        while due:
            _, generation, ticket_id, key = due.first()
            row = store._timers.get(ticket_id, {}).get(key)
            if row is not None and row.generation == generation:
                return row.timer.due_at
            due.pop()  # stale; dropping it changes nothing observable
        return None

    # -- outbox ----------------------------------------------------------------------------
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        store = self._s
        for notification in notifications:
            key = notification.idempotency_key
            if key in store._outbox:
                continue
            store._outbox[key] = notification
            store._log(functools.partial(store._outbox.pop, key, None))

    def claim_notifications(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[OutboxEntry]:
        store = self._s
        due: list[tuple[datetime, int, str]] = []  # (when, enqueue order, key)
        for order, (key, row) in enumerate(store._outbox.items()):
            if type(row) is Notification:  # pending, never tried, not leased
                if row.created_at <= now:
                    due.append((row.created_at, order, key))
                continue
            assert isinstance(row, _OutboxRow)
            entry = row.entry
            if (
                entry.status is OutboxStatus.PENDING
                and (entry.next_attempt_at is None or entry.next_attempt_at <= now)
                and (row.lease_until is None or row.lease_until <= now)
            ):
                due.append((entry.next_attempt_at or now, order, key))
        due.sort(key=lambda item: item[:2])
        claimed = []
        for _, _, key in due[:limit]:
            claimed_row = self._row(key)
            assert claimed_row is not None
            previous = claimed_row.lease_until
            claimed_row.lease_until = now + lease
            store._log(functools.partial(setattr, claimed_row, "lease_until", previous))
            claimed.append(claimed_row.entry)
        return claimed

    def _row(self, key: str) -> _OutboxRow | None:
        """The outbox row of ``key``, made from its notification the first time."""
        outbox = self._s._outbox
        row = outbox.get(key)
        if row is None or type(row) is _OutboxRow:
            return row
        assert isinstance(row, Notification)
        made = outbox[key] = _OutboxRow(_fresh_entry(row))
        self._s._log(functools.partial(outbox.__setitem__, key, row))
        return made

    def mark_delivered(self, key: str, at: datetime) -> None:
        self._update_outbox(
            key, lambda e: attrs.evolve(e, status=OutboxStatus.DELIVERED, delivered_at=at)
        )

    def mark_failed(self, key: str, error: str, retry_at: datetime | None) -> None:
        def fail(entry: OutboxEntry) -> OutboxEntry:
            if entry.status is OutboxStatus.DELIVERED:
                return entry  # a late report from a worker whose lease ran out
            return attrs.evolve(
                entry,
                status=OutboxStatus.PENDING if retry_at is not None else OutboxStatus.DEAD,
                attempts=entry.attempts + 1,
                next_attempt_at=retry_at,
                last_error=error,
            )

        self._update_outbox(key, fail)

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        row = self._s._outbox.get(key)
        return _entry(row) if row is not None else None

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxEntry]:
        found: list[OutboxEntry] = []
        for row in self._s._outbox.values():  # in enqueue order
            if len(found) >= limit:
                break
            entry = _entry(row)
            if entry.status is status:
                found.append(entry)
        return found

    def requeue(self, key: str, at: datetime) -> None:
        self._update_outbox(
            key,
            lambda e: attrs.evolve(e, status=OutboxStatus.PENDING, attempts=0, next_attempt_at=at),
        )

    def _update_outbox(self, key: str, change: Callable[[OutboxEntry], OutboxEntry]) -> None:
        row = self._row(key)
        if row is None:
            return
        previous = (row.entry, row.lease_until)
        row.entry = change(row.entry)
        row.lease_until = None

        def undo() -> None:
            row.entry, row.lease_until = previous

        self._s._log(undo)

    # -- records ---------------------------------------------------------------------------
    def put_record(self, record: Record, expected_version: int | None = None) -> None:
        records = self._s._records
        key = (record.kind, record.id)
        current = records.get(key)
        if expected_version is None:
            if current is not None:
                raise ConcurrencyConflict(f"{record.kind}/{record.id}", 0, current.version)
        elif current is None or current.version != expected_version:
            actual = current.version if current is not None else None
            raise ConcurrencyConflict(f"{record.kind}/{record.id}", expected_version, actual)
        records[key] = record
        if current is None:
            self._s._log(lambda: records.pop(key, None))
        else:
            self._s._log(lambda: records.__setitem__(key, current))

    def get_record(self, kind: str, record_id: str) -> Record | None:
        return self._s._records.get((kind, record_id))

    def find_records(
        self,
        kind: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[Record]:
        found = [
            r
            for (k, _), r in self._s._records.items()
            if k == kind
            and (ticket_id is None or r.ticket_id == ticket_id)
            and (status is None or r.status == status)
            and (created_from is None or r.created_at >= created_from)
            and (created_to is None or r.created_at < created_to)
        ]
        found.sort(key=lambda r: r.created_at)
        return found

    # -- occurrences -----------------------------------------------------------------------
    def record_occurrence(self, key: str, ticket_id: str, at: datetime) -> None:
        window = self._s._occurrences[key]
        window.append((at, ticket_id))
        self._s._log(window.pop)
        while window and window[0][0] < at - _OCCURRENCE_MEMORY:
            dropped = window.popleft()
            self._s._log(functools.partial(window.appendleft, dropped))

    def occurrences(self, key: str, since: datetime) -> list[str]:
        ensure_aware(since, "since")
        window = self._s._occurrences.get(key, ())
        return [ticket_id for at, ticket_id in sorted(window) if at >= since]


def _matches(ticket: Ticket, q: TicketQuery) -> bool:
    return (
        (q.status is None or ticket.status in q.status)
        and (q.assignee is None or ticket.assignee == q.assignee)
        and (q.group is None or ticket.group == q.group)
        and (q.customer_id is None or ticket.customer.id == q.customer_id)
        and (q.channel is None or ticket.channel.value == q.channel)
        and (q.priority is None or ticket.priority.value == q.priority)
        and (q.tag is None or q.tag in ticket.tags)
        and (q.created_from is None or ticket.created_at >= q.created_from)
        and (q.created_to is None or ticket.created_at < q.created_to)
    )


def _restore(store: MemoryStore, ticket_id: str, old: dict[str, _TimerRow], new: int) -> None:
    if old:
        store._timers[ticket_id] = old
    else:
        store._timers.pop(ticket_id, None)
    store._live_timers += len(old) - new


def _event(ticket_id: str, stream: Sequence[Any], index: int) -> Event:
    """The ``index``-th event of a ticket's flat stream, as an ``Event`` again."""
    at = index * _STRIDE
    schema: _Schema = stream[at]
    values: tuple[object, ...] = stream[at + 2]
    kind, actor, keys = schema
    return Event(
        ticket_id, index + 1, kind, stream[at + 1], actor, dict(zip(keys, values, strict=True))
    )


def _fresh_entry(notification: Notification) -> OutboxEntry:
    return OutboxEntry(notification, next_attempt_at=notification.created_at)


def _entry(row: _OutboxRow | Notification) -> OutboxEntry:
    return row.entry if isinstance(row, _OutboxRow) else _fresh_entry(row)


def _exact(value: object) -> object:
    """A key telling apart values that compare equal but read back differently."""
    if value is None or type(value) is str:
        return value
    if type(value) is float:
        return (float, value.hex())  # -0.0 and nan as well
    return (type(value), value)


def _unappend(
    streams: dict[str, tuple[Any, ...]],
    log: list[str],
    start: int,
    previous: dict[str, tuple[Any, ...] | None],
) -> None:
    """Undo ``append_events``: the touched streams as they were, the log up to ``start``."""
    for ticket_id, stream in previous.items():
        if stream is None:
            streams.pop(ticket_id, None)
        else:
            streams[ticket_id] = stream
    del log[start:]


def _unlease(row: _TimerRow, previous: tuple[str | None, datetime | None]) -> None:
    row.lease_owner, row.lease_until = previous


def _repush(due: _DueQueue, entries: list[_Entry]) -> None:
    for entry in entries:
        due.push(entry)
