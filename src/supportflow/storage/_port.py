"""The storage port: what every adapter promises.

The promises are checked for every adapter by :class:`supportflow.testing.StorageContract`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import attrs

from supportflow.events import Event
from supportflow.model import Notification, Ticket, Timer

__all__ = ["OutboxEntry", "OutboxStatus", "Record", "Storage", "TicketQuery", "UnitOfWork"]


class OutboxStatus(str, enum.Enum):
    """Where an outbox row stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@attrs.frozen(slots=True)
class OutboxEntry:
    """A notification in the outbox with its delivery bookkeeping.

    ``attempts`` counts the failures recorded (parking a row whose deliveries never finished
    records one, which says why); ``claims`` how many times the row was claimed
    since it was enqueued or last requeued. A claim that ended with neither a delivery nor a
    failure recorded (its worker died, or ran past its lease) shows as ``claims`` beyond
    ``attempts``.
    """

    notification: Notification
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    claims: int = 0

    @property
    def key(self) -> str:
        return self.notification.idempotency_key


@attrs.frozen(slots=True)
class Record:
    """A document kept beside tickets: a survey, a follow-up, a suggestion, an incident window.

    ``data`` holds plain JSON values. ``version`` starts at 1 and is checked on update.
    """

    kind: str
    id: str
    data: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    ticket_id: str | None = None
    status: str | None = None
    version: int = 1


@attrs.frozen(slots=True)
class TicketQuery:
    """Simple filters for listing tickets; ``None`` means "any"."""

    status: Sequence[str] | None = None
    assignee: str | None = None
    group: str | None = None
    customer_id: str | None = None
    channel: str | None = None
    priority: str | None = None
    tag: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int | None = None


@runtime_checkable
class UnitOfWork(Protocol):
    """The calls available inside one transaction.

    Nothing written through a unit of work is visible to others until the transaction
    commits; if the ``with`` block raises, nothing is kept.
    """

    # -- tickets ---------------------------------------------------------------------------
    def next_ticket_number(self) -> int:
        """Return a human-friendly ticket number: 1, 2, 3, ... never reused."""
        ...

    def get_ticket(self, ticket_id: str) -> Ticket:
        """Return the stored ticket with its version; raise ``TicketNotFound`` if absent."""
        ...

    def insert_ticket(self, ticket: Ticket) -> None:
        """Store a new ticket; raise ``ConcurrencyConflict`` if its id is taken."""
        ...

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        """Replace the stored ticket if its version is still ``expected_version``.

        Raise ``ConcurrencyConflict`` otherwise, and ``TicketNotFound`` if it does not exist.
        ``ticket.version`` is the new version, greater than ``expected_version``.
        """
        ...

    def find_tickets(self, query: TicketQuery) -> list[Ticket]:
        """Tickets matching every given filter, oldest first (by number)."""
        ...

    # -- events ----------------------------------------------------------------------------
    def append_events(self, events: Sequence[Event]) -> None:
        """Append events; each ticket's sequences must continue without gaps or repeats.

        A repeated ``(ticket_id, sequence)`` raises ``ConcurrencyConflict``.
        """
        ...

    def history(self, ticket_id: str) -> list[Event]:
        """All events of a ticket in sequence order (empty if none)."""
        ...

    def iter_events(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Event]:
        """Stream events with ``start <= at < end`` in order of ``at`` (ties: insertion order).

        Adapters fetch in batches so that memory stays flat however many events match.
        """
        ...

    # -- timers ----------------------------------------------------------------------------
    def replace_timers(self, ticket_id: str, timers: Sequence[Timer]) -> None:
        """Make ``timers`` the ticket's whole set of timers (one per key).

        A timer whose key and due time are unchanged keeps its lease.
        """
        ...

    def timers(self, ticket_id: str) -> list[Timer]:
        """The ticket's timers, by due time; timers due at the same instant by key."""
        ...

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        """Claim up to ``limit`` timers due at or before ``now``, earliest first.

        Timers due at the same instant come in the order their deadlines were set, whatever
        their ticket ids and keys: a timer given a new due time goes behind the others due
        then, one given only a new kind keeps its place, and timers set by one
        :meth:`replace_timers` call come in the order given.

        A claimed timer is leased to ``owner`` until ``now + lease``; nobody else can claim it
        before the lease expires (then it comes up again in its place). Claims are only
        visible to others once committed.
        """
        ...

    def release_timer(self, timer: Timer, owner: str) -> None:
        """Delete ``timer`` if it is still stored unchanged (same key and due time)."""
        ...

    def next_timer_due(self) -> datetime | None:
        """The earliest due time of any timer, or ``None``."""
        ...

    # -- outbox ----------------------------------------------------------------------------
    def enqueue(self, notifications: Sequence[Notification]) -> None:
        """Add notifications to the outbox as pending, due at once.

        A repeated idempotency key is ignored (the first row stands).
        """
        ...

    def claim_notifications(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[OutboxEntry]:
        """Claim up to ``limit`` pending rows whose next attempt is due, oldest first (by next
        attempt, ties by idempotency key).

        Claimed rows are leased until ``now + lease`` and not handed to anyone else before;
        each claim adds one to the row's ``claims`` (the entries returned count it).
        """
        ...

    def release_notifications(self, keys: Sequence[str], owner: str) -> None:
        """Give back claims ``owner`` made and will not use: each row still claimed by
        ``owner`` loses its lease and the claim (``claims`` goes down by one), keeping its
        next attempt. Rows claimed by someone else since, recorded, or unknown are left as
        they are."""
        ...

    def mark_delivered(self, key: str, at: datetime) -> None:
        """Record a successful delivery; the row is never claimed again."""
        ...

    def mark_failed(
        self, key: str, error: str, retry_at: datetime | None, owner: str | None = None
    ) -> None:
        """Record a failed attempt; retry at ``retry_at``, or park as dead when ``None``.

        Only a pending row is marked (a late report never revives a delivered or dead one).
        With ``owner``, only while ``owner`` still holds the row's claim: a dispatcher whose
        lease ran out and was taken over by another reports into the void."""
        ...

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        """The outbox row with this idempotency key, if any."""
        ...

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxEntry]:
        """Rows in ``status``, oldest first: by ``created_at``, ties by idempotency key."""
        ...

    def requeue(self, key: str, at: datetime) -> None:
        """Move a dead row back to pending, due at ``at``, with its attempts and claims reset."""
        ...

    # -- records ---------------------------------------------------------------------------
    def put_record(self, record: Record, expected_version: int | None = None) -> None:
        """Insert (``expected_version=None``) or update a record with a version check.

        Inserting an existing ``(kind, id)`` or updating with a stale version raises
        ``ConcurrencyConflict``.
        """
        ...

    def get_record(self, kind: str, record_id: str) -> Record | None:
        """The record, or ``None``."""
        ...

    def find_records(
        self,
        kind: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[Record]:
        """Records of a kind matching the filters, oldest first: by ``created_at``, records
        created at the same instant by id (not in the order they were written)."""
        ...

    # -- sliding-window counts (mass incidents) --------------------------------------------
    def record_occurrence(self, key: str, ticket_id: str, at: datetime) -> None:
        """Note that ``ticket_id`` showed ``key`` at ``at``."""
        ...

    def occurrences(self, key: str, since: datetime) -> list[str]:
        """Ticket ids that showed ``key`` at or after ``since``, oldest first (ties by ticket
        id).

        Adapters may forget occurrences older than a day.
        """
        ...


@runtime_checkable
class Storage(Protocol):
    """A place where a desk keeps its data.

    >>> with store.transaction() as uow:          # doctest: +SKIP
    ...     ticket = uow.get_ticket("t-1")
    """

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """Open a unit of work: commit when the block ends, roll back if it raises."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
