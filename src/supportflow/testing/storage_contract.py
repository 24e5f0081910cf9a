"""``StorageContract``: the promises of the storage port, as a pytest test class.

Every adapter must pass it. Subclass it in a test module and provide a ``store`` fixture that
yields a fresh, empty :class:`~supportflow.storage.Storage`::

    import pytest
    from supportflow.testing.storage_contract import StorageContract
    from mypackage import RedisStore

    class TestRedisStore(StorageContract):
        @pytest.fixture
        def store(self):
            store = RedisStore("redis://localhost/15")
            yield store
            store.close()

The tests use only the public port. A store that can be opened again from another process
sets ``supports_multiple_processes = True`` and provides a ``store_opener`` fixture: a picklable
zero-argument callable (e.g. ``functools.partial(SqliteStore, path)``) that opens the same
storage; the kit then also proves that processes never claim the same timer.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from supportflow.errors import ConcurrencyConflict, TicketNotFound, ValidationError
from supportflow.events import Event
from supportflow.model import (
    Channel,
    Customer,
    Link,
    Message,
    Notification,
    Priority,
    Recipient,
    RecipientRole,
    Role,
    SlaClock,
    SlaClockState,
    SlaState,
    Ticket,
    Timer,
    Verification,
    VerificationMethod,
)
from supportflow.storage._port import OutboxStatus, Record, Storage, TicketQuery, UnitOfWork

__all__ = ["StorageContract"]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
"""A Monday morning; every test's instants are offsets from it."""

SHANGHAI = timezone(timedelta(hours=8), "CST")
NEW_YORK = timezone(timedelta(hours=-5), "EST")
LEASE = timedelta(minutes=5)


def at(minutes: float = 0, *, tz: timezone = timezone.utc) -> datetime:
    """``T0`` plus ``minutes``, expressed in ``tz``."""
    return (T0 + timedelta(minutes=minutes)).astimezone(tz)


def make_ticket(ticket_id: str = "t-1", number: int = 1, **changes: Any) -> Ticket:
    """A small valid ticket; ``changes`` override any field."""
    ticket = Ticket(
        id=ticket_id,
        number=number,
        subject=f"Printer on floor {number} is jammed",
        description="It makes a grinding noise.",
        customer=Customer(id="c-1", name="Ana Silva"),
        channel=Channel.EMAIL,
        status="open",
        created_at=at(number),
        updated_at=at(number),
    )
    return attrs.evolve(ticket, **changes)


def _tags(*names: str) -> Any:
    # Any: mypy's attrs plugin cannot type Ticket.tags (converter=frozenset) at call sites.
    return frozenset(names)


def full_ticket(ticket_id: str = "t-full", number: int = 7) -> Ticket:
    """A ticket with every optional part filled in, offsets and microseconds included."""
    created = datetime(2026, 3, 6, 16, 30, 5, 123456, tzinfo=SHANGHAI)
    clock = SlaClock(
        name="resolution",
        target=timedelta(hours=8, microseconds=7),
        state=SlaClockState.BREACHED,
        elapsed=timedelta(hours=9, seconds=1, microseconds=999999),
        since=created + timedelta(hours=10),
        due_at=created + timedelta(hours=8),
        met_at=None,
        breached_at=(created + timedelta(hours=8)).astimezone(NEW_YORK),
        warnings_fired=(50, 75, 90),
        pending_warnings=((95, created + timedelta(hours=7, minutes=36)),),
        cycle=2,
    )
    first = SlaClock(
        name="first_response",
        target=timedelta(minutes=30),
        state=SlaClockState.MET,
        elapsed=timedelta(minutes=12, microseconds=1),
        met_at=created + timedelta(minutes=12),
    )
    return Ticket(
        id=ticket_id,
        number=number,
        subject="打印机卡纸了 🖨️🔥",
        description="客户说：“每次打印第二页都会卡纸。” — naïve café ✓",
        customer=Customer(
            id="c-王芳",
            name="王芳",
            contacts={"email": "wang.fang@example.cn", "phone": "+86 10 1234 5678"},
            tier="vip",
            verified=True,
            language="zh",
        ),
        channel=Channel.CHAT,
        status="pending_customer",
        created_at=created,
        updated_at=created + timedelta(hours=10, microseconds=1),
        priority=Priority.URGENT,
        category="hardware/打印机",
        kind="incident",
        assignee="agent_李",
        group="L2 🛠",
        tags=_tags("vip", "打印机", "🔥", "floor-3"),
        fields={
            "型号": "HP LaserJet 4000",
            "serial": 123456789012345678,
            "ratio": 0.25,
            "flags": [True, False, None],
            "nested": {"ключ": ["значение", {"深": "层"}]},
        },
        messages=(
            Message("m-1", "c-王芳", Role.CUSTOMER, "你好，打印机坏了 😭", created, True),
            Message(
                "m-2",
                "agent_李",
                Role.AGENT,
                "Internal: check the fuser ✔",
                created + timedelta(minutes=12),
                False,
            ),
        ),
        links=(Link("parent", "t-0"), Link("follows", "t-6")),
        verification=Verification(
            "agent_李", VerificationMethod.CALL_BACK, created + timedelta(minutes=3)
        ),
        sla=SlaState(
            policy="vip-urgent", reason="tier=vip, priority=urgent", clocks=(first, clock)
        ),
        sequence=12,
        impact="high",
        urgency="high",
        priority_explicit=True,
        resolution=None,
        state={"escalation": {"level": 2, "since": "2026-03-06T18:00:00+08:00"}, "reminded": 1},
        version=3,
    )


def event(ticket_id: str, sequence: int, minutes: float, **data: Any) -> Event:
    return Event(ticket_id, sequence, "Noted", at(minutes), "agent_1", data)


def _written_or_refused(write: Callable[[], object], field: str, value: object) -> bool:
    """Whether ``write`` stored what it was given; a store that refuses it must say so with a
    ``ValidationError`` naming ``field`` and ``value``."""
    refused: ValidationError | None = None
    try:
        write()
    except ValidationError as error:
        refused = error
    if refused is None:
        return True
    assert (refused.field, refused.value) == (field, value), refused
    return False


def notification(key: str, minutes: float = 0, **changes: Any) -> Notification:
    made = Notification(
        idempotency_key=key,
        kind="reply",
        recipients=(
            Recipient(RecipientRole.CUSTOMER, "ana@example.com", "Ana"),
            Recipient(RecipientRole.WEBHOOK, "https://hooks.example.com/x"),
        ),
        subject=f"Re: ticket {key}",
        body="Thanks, we're on it. 谢谢 🙏",
        created_at=at(minutes),
        ticket_id="t-1",
        data={"template": "reply", "n": 1},
    )
    return attrs.evolve(made, **changes)


def record(kind: str, record_id: str, minutes: float = 0, **changes: Any) -> Record:
    made = Record(
        kind=kind,
        id=record_id,
        data={"score": 4, "comment": "很好 👍"},
        created_at=at(minutes),
        updated_at=at(minutes),
        ticket_id="t-1",
        status="open",
    )
    return attrs.evolve(made, **changes)


def _claim_in_process(opener: Callable[[], Storage], owner: str, due: datetime) -> list[str]:
    """Claim timers in batches until none are left; runs in a child process."""
    store = opener()
    claimed: list[str] = []
    try:
        while True:
            with store.transaction() as uow:
                batch = uow.claim_due_timers(due, 7, owner, timedelta(hours=1))
            if not batch:
                return claimed
            claimed.extend(f"{timer.ticket_id}/{timer.key}" for timer in batch)
    finally:
        store.close()


class StorageContract:
    """Tests every promise of :class:`~supportflow.storage.UnitOfWork` and ``Storage``.

    Subclass it and override the ``store`` fixture. Set ``supports_multiple_processes`` (and
    provide ``store_opener``) to also run the multi-process claim test.
    """

    supports_multiple_processes: bool = False
    """Set to ``True`` when ``store_opener`` can open the same storage in another process."""

    @pytest.fixture
    def store(self) -> Storage:
        pytest.fail(
            "subclass StorageContract and override the `store` fixture: yield a fresh store"
        )

    @pytest.fixture
    def store_opener(self) -> Callable[[], Storage]:
        pytest.fail(
            "supports_multiple_processes is True: override the `store_opener` fixture to return"
            " a picklable callable that opens the same storage"
        )

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _insert(store: Storage, *tickets: Ticket) -> None:
        with store.transaction() as uow:
            for ticket in tickets:
                uow.insert_ticket(ticket)

    @staticmethod
    def _timer(ticket_id: str, key: str, minutes: float, kind: str = "sla") -> Timer:
        return Timer(ticket_id, key, at(minutes), kind)

    # -- the port itself -------------------------------------------------------------------
    def test_store_and_units_of_work_follow_the_protocols(self, store: Storage) -> None:
        assert isinstance(store, Storage)
        with store.transaction() as uow:
            assert isinstance(uow, UnitOfWork)

    # -- tickets ---------------------------------------------------------------------------
    def test_inserted_ticket_reads_back_equal(self, store: Storage) -> None:
        ticket = full_ticket()
        self._insert(store, ticket)
        with store.transaction() as uow:
            loaded = uow.get_ticket(ticket.id)
        assert loaded == ticket
        assert loaded.version == 3
        assert loaded.created_at.utcoffset() is not None
        assert loaded.sla == ticket.sla

    def test_missing_ticket_raises_ticket_not_found(self, store: Storage) -> None:
        with store.transaction() as uow, pytest.raises(TicketNotFound) as caught:
            uow.get_ticket("t-nope")
        assert caught.value.ticket_id == "t-nope"

    def test_inserting_a_taken_id_raises_conflict(self, store: Storage) -> None:
        self._insert(store, make_ticket("t-1", 1))
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.insert_ticket(make_ticket("t-1", 2, subject="other"))
        with store.transaction() as uow:
            assert uow.get_ticket("t-1").subject == make_ticket("t-1", 1).subject

    def test_inserting_a_taken_number_raises_conflict(self, store: Storage) -> None:
        # Two tickets must never show the same number to customers and agents.
        self._insert(store, make_ticket("t-1", 1))
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.insert_ticket(make_ticket("t-2", 1, subject="other"))
        with store.transaction() as uow:
            with pytest.raises(TicketNotFound):
                uow.get_ticket("t-2")
            assert [t.id for t in uow.find_tickets(TicketQuery())] == ["t-1"]

    def test_update_checks_the_expected_version(self, store: Storage) -> None:
        ticket = make_ticket()
        self._insert(store, ticket)
        second = attrs.evolve(ticket, status="pending", version=2)
        with store.transaction() as uow:
            uow.update_ticket(second, expected_version=1)
        with store.transaction() as uow:
            assert uow.get_ticket(ticket.id) == second
        stale = attrs.evolve(ticket, status="solved", version=2)
        with pytest.raises(ConcurrencyConflict) as caught, store.transaction() as uow:
            uow.update_ticket(stale, expected_version=1)
        assert caught.value.expected_version == 1
        assert caught.value.actual_version == 2
        with store.transaction() as uow:
            assert uow.get_ticket(ticket.id).status == "pending"

    def test_a_rolled_back_update_is_not_read_afterwards(self, store: Storage) -> None:
        # Adapters may keep decoded tickets; what a failed unit of work wrote must not stay.
        ticket = make_ticket()
        self._insert(store, ticket)

        def failing_command() -> None:
            with store.transaction() as uow:
                uow.update_ticket(attrs.evolve(ticket, subject="never kept", version=2), 1)
                assert uow.get_ticket(ticket.id).subject == "never kept"  # seen inside
                raise RuntimeError("the command failed after writing")

        with pytest.raises(RuntimeError):
            failing_command()
        with store.transaction() as uow:
            kept = uow.get_ticket(ticket.id)
        assert (kept.subject, kept.version) == (ticket.subject, 1)

    def test_a_ticket_changed_through_another_store_is_read_fresh(
        self, store: Storage, request: pytest.FixtureRequest
    ) -> None:
        if not self.supports_multiple_processes:
            pytest.skip("supports_multiple_processes is False: this store lives in one process")
        other = request.getfixturevalue("store_opener")()
        try:
            ticket = make_ticket(tags={"normal"})
            self._insert(store, ticket)
            with store.transaction() as uow:
                assert uow.get_ticket(ticket.id) == ticket  # any cache now holds it
            changed = attrs.evolve(ticket, subject="changed elsewhere", tags={"vip"}, version=2)
            with other.transaction() as uow:
                uow.update_ticket(changed, expected_version=1)
            with store.transaction() as uow:
                assert uow.get_ticket(ticket.id) == changed
                assert [t.id for t in uow.find_tickets(TicketQuery(tag="vip"))] == [ticket.id]
        finally:
            other.close()

    def test_updating_a_missing_ticket_raises_ticket_not_found(self, store: Storage) -> None:
        with pytest.raises(TicketNotFound), store.transaction() as uow:
            uow.update_ticket(make_ticket("t-ghost", version=2), expected_version=1)

    def test_update_needs_a_greater_version(self, store: Storage) -> None:
        ticket = make_ticket()
        self._insert(store, ticket)
        with pytest.raises(ValidationError), store.transaction() as uow:
            uow.update_ticket(attrs.evolve(ticket, status="pending"), expected_version=1)

    def test_ticket_numbers_increase_and_are_never_reused(self, store: Storage) -> None:
        numbers: list[int] = []
        for _ in range(3):
            with store.transaction() as uow:
                numbers.extend(uow.next_ticket_number() for _ in range(3))
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == len(numbers)
        assert numbers[0] >= 1

    def test_ticket_numbers_are_unique_across_threads(self, store: Storage) -> None:
        found: list[int] = []
        lock = threading.Lock()

        def take() -> None:
            for _ in range(25):
                with store.transaction() as uow:
                    number = uow.next_ticket_number()
                with lock:
                    found.append(number)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(found) == 100
        assert len(set(found)) == 100

    def test_find_tickets_filters_and_orders_by_number(self, store: Storage) -> None:
        tickets = [
            make_ticket("t-3", 3, status="open", assignee="li", group="L1", tags={"vip"}),
            make_ticket("t-1", 1, status="pending", assignee="li", group="L2"),
            make_ticket(
                "t-2",
                2,
                status="open",
                group="L1",
                channel=Channel.PHONE,
                priority=Priority.HIGH,
                tags={"vip", "打印机"},
                customer=Customer("c-2"),
            ),
            make_ticket("t-4", 4, status="closed", assignee="mo", created_at=at(60, tz=SHANGHAI)),
        ]
        self._insert(store, *tickets)

        def ids(**filters: Any) -> list[str]:
            with store.transaction() as uow:
                return [t.id for t in uow.find_tickets(TicketQuery(**filters))]

        assert ids() == ["t-1", "t-2", "t-3", "t-4"]
        assert ids(status=["open"]) == ["t-2", "t-3"]
        assert ids(status=["open", "closed"]) == ["t-2", "t-3", "t-4"]
        assert ids(status=[]) == []
        assert ids(assignee="li") == ["t-1", "t-3"]
        assert ids(group="L1") == ["t-2", "t-3"]
        assert ids(customer_id="c-2") == ["t-2"]
        assert ids(channel="phone") == ["t-2"]
        assert ids(priority="high") == ["t-2"]
        assert ids(tag="vip") == ["t-2", "t-3"]
        assert ids(tag="打印机") == ["t-2"]
        assert ids(tag="none") == []
        assert ids(status=["open"], assignee="li", tag="vip") == ["t-3"]
        # created_at: t-n at T0+n minutes, t-4 at T0+60 min (written in +08:00)
        assert ids(created_from=at(2)) == ["t-2", "t-3", "t-4"]
        assert ids(created_to=at(3)) == ["t-1", "t-2"]
        assert ids(created_from=at(2, tz=NEW_YORK), created_to=at(60, tz=SHANGHAI)) == [
            "t-2",
            "t-3",
        ]
        assert ids(limit=2) == ["t-1", "t-2"]
        assert ids(limit=0) == []

    def test_find_tickets_sees_updated_fields_and_tags(self, store: Storage) -> None:
        ticket = make_ticket(tags={"old"})
        self._insert(store, ticket)
        with store.transaction() as uow:
            uow.update_ticket(
                attrs.evolve(ticket, tags=_tags("new"), assignee="li", status="solved", version=2),
                1,
            )
        with store.transaction() as uow:
            assert [t.id for t in uow.find_tickets(TicketQuery(tag="new"))] == ["t-1"]
            assert uow.find_tickets(TicketQuery(tag="old")) == []
            assert [t.version for t in uow.find_tickets(TicketQuery(assignee="li"))] == [2]
            assert uow.find_tickets(TicketQuery(status=["open"])) == []

    # -- units of work ---------------------------------------------------------------------
    def test_a_raising_unit_of_work_keeps_nothing(self, store: Storage) -> None:
        base = make_ticket("t-base", 1)
        self._insert(store, base)
        with store.transaction() as uow:
            uow.replace_timers("t-base", [self._timer("t-base", "keep", 1)])
            uow.put_record(record("survey", "r-base"))
            uow.enqueue([notification("n-base")])
            uow.append_events([event("t-base", 1, 0)])

        class Boom(Exception):
            pass

        def fail_halfway() -> None:
            with store.transaction() as uow:
                uow.insert_ticket(make_ticket("t-new", 2))
                uow.update_ticket(attrs.evolve(base, status="closed", version=2), 1)
                uow.append_events([event("t-new", 1, 0), event("t-base", 2, 1)])
                uow.replace_timers("t-new", [self._timer("t-new", "x", 1)])
                uow.replace_timers("t-base", [])
                uow.enqueue([notification("n-new")])
                uow.mark_delivered("n-base", at(1))
                uow.put_record(record("survey", "r-new"))
                uow.put_record(
                    attrs.evolve(record("survey", "r-base"), status="done", version=2), 1
                )
                uow.record_occurrence("printer", "t-new", at(1))
                raise Boom

        with pytest.raises(Boom):
            fail_halfway()

        with store.transaction() as uow:
            with pytest.raises(TicketNotFound):
                uow.get_ticket("t-new")
            assert uow.get_ticket("t-base") == base
            assert uow.history("t-new") == []
            assert [e.sequence for e in uow.history("t-base")] == [1]
            assert [e.ticket_id for e in uow.iter_events()] == ["t-base"]
            assert uow.timers("t-new") == []
            assert [t.key for t in uow.timers("t-base")] == ["keep"]
            assert uow.outbox_entry("n-new") is None
            entry = uow.outbox_entry("n-base")
            assert entry is not None
            assert entry.status is OutboxStatus.PENDING
            assert uow.get_record("survey", "r-new") is None
            kept = uow.get_record("survey", "r-base")
            assert kept is not None
            assert (kept.version, kept.status) == (1, "open")
            assert uow.occurrences("printer", at(0)) == []
            assert uow.find_tickets(TicketQuery()) == [base]

    def test_a_raising_unit_of_work_keeps_no_release_or_delivery_report(
        self, store: Storage
    ) -> None:
        # What a worker records about due work is rolled back with the rest: a released
        # timer comes back, a failed attempt is not counted, a requeued dead letter stays dead.
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "due", 0)])
            uow.enqueue([notification("n-pending", 0), notification("n-dead", 0)])
        with store.transaction() as uow:
            uow.mark_failed("n-dead", "550 no such user", None)
            (due,) = uow.claim_due_timers(at(1), 5, "w1", LEASE)

        def fail_halfway() -> None:
            with store.transaction() as uow:
                uow.release_timer(due, "w1")
                uow.mark_failed("n-pending", "timeout", at(30))
                uow.requeue("n-dead", at(2))
                raise RuntimeError("the worker failed after recording")

        with pytest.raises(RuntimeError):
            fail_halfway()
        with store.transaction() as uow:
            assert uow.timers("t-1") == [due]
            pending = uow.outbox_entry("n-pending")
            dead = uow.outbox_entry("n-dead")
            assert pending is not None
            assert (pending.status, pending.attempts, pending.last_error) == (
                OutboxStatus.PENDING,
                0,
                None,
            )
            assert dead is not None
            assert (dead.status, dead.attempts) == (OutboxStatus.DEAD, 1)
            assert uow.next_timer_due() == at(0)

    def test_writes_are_invisible_to_others_until_commit(self, store: Storage) -> None:
        inserted = threading.Event()
        reader_done = threading.Event()
        committing = threading.Event()
        seen: list[tuple[bool, bool]] = []  # (found, writer had started committing)

        def writer() -> None:
            with store.transaction() as uow:
                uow.insert_ticket(make_ticket())
                inserted.set()
                reader_done.wait(0.3)  # a store that serialises units of work blocks the reader
                committing.set()

        def reader() -> None:
            inserted.wait(5)
            with store.transaction() as uow:
                try:
                    uow.get_ticket("t-1")
                    seen.append((True, committing.is_set()))
                except TicketNotFound:
                    seen.append((False, committing.is_set()))
            reader_done.set()

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(seen) == 1
        found, committed = seen[0]
        assert committed or not found, "a reader saw an uncommitted ticket"

    def test_committed_writes_are_visible_to_the_next_unit_of_work(self, store: Storage) -> None:
        self._insert(store, make_ticket())
        results: list[str] = []

        def read() -> None:
            with store.transaction() as uow:
                results.append(uow.get_ticket("t-1").id)

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(30)
        assert results == ["t-1"]

    def test_concurrent_read_modify_write_loses_no_update(self, store: Storage) -> None:
        self._insert(store, make_ticket(fields={"count": 0}))
        errors: list[BaseException] = []

        def bump() -> None:
            try:
                for _ in range(200):
                    while True:
                        try:
                            with store.transaction() as uow:
                                current = uow.get_ticket("t-1")
                                following = attrs.evolve(
                                    current,
                                    version=current.version + 1,
                                    fields={"count": current.fields["count"] + 1},
                                )
                                uow.update_ticket(following, current.version)
                            break
                        except ConcurrencyConflict:
                            continue
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=bump) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert errors == []
        with store.transaction() as uow:
            final = uow.get_ticket("t-1")
        assert final.version == 401
        assert final.fields["count"] == 400

    # -- events ----------------------------------------------------------------------------
    def test_history_is_in_sequence_order(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.append_events([event("t-1", 1, 5), event("t-2", 1, 0), event("t-1", 2, 1)])
        with store.transaction() as uow:
            uow.append_events([event("t-1", 3, 2, note="第三 🎉")])
        with store.transaction() as uow:
            history = uow.history("t-1")
            assert [e.sequence for e in history] == [1, 2, 3]
            assert history[2] == event("t-1", 3, 2, note="第三 🎉")
            assert uow.history("t-unknown") == []

    def test_a_repeated_sequence_is_a_conflict(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.append_events([event("t-1", 1, 0), event("t-1", 2, 1)])
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.append_events([event("t-1", 2, 2)])
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.append_events([event("t-2", 1, 0), event("t-2", 1, 1)])
        with store.transaction() as uow:
            assert [e.at for e in uow.history("t-1")] == [at(0), at(1)]
            assert uow.history("t-2") == []

    def test_an_append_that_loses_a_race_keeps_none_of_its_events(self, store: Storage) -> None:
        # Two units of work append to one ticket at once. The second finds its first sequence
        # taken only while it writes; it gets ConcurrencyConflict, and a caller that goes on
        # and commits anyway must not have written the rest of its batch.
        first_written = threading.Event()
        outcome: list[str] = []

        def first() -> None:
            with store.transaction() as uow:
                uow.append_events([event("t-1", 1, 0, by="first")])
                first_written.set()
                time.sleep(0.5)  # the second writes meanwhile (or waits, on a serialising store)

        def second() -> None:
            first_written.wait(5)
            try:
                with store.transaction() as uow:
                    try:
                        uow.append_events([event("t-1", 1, 1, by="second"),
                                           event("t-1", 2, 2, by="second")])  # fmt: skip
                        outcome.append("appended")
                    except ConcurrencyConflict:
                        outcome.append("conflict")  # caught: the unit of work commits
            except ConcurrencyConflict:
                outcome.append("conflict on commit")

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert outcome in (["conflict"], ["conflict on commit"])
        with store.transaction() as uow:
            assert [(e.sequence, e.data) for e in uow.history("t-1")] == [(1, {"by": "first"})]

    # U+0000 (NUL) arrives in pasted or badly encoded mail; a lone surrogate is what decoding
    # undecodable bytes with errors="surrogateescape" leaves (the email package does). A store
    # keeps such text, or refuses the write with a ValidationError naming where it is (no
    # PostgreSQL text holds NUL; no database encodes a lone surrogate), and the unit of work
    # goes on: what it writes next is kept. A lookup by such an id finds nothing.
    @pytest.mark.parametrize("odd", ["\x00", "\udcff"], ids=["nul", "surrogate"])
    def test_odd_text_in_tickets_and_events_reads_back_or_is_refused_by_name(
        self, store: Storage, odd: str
    ) -> None:
        subject, note = f"jammed{odd}again", f"line one{odd}line two"
        bad = make_ticket("t-1", 1, subject=subject)
        bad_event = event("t-2", 1, 0, note=note)
        literal = "a path like C:\\u0000\\printers"  # a backslash, then "u0000": plain text
        with store.transaction() as uow:
            kept_ticket = _written_or_refused(
                lambda: uow.insert_ticket(bad), "ticket.subject", subject
            )
            kept_event = _written_or_refused(
                lambda: uow.append_events([bad_event]), "event.data.note", note
            )
            uow.insert_ticket(make_ticket("t-3", 3, subject=literal))
            uow.append_events([event("t-3", 1, 0, note=literal)])
        with store.transaction() as uow:
            if kept_ticket:
                assert uow.get_ticket("t-1") == bad
            else:
                with pytest.raises(TicketNotFound):
                    uow.get_ticket("t-1")
            assert uow.history("t-2") == ([bad_event] if kept_event else [])
            assert uow.get_ticket("t-3").subject == literal
            assert [e.data["note"] for e in uow.history("t-3")] == [literal]

    @pytest.mark.parametrize("odd", ["\x00", "\udcff"], ids=["nul", "surrogate"])
    def test_odd_text_in_records_timers_and_notifications_is_kept_or_refused(
        self, store: Storage, odd: str
    ) -> None:
        note = record("survey", "r-1", data={"comment": f"fine{odd}thanks"})
        message = notification("n-1", body=f"Dear{odd}Ana")
        timer = Timer("t-1", f"sla:first{odd}", at(30), "sla")
        with store.transaction() as uow:
            kept_record = _written_or_refused(
                lambda: uow.put_record(note), "record.data.comment", f"fine{odd}thanks"
            )
            kept_message = _written_or_refused(
                lambda: uow.enqueue([message]), "notification.body", f"Dear{odd}Ana"
            )
            kept_kind = _written_or_refused(
                lambda: uow.put_record(record(f"survey{odd}", "r-3")), "record.kind",
                f"survey{odd}",
            )  # fmt: skip
            kept_timer = _written_or_refused(
                lambda: uow.replace_timers("t-1", [timer]), "timer.key", f"sla:first{odd}"
            )
            kept_stream = _written_or_refused(
                lambda: uow.append_events([event(f"t{odd}", 1, 0)]), "event.ticket_id", f"t{odd}"
            )
            uow.put_record(record("survey", "r-2"))
        with store.transaction() as uow:
            assert uow.get_record("survey", "r-1") == (note if kept_record else None)
            pending = uow.list_outbox(OutboxStatus.PENDING)
            assert [entry.notification for entry in pending] == ([message] if kept_message else [])
            assert (uow.get_record(f"survey{odd}", "r-3") is not None) == kept_kind
            assert uow.timers("t-1") == ([timer] if kept_timer else [])
            assert len(uow.history(f"t{odd}")) == kept_stream
            assert (uow.outbox_entry(f"n{odd}"), uow.occurrences(f"k{odd}", at(0))) == (None, [])
            with pytest.raises(TicketNotFound):
                uow.get_ticket(f"t{odd}")  # an id read from a URL: not found, on every store
            assert uow.get_record("survey", "r-2") == record("survey", "r-2")

    @pytest.mark.parametrize("odd", ["\x00", "\udcff"], ids=["nul", "surrogate"])
    def test_filters_and_reports_with_odd_text_find_nothing(self, store: Storage, odd: str) -> None:
        # Filters and keys no stored row can hold (a search box, a URL) match nothing, and a
        # report about such a key changes nothing, instead of failing in the driver.
        self._insert(store, make_ticket("t-1", 1, tags=frozenset({"vip"})))
        with store.transaction() as uow:
            uow.put_record(record("survey", "r-1"))
            uow.enqueue([notification("n-1")])
        with store.transaction() as uow:
            for query in (
                TicketQuery(assignee=f"agent{odd}"),
                TicketQuery(tag=f"vip{odd}"),
                TicketQuery(customer_id=f"c{odd}"),
                TicketQuery(status=[f"open{odd}"]),
            ):
                assert uow.find_tickets(query) == []
            assert [t.id for t in uow.find_tickets(TicketQuery(status=["open", f"x{odd}"]))] == [
                "t-1"
            ]
            assert uow.find_records(f"survey{odd}") == []
            assert uow.find_records("survey", ticket_id=f"t{odd}") == []
            uow.release_timer(Timer(f"t{odd}", "sla:x", at(1), "sla"), "worker")
            uow.mark_delivered(f"n{odd}", at(1))
            uow.mark_failed(f"n{odd}", "refused", None)
            uow.requeue(f"n{odd}", at(1))
            _written_or_refused(
                lambda: uow.claim_due_timers(at(60), 5, f"worker{odd}", LEASE), "owner",
                f"worker{odd}",
            )  # fmt: skip
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.attempts == 0
            assert uow.get_record("survey", "r-1") == record("survey", "r-1")
            _written_or_refused(
                lambda: uow.claim_notifications(at(60), 5, f"worker{odd}", LEASE), "owner",
                f"worker{odd}",
            )  # fmt: skip

    @pytest.mark.parametrize("odd", ["\x00", "\udcff"], ids=["nul", "surrogate"])
    def test_a_batch_with_odd_text_is_kept_or_refused_whole(self, store: Storage, odd: str) -> None:
        # A batch whose second item a store cannot keep is refused before any of it is
        # written: the caller that catches the ValidationError and commits keeps none of it.
        events = [event("t-1", 1, 0), event("t-1", 2, 1, note=f"line{odd}")]
        messages = [notification("n-1"), notification("n-2", body=f"Dear{odd}Ana")]
        with store.transaction() as uow:
            kept_events = _written_or_refused(
                lambda: uow.append_events(events), "event.data.note", f"line{odd}"
            )
            kept_messages = _written_or_refused(
                lambda: uow.enqueue(messages), "notification.body", f"Dear{odd}Ana"
            )
        with store.transaction() as uow:
            assert uow.history("t-1") == (events if kept_events else [])
            pending = [entry.key for entry in uow.list_outbox(OutboxStatus.PENDING)]
            assert pending == (["n-1", "n-2"] if kept_messages else [])

    @pytest.mark.parametrize("odd", ["\x00", "\udcff"], ids=["nul", "surrogate"])
    def test_a_delivery_report_with_odd_text_is_recorded(self, store: Storage, odd: str) -> None:
        # A server's reply ends up in the error text: the report must be recorded (else the
        # row is sent again), the text kept or written with a backslash escape.
        with store.transaction() as uow:
            uow.enqueue([notification("n-1")])
        with store.transaction() as uow:
            uow.mark_failed("n-1", f"550 rejected{odd}", None)
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.attempts) == (OutboxStatus.DEAD, 1)
            written = {"\x00": "\\x00", "\udcff": "\\udcff"}[odd]  # the backslash escape
            assert entry.last_error in (f"550 rejected{odd}", f"550 rejected{written}")

    def test_a_gap_in_sequences_is_refused(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.append_events([event("t-1", 1, 0)])
        with pytest.raises((ConcurrencyConflict, ValidationError)), store.transaction() as uow:
            uow.append_events([event("t-1", 3, 1)])

    def test_a_long_history_grows_and_rolls_back_whole(self, store: Storage) -> None:
        # Hundreds of events on one ticket (a long chat): appending stays correct, and a unit
        # of work that fails after appending to it leaves the history as it was.
        for first in range(1, 301, 50):
            with store.transaction() as uow:
                uow.append_events([event("t-1", n, n, n=n) for n in range(first, first + 50)])

        def failing_command() -> None:
            with store.transaction() as uow:
                uow.append_events([event("t-1", 301, 301), event("t-1", 302, 302)])
                assert len(uow.history("t-1")) == 302  # seen inside the unit
                raise RuntimeError("the command failed after appending")

        with pytest.raises(RuntimeError):
            failing_command()
        with store.transaction() as uow:
            uow.append_events([event("t-1", 301, 303, n=301)])
        with store.transaction() as uow:
            history = uow.history("t-1")
        assert [e.sequence for e in history] == list(range(1, 302))
        assert history[-1] == event("t-1", 301, 303, n=301)
        assert history[150] == event("t-1", 151, 151, n=151)

    def test_iter_events_orders_by_time_then_insertion(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.append_events(
                [
                    event("t-a", 1, 10),
                    event("t-b", 1, 5),
                    Event("t-a", 2, "Noted", at(5, tz=SHANGHAI), "x", {}),  # tie with t-b/1
                    event("t-c", 1, 0),
                ]
            )
        with store.transaction() as uow:
            uow.append_events([Event("t-b", 2, "Noted", at(5, tz=NEW_YORK), "x", {})])
        with store.transaction() as uow:
            order = [(e.ticket_id, e.sequence) for e in uow.iter_events()]
            assert order == [("t-c", 1), ("t-b", 1), ("t-a", 2), ("t-b", 2), ("t-a", 1)]
            ranged = [(e.ticket_id, e.sequence) for e in uow.iter_events(at(5), at(10))]
            assert ranged == [("t-b", 1), ("t-a", 2), ("t-b", 2)]
            assert [e.ticket_id for e in uow.iter_events(start=at(6))] == ["t-a"]
            assert [e.ticket_id for e in uow.iter_events(end=at(5, tz=SHANGHAI))] == ["t-c"]
            assert list(uow.iter_events(at(11), at(20))) == []

    def test_iter_events_streams_many_events_in_order(self, store: Storage) -> None:
        count = 2345
        with store.transaction() as uow:
            # 3 events per minute (ties), spread across 5 tickets.
            sequences = {f"t-{n}": 0 for n in range(5)}
            batch = []
            for index in range(count):
                ticket_id = f"t-{index % 5}"
                sequences[ticket_id] += 1
                batch.append(event(ticket_id, sequences[ticket_id], index // 3, i=index))
            uow.append_events(batch)
        with store.transaction() as uow:
            streamed = [e.data["i"] for e in uow.iter_events()]
            middle = [e.data["i"] for e in uow.iter_events(at(100), at(700))]
        assert streamed == list(range(count))
        assert middle == list(range(300, 2100))

    # -- timers ----------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("given", "field"),
        [
            ([("t-1", "a"), ("t-2", "b")], "timer.ticket_id"),
            ([("t-1", "a"), ("t-1", "a")], "timer.key"),
        ],
        ids=["another ticket's timer", "a key twice"],
    )
    def test_bad_timers_are_refused_whole_even_when_the_deadlines_match(
        self, store: Storage, given: list[tuple[str, str]], field: str
    ) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "a", 5), self._timer("t-1", "b", 5)])
            before = uow.timers("t-1")
        timers = [self._timer(ticket_id, key, 5) for ticket_id, key in given]
        with pytest.raises(ValidationError) as refused, store.transaction() as uow:
            uow.replace_timers("t-1", timers)
        assert refused.value.field == field
        with store.transaction() as uow:
            assert uow.timers("t-1") == before

    def test_a_new_kind_on_the_same_deadline_is_stored_and_keeps_the_lease(
        self, store: Storage
    ) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "a", 5, "sla_warning")])
        with store.transaction() as uow:
            claimed = uow.claim_due_timers(at(5), 10, "w-1", timedelta(hours=1))
        assert [timer.key for timer in claimed] == ["a"]
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "a", 5, "sla_breach")])
        with store.transaction() as uow:
            assert [timer.kind for timer in uow.timers("t-1")] == ["sla_breach"]
            # Still leased to w-1: nobody else claims it.
            assert uow.claim_due_timers(at(6), 10, "w-2", timedelta(hours=1)) == []

    def test_replace_timers_replaces_the_whole_set(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "b", 20), self._timer("t-1", "a", 10)])
            uow.replace_timers("t-2", [self._timer("t-2", "a", 5)])
        with store.transaction() as uow:
            assert [t.key for t in uow.timers("t-1")] == ["a", "b"]  # by due time
            uow.replace_timers("t-1", [self._timer("t-1", "c", 1), self._timer("t-1", "b", 30)])
        with store.transaction() as uow:
            assert uow.timers("t-1") == [self._timer("t-1", "c", 1), self._timer("t-1", "b", 30)]
            uow.replace_timers("t-1", [])
        with store.transaction() as uow:
            assert uow.timers("t-1") == []
            assert uow.timers("t-2") == [self._timer("t-2", "a", 5)]

    def test_a_tickets_timers_due_at_the_same_time_are_listed_by_key(self, store: Storage) -> None:
        # Given in no order of keys, and given again in another: the list does not follow
        # either (nor the order the store happens to keep them in), only (due time, key).
        with store.transaction() as uow:
            uow.replace_timers(
                "t-1",
                [self._timer("t-1", "c", 5), self._timer("t-1", "a", 30),
                 Timer("t-1", "d", at(5, tz=SHANGHAI), "sla"), self._timer("t-1", "b", 5)],
            )  # fmt: skip
        with store.transaction() as uow:
            assert [t.key for t in uow.timers("t-1")] == ["b", "c", "d", "a"]
            uow.replace_timers(
                "t-1",
                [self._timer("t-1", "d", 5), self._timer("t-1", "a", 30),
                 self._timer("t-1", "b", 5), self._timer("t-1", "c", 5)],
            )  # fmt: skip
        with store.transaction() as uow:
            assert [t.key for t in uow.timers("t-1")] == ["b", "c", "d", "a"]

    def test_timer_instants_round_trip(self, store: Storage) -> None:
        due = datetime(2026, 3, 2, 17, 0, 0, 654321, tzinfo=SHANGHAI)
        with store.transaction() as uow:
            uow.replace_timers("t-1", [Timer("t-1", "x", due, "autoclose")])
        with store.transaction() as uow:
            (timer,) = uow.timers("t-1")
        assert timer == Timer("t-1", "x", due, "autoclose")
        assert timer.due_at == due
        assert timer.due_at.utcoffset() is not None

    def test_due_timers_are_claimed_earliest_first(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "late", 30), self._timer("t-1", "a", 3)])
            uow.replace_timers("t-2", [self._timer("t-2", "b", 1), self._timer("t-2", "c", 2)])
            uow.replace_timers("t-3", [Timer("t-3", "d", at(0, tz=SHANGHAI), "sla")])
        with store.transaction() as uow:
            first = uow.claim_due_timers(at(10), 2, "w1", LEASE)
            rest = uow.claim_due_timers(at(10), 10, "w1", LEASE)
        assert [t.key for t in first] == ["d", "b"]
        assert [t.key for t in rest] == ["c", "a"]
        assert first[1] == self._timer("t-2", "b", 1)
        with store.transaction() as uow:
            for timer in first + rest:
                uow.release_timer(timer, "w1")
        with store.transaction() as uow:
            assert [t.key for t in uow.claim_due_timers(at(30), 10, "w1", LEASE)] == ["late"]

    def test_a_timer_due_exactly_now_is_due(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "x", 10)])
        with store.transaction() as uow:
            assert uow.claim_due_timers(at(10) - timedelta(microseconds=1), 5, "w", LEASE) == []
            assert [t.key for t in uow.claim_due_timers(at(10, tz=NEW_YORK), 5, "w", LEASE)] == [
                "x"
            ]

    def test_leased_timers_are_not_claimed_again_until_the_lease_ends(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "x", 0)])
        with store.transaction() as uow:
            assert len(uow.claim_due_timers(at(1), 5, "w1", LEASE)) == 1
            assert uow.claim_due_timers(at(1), 5, "w1", LEASE) == []
        with store.transaction() as uow:
            assert uow.claim_due_timers(at(2), 5, "w2", LEASE) == []
            assert uow.claim_due_timers(at(5.9), 5, "w2", LEASE) == []
        with store.transaction() as uow:  # the lease ran from 1 to 6 minutes
            again = uow.claim_due_timers(at(6), 5, "w2", LEASE)
        assert [t.key for t in again] == ["x"]

    def test_a_timer_whose_lease_ran_out_is_claimed_by_its_due_time(self, store: Storage) -> None:
        # A worker took "a" and died. Once its lease is over, "a" is due as it always was: the
        # earliest, not as late as its lease.
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "a", 1)])
            uow.replace_timers("t-2", [self._timer("t-2", "b", 3)])
            uow.replace_timers("t-3", [self._timer("t-3", "c", 8)])
        with store.transaction() as uow:
            assert [t.key for t in uow.claim_due_timers(at(1), 1, "w1", LEASE)] == ["a"]

        def crash() -> None:  # a claim rolled back is no claim
            with store.transaction() as uow:
                assert len(uow.claim_due_timers(at(10), 5, "w2", LEASE)) == 3
                raise RuntimeError("worker crashed")

        with pytest.raises(RuntimeError):
            crash()
        with store.transaction() as uow:  # the lease ran from 1 to 6 minutes
            assert [t.key for t in uow.claim_due_timers(at(10), 1, "w2", LEASE)] == ["a"]
            assert [t.key for t in uow.claim_due_timers(at(10), 5, "w2", LEASE)] == ["b", "c"]

    def test_a_rolled_back_claim_leaves_the_timer_claimable(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "x", 0)])
        claimed: list[Timer] = []

        def crash() -> None:
            with store.transaction() as uow:
                claimed.extend(uow.claim_due_timers(at(1), 5, "w1", LEASE))
                raise RuntimeError("worker crashed")

        with pytest.raises(RuntimeError):
            crash()
        assert len(claimed) == 1
        with store.transaction() as uow:
            assert len(uow.claim_due_timers(at(1), 5, "w2", LEASE)) == 1

    def test_concurrent_claims_never_share_a_timer(self, store: Storage) -> None:
        with store.transaction() as uow:
            for n in range(60):
                uow.replace_timers(f"t-{n}", [self._timer(f"t-{n}", "k", n % 7)])
        claimed: list[str] = []
        lock = threading.Lock()

        def work(owner: str) -> None:
            while True:
                with store.transaction() as uow:
                    batch = uow.claim_due_timers(at(10), 3, owner, LEASE)
                if not batch:
                    return
                with lock:
                    claimed.extend(t.ticket_id for t in batch)

        threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(claimed) == sorted(f"t-{n}" for n in range(60))

    def test_release_timer_deletes_only_an_unchanged_timer(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "x", 0), self._timer("t-1", "y", 0)])
        with store.transaction() as uow:
            x, y = sorted(uow.claim_due_timers(at(1), 5, "w1", LEASE), key=lambda t: t.key)
            # y is rescheduled while w1 works on it: w1's release must not delete the new one.
            uow.replace_timers("t-1", [x, self._timer("t-1", "y", 30)])
        with store.transaction() as uow:
            uow.release_timer(x, "w1")
            uow.release_timer(y, "w1")
        with store.transaction() as uow:
            assert uow.timers("t-1") == [self._timer("t-1", "y", 30)]
            uow.release_timer(x, "w1")  # already gone: nothing happens

    def test_next_timer_due_is_the_earliest(self, store: Storage) -> None:
        with store.transaction() as uow:
            assert uow.next_timer_due() is None
            uow.replace_timers("t-1", [self._timer("t-1", "a", 20)])
            uow.replace_timers("t-2", [Timer("t-2", "b", at(15, tz=SHANGHAI), "sla")])
        with store.transaction() as uow:
            assert uow.next_timer_due() == at(15)
            uow.replace_timers("t-2", [])
        with store.transaction() as uow:
            assert uow.next_timer_due() == at(20)

    def test_next_timer_due_counts_leased_timers(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "a", 1)])
            uow.replace_timers("t-2", [self._timer("t-2", "b", 3)])
        with store.transaction() as uow:
            uow.claim_due_timers(at(1), 1, "w1", LEASE)  # "a", leased until minute 6
        with store.transaction() as uow:
            assert uow.next_timer_due() == at(1)

    def test_replace_timers_keeps_the_lease_of_unchanged_timers(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.replace_timers(
                "t-1", [self._timer("t-1", "same", 0), self._timer("t-1", "moved", 0)]
            )
        with store.transaction() as uow:
            assert len(uow.claim_due_timers(at(1), 5, "w1", LEASE)) == 2
        with store.transaction() as uow:
            uow.replace_timers(
                "t-1",
                [self._timer("t-1", "same", 0), self._timer("t-1", "moved", 0.5)],
            )
        with store.transaction() as uow:
            assert [t.key for t in uow.claim_due_timers(at(2), 5, "w2", LEASE)] == ["moved"]

    def test_timers_due_at_the_same_time_are_claimed_in_the_order_they_were_set(
        self, store: Storage
    ) -> None:
        # Ties in due time go by when each deadline was set, neither by ticket id nor by key:
        # a new deadline goes behind the timers due then, a new kind or a lease keeps its place.
        t = self._timer
        steps = [
            ("t-3", [t("t-3", "b", 5)]),
            ("t-1", [t("t-1", "c", 5)]),
            ("t-2", [t("t-2", "a", 5)]),
            ("t-1", [t("t-1", "c", 5), t("t-1", "a", 5)]),  # "c" unchanged: keeps its place
            ("t-3", [t("t-3", "b", 5, "autoclose"), t("t-3", "a", 5)]),  # "b": a new kind only
            ("t-5", [t("t-5", "y", 5), t("t-5", "x", 5)]),  # one call: in the order given
            ("t-1", [t("t-1", "c", 9), t("t-1", "a", 5)]),  # "c" moves away...
            ("t-1", [t("t-1", "c", 5), t("t-1", "a", 5)]),  # ...and back: behind the others
            ("t-4", [t("t-4", "z", 1)]),  # set last, due first
        ]
        for ticket_id, timers in steps:
            with store.transaction() as uow:
                uow.replace_timers(ticket_id, timers)
        expected = ["t-4/z", "t-3/b", "t-2/a", "t-1/a", "t-3/a", "t-5/y", "t-5/x", "t-1/c"]
        with store.transaction() as uow:
            first = uow.claim_due_timers(at(10), 3, "w1", LEASE)
            rest = uow.claim_due_timers(at(10), 10, "w1", LEASE)
        assert [f"{x.ticket_id}/{x.key}" for x in first + rest] == expected
        with store.transaction() as uow:  # the leases ran from 10 to 15 minutes
            again = uow.claim_due_timers(at(15), 10, "w2", LEASE)
        assert [f"{x.ticket_id}/{x.key}" for x in again] == expected

    # -- outbox ----------------------------------------------------------------------------
    def test_enqueued_notifications_are_pending_and_due_at_once(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.notification == notification("n-1", 0)
            assert entry.key == "n-1"
            assert (entry.status, entry.attempts, entry.last_error) == (
                OutboxStatus.PENDING,
                0,
                None,
            )
            assert uow.outbox_entry("n-unknown") is None
            claimed = uow.claim_notifications(at(0), 10, "w1", LEASE)
        assert [e.key for e in claimed] == ["n-1"]
        assert claimed[0].notification == notification("n-1", 0)

    def test_a_repeated_idempotency_key_is_ignored(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", subject="first"), notification("n-1", subject="2nd")])
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", subject="third")])
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.notification.subject == "first"
            assert len(uow.list_outbox(OutboxStatus.PENDING)) == 1

    def test_notifications_are_claimed_oldest_first_and_leased(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-b", 2), notification("n-a", 1), notification("n-c", 3)])
        with store.transaction() as uow:
            first = uow.claim_notifications(at(5), 2, "w1", LEASE)
            assert [e.key for e in first] == ["n-a", "n-b"]
            assert [e.key for e in uow.claim_notifications(at(5), 5, "w1", LEASE)] == ["n-c"]
        with store.transaction() as uow:
            assert uow.claim_notifications(at(9), 5, "w2", LEASE) == []
        with store.transaction() as uow:  # leases ran from 5 to 10 minutes
            again = uow.claim_notifications(at(10), 5, "w2", LEASE)
        assert [e.key for e in again] == ["n-a", "n-b", "n-c"]

    def test_notifications_not_yet_created_are_not_due(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 10)])
        with store.transaction() as uow:
            assert uow.claim_notifications(at(9), 5, "w", LEASE) == []

    def test_delivered_rows_are_never_claimed_again(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 5, "w1", LEASE)
            uow.mark_delivered("n-1", at(1, tz=SHANGHAI))
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.status is OutboxStatus.DELIVERED
            assert entry.delivered_at == at(1)
            assert uow.claim_notifications(at(100), 5, "w2", LEASE) == []
            assert [e.key for e in uow.list_outbox(OutboxStatus.DELIVERED)] == ["n-1"]

    def test_a_late_failure_report_does_not_revive_a_delivered_row(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.mark_delivered("n-1", at(1))
            uow.mark_failed("n-1", "timeout (stale worker)", at(2))
        with store.transaction() as uow:
            assert uow.claim_notifications(at(100), 5, "w2", LEASE) == []

    def test_a_late_failure_report_leaves_another_workers_claim_alone(self, store: Storage) -> None:
        # w1's receiver hung past its lease and w2 claimed the row: w1's report counts for
        # nothing, and w2's lease holds; w2's own report counts.
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 5, "w1", LEASE)
        with store.transaction() as uow:
            assert [e.key for e in uow.claim_notifications(at(6), 5, "w2", LEASE)] == ["n-1"]
        with store.transaction() as uow:
            uow.mark_failed("n-1", "timeout (w1, lease ran out)", at(7), "w1")
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.attempts == 0
            assert uow.claim_notifications(at(8), 5, "w3", LEASE) == []
            uow.mark_failed("n-1", "refused (w2)", at(9), "w2")
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.attempts, entry.last_error) == (
                OutboxStatus.PENDING,
                1,
                "refused (w2)",
            )

    def test_a_late_failure_report_still_counts_if_nobody_took_the_row_over(
        self, store: Storage
    ) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 5, "w1", LEASE)
        with store.transaction() as uow:
            uow.mark_failed("n-1", "timeout", at(20), "w1")  # at 6 minutes: lease over
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 1)

    def test_a_late_transient_failure_does_not_revive_a_dead_letter(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.mark_failed("n-1", "550 no such user", None)
            uow.mark_failed("n-1", "timeout (stale worker)", at(2))
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.attempts) == (OutboxStatus.DEAD, 1)
            assert uow.claim_notifications(at(100), 5, "w2", LEASE) == []

    def test_a_failed_attempt_is_retried_at_the_given_time(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 5, "w1", LEASE)
            uow.mark_failed("n-1", "SMTP 451 — 稍后再试", at(30))
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 1)
            assert entry.last_error == "SMTP 451 — 稍后再试"
            assert entry.next_attempt_at == at(30)
            assert uow.claim_notifications(at(29), 5, "w1", LEASE) == []
            retried = uow.claim_notifications(at(30), 5, "w1", LEASE)
        assert [(e.key, e.attempts) for e in retried] == [("n-1", 1)]

    def test_a_final_failure_parks_the_row_as_dead_until_requeued(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0), notification("n-2", 1)])
        with store.transaction() as uow:
            uow.mark_failed("n-1", "first", at(10))
            uow.mark_failed("n-1", "gave up", None)
            uow.mark_failed("n-2", "bad address", None)
        with store.transaction() as uow:
            dead = uow.list_outbox(OutboxStatus.DEAD)
            assert [(e.key, e.attempts, e.last_error) for e in dead] == [
                ("n-1", 2, "gave up"),
                ("n-2", 1, "bad address"),
            ]
            assert [e.key for e in uow.list_outbox(OutboxStatus.DEAD, limit=1)] == ["n-1"]
            assert uow.list_outbox(OutboxStatus.PENDING) == []
            assert uow.claim_notifications(at(1000), 5, "w", LEASE) == []
            uow.requeue("n-1", at(50))
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.attempts, entry.next_attempt_at) == (
                OutboxStatus.PENDING,
                0,
                at(50),
            )
            assert uow.claim_notifications(at(49), 5, "w", LEASE) == []
            assert [e.key for e in uow.claim_notifications(at(50), 5, "w", LEASE)] == ["n-1"]
            assert [e.key for e in uow.list_outbox(OutboxStatus.DEAD)] == ["n-2"]

    def test_requeue_brings_back_only_a_dead_letter(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-pending", 0), notification("n-sent", 0)])
        with store.transaction() as uow:
            uow.mark_delivered("n-sent", at(1))
            uow.requeue("n-pending", at(50))
            uow.requeue("n-sent", at(50))
        with store.transaction() as uow:
            pending = uow.outbox_entry("n-pending")
            sent = uow.outbox_entry("n-sent")
            assert pending is not None
            assert sent is not None
            assert (pending.status, pending.next_attempt_at) == (OutboxStatus.PENDING, at(0))
            assert sent.status is OutboxStatus.DELIVERED

    def test_list_outbox_takes_a_status_by_name(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            listed = uow.list_outbox("pending")  # type: ignore[arg-type]
        assert [e.key for e in listed] == ["n-1"]

    def test_list_outbox_is_oldest_first(self, store: Storage) -> None:
        # Keys sort the other way round, so an order by key would show.
        for n in range(5):
            with store.transaction() as uow:
                uow.enqueue([notification(f"n-{9 - n}", n)])
        with store.transaction() as uow:
            listed = [e.key for e in uow.list_outbox(OutboxStatus.PENDING)]
            assert listed == ["n-9", "n-8", "n-7", "n-6", "n-5"]
            assert len(uow.list_outbox(OutboxStatus.PENDING, limit=3)) == 3

    def test_list_outbox_is_oldest_first_whatever_the_enqueue_order(self, store: Storage) -> None:
        # A notification can be enqueued after a younger one (a deadline handled late is
        # created at its due time). Rows created at the same instant go by key.
        for key, minutes in (("n-late", 10), ("n-early", 5), ("n-tie-b", 7), ("n-tie-a", 7)):
            with store.transaction() as uow:
                uow.enqueue([notification(key, minutes)])
        with store.transaction() as uow:
            listed = [e.key for e in uow.list_outbox(OutboxStatus.PENDING)]
            assert listed == ["n-early", "n-tie-a", "n-tie-b", "n-late"]
            first = [e.key for e in uow.list_outbox(OutboxStatus.PENDING, limit=2)]
            assert first == ["n-early", "n-tie-a"]

    def test_a_repeated_key_does_not_revive_a_delivered_or_dead_row(self, store: Storage) -> None:
        # A cause handled twice enqueues its notification again: a row already delivered must
        # not be sent again, nor a dead letter come back without a requeue.
        with store.transaction() as uow:
            uow.enqueue([notification("n-sent", 0), notification("n-dead", 0)])
        with store.transaction() as uow:
            uow.mark_delivered("n-sent", at(1))
            uow.mark_failed("n-dead", "550 no such user", None)
        with store.transaction() as uow:
            uow.enqueue([notification("n-sent", 2, subject="again"),
                         notification("n-dead", 2, subject="again")])  # fmt: skip
        with store.transaction() as uow:
            sent = uow.outbox_entry("n-sent")
            dead = uow.outbox_entry("n-dead")
            assert sent is not None
            assert (sent.status, sent.notification) == (
                OutboxStatus.DELIVERED,
                notification("n-sent", 0),
            )
            assert dead is not None
            assert (dead.status, dead.attempts) == (OutboxStatus.DEAD, 1)
            assert uow.list_outbox(OutboxStatus.PENDING) == []

    def test_notifications_due_at_the_same_time_are_claimed_by_key(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-b", 1), notification("n-c", 0), notification("n-a", 1)])
        with store.transaction() as uow:
            first = uow.claim_notifications(at(5), 2, "w1", LEASE)
            assert [e.key for e in first] == ["n-c", "n-a"]
            uow.mark_failed("n-c", "timeout", at(20))
            uow.mark_failed("n-a", "timeout", at(20))
        with store.transaction() as uow:
            retried = uow.claim_notifications(at(30), 5, "w2", LEASE)
        assert [e.key for e in retried] == ["n-b", "n-a", "n-c"]

    def test_claims_are_counted_until_a_requeue(self, store: Storage) -> None:
        # ``claims`` beyond ``attempts``: claims that ended without a result (a dead worker).
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            assert [(e.key, e.claims) for e in uow.claim_notifications(at(0), 5, "w1", LEASE)] == [
                ("n-1", 1)
            ]
        with store.transaction() as uow:  # w1 died; its lease ran from 0 to 5 minutes
            [again] = uow.claim_notifications(at(5), 5, "w2", LEASE)
            assert (again.claims, again.attempts) == (2, 0)
            uow.mark_failed("n-1", "timeout", at(20), "w2")
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.claims, entry.attempts) == (2, 1)
            [third] = uow.claim_notifications(at(20), 5, "w3", LEASE)
            assert (third.claims, third.attempts) == (3, 1)
            uow.mark_failed("n-1", "gave up", None, "w3")
            uow.requeue("n-1", at(30))
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.status, entry.claims, entry.attempts) == (OutboxStatus.PENDING, 0, 0)
            assert [e.claims for e in uow.claim_notifications(at(30), 5, "w4", LEASE)] == [1]
            assert [e.claims for e in uow.list_outbox(OutboxStatus.PENDING)] == [1]

    def test_a_rolled_back_claim_is_not_counted(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])

        def crash() -> None:
            with store.transaction() as uow:
                assert len(uow.claim_notifications(at(0), 5, "w1", LEASE)) == 1
                raise RuntimeError("worker crashed")

        with pytest.raises(RuntimeError):
            crash()
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.claims == 0
            assert [e.claims for e in uow.claim_notifications(at(0), 5, "w2", LEASE)] == [1]

    def test_release_gives_back_only_the_owners_claims(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification(f"n-{n}", 0) for n in range(1, 5)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 2, "w1", LEASE)  # n-1, n-2
            uow.claim_notifications(at(0), 1, "w2", LEASE)  # n-3
            uow.mark_failed("n-2", "timeout", at(30), "w1")
        with store.transaction() as uow:
            uow.release_notifications(["n-1", "n-2", "n-3", "n-4", "n-unknown"], "w1")
            uow.release_notifications([], "w1")
        with store.transaction() as uow:
            states = {}
            for key in ("n-1", "n-2", "n-3", "n-4"):
                entry = uow.outbox_entry(key)
                assert entry is not None
                states[key] = (entry.claims, entry.attempts, entry.next_attempt_at)
            # n-1 is back as it was before the claim; the others are as they were: n-2's
            # failure was recorded, n-3 is w2's, n-4 was never claimed.
            assert states == {
                "n-1": (0, 0, at(0)),
                "n-2": (1, 1, at(30)),
                "n-3": (1, 0, at(0)),
                "n-4": (0, 0, at(0)),
            }
            # Released, n-1 is claimable at once (its lease ran until 5 minutes); w2's holds.
            claimed = uow.claim_notifications(at(1), 5, "w3", LEASE)
            assert [(e.key, e.claims) for e in claimed] == [("n-1", 1), ("n-4", 1)]

    def test_a_release_keeps_the_next_attempt_and_needs_the_claims_owner(
        self, store: Storage
    ) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
            uow.mark_failed("n-1", "timeout", at(30))
        with store.transaction() as uow:
            assert [e.claims for e in uow.claim_notifications(at(31), 5, "w1", LEASE)] == [1]
            uow.release_notifications(["n-1"], "w2")  # not w2's claim
            assert uow.claim_notifications(at(31), 5, "w3", LEASE) == []
            uow.release_notifications(("n-1",), "w1")
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.claims, entry.attempts, entry.next_attempt_at) == (0, 1, at(30))
            uow.release_notifications(["n-1"], "w1")  # given back already: nothing to do
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.claims == 0

    def test_a_release_after_the_lease_ran_out(self, store: Storage) -> None:
        # The dispatcher hands back rows its batch ran past the lease of. Nobody took n-1 over:
        # the claim is given back. n-2 was claimed by w2 meanwhile: its claim stays w2's.
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0), notification("n-2", 0)])
        with store.transaction() as uow:
            assert len(uow.claim_notifications(at(0), 5, "w1", LEASE)) == 2
        with store.transaction() as uow:  # w1's lease ran until 5 minutes
            assert [e.key for e in uow.claim_notifications(at(6), 1, "w2", LEASE)] == ["n-1"]
        with store.transaction() as uow:
            uow.release_notifications(["n-1", "n-2"], "w1")
        with store.transaction() as uow:
            first, second = uow.outbox_entry("n-1"), uow.outbox_entry("n-2")
            assert first is not None
            assert second is not None
            assert (first.claims, second.claims) == (2, 0)
            assert uow.claim_notifications(at(7), 5, "w3", LEASE)[0].key == "n-2"
            assert uow.claim_notifications(at(10), 5, "w3", LEASE) == []  # w2's lease holds
            uow.mark_failed("n-1", "refused (w2)", at(20), "w2")  # and its report counts
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert (entry.claims, entry.attempts) == (2, 1)

    def test_a_rolled_back_release_keeps_the_claim(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 5, "w1", LEASE)

        def crash() -> None:
            with store.transaction() as uow:
                uow.release_notifications(["n-1"], "w1")
                raise RuntimeError("worker crashed")

        with pytest.raises(RuntimeError):
            crash()
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-1")
            assert entry is not None
            assert entry.claims == 1
            assert uow.claim_notifications(at(1), 5, "w2", LEASE) == []

    @pytest.mark.parametrize(
        ("keys", "owner", "field"),
        [("n-1", "w1", "keys"), (None, "w1", "keys"), ([1], "w1", "keys"), (["n-1"], "", "owner")],
    )
    def test_release_refuses_bad_input(
        self, store: Storage, keys: Any, owner: Any, field: str
    ) -> None:
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0)])
        with store.transaction() as uow:
            uow.claim_notifications(at(0), 5, "w1", LEASE)
            with pytest.raises(ValidationError) as refused:
                uow.release_notifications(keys, owner)
            assert refused.value.field == field

    # -- records ---------------------------------------------------------------------------
    def test_records_insert_read_and_update_with_a_version_check(self, store: Storage) -> None:
        first = record("survey", "r-1", 0, data={"答案": ["很好", 5, None, 1.5, True]})
        with store.transaction() as uow:
            assert uow.get_record("survey", "r-1") is None
            uow.put_record(first)
        with store.transaction() as uow:
            assert uow.get_record("survey", "r-1") == first
            assert uow.get_record("other", "r-1") is None
        second = attrs.evolve(first, status="answered", version=2, updated_at=at(5, tz=SHANGHAI))
        with store.transaction() as uow:
            uow.put_record(second, expected_version=1)
        with store.transaction() as uow:
            assert uow.get_record("survey", "r-1") == second
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.put_record(attrs.evolve(first, version=2), expected_version=1)
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.put_record(first)
        with pytest.raises(ConcurrencyConflict), store.transaction() as uow:
            uow.put_record(record("survey", "r-none", version=2), expected_version=1)
        with store.transaction() as uow:
            assert uow.get_record("survey", "r-1") == second
            assert uow.get_record("survey", "r-none") is None

    def test_find_records_filters_and_is_oldest_first(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.put_record(record("survey", "r-3", 30, ticket_id="t-2"))
            uow.put_record(record("survey", "r-1", 10, status="sent"))
            uow.put_record(record("survey", "r-2", 20, created_at=at(20, tz=NEW_YORK)))
            uow.put_record(record("followup", "r-9", 5))
        with store.transaction() as uow:

            def ids(**filters: Any) -> list[str]:
                return [r.id for r in uow.find_records("survey", **filters)]

            assert ids() == ["r-1", "r-2", "r-3"]
            assert ids(ticket_id="t-1") == ["r-1", "r-2"]
            assert ids(status="sent") == ["r-1"]
            assert ids(created_from=at(20, tz=SHANGHAI)) == ["r-2", "r-3"]
            assert ids(created_to=at(20)) == ["r-1"]
            assert ids(created_from=at(10), created_to=at(30), ticket_id="t-1") == ["r-1", "r-2"]
            assert [r.id for r in uow.find_records("followup")] == ["r-9"]
            assert uow.find_records("nothing") == []

    def test_find_records_created_at_the_same_time_come_by_id(self, store: Storage) -> None:
        # Inserted in shuffled id order, one of them written in another zone and one updated
        # afterwards: records created at the same instant come by id, whatever the order they
        # were written in, so every store lists them alike.
        with store.transaction() as uow:
            uow.put_record(record("survey", "r-late", 20))
            for record_id in ("r-c", "r-e", "r-a", "r-d"):
                uow.put_record(record("survey", record_id, 10))
            uow.put_record(record("survey", "r-b", created_at=at(10, tz=SHANGHAI)))
            uow.put_record(record("survey", "r-z", 5, ticket_id="t-2"))
        with store.transaction() as uow:
            updated = uow.get_record("survey", "r-c")
            assert updated is not None
            uow.put_record(attrs.evolve(updated, status="sent", version=2), expected_version=1)
        with store.transaction() as uow:

            def ids(**filters: Any) -> list[str]:
                return [r.id for r in uow.find_records("survey", **filters)]

            assert ids() == ["r-z", "r-a", "r-b", "r-c", "r-d", "r-e", "r-late"]
            assert ids(ticket_id="t-1") == ["r-a", "r-b", "r-c", "r-d", "r-e", "r-late"]
            assert ids(created_from=at(10), created_to=at(11)) == [
                "r-a",
                "r-b",
                "r-c",
                "r-d",
                "r-e",
            ]
            assert ids(status="open", created_to=at(11)) == ["r-z", "r-a", "r-b", "r-d", "r-e"]

    # -- occurrences -----------------------------------------------------------------------
    def test_occurrences_since_a_time_oldest_first(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.record_occurrence("printer", "t-2", at(2))
            uow.record_occurrence("printer", "t-1", at(1, tz=SHANGHAI))
            uow.record_occurrence("printer", "t-3", at(3))
            uow.record_occurrence("vpn", "t-9", at(2))
        with store.transaction() as uow:
            assert uow.occurrences("printer", at(0)) == ["t-1", "t-2", "t-3"]
            assert uow.occurrences("printer", at(2)) == ["t-2", "t-3"]
            assert uow.occurrences("printer", at(4)) == []
            assert uow.occurrences("vpn", at(0)) == ["t-9"]
            assert uow.occurrences("none", at(0)) == []

    def test_occurrences_at_the_same_time_come_by_ticket_id(self, store: Storage) -> None:
        with store.transaction() as uow:
            uow.record_occurrence("printer", "t-late", at(3))
            for ticket_id in ("t-c", "t-a", "t-d"):
                uow.record_occurrence("printer", ticket_id, at(2))
            uow.record_occurrence("printer", "t-b", at(2, tz=NEW_YORK))
        with store.transaction() as uow:
            assert uow.occurrences("printer", at(0)) == ["t-a", "t-b", "t-c", "t-d", "t-late"]

    # -- text and time ---------------------------------------------------------------------
    def test_unicode_and_a_megabyte_body_round_trip(self, store: Storage) -> None:
        body = ("客户来信：打印机又坏了 😡🖨️ — ça ne marche pas. " * 30000)[:1_000_000]
        ticket = make_ticket(
            subject="紧急 🚨 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
            description=body,
            messages=(Message("m-1", "c-1", Role.CUSTOMER, body, at(0)),),
            fields={"备注": "😀" * 1000, "emoji-key-🔑": "✓"},
        )
        self._insert(store, ticket)
        with store.transaction() as uow:
            uow.append_events([event("t-1", 1, 0, body=body)])
            uow.put_record(record("transcript", "r-1", data={"text": body}))
            uow.enqueue([notification("n-🔑", body=body, subject="回复 ✉️")])
        with store.transaction() as uow:
            loaded = uow.get_ticket("t-1")
            assert loaded == ticket
            assert len(loaded.messages[0].body) == 1_000_000
            assert uow.history("t-1")[0].data["body"] == body
            stored = uow.get_record("transcript", "r-1")
            assert stored is not None
            assert stored.data["text"] == body
            entry = uow.outbox_entry("n-🔑")
            assert entry is not None
            assert entry.notification.body == body

    def test_event_values_read_back_with_their_json_types(self, store: Storage) -> None:
        # Values that compare equal but are written differently (1, 1.0, True; nested too)
        # must each read back as written, whatever an adapter shares or caches. (Not -0.0:
        # PostgreSQL's jsonb has no negative zero.)
        values: list[Any] = [1, 1.0, True, 0, 0.0, False, "1", None]
        nested: list[Any] = [{"v": v} for v in values] + [[v] for v in values]
        with store.transaction() as uow:
            uow.append_events(
                [event("t-1", n, n, v=v) for n, v in enumerate(values + nested, start=1)]
            )
        with store.transaction() as uow:
            read = [e.data["v"] for e in uow.history("t-1")]
        assert [(type(v), v) for v in read[: len(values)]] == [(type(v), v) for v in values]
        assert [repr(v) for v in read] == [repr(v) for v in values + nested]

    def test_large_floats_read_back_as_floats(
        self, store: Storage, request: pytest.FixtureRequest
    ) -> None:
        # JSON writes floats from 1e16 up with an exponent ("1e+16"); they must not come back
        # as ints (10000000000000000 == 1e16, so only the type shows), also in a store that
        # decodes them afresh rather than from a cache of what it wrote.
        values = [1e16, 2.5e300, -1e20, 1.7976931348623157e308]
        data: dict[str, Any] = {f"v{n}": value for n, value in enumerate(values)}
        data["nested"] = [{"v": value} for value in values]
        self._insert(store, make_ticket(fields=data))
        with store.transaction() as uow:
            uow.append_events([event("t-1", 1, 0, **data)])
            uow.put_record(record("survey", "r-1", data=data))
        readers = [store]
        if self.supports_multiple_processes:
            readers.append(request.getfixturevalue("store_opener")())
        try:
            for reader in readers:
                with reader.transaction() as uow:
                    stored = uow.get_record("survey", "r-1")
                    assert stored is not None
                    read = [uow.get_ticket("t-1").fields, uow.history("t-1")[0].data, stored.data]
                for found in read:
                    assert [type(found[f"v{n}"]) for n in range(len(values))] == [float] * 4
                    assert repr(dict(found)) == repr(data)
        finally:
            for reader in readers[1:]:
                reader.close()

    def test_aware_datetimes_round_trip_as_the_same_instant(self, store: Storage) -> None:
        odd = timezone(timedelta(hours=5, minutes=45))  # Nepal
        created = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=odd)
        ticket = make_ticket(created_at=created, updated_at=created.astimezone(NEW_YORK))
        self._insert(store, ticket)
        with store.transaction() as uow:
            uow.append_events([Event("t-1", 1, "Opened", created, "x", {})])
            uow.put_record(record("r", "1", created_at=created, updated_at=created))
            uow.enqueue([notification("n-1", created_at=created)])
        with store.transaction() as uow:
            loaded = uow.get_ticket("t-1")
            (opened,) = uow.history("t-1")
            stored = uow.get_record("r", "1")
            entry = uow.outbox_entry("n-1")
        for value in (
            loaded.created_at,
            loaded.updated_at,
            opened.at,
            stored.created_at if stored else None,
            entry.notification.created_at if entry else None,
        ):
            assert value == created
            assert value is not None
            assert value.utcoffset() is not None
            assert value.microsecond == created.astimezone(value.tzinfo).microsecond

    def test_naive_datetimes_are_refused(self, store: Storage) -> None:
        naive = datetime(2026, 3, 2, 9, 0)
        with pytest.raises(ValidationError), store.transaction() as uow:
            uow.claim_due_timers(naive, 5, "w", LEASE)
        with pytest.raises(ValidationError), store.transaction() as uow:
            uow.occurrences("k", naive)

    @pytest.mark.parametrize(
        "call",
        [
            lambda uow, naive: uow.find_tickets(TicketQuery(created_from=naive)),
            lambda uow, naive: uow.find_tickets(TicketQuery(created_to=naive)),
            lambda uow, naive: uow.append_events([Event("t-2", 1, "Noted", naive, "x", {})]),
            lambda uow, naive: list(uow.iter_events(start=naive)),
            lambda uow, naive: list(uow.iter_events(end=naive)),
            lambda uow, naive: uow.mark_delivered("n-1", naive),
            lambda uow, naive: uow.mark_failed("n-1", "timeout", naive),
            lambda uow, naive: uow.requeue("n-dead", naive),
            lambda uow, naive: uow.put_record(record("survey", "r-2", created_at=naive)),
            lambda uow, naive: uow.put_record(record("survey", "r-2", updated_at=naive)),
            lambda uow, naive: uow.find_records("survey", created_from=naive),
            lambda uow, naive: uow.find_records("survey", created_to=naive),
            lambda uow, naive: uow.record_occurrence("printer", "t-2", naive),
            lambda uow, naive: uow.claim_notifications(naive, 5, "w", LEASE),
        ],
        ids=[
            "find_tickets created_from",
            "find_tickets created_to",
            "append_events event.at",
            "iter_events start",
            "iter_events end",
            "mark_delivered at",
            "mark_failed retry_at",
            "requeue at",
            "put_record created_at",
            "put_record updated_at",
            "find_records created_from",
            "find_records created_to",
            "record_occurrence at",
            "claim_notifications now",
        ],
    )
    def test_naive_datetimes_are_refused_by_every_call(
        self, store: Storage, call: Callable[[UnitOfWork, datetime], object]
    ) -> None:
        # A naive datetime has no instant: refused with a ValidationError (not a TypeError,
        # not read as UTC or local time), and nothing is written.
        with store.transaction() as uow:
            uow.enqueue([notification("n-1", 0), notification("n-dead", 0)])
            uow.mark_failed("n-dead", "550 no such user", None)
            uow.append_events([event("t-1", 1, 0)])
            uow.put_record(record("survey", "r-1"))
            uow.record_occurrence("printer", "t-1", at(0))
        with pytest.raises(ValidationError), store.transaction() as uow:
            call(uow, datetime(2026, 3, 2, 9, 30))
        with store.transaction() as uow:
            entry, dead = uow.outbox_entry("n-1"), uow.outbox_entry("n-dead")
            assert entry is not None
            assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 0)
            assert dead is not None
            assert dead.status is OutboxStatus.DEAD
            assert uow.history("t-2") == []
            assert uow.get_record("survey", "r-2") is None
            assert uow.occurrences("printer", at(-60)) == ["t-1"]

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda uow: uow.claim_due_timers(at(10), -1, "w", LEASE), "limit"),
            (lambda uow: uow.claim_due_timers(at(10), 2.5, "w", LEASE), "limit"),
            (lambda uow: uow.claim_due_timers(at(10), True, "w", LEASE), "limit"),
            (lambda uow: uow.claim_due_timers(at(10), 5, "w", -LEASE), "lease"),
            (lambda uow: uow.claim_due_timers(at(10), 5, "w", timedelta(0)), "lease"),
            (lambda uow: uow.claim_due_timers(at(10), 5, "w", 300), "lease"),
            (lambda uow: uow.claim_due_timers(at(10), 5, "", LEASE), "owner"),
            (lambda uow: uow.claim_due_timers(at(10), 5, None, LEASE), "owner"),
            (lambda uow: uow.find_tickets(TicketQuery(limit=-1)), "limit"),
            (lambda uow: uow.find_tickets(TicketQuery(status="open")), "status"),
            (lambda uow: uow.list_outbox(OutboxStatus.PENDING, -1), "limit"),
            (lambda uow: uow.claim_notifications(at(10), -1, "w", LEASE), "limit"),
            (lambda uow: uow.claim_notifications(at(10), 2.5, "w", LEASE), "limit"),
            (lambda uow: uow.claim_notifications(at(10), 5, "w", timedelta(0)), "lease"),
            (lambda uow: uow.claim_notifications(at(10), 5, "", LEASE), "owner"),
        ],
        ids=[
            "claim limit -1",
            "claim limit 2.5",
            "claim limit True",
            "claim negative lease",
            "claim zero lease",
            "claim lease in seconds",
            "claim empty owner",
            "claim owner None",
            "find_tickets limit -1",
            "find_tickets status as a string",
            "list_outbox limit -1",
            "claim_notifications limit -1",
            "claim_notifications limit 2.5",
            "claim_notifications zero lease",
            "claim_notifications empty owner",
        ],
    )
    def test_bad_limits_leases_and_owners_are_refused(
        self, store: Storage, call: Callable[[UnitOfWork], object], field: str
    ) -> None:
        # A slice by a negative limit takes all but the last rows; a lease that has already
        # ended leases nothing; a timer claimed without an owner cannot be told from a free
        # one; status="open" is a sequence of letters. Each is refused, and nothing is claimed.
        self._insert(store, make_ticket("t-1", 1))
        with store.transaction() as uow:
            uow.replace_timers("t-1", [self._timer("t-1", "a", 0), self._timer("t-1", "b", 1)])
            uow.enqueue([notification("n-1", 0)])
        with pytest.raises(ValidationError) as refused, store.transaction() as uow:
            call(uow)
        assert refused.value.field == field
        with store.transaction() as uow:
            claimed = uow.claim_due_timers(at(10), 5, "w2", LEASE)
            notifications = uow.claim_notifications(at(10), 5, "w2", LEASE)
        assert [timer.key for timer in claimed] == ["a", "b"]
        assert [(entry.key, entry.claims) for entry in notifications] == [("n-1", 1)]

    @pytest.mark.parametrize(
        ("key", "ticket_id", "field"),
        [(None, "t-2", "key"), (7, "t-2", "key"), ("printer", None, "ticket_id")],
        ids=["key None", "key 7", "ticket_id None"],
    )
    def test_an_occurrence_needs_a_text_key_and_ticket_id(
        self, store: Storage, key: Any, ticket_id: Any, field: str
    ) -> None:
        # Refused by name, not left to a NOT NULL constraint of the database (an untyped
        # error) nor kept by one store and refused by another.
        with store.transaction() as uow:
            uow.record_occurrence("printer", "t-1", at(0))
        with pytest.raises(ValidationError) as refused, store.transaction() as uow:
            uow.record_occurrence(key, ticket_id, at(1))
        assert refused.value.field == field
        with store.transaction() as uow:
            assert uow.occurrences("printer", at(0)) == ["t-1"]

    # -- several processes -----------------------------------------------------------------
    def test_processes_never_claim_the_same_timer(
        self, store: Storage, request: pytest.FixtureRequest
    ) -> None:
        if not self.supports_multiple_processes:
            pytest.skip("supports_multiple_processes is False: this store lives in one process")
        store_opener: Callable[[], Storage] = request.getfixturevalue("store_opener")
        try:
            pickle.dumps(store_opener)
        except Exception as error:
            pytest.fail(
                f"store_opener {store_opener!r} cannot be sent to another process ({error}):"
                " return a module-level function or functools.partial(YourStore, ...), not a"
                " lambda or a function defined inside the fixture"
            )
        keys = [f"t-{n}/k" for n in range(150)]
        with store.transaction() as uow:
            for n in range(150):
                uow.replace_timers(f"t-{n}", [self._timer(f"t-{n}", "k", n % 11)])
        context = multiprocessing.get_context("spawn")
        with context.Pool(3) as pool:
            results = pool.starmap(
                _claim_in_process, [(store_opener, f"p{n}", at(20)) for n in range(3)]
            )
        claimed = [key for result in results for key in result]
        assert sorted(claimed) == sorted(keys)
