"""``MemoryStore``: the whole port in process memory, for tests, examples and benchmarks.

Units of work are serialised by one re-entrant lock and undone from a log when they raise,
so the store keeps the same all-or-nothing promise as a database. Timers sit in queues:
by due time, and while leased by lease expiry (a claim first moves the timers whose lease ran
out back to the due queue, so they compete by due time again). Entries are invalidated
lazily, and the queues are rebuilt from the live timers when stale entries outnumber them, so
claiming the next due ones never scans.

Events are kept compactly, since a desk stores a dozen or more per ticket. A ticket's stream
is one flat tuple: its event count, then each run of its events appended together at one
instant, as that instant followed by a record per event. A record is
``(schema, *values)``: ``schema`` a shared ``(type, actor, keys)`` tuple, ``values`` the data's
values in that order. Records whose values recur (most status changes, SLA events) are shared
between tickets. An event log, one ticket id per run, keeps the insertion order across
tickets that ``iter_events`` needs for ties. ``Event`` objects are built again on reading.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn

import attrs

from supportflow.clock import ensure_aware
from supportflow.errors import ConcurrencyConflict, TicketNotFound
from supportflow.events import Event
from supportflow.model import Notification, Ticket, Timer, coerce_enum
from supportflow.storage._codec import (
    check_claim,
    check_keys,
    check_limit,
    check_new_version,
    check_statuses,
    check_strings,
    check_text,
    check_timers,
)
from supportflow.storage._port import OutboxEntry, OutboxStatus, Record, TicketQuery

__all__ = ["MemoryStore"]

_UTC = timezone.utc  # what the desk stamps events with: checked without a call

_OCCURRENCE_MEMORY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BUCKET = timedelta(minutes=10)

_Entry = tuple[datetime, int, str, str]  # (due_at or lease_until, generation, ticket_id, key)
_Schema = tuple[str, str, tuple[str, ...]]  # an event's (type, actor, data keys)
_SHARED_LIMIT = 100_000  # kinds of event, or shared records, kept before sharing starts over
_SHARING_TRIAL = 64  # events of one schema tried before sharing may stop for it
_COMPACT_ABOVE = 1_024  # queue entries below which stale ones are not worth a rebuild
_PLAIN = frozenset({str, type(None)})  # value types whose equality is exact
_TUPLE_STREAM = 256  # items of a ticket's stream kept as a tuple; a longer one is a list
_Stream = tuple[Any, ...] | list[Any]


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


class _Heap:
    """Timer entries in order, in one plain heap: for entries pushed nearly in order (a claim
    takes timers by due time), where a push costs next to nothing and buckets would only add
    to it. The same methods as :class:`_DueQueue`."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def __bool__(self) -> bool:
        return bool(self._entries)

    @property
    def size(self) -> int:
        return len(self._entries)

    def push(self, entry: _Entry) -> None:
        heapq.heappush(self._entries, entry)

    def first(self) -> _Entry:
        return self._entries[0]

    def pop(self) -> _Entry:
        return heapq.heappop(self._entries)

    def rebuild(self, entries: list[_Entry]) -> None:
        heapq.heapify(entries)
        self._entries = entries


class _Kind:
    """One kind of event, ``(type, actor, keys)``: its shared schema, and the records of it
    stored so far, for sharing.

    Equal numbers may differ in type (1, 1.0, True) or sign (0.0, -0.0), and a shared record
    must read back exactly as written, so with anything but strings and None the key of a
    record spells each value exactly (containers by identity: the record keeps them alive).
    Kinds whose values hardly ever repeat (a ticket's number, a message id) stop being tried,
    since each try keeps a table entry.
    """

    __slots__ = ("hits", "records", "schema", "tries")

    def __init__(self, schema: _Schema) -> None:
        self.schema = schema
        self.records: dict[tuple[object, ...], tuple[Any, ...]] = {}
        self.tries = 0
        self.hits = 0


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
    lease_owner: str | None = None


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
        self._taken = _Numbers()  # the numbers of the tickets inserted
        self._numbers = itertools.count(1)
        # ticket id -> (event count, at, record, ..., at, record, ...); see the module doc
        self._events: dict[str, _Stream] = {}
        self._event_log: list[str] = []  # the ticket id of each run of events, in order
        self._kinds: dict[tuple[str, ...], _Kind] = {}  # by (type, actor, *keys)
        self._shared = 0  # records held by the kinds' tables
        self._timers: dict[str, dict[str, _TimerRow]] = {}
        self._live_timers = 0  # rows in ``_timers``; the queues hold these and stale ones
        # A timer not leased has an entry in ``_due`` (by due time); a leased one in ``_leased``
        # (by lease expiry) until a claim after its expiry moves it back to ``_due``. ``_held``
        # keeps a leased timer's due time for ``next_timer_due``, which counts leased timers.
        # A claim only notes the ticket id and row of each timer it takes (objects that exist
        # already: nothing new for the garbage collector); ``next_timer_due`` files them.
        self._due = _DueQueue()
        self._leased = _DueQueue()
        self._held = _Heap()
        self._unheld_ids: list[str] = []
        self._unheld_rows: list[_TimerRow] = []
        self._compact_held = False  # a claim found the held entries mostly stale
        self._generations = itertools.count(1)
        # In enqueue order (keys are never inserted again). A notification nobody has claimed
        # yet is kept as it is: its row and entry are made when a worker first touches it.
        self._outbox: dict[str, _OutboxRow | Notification] = {}
        self._records: dict[tuple[str, str], Record] = {}
        self._occurrences: dict[str, deque[tuple[datetime, str]]] = defaultdict(deque)
        self._undo: list[Callable[[], object]] = _OUTSIDE  # a list of its own in a unit of work
        self._depth = 0  # units of work entered and not left (nested ones join the outer one)
        # Stateless (the state is the store's, under its lock): one of each serves every unit of
        # work, so a command makes neither.
        self._uow = _MemoryUnitOfWork(self)
        self._transaction = _Transaction(self)

    def transaction(self) -> _Transaction:
        return self._transaction

    def close(self) -> None:
        """Nothing to release; present for the port."""

    def _compact_due(self) -> None:
        """Rebuild the timer queues from the live timers (called once stale entries outnumber
        them).

        Every change of a deadline leaves its old entries behind until they come up; a closed
        ticket's entries could stay for weeks. Done only after a commit (never undone): a
        timer never leased goes in the due queue; a leased one (its lease run out or not) in
        the lease queue, by lease expiry, and in the held queue, by due time.
        """
        due: list[_Entry] = []
        leased: list[_Entry] = []
        held: list[_Entry] = []
        for ticket_id, rows in self._timers.items():
            for key, row in rows.items():
                entry = (row.timer.due_at, row.generation, ticket_id, key)
                if row.lease_until is None:
                    due.append(entry)
                else:
                    leased.append((row.lease_until, row.generation, ticket_id, key))
                    held.append(entry)
        self._due.rebuild(due)
        self._leased.rebuild(leased)
        self._held.rebuild(held)
        self._unheld_ids, self._unheld_rows = [], []
        self._compact_held = False

    def _kind(self, name: tuple[str, ...], event: Event) -> _Kind:
        """A new kind of event, ``name`` being its ``(type, actor, *keys)``."""
        if len(self._kinds) >= _SHARED_LIMIT:
            self._forget()
        kind = self._kinds[name] = _Kind((event.type, event.actor, tuple(event.data)))
        return kind

    def _forget(self) -> None:
        """Start sharing over (records already stored keep what they share)."""
        self._kinds.clear()
        self._shared = 0


class _OutsideUnitOfWork(list[Callable[[], object]]):
    """The undo log outside a unit of work: a write there is a mistake."""

    def append(self, step: Callable[[], object]) -> NoReturn:
        raise AssertionError("MemoryStore used outside a transaction")


_OUTSIDE = _OutsideUnitOfWork()


class _Transaction:
    """Enters and leaves units of work on a :class:`MemoryStore`: its one instance serves them
    all, as every command opens one (a slotted object is the cheapest context manager)."""

    __slots__ = ("_store",)

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __enter__(self) -> _MemoryUnitOfWork:
        store = self._store
        store._lock.acquire()
        if not store._depth:
            store._undo = []
        # else a nested unit of work joins the outer one, as a savepoint-free database would.
        store._depth += 1
        return store._uow

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        store = self._store
        try:
            store._depth -= 1
            if not store._depth:
                undo, store._undo = store._undo, _OUTSIDE
                if kind is not None:
                    for step in reversed(undo):
                        step()
                # Each timer has one live entry in the due or the lease queue: compact when
                # they are mostly stale (asked after every command: kept to a sum). Claims,
                # which add held entries, ask for the held ones themselves.
                elif store._compact_held or (
                    (queued := store._due.size + store._leased.size) > _COMPACT_ABOVE
                    and queued > 2 * store._live_timers
                ):
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
        tickets, taken = self._s._tickets, self._s._taken
        if ticket.id in tickets:
            raise ConcurrencyConflict(ticket.id, 0, tickets[ticket.id].version)
        if ticket.number in taken:  # as the SQL stores' unique number
            raise ConcurrencyConflict(ticket.id, 0, None)
        tickets[ticket.id] = ticket
        taken.add(ticket.number)

        def undo() -> None:
            del tickets[ticket.id]
            taken.discard(ticket.number)

        self._s._undo.append(undo)

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        tickets = self._s._tickets
        if not (
            type(ticket.version) is int
            and type(expected_version) is int
            and ticket.version > expected_version
        ):
            check_new_version(ticket.version, expected_version, "ticket.version")  # raises
        current = tickets.get(ticket.id)
        if current is None:
            raise TicketNotFound(ticket.id)
        if current.version != expected_version:
            raise ConcurrencyConflict(ticket.id, expected_version, current.version)
        tickets[ticket.id] = ticket
        self._s._undo.append(lambda: tickets.__setitem__(ticket.id, current))

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        # Checked as the SQL stores do: a bare string is not a list of statuses, a negative
        # limit would slice off the last tickets, a naive datetime compares with nothing.
        check_statuses(query.status)
        limit = check_limit(query.limit) if query.limit is not None else None
        for field in ("created_from", "created_to"):
            if getattr(query, field) is not None:
                ensure_aware(getattr(query, field), field)
        found = [t for t in self._s._tickets.values() if _matches(t, query)]
        found.sort(key=lambda t: t.number)
        return found[:limit] if limit is not None else found

    # -- events ----------------------------------------------------------------------------
    def append_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        ticket_id = events[0].ticket_id
        for event in events:
            if event.ticket_id != ticket_id:
                self._append_mixed(events)
                return
        # One ticket's events, as every command writes: one stream to grow.
        store = self._s
        streams = store._events
        stream = streams.get(ticket_id)
        count = stream[0] if stream else 0
        items: list[Any] = []
        runs = 0
        run_at: object = None
        for event in events:
            count += 1
            if event.sequence != count:  # checked before anything is written
                raise ConcurrencyConflict(ticket_id, count, event.sequence)
            at = event.at
            # ``is``: an equal instant in another zone starts a run, so it reads back as given.
            if at is not run_at:
                if type(at) is not datetime or (at.tzinfo is not _UTC and at.utcoffset() is None):
                    ensure_aware(at, "event.at")  # raises unless an aware subclass
                items.append(at)
                runs += 1
                run_at = at
            items.append(_shared_record(store, event))
        log = store._event_log
        store._undo.append(
            functools.partial(
                _unappend, streams, log, len(log),
                [(ticket_id, stream, len(stream) if stream else 0, stream[0] if stream else 0)],
            )
        )  # fmt: skip
        _grow(streams, ticket_id, stream, count, items)
        log += [ticket_id] * runs
        if store._shared > _SHARED_LIMIT:
            store._forget()

    def _append_mixed(self, events: Sequence[Event]) -> None:
        """:meth:`append_events` for a batch of several tickets' events, in any order."""
        store = self._s
        streams, log = store._events, store._event_log
        added: dict[str, list[Any]] = {}  # ticket id -> the items to add to its stream
        counts: dict[str, int] = {}  # ticket id -> its events once the batch is in
        runs: list[str] = []  # the ticket of each new run, in order
        run_ticket: str | None = None
        run_at: object = None
        items: list[Any] = []
        for event in events:
            ticket_id, at = event.ticket_id, event.at
            if ticket_id != run_ticket or at is not run_at:  # ``is``: see ``append_events``
                ensure_aware(at, "event.at")
                if ticket_id != run_ticket:
                    found = added.get(ticket_id)
                    if found is None:
                        found = added[ticket_id] = []
                        stream = streams.get(ticket_id)
                        counts[ticket_id] = stream[0] if stream else 0
                    items = found
                items.append(at)
                runs.append(ticket_id)
                run_ticket, run_at = ticket_id, at
            expected = counts[ticket_id] + 1
            if event.sequence != expected:
                raise ConcurrencyConflict(ticket_id, expected, event.sequence)
            counts[ticket_id] = expected
            items.append(_shared_record(store, event))
        # Checked whole before anything is written: a conflict half-way leaves nothing.
        previous: list[tuple[str, _Stream | None, int, int]] = []
        for ticket_id, items in added.items():
            stream = streams.get(ticket_id)
            previous.append((ticket_id, stream, len(stream) if stream else 0,
                             stream[0] if stream else 0))  # fmt: skip
            _grow(streams, ticket_id, stream, counts[ticket_id], items)
        store._undo.append(functools.partial(_unappend, streams, log, len(log), previous))
        log += runs
        if store._shared > _SHARED_LIMIT:
            store._forget()

    def history(self, ticket_id: str) -> list[Event]:
        stream = self._s._events.get(ticket_id, ())
        return list(_read(ticket_id, stream, 1, len(stream), 1))

    def iter_events(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Event]:
        if start is not None:
            ensure_aware(start, "start")
        if end is not None:
            ensure_aware(end, "end")
        streams = self._s._events
        cursors: dict[str, tuple[int, int]] = {}  # ticket id -> (next run's item, its sequence)
        selected: list[tuple[datetime, str, int, int, int]] = []
        for ticket_id in self._s._event_log:
            stream = streams[ticket_id]
            first, sequence = cursors.get(ticket_id, (1, 1))
            stop = first + 1
            while stop < len(stream) and type(stream[stop]) is tuple:  # up to the next run
                stop += 1
            cursors[ticket_id] = (stop, sequence + stop - first - 1)
            at: datetime = stream[first]
            if (start is None or at >= start) and (end is None or at < end):
                selected.append((at, ticket_id, first, stop, sequence))
        # Stable sort: ties keep insertion order.
        selected.sort(key=lambda run: run[0])
        return itertools.chain.from_iterable(
            _read(ticket_id, streams[ticket_id], first, stop, sequence)
            for _, ticket_id, first, stop, sequence in selected
        )

    # -- timers ----------------------------------------------------------------------------
    def replace_timers(self, ticket_id: str, timers: Sequence[Timer]) -> None:
        store = self._s
        old = store._timers.get(ticket_id, {})
        if len(old) == len(timers):
            for timer in timers:
                row = old.get(timer.key) if type(timer) is Timer else None
                if (
                    row is None
                    or row.timer.due_at != timer.due_at
                    or row.timer.kind != timer.kind
                    or timer.ticket_id != ticket_id
                ):
                    break
            else:
                if len(timers) < 2 or len({timer.key for timer in timers}) == len(timers):
                    return  # the same deadlines: rows and leases stay
        new: dict[str, _TimerRow] = {}
        for timer in timers:
            if not (
                type(timer) is Timer
                and timer.ticket_id == ticket_id
                and timer.key not in new
                and timer.key.isascii()
                and timer.kind.isascii()
            ):
                # Refused as the SQL stores refuse it, naming what is wrong (or valid text that
                # is not ASCII). Nothing is stored yet: the entries queued so far are stale.
                check_timers(ticket_id, timers)
            previous = old.get(timer.key)
            if previous is not None and previous.timer.due_at == timer.due_at:
                if previous.timer.kind != timer.kind:  # the same deadline: its lease stays
                    lease = previous.lease_owner, previous.lease_until
                    previous = _TimerRow(timer, previous.generation, *lease)
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
        store._undo.append(functools.partial(_restore, store, ticket_id, old, len(new)))

    def timers(self, ticket_id: str) -> list[Timer]:
        rows = self._s._timers.get(ticket_id, {})
        # Ties by key, as in SQL (not in the order the rows happen to be kept in).
        return sorted((row.timer for row in rows.values()), key=lambda t: (t.due_at, t.key))

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        check_claim(now, limit, owner, lease)
        store = self._s
        due, leased, timers = store._due, store._leased, store._timers
        # Timers whose lease ran out compete by due time again, not by lease expiry. On undo a
        # moved entry stays in the due queue: its timer is still out of lease, or leased again
        # (then the entry is refiled below).
        expired: list[_Entry] = []
        while leased and leased.first()[0] <= now:
            entry = leased.pop()
            expired.append(entry)
            until, generation, ticket_id, key = entry
            row = timers.get(ticket_id, {}).get(key)
            if row is not None and row.generation == generation and row.lease_until == until:
                due.push((row.timer.due_at, generation, ticket_id, key))
            # else replaced, deleted or leased again since it was pushed
        claimed: list[Timer] = []
        popped: list[_Entry] = []
        until = now + lease
        log = store._undo.append
        note_id, note_row = store._unheld_ids.append, store._unheld_rows.append
        while due and len(claimed) < limit and due.first()[0] <= now:
            entry = due.pop()
            popped.append(entry)
            _, generation, ticket_id, key = entry
            row = timers.get(ticket_id, {}).get(key)
            if row is None or row.generation != generation:
                continue  # replaced or deleted since it was pushed
            if row.lease_until is not None and row.lease_until > now:
                # Leased. Its lease entry is gone if a claim with a later ``now`` moved it here:
                # refiled, so the timer comes up when the lease ends (a copy is skipped).
                leased.push((row.lease_until, generation, ticket_id, key))
                continue
            previous_lease = (row.lease_owner, row.lease_until)
            row.lease_owner, row.lease_until = owner, until
            # Left on undo: the lease entry turns stale (the lease is restored); the noted row
            # still gives a live timer's due time.
            leased.push((until, generation, ticket_id, key))
            note_id(ticket_id)
            note_row(row)
            claimed.append(row.timer)
            log(functools.partial(_unlease, row, previous_lease))
        if popped or expired:
            log(functools.partial(_repush, (due, popped), (leased, expired)))
        held = store._held.size + len(store._unheld_rows)
        if held > _COMPACT_ABOVE and held > 2 * store._live_timers:
            store._compact_held = True  # done after the commit (never undone)
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

        store._undo.append(undo)

    def next_timer_due(self) -> datetime | None:
        # The earliest due time of any timer, leased or not (as ``MIN(due_at)`` in SQL).
        store = self._s
        if store._unheld_rows:  # not undone: nothing observable changes
            for ticket_id, row in zip(store._unheld_ids, store._unheld_rows, strict=True):
                store._held.push((row.timer.due_at, row.generation, ticket_id, row.timer.key))
            store._unheld_ids.clear()
            store._unheld_rows.clear()
        first = _first_due(store, store._due)
        held = _first_due(store, store._held)
        if first is None or (held is not None and held < first):
            return held
        return first

    # -- outbox ----------------------------------------------------------------------------
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        store = self._s
        for notification in notifications:
            key = notification.idempotency_key
            if key in store._outbox:
                continue
            store._outbox[key] = notification
            store._undo.append(functools.partial(store._outbox.pop, key, None))

    def claim_notifications(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[OutboxEntry]:
        check_claim(now, limit, owner, lease)
        store = self._s
        due: list[tuple[datetime, str]] = []  # (next attempt, key): ties by key, as in SQL
        for key, row in store._outbox.items():
            if type(row) is Notification:  # pending, never tried, not leased
                if row.created_at <= now:
                    due.append((row.created_at, key))
                continue
            assert isinstance(row, _OutboxRow)
            entry = row.entry
            if (
                entry.status is OutboxStatus.PENDING
                and (entry.next_attempt_at is None or entry.next_attempt_at <= now)
                and (row.lease_until is None or row.lease_until <= now)
            ):
                due.append((entry.next_attempt_at or now, key))
        claimed = []
        for _, key in heapq.nsmallest(limit, due):
            claimed_row = self._row(key)
            assert claimed_row is not None
            previous = (claimed_row.entry, claimed_row.lease_until, claimed_row.lease_owner)
            claimed_row.entry = attrs.evolve(claimed_row.entry, claims=claimed_row.entry.claims + 1)
            claimed_row.lease_owner, claimed_row.lease_until = owner, now + lease
            store._undo.append(functools.partial(_restore_outbox_row, claimed_row, previous))
            claimed.append(claimed_row.entry)
        return claimed

    def release_notifications(self, keys: Sequence[str], owner: str) -> None:
        check_keys(keys)
        check_text(owner, "owner")
        outbox = self._s._outbox
        for key in keys:
            row = outbox.get(key)
            if not isinstance(row, _OutboxRow) or row.lease_owner != owner:
                continue  # never claimed, recorded, or claimed by another worker since
            entry = row.entry
            if entry.status is not OutboxStatus.PENDING:
                continue
            previous = (entry, row.lease_until, row.lease_owner)
            row.entry = attrs.evolve(entry, claims=max(entry.claims - 1, 0))
            row.lease_owner = row.lease_until = None
            self._s._undo.append(functools.partial(_restore_outbox_row, row, previous))

    def _row(self, key: str) -> _OutboxRow | None:
        """The outbox row of ``key``, made from its notification the first time."""
        outbox = self._s._outbox
        row = outbox.get(key)
        if row is None or type(row) is _OutboxRow:
            return row
        assert isinstance(row, Notification)
        made = outbox[key] = _OutboxRow(_fresh_entry(row))
        self._s._undo.append(functools.partial(outbox.__setitem__, key, row))
        return made

    def mark_delivered(self, key: str, at: datetime) -> None:
        ensure_aware(at, "at")
        self._update_outbox(
            key, lambda e: attrs.evolve(e, status=OutboxStatus.DELIVERED, delivered_at=at)
        )

    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        if retry_at is not None:
            ensure_aware(retry_at, "retry_at")
        if owner is not None:
            check_text(owner, "owner")
            row = self._s._outbox.get(key)
            if not isinstance(row, _OutboxRow) or row.lease_owner != owner:
                return  # another worker claimed it since this one's lease ran out

        def fail(entry: OutboxEntry) -> OutboxEntry:
            if entry.status is not OutboxStatus.PENDING:
                return entry  # a late report must not revive a delivered or dead row
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
        status = coerce_enum(OutboxStatus, status, "status")  # "dead" as well, as in SQL
        check_limit(limit)
        # By (created_at, key), as in SQL: a notification may be enqueued after a younger one.
        found: list[tuple[datetime, str, _OutboxRow | Notification]] = []
        for key, row in self._s._outbox.items():
            if isinstance(row, Notification):  # pending, never tried
                if status is OutboxStatus.PENDING:
                    found.append((row.created_at, key, row))
            elif row.entry.status is status:
                found.append((row.entry.notification.created_at, key, row))
        # Keys are unique: the rows themselves are never compared.
        return [_entry(row) for _, _, row in heapq.nsmallest(limit, found)]

    def requeue(self, key: str, at: datetime) -> None:
        ensure_aware(at, "at")

        def revive(entry: OutboxEntry) -> OutboxEntry:
            if entry.status is not OutboxStatus.DEAD:
                return entry  # only a dead letter comes back
            return attrs.evolve(
                entry, status=OutboxStatus.PENDING, attempts=0, claims=0, next_attempt_at=at
            )

        self._update_outbox(key, revive)

    def _update_outbox(self, key: str, change: Callable[[OutboxEntry], OutboxEntry]) -> None:
        row = self._row(key)
        if row is None:
            return
        previous = (row.entry, row.lease_until, row.lease_owner)
        changed = change(row.entry)
        if changed is row.entry:
            return  # nothing to record (the claim, if any, stays)
        row.entry, row.lease_until, row.lease_owner = changed, None, None
        self._s._undo.append(functools.partial(_restore_outbox_row, row, previous))

    # -- records ---------------------------------------------------------------------------
    def put_record(self, record: Record, expected_version: int | None = None) -> None:
        ensure_aware(record.created_at, "record.created_at")
        ensure_aware(record.updated_at, "record.updated_at")
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
            self._s._undo.append(lambda: records.pop(key, None))
        else:
            self._s._undo.append(lambda: records.__setitem__(key, current))

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
        if created_from is not None:
            ensure_aware(created_from, "created_from")
        if created_to is not None:
            ensure_aware(created_to, "created_to")
        found = [
            r
            for (k, _), r in self._s._records.items()
            if k == kind
            and (ticket_id is None or r.ticket_id == ticket_id)
            and (status is None or r.status == status)
            and (created_from is None or r.created_at >= created_from)
            and (created_to is None or r.created_at < created_to)
        ]
        # Ties by id, as in SQL (not in the order the records were inserted in).
        found.sort(key=lambda r: (r.created_at, r.id))
        return found

    # -- occurrences -----------------------------------------------------------------------
    def record_occurrence(self, key: str, ticket_id: str, at: datetime) -> None:
        if type(key) is not str or type(ticket_id) is not str:
            check_strings({"key": key, "ticket_id": ticket_id})  # raises unless subclasses
        ensure_aware(at, "at")
        window = self._s._occurrences[key]
        window.append((at, ticket_id))
        self._s._undo.append(window.pop)
        while window and window[0][0] < at - _OCCURRENCE_MEMORY:
            dropped = window.popleft()
            self._s._undo.append(functools.partial(window.appendleft, dropped))

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


def _read(ticket_id: str, stream: _Stream, first: int, stop: int, sequence: int) -> Iterator[Event]:
    """The events of ``stream[first:stop]`` (which starts with a run's instant) as ``Event``
    objects again, numbered from ``sequence``."""
    at: Any = None
    for index in range(first, stop):
        item = stream[index]
        if type(item) is not tuple:
            at = item
            continue
        kind, actor, keys = item[0]
        yield Event(ticket_id, sequence, kind, at, actor, dict(zip(keys, item[1:], strict=True)))
        sequence += 1


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
    if type(value) is int or type(value) is bool:
        return (type(value), value)
    return (type(value), id(value))  # a container: only the very same object is the same


def _shared_record(store: MemoryStore, event: Event) -> tuple[Any, ...]:
    """The event's record, ``(schema, *values)``: shared if an equal one was stored
    (``_Kind``)."""
    data = event.data
    kind = store._kinds.get((event.type, event.actor, *data))
    if kind is None:
        kind = store._kind((event.type, event.actor, *data), event)
    values = data.values()
    record = (kind.schema, *values)
    tries = kind.tries
    if tries < _SHARING_TRIAL or kind.hits * 4 >= tries:
        if _PLAIN.issuperset(map(type, values)):
            shared = kind.records.setdefault(record, record)
        else:
            shared = kind.records.setdefault(tuple(map(_exact, values)), record)
        kind.tries = tries + 1
        if shared is record:
            store._shared += 1
        else:
            kind.hits += 1
            return shared
    return record


def _grow(
    streams: dict[str, _Stream],
    ticket_id: str,
    stream: _Stream | None,
    count: int,
    items: list[Any],
) -> None:
    """Add ``items`` to the ticket's stream, whose event count becomes ``count``."""
    if type(stream) is list:  # a long stream grows in place
        stream[0] = count
        stream += items
        return
    grown = [count, *(stream[1:] if stream else ()), *items]
    # Short streams are tuples of exactly the size needed (a list keeps room to grow, per
    # ticket); a long one becomes a list, so appending never copies it all again.
    streams[ticket_id] = tuple(grown) if len(grown) <= _TUPLE_STREAM else grown


def _unappend(
    streams: dict[str, _Stream],
    log: list[str],
    start: int,
    previous: list[tuple[str, _Stream | None, int, int]],
) -> None:
    """Undo ``append_events``: the touched streams as they were, the log up to ``start``."""
    for ticket_id, stream, size, count in previous:
        if stream is None:
            streams.pop(ticket_id, None)
        elif type(stream) is list and streams.get(ticket_id) is stream:
            del stream[size:]  # grown in place: cut back, and its count with it
            stream[0] = count
        else:
            streams[ticket_id] = stream
    del log[start:]


def _unlease(row: _TimerRow | _OutboxRow, previous: tuple[str | None, datetime | None]) -> None:
    """Undo a claim: the row's lease owner and expiry as they were."""
    row.lease_owner, row.lease_until = previous


class _Numbers:
    """A set of ticket numbers: a bit each for numbers below 2**26 (a set of ints costs about
    100 bytes a ticket, half the memory budget of one), a set for the rest."""

    __slots__ = ("_bits", "_other")
    _SMALL = 1 << 26  # 8 MB of bits at most

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[int] = set()

    def __contains__(self, number: int) -> bool:
        if 0 <= number < self._SMALL:
            index = number >> 3
            return index < len(self._bits) and bool(self._bits[index] >> (number & 7) & 1)
        return number in self._other

    def add(self, number: int) -> None:
        if 0 <= number < self._SMALL:
            index, bits = number >> 3, self._bits
            if index >= len(bits):  # doubled, so that growing costs O(1) a number
                bits.extend(bytes(max(index + 1 - len(bits), len(bits))))
            bits[index] |= 1 << (number & 7)
        else:
            self._other.add(number)

    def discard(self, number: int) -> None:
        if 0 <= number < self._SMALL:
            index = number >> 3
            if index < len(self._bits):
                self._bits[index] &= ~(1 << (number & 7)) & 0xFF
        else:
            self._other.discard(number)


def _restore_outbox_row(
    row: _OutboxRow, previous: tuple[OutboxEntry, datetime | None, str | None]
) -> None:
    """Undo a change to an outbox row: its entry and lease as they were."""
    row.entry, row.lease_until, row.lease_owner = previous


def _repush(*pops: tuple[_DueQueue | _Heap, list[_Entry]]) -> None:
    """Undo pops: each ``(queue, entries)`` pair's entries go back into its queue."""
    for queue, entries in pops:
        for entry in entries:
            queue.push(entry)


def _first_due(store: MemoryStore, queue: _DueQueue | _Heap) -> datetime | None:
    """The due time of the first live entry of ``queue`` (one keyed by due time), dropping the
    stale ones before it."""
    dropped: list[_Entry] = []
    found = None
    while queue:
        _, generation, ticket_id, key = queue.first()
        row = store._timers.get(ticket_id, {}).get(key)
        if row is not None and row.generation == generation:
            found = row.timer.due_at
            break
        dropped.append(queue.pop())
    if dropped:
        # Stale perhaps only through this unit of work: undone, its timer needs the entry.
        store._undo.append(functools.partial(_repush, (queue, dropped)))
    return found
