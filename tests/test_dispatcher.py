"""The outbox dispatcher: backoff, dead letters, requeue, role routing and crash recovery."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportflow import Desk
from supportflow.clock import ManualClock
from supportflow.errors import ValidationError
from supportflow.model import Notification, Recipient, RecipientRole
from supportflow.notify import DeliveryError, Dispatcher, DispatchReport, MemoryNotifier
from supportflow.storage import OutboxEntry, OutboxStatus, Storage, UnitOfWork
from supportflow.storage.memory import MemoryStore
from supportflow.storage.sqlite import SqliteStore

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
CUSTOMER = Recipient(RecipientRole.CUSTOMER, "wang@example.com", "Wang Fang")
AGENT = Recipient(RecipientRole.AGENT, "li@desk.example", "Li Lei")
MANAGER = Recipient(RecipientRole.MANAGER, "zhao@desk.example", "Zhao")


def _note(key: str, *recipients: Recipient) -> Notification:
    return Notification(
        idempotency_key=key,
        kind="ticket_updated",
        recipients=recipients or (CUSTOMER,),
        subject="Ticket #7 updated",
        body="...",
        created_at=T0,
        ticket_id="t-7",
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def _enqueue(store: Storage, *notifications: Notification) -> None:
    with store.transaction() as uow:
        uow.enqueue(list(notifications))


def _entry(store: Storage, key: str) -> OutboxEntry:
    with store.transaction() as uow:
        entry = uow.outbox_entry(key)
    assert entry is not None
    return entry


class TestBackoff:
    def test_schedule_without_jitter(self, store: MemoryStore, clock: ManualClock) -> None:
        inbox = MemoryNotifier(clock)
        inbox.fail_next(100)
        _enqueue(store, _note("n-1"))
        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock, jitter=0, max_attempts=10)
        delays = []
        for _ in range(9):
            assert dispatcher.deliver_pending().retried == ["n-1"]
            entry = _entry(store, "n-1")
            assert entry.next_attempt_at is not None
            delays.append(int((entry.next_attempt_at - clock.now()).total_seconds()))
            clock.set(entry.next_attempt_at)
        assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
        assert _entry(store, "n-1").attempts == 9

    def test_schedule_with_seeded_jitter(self, store: MemoryStore, clock: ManualClock) -> None:
        inbox = MemoryNotifier(clock)
        inbox.fail_next(100)
        _enqueue(store, _note("n-1"))
        dispatcher = Dispatcher(
            store,
            {"customer": inbox},
            clock=clock,
            max_attempts=8,
            jitter=0.2,
            random=random.Random(1234),
        )
        twin = random.Random(1234)
        for attempt in range(1, 8):
            assert dispatcher.deliver_pending().retried == ["n-1"]
            entry = _entry(store, "n-1")
            assert entry.next_attempt_at is not None
            base = min(timedelta(hours=1), timedelta(seconds=30) * 2 ** (attempt - 1))
            expected = base * (1 + twin.uniform(-0.2, 0.2))
            assert entry.next_attempt_at - clock.now() == expected
            assert base * 0.8 <= expected <= base * 1.2

            # Not a moment early: just before the retry time nothing is claimed.
            clock.set(entry.next_attempt_at - timedelta(microseconds=1))
            assert dispatcher.deliver_pending().attempts == 0
            clock.set(entry.next_attempt_at)
        assert dispatcher.deliver_pending().dead == ["n-1"]
        assert len(inbox.failures) == 8
        assert all(f.notification.idempotency_key == "n-1" for f in inbox.failures)

    @settings(max_examples=200, deadline=None)
    @given(
        attempts=st.integers(min_value=1, max_value=200),
        seed=st.integers(min_value=0, max_value=2**32),
        jitter=st.floats(min_value=0, max_value=0.99),
    )
    def test_delay_stays_within_jitter_of_the_capped_backoff(
        self, attempts: int, seed: int, jitter: float
    ) -> None:
        dispatcher = Dispatcher(
            MemoryStore(),
            {},
            clock=ManualClock(T0),
            jitter=jitter,
            random=random.Random(seed),
        )
        base = min(timedelta(hours=1), timedelta(seconds=30) * 2 ** min(attempts - 1, 40))
        assert dispatcher.backoff(attempts) == base
        delay = dispatcher.retry_delay(attempts)
        tolerance = timedelta(microseconds=2)
        assert base * (1 - jitter) - tolerance <= delay <= base * (1 + jitter) + tolerance


class _AskingToWait:
    """A notifier that fails each delivery asking for ``waits`` (one per attempt, last repeats)."""

    def __init__(self, *waits: timedelta | None, permanent: bool = False) -> None:
        self.waits = list(waits)
        self.permanent = permanent
        self.calls = 0

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        wait = self.waits[min(self.calls, len(self.waits) - 1)]
        self.calls += 1
        raise DeliveryError("HTTP 429", permanent=self.permanent, retry_after=wait)


class TestRetryAfter:
    """A receiver's Retry-After: wait at least that long, within max_delay and max_attempts."""

    def _delay(self, store: MemoryStore, clock: ManualClock) -> timedelta:
        entry = _entry(store, "n-1")
        assert entry.next_attempt_at is not None
        return entry.next_attempt_at - clock.now()

    def test_a_longer_wait_than_the_backoff_is_honoured(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        _enqueue(store, _note("n-1"))
        notifier = _AskingToWait(timedelta(minutes=10), None, timedelta(seconds=5))
        dispatcher = Dispatcher(store, {"customer": notifier}, clock=clock, jitter=0.2)
        assert dispatcher.deliver_pending().retried == ["n-1"]
        assert self._delay(store, clock) == timedelta(minutes=10)
        clock.set(clock.now() + timedelta(minutes=10))
        # No wait asked: the jittered backoff; a wait shorter than the backoff: the backoff.
        assert dispatcher.deliver_pending().retried == ["n-1"]
        assert timedelta(seconds=48) <= self._delay(store, clock) <= timedelta(seconds=72)
        clock.set(clock.now() + timedelta(minutes=2))
        assert dispatcher.deliver_pending().retried == ["n-1"]
        assert timedelta(seconds=96) <= self._delay(store, clock) <= timedelta(seconds=144)

    def test_the_wait_is_capped_at_max_delay(self, store: MemoryStore, clock: ManualClock) -> None:
        _enqueue(store, _note("n-1"))
        notifier = _AskingToWait(timedelta(days=3))
        dispatcher = Dispatcher(
            store, {"customer": notifier}, clock=clock, jitter=0, max_delay=timedelta(hours=2)
        )
        dispatcher.deliver_pending()
        assert self._delay(store, clock) == timedelta(hours=2)

    def test_max_attempts_and_permanent_failures_still_end_it(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        _enqueue(store, _note("n-1"), _note("n-2", AGENT))
        waiting = _AskingToWait(timedelta(minutes=5))
        refused = _AskingToWait(timedelta(minutes=5), permanent=True)
        dispatcher = Dispatcher(
            store, {"customer": waiting, "agent": refused}, clock=clock, max_attempts=2
        )
        report = dispatcher.deliver_pending()
        assert (report.retried, report.dead) == (["n-1"], ["n-2"])
        clock.set(clock.now() + timedelta(minutes=5))
        assert dispatcher.deliver_pending().dead == ["n-1"]
        assert _entry(store, "n-1").status is OutboxStatus.DEAD

    def test_the_longest_wait_of_the_notifiers_counts(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        _enqueue(store, _note("n-1", CUSTOMER, AGENT, MANAGER))
        notifiers = {
            "customer": _AskingToWait(timedelta(minutes=3)),
            "agent": _AskingToWait(timedelta(minutes=7)),
            "manager": _AskingToWait(None),
        }
        Dispatcher(store, notifiers, clock=clock, jitter=0).deliver_pending()
        assert self._delay(store, clock) == timedelta(minutes=7)

    @pytest.mark.parametrize("wait", ["120", 120, timedelta(seconds=-1)])
    def test_delivery_error_refuses_a_wait_that_is_not_a_duration(self, wait: Any) -> None:
        with pytest.raises(ValidationError) as caught:
            DeliveryError("HTTP 429", retry_after=wait)
        assert caught.value.field == "retry_after"


class TestDeadLetters:
    def test_dead_after_max_attempts(self, store: MemoryStore, clock: ManualClock) -> None:
        inbox = MemoryNotifier(clock)
        inbox.fail_next(10, response="503 Service Unavailable")
        _enqueue(store, _note("n-1"))
        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock, max_attempts=3, jitter=0)
        assert dispatcher.deliver_pending().retried == ["n-1"]
        clock.advance(seconds=30)
        assert dispatcher.deliver_pending().retried == ["n-1"]
        clock.advance(seconds=60)
        report = dispatcher.deliver_pending()
        assert (report.delivered, report.retried, report.dead) == ([], [], ["n-1"])

        entry = _entry(store, "n-1")
        assert entry.status is OutboxStatus.DEAD
        assert entry.attempts == 3
        assert entry.next_attempt_at is None
        assert entry.last_error is not None
        assert entry.last_error.startswith("gave up after 3 attempts: customer via MemoryNotifier")
        assert "503 Service Unavailable" in entry.last_error
        assert [e.key for e in dispatcher.dead_letters()] == ["n-1"]

        clock.advance(days=30)
        assert dispatcher.deliver_pending().idle

    def test_permanent_error_is_dead_at_once(self, store: MemoryStore, clock: ManualClock) -> None:
        inbox = MemoryNotifier(clock)
        inbox.fail_next(1, permanent=True, response="410 Gone: hook deleted")
        _enqueue(store, _note("n-1"), _note("n-2"))
        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock)
        report = dispatcher.deliver_pending()
        assert report.dead == ["n-1"]
        assert report.delivered == ["n-2"]
        assert report.attempts == 2
        [dead] = dispatcher.dead_letters()
        assert dead.attempts == 1
        assert dead.last_error is not None
        assert dead.last_error.startswith("permanent failure on attempt 1")
        assert "410 Gone: hook deleted" in dead.last_error

    def test_requeue_delivers_again_with_attempts_reset(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)
        inbox.fail_next(1, permanent=True)
        _enqueue(store, _note("n-1"))
        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock)
        assert dispatcher.deliver_pending().dead == ["n-1"]

        clock.advance(hours=2)
        requeued = dispatcher.requeue("n-1")
        assert requeued.status is OutboxStatus.PENDING
        assert requeued.attempts == 0
        assert requeued.next_attempt_at == clock.now()
        assert dispatcher.dead_letters() == []

        assert dispatcher.deliver_pending().delivered == ["n-1"]
        assert inbox.keys() == ["n-1"]
        assert _entry(store, "n-1").status is OutboxStatus.DELIVERED

    def test_requeue_needs_a_dead_letter(self, store: MemoryStore, clock: ManualClock) -> None:
        dispatcher = Dispatcher(store, {"customer": MemoryNotifier()}, clock=clock)
        with pytest.raises(ValidationError, match="no-such-key"):
            dispatcher.requeue("no-such-key")
        _enqueue(store, _note("n-1"))
        with pytest.raises(ValidationError, match="pending"):
            dispatcher.requeue("n-1")
        dispatcher.deliver_pending()
        with pytest.raises(ValidationError, match="delivered"):
            dispatcher.requeue("n-1")


class TestRouting:
    def test_each_role_goes_to_its_notifier(self, store: MemoryStore, clock: ManualClock) -> None:
        mail, chat, fallback = MemoryNotifier(), MemoryNotifier(), MemoryNotifier()
        second_customer = Recipient("customer", "fang@example.com")
        _enqueue(store, _note("n-1", CUSTOMER, AGENT, second_customer, MANAGER))
        dispatcher = Dispatcher(
            store,
            {RecipientRole.CUSTOMER: mail, "agent": chat},
            clock=clock,
            fallback=fallback,
        )
        assert dispatcher.deliver_pending().delivered == ["n-1"]
        assert [d.recipients for d in mail.deliveries] == [(CUSTOMER, second_customer)]
        assert [d.recipients for d in chat.deliveries] == [(AGENT,)]
        assert [d.recipients for d in fallback.deliveries] == [(MANAGER,)]
        assert mail.keys() == chat.keys() == fallback.keys() == ["n-1"]

    def test_role_without_notifier_is_dead_and_nothing_is_sent(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        mail = MemoryNotifier()
        _enqueue(store, _note("n-1", CUSTOMER, MANAGER))
        dispatcher = Dispatcher(store, {"customer": mail}, clock=clock)
        assert dispatcher.deliver_pending().dead == ["n-1"]
        assert mail.deliveries == []
        [dead] = dispatcher.dead_letters()
        assert dead.last_error is not None
        assert "no notifier registered for role 'manager'" in dead.last_error

    def test_no_recipients_is_permanent(self, store: MemoryStore, clock: ManualClock) -> None:
        note = Notification("n-0", "x", (), "s", "b", T0)
        _enqueue(store, note)
        dispatcher = Dispatcher(store, {}, clock=clock, fallback=MemoryNotifier())
        assert dispatcher.deliver_pending().dead == ["n-0"]

    def test_unknown_role_in_configuration(self, store: MemoryStore, clock: ManualClock) -> None:
        with pytest.raises(ValidationError, match="notifiers"):
            Dispatcher(store, {"pager": MemoryNotifier()}, clock=clock)

    def test_one_failing_role_retries_the_whole_notification(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        mail, chat = MemoryNotifier(), MemoryNotifier()
        chat.fail_next(1)
        _enqueue(store, _note("n-1", CUSTOMER, AGENT))
        dispatcher = Dispatcher(store, {"customer": mail, "agent": chat}, clock=clock, jitter=0)
        report = dispatcher.deliver_pending()
        assert report.retried == ["n-1"]
        assert _entry(store, "n-1").last_error == (
            "agent via MemoryNotifier: MemoryNotifier failing on purpose (0 more to fail)"
        )
        clock.advance(seconds=30)
        assert dispatcher.deliver_pending().delivered == ["n-1"]
        # At least once: the customer gets it twice, with one key to drop the repeat by.
        assert mail.keys() == ["n-1", "n-1"]
        assert chat.keys() == ["n-1"]

    def test_a_notifier_bug_is_a_transient_failure(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        class Broken:
            def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
                raise KeyError("template")

        _enqueue(store, _note("n-1"), _note("n-2"))
        dispatcher = Dispatcher(store, {"customer": Broken()}, clock=clock)
        report = dispatcher.deliver_pending()
        assert report.retried == ["n-1", "n-2"]
        assert "Broken: 'template'" in (_entry(store, "n-1").last_error or "")


class _ProxyUnitOfWork:
    """A unit of work that passes every call on to ``uow``; subclasses change a few."""

    def __init__(self, uow: UnitOfWork, store: Any) -> None:
        self.uow, self.store = uow, store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.uow, name)


class _WrappedStore:
    """A store adapter around a ``MemoryStore`` whose units of work are ``proxy`` objects."""

    proxy: type[_ProxyUnitOfWork] = _ProxyUnitOfWork

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner

    @contextmanager
    def _transaction(self) -> Iterator[UnitOfWork]:
        with self.inner.transaction() as uow:
            yield self.proxy(uow, self)

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        return self._transaction()

    def close(self) -> None:
        self.inner.close()


class _MarkDeliveredFails(_ProxyUnitOfWork):
    def mark_delivered(self, key: str, at: datetime) -> None:
        store = self.store
        store.marks += 1
        if store.marks == store.crash_on:
            raise store.error
        self.uow.mark_delivered(key, at)


class _CrashAfterDelivering(_WrappedStore):
    """A store whose ``mark_delivered`` raises ``crash_on``-th time: the process 'dies' after
    the notifier accepted the notification but before the outbox knew."""

    proxy = _MarkDeliveredFails

    def __init__(
        self, inner: MemoryStore, crash_on: int, error: BaseException | None = None
    ) -> None:
        super().__init__(inner)
        self.crash_on = crash_on
        self.error = error if error is not None else SystemExit("dispatcher process killed")
        self.marks = 0


class TestCrashRecovery:
    def test_delivered_but_not_recorded_is_redelivered_after_the_lease(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)
        _enqueue(store, *(_note(f"n-{i}") for i in range(1, 6)))
        crashing = _CrashAfterDelivering(store, crash_on=3)
        doomed = Dispatcher(
            crashing, {"customer": inbox}, clock=clock, owner="worker-a", lease=timedelta(minutes=5)
        )
        with pytest.raises(SystemExit):
            doomed.deliver_pending()
        assert inbox.keys() == ["n-1", "n-2", "n-3"]  # n-3 went out, its record did not
        assert _entry(store, "n-3").status is OutboxStatus.PENDING

        survivor = Dispatcher(
            store, {"customer": inbox}, clock=clock, owner="worker-b", lease=timedelta(minutes=5)
        )
        clock.advance(minutes=4, seconds=59)
        assert survivor.deliver_pending().idle  # the dead worker's lease still holds

        clock.advance(seconds=1)
        # n-3 to n-5 were claimed by the dead worker and never recorded: each is tried alone,
        # so that if one of them killed the worker, it is the only row to pay for it; one
        # run still gets through them all.
        report = survivor.deliver_pending()
        assert report.delivered == ["n-3", "n-4", "n-5"]
        assert report.deferred == ["n-4", "n-5"]  # handed back once, then claimed one by one
        assert survivor.deliver_pending().idle
        assert inbox.keys() == ["n-1", "n-2", "n-3", "n-3", "n-4", "n-5"]
        with store.transaction() as uow:
            assert uow.list_outbox(OutboxStatus.PENDING) == []
            delivered = uow.list_outbox(OutboxStatus.DELIVERED)
        assert [e.key for e in delivered] == [f"n-{i}" for i in range(1, 6)]
        # The repeat carried the same key, so a receiver could drop it.
        repeats = [d for d in inbox.deliveries if d.notification.idempotency_key == "n-3"]
        assert repeats[0].notification == repeats[1].notification

    def test_worker_that_died_before_recording_anything(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)
        _enqueue(store, _note("n-1"))
        # The dead worker claimed and delivered, then vanished without a trace.
        with store.transaction() as uow:
            [claimed] = uow.claim_notifications(
                clock.now(), 10, "dead-worker", timedelta(minutes=5)
            )
        inbox.deliver(claimed.notification, claimed.notification.recipients)

        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock)
        assert dispatcher.deliver_pending().idle
        clock.advance(minutes=5)
        assert dispatcher.deliver_pending().delivered == ["n-1"]
        assert inbox.keys() == ["n-1", "n-1"]

    def test_two_dispatchers_never_share_a_row(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)
        _enqueue(store, _note("n-1"), _note("n-2"))
        other = Dispatcher(store, {"customer": inbox}, clock=clock, owner="b")
        reports = []

        class Interleaving:
            # While 'a' is delivering outside any transaction, 'b' runs.
            def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
                reports.append(other.deliver_pending())
                inbox.deliver(notification, recipients)

        first = Dispatcher(store, {"customer": Interleaving()}, clock=clock, owner="a")
        assert first.deliver_pending().delivered == ["n-1", "n-2"]
        assert all(r.idle for r in reports)
        assert inbox.keys() == ["n-1", "n-2"]

    def test_rows_whose_lease_ran_out_mid_run_are_left_alone(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)

        class Slow:
            def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
                clock.advance(minutes=3)
                inbox.deliver(notification, recipients)

        _enqueue(store, _note("n-1"), _note("n-2"), _note("n-3"))
        dispatcher = Dispatcher(
            store, {"customer": Slow()}, clock=clock, lease=timedelta(minutes=5)
        )
        report = dispatcher.deliver_pending()
        assert report.delivered == ["n-1", "n-2"]
        assert report.expired == ["n-3"]
        assert report.attempts == 2
        assert dispatcher.deliver_pending().delivered == ["n-3"]


class _Scripted:
    """A notifier that runs ``action`` (which may move the clock, or raise) on each delivery."""

    def __init__(self, action: Any) -> None:
        self.action = action

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        self.action()


class TestLateReports:
    """A dispatcher whose receiver hung past its lease reports after another took over."""

    LEASE = timedelta(minutes=5)

    def dispatcher(self, store: Storage, clock: ManualClock, owner: str, action: Any) -> Dispatcher:
        notifiers = {"customer": _Scripted(action)}
        return Dispatcher(store, notifiers, clock=clock, lease=self.LEASE, owner=owner, jitter=0)

    @pytest.mark.parametrize("make_store", [MemoryStore, SqliteStore], ids=["memory", "sqlite"])
    def test_a_late_failure_leaves_the_new_owners_claim_alone(
        self, make_store: Callable[[], Storage], clock: ManualClock
    ) -> None:
        store = make_store()
        _enqueue(store, _note("n-1"))

        def hang_then_fail() -> None:
            clock.advance(minutes=6)  # past the lease: worker-b takes the row over
            with store.transaction() as uow:
                assert [e.key for e in uow.claim_notifications(clock.now(), 5, "b", self.LEASE)]
            raise DeliveryError("timed out")

        late = self.dispatcher(store, clock, "a", hang_then_fail).deliver_pending()

        assert (late.expired, late.retried, late.dead) == (["n-1"], [], [])
        clock.advance(minutes=1)  # worker-b's lease runs until 09:11
        with store.transaction() as uow:
            assert uow.claim_notifications(clock.now(), 5, "c", self.LEASE) == []
        assert _entry(store, "n-1").attempts == 0  # worker-b has not reported yet

    @pytest.mark.parametrize("make_store", [MemoryStore, SqliteStore], ids=["memory", "sqlite"])
    def test_a_late_transient_failure_does_not_revive_a_dead_letter(
        self, make_store: Callable[[], Storage], clock: ManualClock
    ) -> None:
        store = make_store()
        _enqueue(store, _note("n-1"))

        def reject() -> None:
            raise DeliveryError("550 no such user", permanent=True)

        def hang_then_fail() -> None:
            clock.advance(minutes=6)
            assert self.dispatcher(store, clock, "b", reject).deliver_pending().dead == ["n-1"]
            raise DeliveryError("timed out")

        self.dispatcher(store, clock, "a", hang_then_fail).deliver_pending()

        entry = _entry(store, "n-1")
        assert (entry.status, entry.attempts) == (OutboxStatus.DEAD, 1)


class _WithoutOwner(_ProxyUnitOfWork):
    def mark_failed(self, key: str, error: str, retry_at: datetime | None) -> None:
        self.uow.mark_failed(key, error, retry_at)


class _OwnerlessStore(_WrappedStore):
    """A store adapter written before ``mark_failed`` took the claim's ``owner``."""

    proxy = _WithoutOwner


def test_an_adapter_without_the_owner_parameter_still_records_failures(
    store: MemoryStore, clock: ManualClock
) -> None:
    _enqueue(store, _note("n-1"))

    def fail() -> None:
        raise DeliveryError("451 try later")

    notifiers = {"customer": _Scripted(fail)}
    dispatcher = Dispatcher(_OwnerlessStore(store), notifiers, clock=clock, jitter=0)
    assert dispatcher.deliver_pending().retried == ["n-1"]
    assert _entry(store, "n-1").attempts == 1


def test_limit_and_order(store: MemoryStore, clock: ManualClock) -> None:
    inbox = MemoryNotifier(clock)
    _enqueue(store, *(_note(f"n-{i}") for i in range(5)))
    dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock)
    assert dispatcher.deliver_pending(limit=2).delivered == ["n-0", "n-1"]
    assert dispatcher.deliver_pending(limit=10).delivered == ["n-2", "n-3", "n-4"]
    assert dispatcher.deliver_pending().idle
    with pytest.raises(ValidationError):
        dispatcher.deliver_pending(limit=0)


def test_delivery_error_failure_in_notifier_keeps_other_rows_going(
    store: MemoryStore, clock: ManualClock
) -> None:
    class Picky:
        def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
            if notification.idempotency_key == "bad":
                raise DeliveryError("rejected", permanent=True, response="422 Unprocessable")

    _enqueue(store, _note("a"), _note("bad"), _note("c"))
    report = Dispatcher(store, {"customer": Picky()}, clock=clock).deliver_pending()
    assert (report.delivered, report.dead) == (["a", "c"], ["bad"])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_attempts", 0),
        ("base_delay", timedelta(0)),
        ("max_delay", timedelta(seconds=1)),
        ("max_delay", timedelta.max),  # now + delay would be no date
        ("jitter", 1.0),
        ("jitter", -0.1),
        ("lease", timedelta(0)),
    ],
)
def test_configuration_is_checked(
    store: MemoryStore, clock: ManualClock, option: str, value: Any
) -> None:
    with pytest.raises(ValidationError, match=option):
        Dispatcher(store, {}, clock=clock, **{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("notifiers", None),
        ("notifiers", [("customer", MemoryNotifier())]),
        ("notifiers", {"customer": 5}),
        ("store", None),
        ("clock", None),
        ("clock", 5),
        ("max_attempts", None),
        ("max_attempts", "6"),
        ("max_attempts", 6.0),
        ("max_attempts", True),
        ("base_delay", None),
        ("base_delay", 30),
        ("max_delay", None),
        ("max_delay", 3600),
        ("jitter", None),
        ("jitter", "0.2"),
        ("jitter", True),
        ("jitter", float("nan")),
        ("lease", None),
        ("lease", 300),
        ("owner", 5),
        ("random", 5),
        ("fallback", 5),
        ("max_unfinished", None),
        ("max_unfinished", "3"),
        ("max_unfinished", 2.0),
        ("max_unfinished", 1),  # one crash in a batch leaves every row of it unfinished
        ("max_unfinished", 0),
    ],
)
def test_ill_typed_configuration_is_named(
    store: MemoryStore, clock: ManualClock, option: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"store": store, "notifiers": {}, "clock": clock, option: value}
    with pytest.raises(ValidationError) as refused:
        Dispatcher(**arguments)
    assert refused.value.field == option


@pytest.mark.parametrize("attempts", [None, "3", 2.5, [1]])
def test_backoff_names_an_ill_typed_attempt_count(
    store: MemoryStore, clock: ManualClock, attempts: Any
) -> None:
    dispatcher = Dispatcher(store, {}, clock=clock)
    with pytest.raises(ValidationError) as refused:
        dispatcher.backoff(attempts)
    assert refused.value.field == "attempts"


def test_well_typed_configuration_is_kept(store: MemoryStore, clock: ManualClock) -> None:
    dispatcher = Dispatcher(
        store,
        {RecipientRole.CUSTOMER: MemoryNotifier()},
        clock=clock,
        max_attempts=3,
        base_delay=timedelta(seconds=10),
        max_delay=timedelta(minutes=1),
        jitter=0,
        lease=timedelta(minutes=1),
        owner="w-1",
        random=random.Random(1),
        fallback=MemoryNotifier(),
        max_unfinished=2,
    )
    assert (dispatcher.max_attempts, dispatcher.jitter, dispatcher.owner) == (3, 0, "w-1")
    assert dispatcher.max_unfinished == 2
    assert dispatcher.backoff(3) == timedelta(seconds=40)


@pytest.mark.parametrize(
    "option", ["max_attempts", "base_delay", "jitter", "lease", "max_unfinished"]
)
def test_desk_passes_the_dispatchers_own_refusal_on(option: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Desk(dispatcher_options={option: None})
    assert refused.value.field == option


class _ProcessDied(BaseException):
    """Stands for the death of the process in a delivery: nothing after it runs."""


class _Poison:
    """Kills the 'process' on the notifications named; delivers the others to ``inbox``."""

    def __init__(self, inbox: MemoryNotifier, *keys: str) -> None:
        self.inbox, self.keys, self.tried = inbox, set(keys), []

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        self.tried.append(notification.idempotency_key)
        if notification.idempotency_key in self.keys:
            raise _ProcessDied
        self.inbox.deliver(notification, recipients)


class _Uncounted(_ProxyUnitOfWork):
    def __getattr__(self, name: str) -> Any:
        if name == "release_notifications":
            raise AttributeError(name)
        return getattr(self.uow, name)

    def claim_notifications(self, *args: Any) -> list[OutboxEntry]:
        claimed = self.uow.claim_notifications(*args)
        return [attrs.evolve(e, claims=0) for e in claimed]


class _LegacyStore(_WrappedStore):
    """A store adapter written before claims were counted: no ``claims``, no release."""

    proxy = _Uncounted


class TestPoisonMessages:
    """A notification whose delivery kills the dispatcher's process, whoever runs it."""

    LEASE = timedelta(minutes=5)

    def crash(
        self, store: Storage, clock: ManualClock, notifier: _Poison, owner: str, **options: Any
    ) -> None:
        """A dispatcher dies delivering; its lease runs out before the next one comes."""
        dispatcher = Dispatcher(
            store, {"customer": notifier}, clock=clock, lease=self.LEASE, owner=owner, **options
        )
        with pytest.raises(_ProcessDied):
            dispatcher.deliver_pending()
        clock.advance(minutes=5)

    def test_a_store_error_while_recording_is_no_unfinished_delivery(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        # The delivery finished; only its bookkeeping failed ("database is locked"), more
        # times than max_unfinished. The rows go back uncounted and are delivered, not parked.
        inbox = MemoryNotifier(clock)
        _enqueue(store, _note("n-1"), _note("n-2"))
        locked = _CrashAfterDelivering(store, crash_on=1, error=RuntimeError("database is locked"))
        for _ in range(4):
            locked.marks = 0
            with pytest.raises(RuntimeError, match="locked"):
                Dispatcher(
                    locked, {"customer": inbox}, clock=clock, lease=self.LEASE
                ).deliver_pending()
        assert [(_entry(store, k).claims, _entry(store, k).status) for k in ("n-1", "n-2")] == [
            (0, OutboxStatus.PENDING),
            (0, OutboxStatus.PENDING),
        ]
        report = Dispatcher(
            store, {"customer": inbox}, clock=clock, lease=self.LEASE
        ).deliver_pending()
        assert (report.delivered, report.dead) == (["n-1", "n-2"], [])

    def test_a_crash_holds_back_the_rows_behind_it_by_one_row_each_not_a_run_each(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)
        _enqueue(store, *(_note(f"n-{i:02}") for i in range(50)))
        with store.transaction() as uow:  # a worker claims 50 rows and dies
            uow.claim_notifications(clock.now(), 50, "dead-worker", self.LEASE)
        clock.advance(minutes=5)
        _enqueue(store, _note("fresh"))
        report = Dispatcher(
            store, {"customer": inbox}, clock=clock, lease=self.LEASE
        ).deliver_pending()
        assert len(report.delivered) == 51
        assert "fresh" in report.delivered

    @pytest.mark.parametrize("make_store", [MemoryStore, SqliteStore], ids=["memory", "sqlite"])
    @pytest.mark.parametrize("max_unfinished", [2, 3, 5])
    def test_parked_after_max_unfinished_deliveries_and_not_before(
        self, make_store: Callable[[], Storage], clock: ManualClock, max_unfinished: int
    ) -> None:
        store = make_store()
        inbox = MemoryNotifier(clock)
        poison = _Poison(inbox, "n-1")
        _enqueue(store, _note("n-1"))
        for crash in range(1, max_unfinished + 1):
            self.crash(store, clock, poison, f"worker-{crash}", max_unfinished=max_unfinished)
            entry = _entry(store, "n-1")
            assert (entry.status, entry.claims, entry.attempts) == (
                OutboxStatus.PENDING,
                crash,
                0,
            )
        assert poison.tried == ["n-1"] * max_unfinished

        survivor = Dispatcher(
            store,
            {"customer": poison},
            clock=clock,
            lease=self.LEASE,
            owner="survivor",
            max_unfinished=max_unfinished,
        )
        report = survivor.deliver_pending()
        assert (report.dead, report.attempts, report.delivered) == (["n-1"], 0, [])
        assert not report.idle
        assert poison.tried == ["n-1"] * max_unfinished  # not tried again
        entry = _entry(store, "n-1")
        assert entry.status is OutboxStatus.DEAD
        assert entry.last_error is not None
        assert entry.last_error.startswith(
            f"delivery never finished {max_unfinished} times (the process delivering it stopped"
            " or ran past its lease)"
        )
        assert [e.key for e in survivor.dead_letters()] == ["n-1"]
        assert survivor.deliver_pending().idle

        requeued = survivor.requeue("n-1")  # an operator fixed the notifier
        assert (requeued.claims, requeued.attempts) == (0, 0)
        poison.keys.clear()
        assert survivor.deliver_pending().delivered == ["n-1"]

    def test_the_last_recorded_error_is_kept_in_the_dead_letters_reason(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        _enqueue(store, _note("n-1"))
        with store.transaction() as uow:
            uow.claim_notifications(clock.now(), 1, "worker", self.LEASE)
            uow.mark_failed("n-1", "451 try later", clock.now(), "worker")
        poison = _Poison(MemoryNotifier(clock), "n-1")
        for crash in range(3):
            self.crash(store, clock, poison, f"worker-{crash}")
        report = Dispatcher(store, {"customer": poison}, clock=clock).deliver_pending()
        assert report.dead == ["n-1"]
        error = _entry(store, "n-1").last_error
        assert error is not None
        assert error.startswith("delivery never finished 3 times")
        assert error.endswith("; last recorded error: 451 try later")

    @pytest.mark.parametrize("make_store", [MemoryStore, SqliteStore], ids=["memory", "sqlite"])
    def test_the_rest_of_the_poisons_batch_is_delivered_not_parked(
        self, make_store: Callable[[], Storage], clock: ManualClock
    ) -> None:
        # The first crash leaves n-3 and n-4 claimed and unrecorded too. From then on a row
        # with an unfinished delivery is tried alone, so only n-2's own crashes count.
        store = make_store()
        inbox = MemoryNotifier(clock)
        poison = _Poison(inbox, "n-2")
        _enqueue(store, *(_note(f"n-{i}") for i in range(1, 5)))
        for crash in range(3):
            self.crash(store, clock, poison, f"worker-{crash}")
        assert poison.tried == ["n-1", "n-2", "n-2", "n-2"]
        assert [(k, _entry(store, k).claims) for k in ("n-3", "n-4")] == [("n-3", 1), ("n-4", 1)]

        dispatcher = Dispatcher(store, {"customer": poison}, clock=clock, lease=self.LEASE)
        first = dispatcher.deliver_pending()
        assert (first.dead, first.delivered, first.deferred) == (["n-2"], ["n-3", "n-4"], ["n-4"])
        assert dispatcher.deliver_pending().idle
        assert inbox.keys() == ["n-1", "n-3", "n-4"]
        assert _entry(store, "n-2").status is OutboxStatus.DEAD

    def test_a_row_with_an_unfinished_delivery_is_tried_alone(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        inbox = MemoryNotifier(clock)
        _enqueue(store, _note("n-1"), _note("n-2"))
        with store.transaction() as uow:  # a worker died holding n-2
            uow.claim_notifications(clock.now(), 1, "dead-worker", self.LEASE)
        clock.advance(minutes=5)
        _enqueue(store, _note("n-0"))
        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock, lease=self.LEASE)
        report = dispatcher.deliver_pending()
        # n-1 first and alone; the others were handed back, then claimed again in the same run.
        assert (report.delivered[0], report.deferred, report.attempts) == ("n-1", ["n-0", "n-2"], 3)
        assert sorted(report.delivered[1:]) == ["n-0", "n-2"]
        # Handed back uncounted: the claim that delivered them is their only one.
        assert [(k, _entry(store, k).claims) for k in ("n-0", "n-2")] == [("n-0", 1), ("n-2", 1)]
        assert dispatcher.deliver_pending().idle

    @pytest.mark.parametrize("make_store", [MemoryStore, SqliteStore], ids=["memory", "sqlite"])
    def test_rows_a_batch_ran_past_the_lease_of_do_not_count_as_unfinished(
        self, make_store: Callable[[], Storage], clock: ManualClock
    ) -> None:
        # Each run, a slow delivery takes the whole lease and n-z is skipped: more times
        # than max_unfinished, and n-z is still delivered in the end.
        store = make_store()
        inbox = MemoryNotifier(clock)
        _enqueue(store, _note("n-z"))

        def slow() -> None:
            clock.advance(minutes=6)

        for run in range(5):
            _enqueue(store, _note(f"n-{run}"))
            dispatcher = Dispatcher(
                store, {"customer": _Scripted(slow)}, clock=clock, lease=self.LEASE
            )
            report = dispatcher.deliver_pending()
            assert (report.delivered, report.expired) == ([f"n-{run}"], ["n-z"])
            entry = _entry(store, "n-z")
            assert (entry.status, entry.claims) == (OutboxStatus.PENDING, 0)
        dispatcher = Dispatcher(store, {"customer": inbox}, clock=clock, lease=self.LEASE)
        assert dispatcher.deliver_pending().delivered == ["n-z"]

    def test_deliveries_that_always_run_past_the_lease_count_as_unfinished(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        # A receiver that hangs past the lease on this payload, every time: each time another
        # dispatcher takes the row over, and the late report is dropped. The fourth parks it.
        tried: list[str] = []

        def run(n: int) -> DispatchReport:
            def hang() -> None:
                tried.append(f"w{n}")
                clock.advance(minutes=6)
                reports.append(run(n + 1))
                raise DeliveryError("timed out")

            notifiers = {"customer": _Scripted(hang)}
            dispatcher = Dispatcher(store, notifiers, clock=clock, lease=self.LEASE, owner=f"w{n}")
            return dispatcher.deliver_pending()

        _enqueue(store, _note("n-1"))
        reports: list[DispatchReport] = []
        first = run(0)
        assert tried == ["w0", "w1", "w2"]
        assert reports[0].dead == ["n-1"]  # w3's
        assert first.expired == []  # the row is dead: nothing left to report on
        entry = _entry(store, "n-1")
        assert entry.status is OutboxStatus.DEAD
        assert entry.last_error is not None
        assert entry.last_error.startswith("delivery never finished 3 times")

    def test_an_adapter_without_claims_never_parks_for_unfinished_deliveries(
        self, store: MemoryStore, clock: ManualClock
    ) -> None:
        legacy = _LegacyStore(store)
        inbox = MemoryNotifier(clock)
        poison = _Poison(inbox, "n-1")
        _enqueue(store, _note("n-1"), _note("n-2"))
        for crash in range(5):
            self.crash(legacy, clock, poison, f"worker-{crash}")
        poison.keys.clear()
        report = Dispatcher(legacy, {"customer": poison}, clock=clock).deliver_pending()
        assert (report.delivered, report.dead, report.deferred) == (["n-1", "n-2"], [], [])


_DEADLY_RUN = """
import os, signal, sys
from datetime import datetime, timedelta, timezone
from supportflow.clock import ManualClock
from supportflow.notify import Dispatcher
from supportflow.storage.sqlite import SqliteStore

path, minutes = sys.argv[1], int(sys.argv[2])

class Deadly:
    def deliver(self, notification, recipients):
        if notification.idempotency_key == "n-poison":
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        print("sent", notification.idempotency_key, flush=True)

clock = ManualClock(datetime(2026, 1, 5, 9, tzinfo=timezone.utc) + timedelta(minutes=minutes))
dispatcher = Dispatcher(SqliteStore(path), {"customer": Deadly()}, clock=clock)
report = dispatcher.deliver_pending()
print("dead", *report.dead, flush=True)
"""


def test_a_notification_that_kills_its_worker_process_is_parked(tmp_path: Any) -> None:
    # Real processes, really killed: each dies inside the notifier, with its claim committed
    # and nothing recorded. The fourth parks the notification and delivers the one behind it.
    path = str(tmp_path / "desk.db")
    store = SqliteStore(path)
    _enqueue(store, _note("n-1"), _note("n-poison"), _note("n-z"))
    store.close()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sys.path))}
    runs = [
        subprocess.run(
            [sys.executable, "-c", _DEADLY_RUN, path, str(minutes)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for minutes in (0, 5, 10, 15)  # each after the one before's lease ran out
    ]
    assert [run.returncode for run in runs] == [-signal.SIGKILL] * 3 + [0], runs[-1].stderr
    assert [run.stdout.split() for run in runs] == [
        ["sent", "n-1"],
        [],
        [],
        ["sent", "n-z", "dead", "n-poison"],
    ]
    store = SqliteStore(path)
    entry = _entry(store, "n-poison")
    store.close()
    assert entry.status is OutboxStatus.DEAD
    assert entry.last_error is not None
    assert entry.last_error.startswith("delivery never finished 3 times")
