"""Storage adapters for testing the storage contract kit itself.

``DictStore`` is an adapter as an integrator writes one from docs/storage.md and the port's
docstrings alone: plain dicts, event and record data kept as JSON text, units of work
serialised by one re-entrant lock, the state copied when a unit of work starts and put back
when it raises. The kit must pass it. Each other store breaks one promise of the port, as
adapters do by mistake, and the kit must fail it.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from supportflow.errors import ConcurrencyConflict, TicketNotFound, ValidationError
from supportflow.events import Event
from supportflow.model import Notification, Ticket, Timer
from supportflow.storage import OutboxEntry, OutboxStatus, Record, TicketQuery

UTC = timezone.utc


def aware(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, value, "a timezone-aware datetime")
    return value


def whole(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, value, "a whole number >= 0")
    return value


def claim_args(limit: Any, owner: Any, lease: Any) -> None:
    whole(limit, "limit")
    if not isinstance(lease, timedelta) or lease <= timedelta(0):
        raise ValidationError("lease", lease, "a positive timedelta")
    if not isinstance(owner, str) or not owner:
        raise ValidationError("owner", owner, "a non-empty string")


class _State:
    def __init__(self) -> None:
        self.ticket_objs: dict[str, Ticket] = {}
        self.numbers = 0
        self.events: dict[str, list[tuple[int, datetime, str, str, str]]] = {}
        self.event_log: list[tuple[datetime, int, str, int]] = []  # (at, position, tid, seq)
        self.position = 0
        self.timers: dict[str, dict[str, dict[str, Any]]] = {}
        self.generation = 0
        self.outbox: dict[str, dict[str, Any]] = {}
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.occurrences: dict[str, list[tuple[datetime, str]]] = {}


class DictUnitOfWork:
    def __init__(self, state: _State) -> None:
        self.s = state

    # input checks (the wrong adapters below override them)
    def _aware(self, value: datetime, field: str) -> datetime:
        return aware(value, field)

    def _opt_aware(self, value: datetime | None, field: str) -> datetime | None:
        return None if value is None else self._aware(value, field)

    def _check_claim(self, limit: Any, owner: Any, lease: Any) -> None:
        claim_args(limit, owner, lease)

    # orders of listings (the wrong adapters below override them)
    @staticmethod
    def _claim_order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["timer"].due_at, row["gen"])  # ties: in the order the deadlines were set

    @staticmethod
    def _record_order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["created_at"], row["id"])

    # tickets
    def next_ticket_number(self) -> int:
        self.s.numbers += 1
        return self.s.numbers

    def get_ticket(self, ticket_id: str) -> Ticket:
        try:
            return copy.deepcopy(self.s.ticket_objs[ticket_id])
        except KeyError:
            raise TicketNotFound(ticket_id) from None

    def insert_ticket(self, ticket: Ticket) -> None:
        if ticket.id in self.s.ticket_objs or any(
            t.number == ticket.number for t in self.s.ticket_objs.values()
        ):
            raise ConcurrencyConflict(ticket.id, 0, None)
        self.s.ticket_objs[ticket.id] = copy.deepcopy(ticket)

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        stored = self.s.ticket_objs.get(ticket.id)
        if stored is None:
            raise TicketNotFound(ticket.id)
        if ticket.version <= expected_version:
            raise ValidationError("ticket.version", ticket.version, "greater than expected")
        if stored.version != expected_version:
            raise ConcurrencyConflict(ticket.id, expected_version, stored.version)
        self.s.ticket_objs[ticket.id] = copy.deepcopy(ticket)

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        start = self._opt_aware(query.created_from, "created_from")
        end = self._opt_aware(query.created_to, "created_to")
        if isinstance(query.status, str):
            raise ValidationError("status", query.status, "a list of status names")
        if query.limit is not None:
            whole(query.limit, "limit")
        found = []
        for t in sorted(self.s.ticket_objs.values(), key=lambda t: t.number):
            if query.status is not None and t.status not in query.status:
                continue
            if query.assignee is not None and t.assignee != query.assignee:
                continue
            if query.group is not None and t.group != query.group:
                continue
            if query.customer_id is not None and t.customer.id != query.customer_id:
                continue
            if query.channel is not None and t.channel.value != query.channel:
                continue
            if query.priority is not None and t.priority.value != query.priority:
                continue
            if query.tag is not None and query.tag not in t.tags:
                continue
            if start is not None and t.created_at < start:
                continue
            if end is not None and t.created_at >= end:
                continue
            found.append(copy.deepcopy(t))
        return found[: query.limit] if query.limit is not None else found

    # events
    def append_events(self, events: Sequence[Event]) -> None:
        last: dict[str, int] = {}
        rows = []
        for e in events:
            e = attrs.evolve(e, at=self._aware(e.at, "event.at"))
            previous = last.get(e.ticket_id, len(self.s.events.get(e.ticket_id, [])))
            if e.sequence != previous + 1:
                raise ConcurrencyConflict(e.ticket_id, previous, e.sequence)
            last[e.ticket_id] = e.sequence
            rows.append(e)
        for e in rows:
            self.s.position += 1
            self.s.events.setdefault(e.ticket_id, []).append(
                (e.sequence, e.at, e.type, e.actor, json.dumps(dict(e.data)))
            )
            self.s.event_log.append((e.at, self.s.position, e.ticket_id, e.sequence))

    def _event(self, ticket_id: str, row: tuple[int, datetime, str, str, str]) -> Event:
        seq, at, type_, actor, data = row
        return Event(ticket_id, seq, type_, at, actor, json.loads(data))

    def history(self, ticket_id: str) -> list[Event]:
        return [self._event(ticket_id, row) for row in self.s.events.get(ticket_id, [])]

    def iter_events(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Event]:
        start = self._opt_aware(start, "start")
        end = self._opt_aware(end, "end")
        for at, _, tid, seq in sorted(self.s.event_log, key=lambda r: (r[0], r[1])):
            if start is not None and at < start:
                continue
            if end is not None and at >= end:
                continue
            yield self._event(tid, self.s.events[tid][seq - 1])

    # timers
    def replace_timers(self, ticket_id: str, timers: Sequence[Timer]) -> None:
        keys = set()
        for t in timers:
            if t.ticket_id != ticket_id:
                raise ValidationError("timer.ticket_id", t.ticket_id, ticket_id)
            if t.key in keys:
                raise ValidationError("timer.key", t.key, "one timer per key")
            keys.add(t.key)
        old = self.s.timers.get(ticket_id, {})
        new: dict[str, dict[str, Any]] = {}
        for t in timers:
            row = old.get(t.key)
            if row is not None and row["timer"].due_at == t.due_at:
                new[t.key] = {**row, "timer": t}
            else:
                self.s.generation += 1
                new[t.key] = {"timer": t, "gen": self.s.generation, "owner": None, "until": None}
        self.s.timers[ticket_id] = new

    def timers(self, ticket_id: str) -> list[Timer]:
        rows = self.s.timers.get(ticket_id, {}).values()
        return [r["timer"] for r in sorted(rows, key=lambda r: (r["timer"].due_at, r["timer"].key))]

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        now = self._aware(now, "now")
        self._check_claim(limit, owner, lease)
        due = [
            r
            for rows in self.s.timers.values()
            for r in rows.values()
            if r["timer"].due_at <= now and (r["until"] is None or r["until"] <= now)
        ]
        due.sort(key=self._claim_order)
        for r in due[:limit]:
            r["owner"], r["until"] = owner, now + lease
        return [r["timer"] for r in due[:limit]]

    def release_timer(self, timer: Timer, owner: str) -> None:
        rows = self.s.timers.get(timer.ticket_id, {})
        row = rows.get(timer.key)
        if row is not None and row["timer"].due_at == timer.due_at:
            del rows[timer.key]

    def next_timer_due(self) -> datetime | None:
        dues = [r["timer"].due_at for rows in self.s.timers.values() for r in rows.values()]
        return min(dues) if dues else None

    # outbox
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        for n in notifications:
            if n.idempotency_key in self.s.outbox:
                continue
            self.s.outbox[n.idempotency_key] = {
                "entry": OutboxEntry(n, next_attempt_at=n.created_at),
                "owner": None,
                "until": None,
            }

    def claim_notifications(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[OutboxEntry]:
        now = self._aware(now, "now")
        self._check_claim(limit, owner, lease)
        due = [
            r
            for r in self.s.outbox.values()
            if r["entry"].status is OutboxStatus.PENDING
            and r["entry"].next_attempt_at <= now
            and (r["until"] is None or r["until"] <= now)
        ]
        due.sort(key=lambda r: (r["entry"].next_attempt_at, r["entry"].key))
        for r in due[:limit]:
            r["owner"], r["until"] = owner, now + lease
            r["entry"] = attrs.evolve(r["entry"], claims=r["entry"].claims + 1)
        return [r["entry"] for r in due[:limit]]

    def release_notifications(self, keys: Sequence[str], owner: str) -> None:
        if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
            raise ValidationError("keys", keys, "a list of idempotency keys")
        if not all(isinstance(key, str) for key in keys):
            raise ValidationError("keys", keys, "idempotency keys (strings)")
        if not isinstance(owner, str) or not owner:
            raise ValidationError("owner", owner, "a non-empty string")
        for key in keys:
            row = self.s.outbox.get(key)
            if row is None or row["owner"] != owner:
                continue  # never claimed, or claimed by someone else since
            if row["entry"].status is not OutboxStatus.PENDING:
                continue
            entry = row["entry"]
            row["entry"] = attrs.evolve(entry, claims=max(entry.claims - 1, 0))
            row["owner"] = row["until"] = None

    def mark_delivered(self, key: str, at: datetime) -> None:
        at = self._aware(at, "at")
        row = self.s.outbox.get(key)
        if row is None or row["entry"].status is not OutboxStatus.PENDING:
            return
        row["entry"] = attrs.evolve(row["entry"], status=OutboxStatus.DELIVERED, delivered_at=at)
        row["owner"] = row["until"] = None

    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        retry_at = self._opt_aware(retry_at, "retry_at")
        row = self.s.outbox.get(key)
        if row is None or row["entry"].status is not OutboxStatus.PENDING:
            return
        if owner is not None and row["owner"] not in (None, owner):
            return
        entry = row["entry"]
        row["entry"] = attrs.evolve(
            entry,
            attempts=entry.attempts + 1,
            last_error=error,
            status=OutboxStatus.PENDING if retry_at is not None else OutboxStatus.DEAD,
            next_attempt_at=retry_at if retry_at is not None else entry.next_attempt_at,
        )
        row["owner"] = row["until"] = None

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        row = self.s.outbox.get(key)
        return None if row is None else row["entry"]

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxEntry]:
        status = OutboxStatus(status)
        whole(limit, "limit")
        rows = [r["entry"] for r in self.s.outbox.values() if r["entry"].status is status]
        rows.sort(key=lambda e: (e.notification.created_at, e.key))
        return rows[:limit]

    def requeue(self, key: str, at: datetime) -> None:
        at = self._aware(at, "at")
        row = self.s.outbox.get(key)
        if row is None or row["entry"].status is not OutboxStatus.DEAD:
            return
        row["entry"] = attrs.evolve(
            row["entry"], status=OutboxStatus.PENDING, attempts=0, claims=0, next_attempt_at=at
        )

    # records
    def put_record(self, record: Record, expected_version: int | None = None) -> None:
        record = attrs.evolve(
            record,
            created_at=self._aware(record.created_at, "record.created_at"),
            updated_at=self._aware(record.updated_at, "record.updated_at"),
        )
        key = (record.kind, record.id)
        stored = self.s.records.get(key)
        if expected_version is None:
            if stored is not None:
                raise ConcurrencyConflict(record.id, 0, stored["version"])
        elif stored is None or stored["version"] != expected_version:
            raise ConcurrencyConflict(
                record.id, expected_version, None if stored is None else stored["version"]
            )
        self.s.records[key] = {
            **attrs.asdict(record, recurse=False),
            "data": json.dumps(dict(record.data)),
        }

    def _record(self, row: dict[str, Any]) -> Record:
        return Record(**{**row, "data": json.loads(row["data"])})

    def get_record(self, kind: str, record_id: str) -> Record | None:
        row = self.s.records.get((kind, record_id))
        return None if row is None else self._record(row)

    def find_records(
        self,
        kind: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[Record]:
        created_from = self._opt_aware(created_from, "created_from")
        created_to = self._opt_aware(created_to, "created_to")
        rows = [
            r
            for r in self.s.records.values()
            if r["kind"] == kind
            and (ticket_id is None or r["ticket_id"] == ticket_id)
            and (status is None or r["status"] == status)
            and (created_from is None or r["created_at"] >= created_from)
            and (created_to is None or r["created_at"] < created_to)
        ]
        rows.sort(key=self._record_order)
        return [self._record(r) for r in rows]

    # occurrences
    def record_occurrence(self, key: str, ticket_id: str, at: datetime) -> None:
        for field, value in (("key", key), ("ticket_id", ticket_id)):
            if not isinstance(value, str):
                raise ValidationError(field, value, "a string")
        at = self._aware(at, "at")
        self.s.occurrences.setdefault(key, []).append((at, ticket_id))

    def occurrences(self, key: str, since: datetime) -> list[str]:
        since = self._aware(since, "since")
        rows = sorted(r for r in self.s.occurrences.get(key, []) if r[0] >= since)
        return [tid for _, tid in rows]


class DictStore:
    """The port in plain dicts, one unit of work at a time."""

    unit_of_work = DictUnitOfWork

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[DictUnitOfWork]:
        with self._lock:
            if getattr(self._local, "uow", None) is not None:  # join the outer unit of work
                yield self._local.uow
                return
            snapshot = copy.deepcopy(self._state)
            uow = self.unit_of_work(self._state)
            self._local.uow = uow
            try:
                yield uow
            except BaseException:
                self._state.__dict__.update(snapshot.__dict__)
                self.rolled_back(uow)
                raise
            finally:
                self._local.uow = None

    def rolled_back(self, uow: DictUnitOfWork) -> None:
        """Called after a unit of work was undone."""

    def close(self) -> None:
        pass


# -- adapters that break one promise each -------------------------------------------------------
class _NumberBlindUnitOfWork(DictUnitOfWork):
    def insert_ticket(self, ticket: Ticket) -> None:
        if ticket.id in self.s.ticket_objs:  # the id only: a number may be handed out twice
            raise ConcurrencyConflict(ticket.id, 0, None)
        self.s.ticket_objs[ticket.id] = copy.deepcopy(ticket)


class NumberBlindStore(DictStore):
    """Stores a second ticket with a number already taken."""

    unit_of_work = _NumberBlindUnitOfWork


class _NaiveAsUtcUnitOfWork(DictUnitOfWork):
    def _aware(self, value: datetime, field: str) -> datetime:
        if field in ("now", "since"):  # strict only where the kit used to look
            return super()._aware(value, field)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class NaiveAsUtcStore(DictStore):
    """Reads a naive datetime as UTC instead of refusing it."""

    unit_of_work = _NaiveAsUtcUnitOfWork


class _UncheckedClaimUnitOfWork(DictUnitOfWork):
    def _check_claim(self, limit: Any, owner: Any, lease: Any) -> None:
        pass  # a negative limit slices, a lease in the past leases nothing, any owner goes

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        return super().find_tickets(attrs.evolve(query, limit=None))[: query.limit]

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxEntry]:
        return super().list_outbox(status, 1_000_000)[:limit]


class UncheckedClaimStore(DictStore):
    """Takes any limit, lease and owner, and a status given as a bare string."""

    unit_of_work = _UncheckedClaimUnitOfWork


class _Released(DictUnitOfWork):
    released: list[Timer]

    def release_timer(self, timer: Timer, owner: str) -> None:
        super().release_timer(timer, owner)
        self.__dict__.setdefault("released", []).append(timer)


class AutocommitReleaseStore(DictStore):
    """Deletes a released timer at once, outside the unit of work (as on a second,
    autocommitting connection): a rollback leaves it deleted."""

    unit_of_work = _Released

    def rolled_back(self, uow: DictUnitOfWork) -> None:
        for timer in uow.__dict__.get("released", []):
            self._state.timers.get(timer.ticket_id, {}).pop(timer.key, None)


class _PartialBatchUnitOfWork(DictUnitOfWork):
    # One item at a time: a refusal leaves the items before it written.
    def append_events(self, events: Sequence[Event]) -> None:
        for one in events:
            for name, value in one.data.items():
                if isinstance(value, str) and "\x00" in value:
                    raise ValidationError(f"event.data.{name}", value, "text without NUL")
            super().append_events([one])

    def enqueue(self, notifications: Sequence[Notification]) -> None:
        for one in notifications:
            if "\x00" in one.body:
                raise ValidationError("notification.body", one.body, "text without NUL")
            super().enqueue([one])


class PartialBatchStore(DictStore):
    """Refuses NUL characters item by item, after writing the items before."""

    unit_of_work = _PartialBatchUnitOfWork


class _RevivingUnitOfWork(DictUnitOfWork):
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        for one in notifications:
            row = self.s.outbox.get(one.idempotency_key)
            if row is not None and row["entry"].status is not OutboxStatus.PENDING:
                del self.s.outbox[one.idempotency_key]  # "ignored" only while pending
        super().enqueue(notifications)


class RevivingEnqueueStore(DictStore):
    """Enqueues a delivered or dead notification's key afresh."""

    unit_of_work = _RevivingUnitOfWork


class _OwnerBlindUnitOfWork(DictUnitOfWork):
    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        super().mark_failed(key, error, retry_at)  # whoever holds the claim now


class OwnerBlindStore(DictStore):
    """Counts a failure reported by a dispatcher whose claim another one has taken over."""

    unit_of_work = _OwnerBlindUnitOfWork


class _TiesByKeyUnitOfWork(DictUnitOfWork):
    @staticmethod
    def _claim_order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["timer"].due_at, row["timer"].ticket_id, row["timer"].key)


class TiesByKeyStore(DictStore):
    """Claims timers due at the same instant by ticket id and key, not in the order their
    deadlines were set."""

    unit_of_work = _TiesByKeyUnitOfWork


class _TiesAsWrittenUnitOfWork(DictUnitOfWork):
    @staticmethod
    def _record_order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["created_at"],)  # a stable sort: ties in the order they were written


class TiesAsWrittenStore(DictStore):
    """Lists records created at the same instant in the order they were written."""

    unit_of_work = _TiesAsWrittenUnitOfWork
