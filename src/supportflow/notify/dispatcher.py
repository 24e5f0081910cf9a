"""``Dispatcher``: drains the outbox through the notifiers, with retries and dead letters.

The outbox is written in the same unit of work as the change that caused a notification, so a
notification exists if and only if its cause was committed. The dispatcher then delivers it
at least once:

1. claim due rows in one short transaction (each claim is a lease, so two dispatchers never
   work on the same row at the same time);
2. deliver outside any transaction, so slow networks never hold database locks;
3. record each result in its own transaction: delivered, retry later (exponential backoff with
   jitter), or dead (permanent error, or out of attempts).

If a dispatcher dies between 2 and 3, the lease expires and the row is delivered again with
the same idempotency key; receivers drop the repeat. A row whose delivery itself kills the
dispatcher (a poison message) would do so forever: each claim is counted, and a row whose
claims ended without a result ``max_unfinished`` times is parked as dead instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import random as _random
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from numbers import Integral, Real

import attrs

from supportflow.clock import Clock
from supportflow.errors import ValidationError
from supportflow.model import (
    Recipient,
    RecipientRole,
    check_duration,
    coerce_enum,
    whole_number,
)
from supportflow.notify.base import LONGEST_RETRY_DELAY, DeliveryError, Notifier
from supportflow.storage._port import OutboxEntry, OutboxStatus, Storage, UnitOfWork

__all__ = ["DispatchReport", "Dispatcher"]

_log = logging.getLogger("supportflow.notify")


@attrs.define(slots=True)
class DispatchReport:
    """What one :meth:`Dispatcher.deliver_pending` run did, by idempotency key.

    ``attempts`` counts the notifications tried in this run. ``expired`` holds rows whose lease
    ran out before their turn came (they were not tried and go to the next run), and rows
    whose failure came after the lease ran out and another dispatcher had claimed them (the
    store kept that dispatcher's claim, not this report). ``dead`` also holds rows parked
    without a try because their deliveries never finished ``max_unfinished`` times.
    ``deferred`` holds rows handed back untried so that a row whose delivery did not finish
    before is tried alone (the run claims them again after it, within ``limit``).
    """

    delivered: list[str] = attrs.field(factory=list)
    retried: list[str] = attrs.field(factory=list)
    dead: list[str] = attrs.field(factory=list)
    expired: list[str] = attrs.field(factory=list)
    attempts: int = 0
    deferred: list[str] = attrs.field(factory=list)

    @property
    def idle(self) -> bool:
        """True if there was nothing to do."""
        return not (self.attempts or self.expired or self.dead or self.deferred)


@attrs.frozen(slots=True)
class _Outcome:
    error: str | None = None
    permanent: bool = False
    retry_after: timedelta | None = None  # the longest wait a receiver asked for


def _is_real(value: object) -> bool:
    """A real number (``int``, ``float``, ``Fraction``, NumPy's), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Dispatcher:
    """Delivers pending outbox rows through the notifier registered for each recipient role.

    Each recipient of a notification goes through ``notifiers[recipient.role]``, or
    ``fallback`` when the role has none; each notifier is called once per attempt with all the
    recipients routed to it (roles sharing a notifier share the call). A role with neither is
    a permanent failure: nothing is sent and the row is dead at once.

    After the n-th failed attempt the row is retried after
    ``min(max_delay, base_delay * 2**(n-1))``, varied by ``± jitter`` (a fraction) so that
    many failing rows do not retry in lockstep; a :class:`DeliveryError` with ``retry_after``
    (a receiver's ``Retry-After``) makes it at least that, up to ``max_delay``. After
    ``max_attempts`` failures, or one permanent :class:`DeliveryError`, the row is dead;
    :meth:`requeue` brings it back.

    A delivery that never finishes (the process dies in it: a crash, out of memory, or a hang
    until the worker is killed) records nothing, and the row is claimed again once its lease
    runs out. Each claim is counted: a row claimed with ``max_unfinished`` claims before this
    one that ended without a result is parked as dead without being tried again. Such a crash
    also leaves the rest of its batch claimed and unrecorded, so a row with an unfinished
    delivery behind it is tried alone (the rest of its batch handed back, ``deferred``): only
    its own crash counts against it after that, never another row's.

    >>> from datetime import datetime, timezone
    >>> from supportflow.clock import ManualClock
    >>> from supportflow.model import Notification
    >>> from supportflow.notify.memory import MemoryNotifier
    >>> from supportflow.storage.memory import MemoryStore
    >>> store, inbox = MemoryStore(), MemoryNotifier()
    >>> clock = ManualClock(datetime(2026, 1, 5, tzinfo=timezone.utc))
    >>> note = Notification("k-1", "ticket_created", (Recipient("agent", "li"),),
    ...                     "New ticket", "...", clock.now())
    >>> with store.transaction() as uow:
    ...     uow.enqueue([note])
    >>> Dispatcher(store, {"agent": inbox}, clock=clock).deliver_pending().delivered
    ['k-1']
    """

    def __init__(
        self,
        store: Storage,
        notifiers: Mapping[RecipientRole | str, Notifier],
        *,
        clock: Clock,
        max_attempts: int = 6,
        base_delay: timedelta = timedelta(seconds=30),
        max_delay: timedelta = timedelta(hours=1),
        jitter: float = 0.2,
        lease: timedelta = timedelta(minutes=5),
        owner: str | None = None,
        random: _random.Random | None = None,
        fallback: Notifier | None = None,
        max_unfinished: int = 3,
    ) -> None:
        if not isinstance(store, Storage):
            raise ValidationError("store", store, "a supportflow.storage.Storage")
        if not isinstance(notifiers, Mapping) or not all(
            isinstance(notifier, Notifier) for notifier in notifiers.values()
        ):
            raise ValidationError("notifiers", notifiers, "a mapping of recipient role to Notifier")
        if not isinstance(clock, Clock):
            raise ValidationError("clock", clock, "a supportflow.Clock (with now())")
        max_attempts = whole_number("max_attempts", max_attempts, 1)
        # One crash leaves the whole batch with an unfinished delivery, the culprit unknown:
        # a row is tried alone from its second on, so one alone must not be enough.
        max_unfinished = whole_number("max_unfinished", max_unfinished, 2)
        for field, value in (("base_delay", base_delay), ("max_delay", max_delay)):
            if not isinstance(value, timedelta):
                raise ValidationError(field, value, "a positive duration (a timedelta)")
        if base_delay <= timedelta(0):
            raise ValidationError("base_delay", base_delay, "a positive duration")
        if max_delay < base_delay:
            raise ValidationError("max_delay", max_delay, f"at least base_delay ({base_delay})")
        if max_delay > LONGEST_RETRY_DELAY:
            expected = f"at most {LONGEST_RETRY_DELAY.days} days"
            raise ValidationError("max_delay", max_delay, expected)
        if not _is_real(jitter) or not 0 <= jitter < 1:
            raise ValidationError("jitter", jitter, "a fraction in [0, 1)")
        check_duration("lease", lease)
        if owner is not None and not isinstance(owner, str):
            raise ValidationError("owner", owner, "a string naming this worker, or None")
        if random is not None and not callable(getattr(random, "uniform", None)):
            raise ValidationError("random", random, "a random.Random (with uniform()), or None")
        if fallback is not None and not isinstance(fallback, Notifier):
            raise ValidationError("fallback", fallback, "a Notifier, or None")
        self.store = store
        self.clock = clock
        self.max_attempts = max_attempts
        self.max_unfinished = max_unfinished
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self.lease = lease
        self.owner = owner if owner is not None else _default_owner()
        self.fallback = fallback
        self._random = random if random is not None else _random.Random()
        self._routes: dict[RecipientRole, Notifier] = {
            coerce_enum(RecipientRole, role, "notifiers"): notifier
            for role, notifier in notifiers.items()
        }

    # -- schedule --------------------------------------------------------------------------
    def backoff(self, attempts: int) -> timedelta:
        """The delay before the next try after ``attempts`` failures, before jitter.

        >>> d = Dispatcher.__new__(Dispatcher)
        >>> d.base_delay, d.max_delay = timedelta(seconds=30), timedelta(hours=1)
        >>> [int(d.backoff(n).total_seconds()) for n in (1, 2, 3, 8)]
        [30, 60, 120, 3600]
        """
        if isinstance(attempts, bool) or not isinstance(attempts, Integral):
            raise ValidationError("attempts", attempts, "a whole number of failures")
        exponent = max(int(attempts) - 1, 0)
        # Compare before multiplying: base_delay * 2**exponent overflows timedelta (at about
        # 2**39 times five minutes) long before any attempt count a dispatcher allows.
        if exponent >= 63 or (1 << exponent) >= self.max_delay / self.base_delay:
            return self.max_delay
        return self.base_delay * (1 << exponent)

    def retry_delay(self, attempts: int) -> timedelta:
        """:meth:`backoff` varied by a random fraction within ``± jitter``."""
        factor = 1 + self._random.uniform(-self.jitter, self.jitter) if self.jitter else 1.0
        return self.backoff(attempts) * factor

    # -- delivery --------------------------------------------------------------------------
    def deliver_pending(self, limit: int = 100) -> DispatchReport:
        """Claim up to ``limit`` due rows, deliver them and record each result.

        A row with an unfinished delivery behind it is tried alone (see :class:`Dispatcher`);
        the run then claims the rows after it one at a time until an ordinary one comes, and
        goes on with a batch, so a crash holds back the rows behind it by one row each, not by
        a run each. An error raised by the store while recording propagates; the rows of the
        batch not yet recorded are handed back first when the store allows it (their claims
        are no unfinished deliveries), else they keep their lease and are delivered again once
        it expires.
        """
        limit = whole_number("limit", limit, 1)
        report = DispatchReport()
        handled = 0
        probing = False  # after a row tried alone: claim one row at a time
        while handled < limit:
            claimed_at = self.clock.now()
            with self.store.transaction() as uow:
                size = 1 if probing else limit - handled
                entries = uow.claim_notifications(claimed_at, size, self.owner, self.lease)
                # An adapter written before claims were counted can neither count nor
                # release: its rows are delivered as they come (``claims`` stays 0 there).
                releases = callable(getattr(uow, "release_notifications", None))
            if not entries:
                break
            alone = False
            handled += len(entries)
            if releases:
                deferred = len(report.deferred)
                entries, alone = self._screen(entries, report)
                handled -= len(report.deferred) - deferred  # handed back: claimed again later
            self._deliver(entries, claimed_at + self.lease, releases, report)
            if not (alone or probing):
                break
            probing = alone
        return report

    def _deliver(
        self,
        entries: list[OutboxEntry],
        lease_end: datetime,
        releases: bool,
        report: DispatchReport,
    ) -> None:
        """Try each row of a claimed batch in turn and record its result."""
        for index, entry in enumerate(entries):
            if self.clock.now() >= lease_end:
                # Another dispatcher may hold the rows by now; sending them too would
                # duplicate. Ours go back at once, and do not count as unfinished.
                rest = [later.key for later in entries[index:]]
                if releases:
                    self._release(rest)
                report.expired.extend(rest)
                return
            report.attempts += 1
            outcome = self._attempt(entry)
            try:
                self._record(entry, outcome, report)
            except Exception:
                # This delivery finished and the rows after it were never tried: none of
                # them is a delivery that never finished. Give them back if the store can.
                if releases:
                    try:
                        self._release([later.key for later in entries[index:]])
                    except Exception:
                        _log.warning("could not hand back claimed notifications", exc_info=True)
                raise

    def _unfinished(self, entry: OutboxEntry) -> int:
        """Claims of ``entry`` before the one in hand that ended without a result."""
        return entry.claims - 1 - entry.attempts

    def _screen(
        self, entries: list[OutboxEntry], report: DispatchReport
    ) -> tuple[list[OutboxEntry], bool]:
        """Park the claimed rows whose deliveries never finished ``max_unfinished`` times;
        when a row had an unfinished delivery, hand the others back and keep it alone. Returns
        the rows to try, and whether that is such a row alone."""
        parked = [e for e in entries if self._unfinished(e) >= self.max_unfinished]
        kept = [e for e in entries if self._unfinished(e) < self.max_unfinished]
        suspect = next((e for e in kept if self._unfinished(e) > 0), None)
        if suspect is not None:
            # If its worker dies now, the claim in hand is the batch's only one left unfinished.
            deferred = [e.key for e in kept if e is not suspect]
            kept = [suspect]
            self._release(deferred)
            report.deferred.extend(deferred)
        for entry in parked:
            self._park(entry, report)
        return kept, suspect is not None

    def _release(self, keys: list[str]) -> None:
        if keys:
            with self.store.transaction() as uow:
                uow.release_notifications(keys, self.owner)

    def _park(self, entry: OutboxEntry, report: DispatchReport) -> None:
        unfinished = self._unfinished(entry)
        error = (
            f"delivery never finished {unfinished} times (the process delivering it stopped"
            " or ran past its lease); not tried again until requeued"
        )
        if entry.last_error:
            error += f"; last recorded error: {entry.last_error}"
        with self.store.transaction() as uow:
            if not self._failed(uow, entry, error, None):
                report.expired.append(entry.key)
                return
        report.dead.append(entry.key)
        _log.error("notification %s is a dead letter: %s", entry.key, error)

    def _attempt(self, entry: OutboxEntry) -> _Outcome:
        notification = entry.notification
        if not notification.recipients:
            return _Outcome("notification has no recipients", permanent=True)
        # One delivery per notifier: roles that share a notifier (one webhook endpoint, one
        # mail server) get one call with all their recipients, so a receiver that drops
        # repeated idempotency keys never drops another role's part as a "repeat".
        groups: dict[int, tuple[Notifier, list[RecipientRole], list[Recipient]]] = {}
        for recipient in notification.recipients:
            notifier = self._routes.get(recipient.role, self.fallback)
            if notifier is None:
                # Checked before sending anything, so a requeue after fixing the
                # configuration does not repeat deliveries to the other roles.
                return _Outcome(
                    f"no notifier registered for role {recipient.role.value!r} and no fallback",
                    permanent=True,
                )
            _, roles, recipients = groups.setdefault(id(notifier), (notifier, [], []))
            if recipient.role not in roles:
                roles.append(recipient.role)
            recipients.append(recipient)

        errors: list[str] = []
        permanent = False
        retry_after: timedelta | None = None
        for notifier, roles, recipients in groups.values():
            try:
                notifier.deliver(notification, tuple(recipients))
            except DeliveryError as exc:
                permanent = permanent or exc.permanent
                errors.append(_describe(roles, notifier, exc))
                wait = getattr(exc, "retry_after", None)
                if isinstance(wait, timedelta) and (retry_after is None or wait > retry_after):
                    retry_after = wait
            except Exception as exc:  # a notifier bug must not stop the other rows
                _log.warning(
                    "notifier %s raised for %s", type(notifier).__name__, entry.key, exc_info=True
                )
                errors.append(_describe(roles, notifier, exc))
        return _Outcome("; ".join(errors), permanent, retry_after) if errors else _Outcome()

    def _failed(
        self, uow: UnitOfWork, current: OutboxEntry, error: str, retry_at: datetime | None
    ) -> bool:
        """Record a failed attempt; ``False`` when the store kept another dispatcher's claim
        instead (ours ran out meanwhile)."""
        key = current.key
        if _takes_owner(uow):
            uow.mark_failed(key, error, retry_at, self.owner)
        else:  # an adapter written before ``owner``: without the ownership check
            uow.mark_failed(key, error, retry_at)
        after = uow.outbox_entry(key)
        return after is not None and after.attempts > current.attempts

    def _record(self, entry: OutboxEntry, outcome: _Outcome, report: DispatchReport) -> None:
        key = entry.key
        now = self.clock.now()
        with self.store.transaction() as uow:
            if outcome.error is None:
                uow.mark_delivered(key, now)
                report.delivered.append(key)
                return
            current = uow.outbox_entry(key)
            if current is None or current.status is not OutboxStatus.PENDING:
                return  # our lease ran out and another dispatcher delivered or parked it
            attempts = entry.attempts + 1
            retry_at = None
            if outcome.permanent:
                error = f"permanent failure on attempt {attempts}: {outcome.error}"
            elif attempts >= self.max_attempts:
                error = f"gave up after {attempts} attempts: {outcome.error}"
            else:
                delay = self.retry_delay(attempts)
                if outcome.retry_after is not None:
                    # The receiver said when to come back (Retry-After); max_delay still bounds it.
                    delay = max(delay, min(outcome.retry_after, self.max_delay))
                error, retry_at = outcome.error, now + delay
            if not self._failed(uow, current, error, retry_at):
                # Our lease ran out and another dispatcher claimed the row since: the store
                # kept that claim, and that dispatcher's attempt counts instead.
                report.expired.append(key)
                return
            if retry_at is not None:
                report.retried.append(key)
                _log.info(
                    "notification %s failed (attempt %d), retry at %s: %s",
                    key,
                    attempts,
                    retry_at.isoformat(),
                    error,
                )
                return
            report.dead.append(key)
        _log.error("notification %s is a dead letter: %s", key, error)

    # -- dead letters ----------------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[OutboxEntry]:
        """Dead rows, oldest first, with ``last_error`` saying why."""
        limit = whole_number("limit", limit, 0)
        with self.store.transaction() as uow:
            return uow.list_outbox(OutboxStatus.DEAD, limit)

    def requeue(self, key: str) -> OutboxEntry:
        """Move the dead letter ``key`` back to pending, due now, with its attempts reset.

        Raises ``ValidationError`` if no dead letter has that key.
        """
        if not isinstance(key, str):
            raise ValidationError("key", key, "the idempotency key of a dead letter")
        with self.store.transaction() as uow:
            entry = uow.outbox_entry(key)
            if entry is None:
                raise ValidationError("key", key, "the idempotency key of a dead letter")
            if entry.status is not OutboxStatus.DEAD:
                raise ValidationError(
                    "key", key, f"a dead letter (this notification is {entry.status.value})"
                )
            uow.requeue(key, self.clock.now())
            requeued = uow.outbox_entry(key)
        assert requeued is not None
        return requeued


def _describe(roles: list[RecipientRole], notifier: Notifier, exc: Exception) -> str:
    who = "+".join(role.value for role in roles)
    text = f"{who} via {type(notifier).__name__}: {exc or type(exc).__name__}"
    response = exc.response if isinstance(exc, DeliveryError) else None
    if response and response not in text:
        text += f" (response: {response})"
    return text


_TAKES_OWNER: dict[type, bool] = {}


def _takes_owner(uow: object) -> bool:
    """Whether the unit of work's ``mark_failed`` takes the claim's ``owner`` (the port's
    adapters do; one written for the port before it did is still served)."""
    kind = type(uow)
    known = _TAKES_OWNER.get(kind)
    if known is None:
        try:
            parameters = inspect.signature(uow.mark_failed).parameters.values()  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            parameters = None
        known = parameters is None or any(
            p.name == "owner" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters
        )
        if len(_TAKES_OWNER) < 1_000:  # unit-of-work classes are few
            _TAKES_OWNER[kind] = known
    return known
