"""The due-work engine: idle chats, auto-close, call-backs, and ``run_due`` itself.

A support centre's house rules run on time: a chat the customer left is reminded at 3 minutes
and closed at 5; a resolved case the customer never answers closes after a week; a dropped
call gets a call-back at once, and the team lead hears if nobody made it. ``Desk.run_due``
claims what fell due, earliest first, and handles each through the normal command path, so
running it twice, or after something else already did the work, changes nothing. The last
story runs a week of a busy desk and checks every deadline against the rules.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from supportflow import (
    AutoClosePolicy,
    BusinessCalendar,
    CallbackPolicy,
    Channel,
    Customer,
    Desk,
    DueReport,
    EscalationCondition,
    EscalationLevel,
    EscalationPolicy,
    Event,
    EventType,
    IdleChatPolicy,
    ManualClock,
    Priority,
    Recipient,
    RecipientRole,
    Role,
    StatusCategory,
    Ticket,
    Timer,
    ValidationError,
    default_sla_policies,
)
from supportflow.extensions import Change, DeskExtension
from supportflow.storage import MemoryStore, OutboxEntry, OutboxStatus, UnitOfWork
from supportflow.testing import scenario_desk

UTC = timezone.utc
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # 2 March 2026 is a Monday


def monday(hour: int, minute: int = 0, second: int = 0, *, days: int = 0) -> datetime:
    """Monday 2 March 2026 (or ``days`` later) at ``hour:minute:second`` UTC."""
    return MONDAY + timedelta(days=days, hours=hour, minutes=minute, seconds=second)


WANG = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})
WANG_ADDRESS = Recipient(RecipientRole.CUSTOMER, "wang.fang@example.com", "Wang Fang")
OFFICE = BusinessCalendar("UTC", {day: [("09:00", "18:00")] for day in range(5)}, name="office")


def open_case(desk: Desk, channel: Channel | str = Channel.EMAIL, **options: Any) -> Ticket:
    return desk.open_ticket(
        subject="Cannot log in to the portal",
        body="It says my password expired.",
        customer=WANG,
        channel=channel,
        **options,
    )


def history_of(desk: Desk, ticket_id: str, *types: str) -> list[Event]:
    return [e for e in desk.history(ticket_id) if not types or e.type in types]


def reminders(desk: Desk, ticket_id: str) -> list[tuple[datetime, str]]:
    return [(e.at, e.data["reason"]) for e in history_of(desk, ticket_id, EventType.REMINDER_SENT)]


def outbox(desk: Desk, kind: str | None = None) -> list[OutboxEntry]:
    with desk.store.transaction() as uow:
        entries = uow.list_outbox(OutboxStatus.PENDING, limit=100_000)
    return [e for e in entries if kind is None or e.notification.kind == kind]


def timer_keys(desk: Desk, ticket_id: str) -> set[str]:
    with desk.store.transaction() as uow:
        return {timer.key for timer in uow.timers(ticket_id)}


def run_until(desk: Desk, clock: ManualClock, end: datetime, step: timedelta = M) -> None:
    """The worker: run the due work every ``step`` until ``end``."""
    while clock.now() < end:
        clock.set(min(clock.now() + step, end))
        desk.run_due()


# -- idle chat --------------------------------------------------------------------------------
@pytest.fixture
def chat() -> tuple[Desk, ManualClock, Ticket]:
    """A chat where the agent answered at 09:01 and now waits for the customer."""
    desk, clock = scenario_desk(monday(9))
    ticket = open_case(desk, Channel.CHAT)
    clock.set(monday(9, 1))
    desk.reply(ticket.id, "Hello Wang Fang, I can help with that.", by="agent_li")
    return desk, clock, ticket


class TestIdleChat:
    def test_a_silent_customer_is_reminded_at_3_minutes_and_the_chat_closes_at_5(
        self, chat: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, ticket = chat
        run_until(desk, clock, monday(9, 3))
        assert reminders(desk, ticket.id) == []

        run_until(desk, clock, monday(9, 4))
        assert reminders(desk, ticket.id) == [(monday(9, 4), "idle_chat")]
        reminded = desk.get_ticket(ticket.id)
        assert reminded.status == "in_progress"
        assert (reminded.messages[-1].role, reminded.messages[-1].body) == (
            Role.SYSTEM,
            IdleChatPolicy().reminder,
        )

        run_until(desk, clock, monday(9, 6))
        assert reminders(desk, ticket.id) == [
            (monday(9, 4), "idle_chat"),
            (monday(9, 6), "idle_chat_closed"),
        ]
        closed = desk.get_ticket(ticket.id)
        assert closed.status == "closed"
        assert closed.messages[-1].body == IdleChatPolicy().closing
        (why,) = [
            e.data["reason"]
            for e in history_of(desk, ticket.id, EventType.STATUS_CHANGED)
            if e.data["to"] == "closed"
        ]
        assert why == "idle chat closed"
        assert timer_keys(desk, ticket.id) == set()

    def test_the_customer_gets_the_reminder_and_the_closing_message(
        self, chat: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, _ = chat
        run_until(desk, clock, monday(9, 10))

        sent = [(e.notification.kind, e.notification.recipients) for e in outbox(desk)]
        assert sent[-2:] == [("idle_chat", (WANG_ADDRESS,)), ("idle_chat_closed", (WANG_ADDRESS,))]

    def test_a_customer_message_before_the_reminder_cancels_both(
        self, chat: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, ticket = chat
        run_until(desk, clock, monday(9, 3))
        desk.reply(ticket.id, "Sorry, had to find my account number.", by=WANG.id, role="customer")
        assert not {"idle:remind", "idle:close"} & timer_keys(desk, ticket.id)

        run_until(desk, clock, monday(9, 30))
        assert reminders(desk, ticket.id) == []
        assert desk.get_ticket(ticket.id).status == "in_progress"

    def test_a_customer_message_after_the_reminder_keeps_the_chat_open(
        self, chat: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, ticket = chat
        run_until(desk, clock, monday(9, 5))
        desk.reply(ticket.id, "Still here!", by=WANG.id, role="customer")

        run_until(desk, clock, monday(9, 30))
        assert reminders(desk, ticket.id) == [(monday(9, 4), "idle_chat")]
        assert desk.get_ticket(ticket.id).status == "in_progress"

    def test_each_agent_reply_starts_the_idle_count_again(
        self, chat: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, ticket = chat
        run_until(desk, clock, monday(9, 2))
        desk.reply(ticket.id, "Got it.", by=WANG.id, role="customer")
        run_until(desk, clock, monday(9, 10))
        desk.reply(ticket.id, "Try the reset link I just sent.", by="agent_li")

        run_until(desk, clock, monday(9, 20))
        assert reminders(desk, ticket.id) == [
            (monday(9, 13), "idle_chat"),
            (monday(9, 15), "idle_chat_closed"),
        ]

    @pytest.mark.parametrize("channel", [Channel.EMAIL, Channel.PHONE, Channel.WEB])
    def test_other_channels_are_never_idle_closed(self, channel: Channel) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk, channel)
        clock.set(monday(9, 1))
        desk.reply(ticket.id, "Hello, I can help with that.", by="agent_li")

        run_until(desk, clock, monday(10), step=2 * M)
        assert reminders(desk, ticket.id) == []
        assert desk.get_ticket(ticket.id).status == "in_progress"

    def test_the_desk_may_choose_its_own_times_and_channels(self) -> None:
        policy = IdleChatPolicy(remind_after=2 * M, close_after=4 * M, channels="social")
        desk, clock = scenario_desk(monday(9), idle_chat=policy)
        social = open_case(desk, Channel.SOCIAL)
        chat = open_case(desk, Channel.CHAT)
        for ticket in (social, chat):
            desk.reply(ticket.id, "Hello!", by="agent_li")

        run_until(desk, clock, monday(9, 10))
        assert reminders(desk, social.id) == [
            (monday(9, 2), "idle_chat"),
            (monday(9, 4), "idle_chat_closed"),
        ]
        assert reminders(desk, chat.id) == []

    def test_a_disabled_policy_never_reminds(self) -> None:
        desk, clock = scenario_desk(monday(9), idle_chat=IdleChatPolicy(enabled=False))
        ticket = open_case(desk, Channel.CHAT)
        desk.reply(ticket.id, "Hello!", by="agent_li")

        run_until(desk, clock, monday(9, 10))
        assert reminders(desk, ticket.id) == []

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"remind_after": 5 * M, "close_after": 3 * M}, "close_after"),
            ({"remind_after": 3 * M, "close_after": 3 * M}, "close_after"),
            ({"remind_after": timedelta(0)}, "remind_after"),
            ({"close_after": -M}, "close_after"),
            ({"channels": ["chat", "pigeon"]}, "channels"),
        ],
    )
    def test_bad_idle_settings_name_their_field(self, options: dict[str, Any], field: str) -> None:
        with pytest.raises(ValidationError) as error:
            IdleChatPolicy(**options)
        assert error.value.field == field

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"channels": None}, "channels"),
            ({"channels": 5}, "channels"),
            ({"channels": [None]}, "channels"),
            ({"remind_after": 3}, "remind_after"),
            ({"close_after": "5m"}, "close_after"),
            ({"reminder": None}, "reminder"),
            ({"reminder": 5}, "reminder"),
            ({"closing": ["Bye"]}, "closing"),
            ({"enabled": "no"}, "enabled"),
            ({"enabled": None}, "enabled"),
            ({"enabled": 0}, "enabled"),
        ],
    )
    def test_ill_typed_idle_settings_are_refused_naming_their_field(
        self, options: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValidationError) as refused:
            IdleChatPolicy(**options)
        assert refused.value.field == field


# -- auto-close -------------------------------------------------------------------------------
def closed_by_system(desk: Desk, ticket_id: str) -> list[datetime]:
    return [
        e.at
        for e in history_of(desk, ticket_id, EventType.STATUS_CHANGED)
        if e.data["to"] == "closed" and e.actor == "system"
    ]


class TestAutoClose:
    def test_a_resolved_case_nobody_answers_for_seven_days_closes_by_itself(self) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk)
        clock.set(monday(10))
        desk.resolve(ticket.id, by="agent_li", resolution="Password reset")

        run_until(desk, clock, monday(9, 59, days=7), step=H)
        assert desk.get_ticket(ticket.id).status == "resolved"
        run_until(desk, clock, monday(10, 30, days=7), step=10 * M)

        assert desk.get_ticket(ticket.id).status == "closed"
        assert closed_by_system(desk, ticket.id) == [monday(10, days=7)]
        closing = history_of(desk, ticket.id, EventType.STATUS_CHANGED)[-1]
        assert closing.data["reason"] == "auto-close: no reply from customer"

    def test_a_customer_reply_before_then_reopens_the_case_and_nothing_closes_it(self) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk)
        clock.set(monday(10))
        desk.resolve(ticket.id, by="agent_li")
        clock.set(monday(10, days=3))

        reopened = desk.reply(ticket.id, "It happened again.", by=WANG.id, role="customer")

        assert reopened.id == ticket.id
        assert reopened.status == "in_progress"
        assert "autoclose" not in timer_keys(desk, ticket.id)
        run_until(desk, clock, monday(10, days=14), step=6 * H)
        assert closed_by_system(desk, ticket.id) == []

    def test_resolving_again_starts_a_new_week(self) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk)
        desk.resolve(ticket.id, by="agent_li")
        clock.set(monday(9, days=3))
        desk.reply(ticket.id, "Still broken.", by=WANG.id, role="customer")
        clock.set(monday(12, days=3))
        desk.resolve(ticket.id, by="agent_li")

        run_until(desk, clock, monday(12, days=11), step=H)
        assert closed_by_system(desk, ticket.id) == [monday(12, days=10)]

    def test_writing_on_a_closed_case_opens_a_new_one_that_follows_it(self) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk)
        desk.resolve(ticket.id, by="agent_li")
        run_until(desk, clock, monday(9, days=8), step=6 * H)
        assert desk.get_ticket(ticket.id).status == "closed"

        follow_up = desk.reply(ticket.id, "The problem is back.", by=WANG.id, role="customer")

        assert follow_up.id != ticket.id
        assert follow_up.linked("follows") == (ticket.id,)
        assert desk.get_ticket(ticket.id).linked("followed_by") == (follow_up.id,)
        assert desk.get_ticket(ticket.id).status == "closed"
        assert follow_up.status == "new"
        assert (follow_up.subject, follow_up.description) == (
            ticket.subject,
            "The problem is back.",
        )

    def test_auto_close_may_count_business_days(self) -> None:
        two_business_days = AutoClosePolicy(after=timedelta(hours=9 * 2), calendar=OFFICE)
        friday_4pm = monday(16, days=-3)
        desk, clock = scenario_desk(friday_4pm, auto_close=two_business_days)
        ticket = open_case(desk)
        clock.set(friday_4pm + H)
        desk.resolve(ticket.id, by="agent_li")

        # Friday 17-18 (1 h), Monday 9-18 (9 h), Tuesday 9-17 (8 h): Tuesday 17:00.
        run_until(desk, clock, monday(16, 59, days=1), step=H)
        assert desk.get_ticket(ticket.id).status == "resolved"
        run_until(desk, clock, monday(18, days=1), step=15 * M)
        assert closed_by_system(desk, ticket.id) == [monday(17, days=1)]

    def test_a_desk_may_switch_auto_close_off(self) -> None:
        desk, clock = scenario_desk(monday(9), auto_close=AutoClosePolicy(enabled=False))
        ticket = open_case(desk)
        desk.resolve(ticket.id, by="agent_li")

        assert timer_keys(desk, ticket.id) == set()
        run_until(desk, clock, monday(9, days=30), step=D)
        assert desk.get_ticket(ticket.id).status == "resolved"

    def test_auto_close_around_the_clock_counts_elapsed_time_across_dst(self) -> None:
        berlin = ZoneInfo("Europe/Berlin")
        resolved = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)  # the night before the switch
        policy = AutoClosePolicy(after=timedelta(days=1))
        due = policy.due(resolved)
        assert due.tzinfo is timezone.utc
        assert due == datetime(2026, 3, 29, 11, 0, tzinfo=timezone.utc)  # 13:00 summer time
        # The same answer as any calendar open around the clock gives.
        always = BusinessCalendar("Europe/Berlin", {d: [("00:00", "24:00")] for d in range(7)})
        assert due == AutoClosePolicy(after=timedelta(days=1), calendar=always).due(resolved)

    def test_auto_close_beyond_the_year_9999_is_a_validation_error(self) -> None:
        with pytest.raises(ValidationError) as error:
            AutoClosePolicy(after=timedelta(days=7)).due(datetime.max.replace(tzinfo=timezone.utc))
        assert error.value.field == "resolved_at"

    def test_auto_close_needs_a_positive_delay(self) -> None:
        with pytest.raises(ValidationError) as error:
            AutoClosePolicy(after=timedelta(0))
        assert error.value.field == "after"

    @pytest.mark.parametrize(
        ("policy", "options", "field"),
        [
            (AutoClosePolicy, {"calendar": 5}, "calendar"),
            (AutoClosePolicy, {"calendar": "office"}, "calendar"),
            (AutoClosePolicy, {"calendar": None}, "calendar"),
            (AutoClosePolicy, {"after": 7}, "after"),
            (AutoClosePolicy, {"enabled": "yes"}, "enabled"),
            (CallbackPolicy, {"escalate_after": 30}, "escalate_after"),
            (CallbackPolicy, {"escalate_after": None}, "escalate_after"),
        ],
    )
    def test_ill_typed_auto_close_and_callback_settings_are_refused_naming_their_field(
        self, policy: Callable[..., object], options: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValidationError) as refused:
            policy(**options)
        assert refused.value.field == field

    def test_well_typed_automation_settings_of_every_kind_still_build(self) -> None:
        pendulum = pytest.importorskip("pendulum")
        idle = IdleChatPolicy(
            remind_after=pendulum.duration(minutes=2),  # a timedelta subclass
            close_after=4 * M,
            channels=(c for c in [Channel.CHAT, "social"]),
            reminder="Still there?",
            closing="Bye for now.",
            enabled=False,
        )
        assert idle.channels == frozenset({Channel.CHAT, Channel.SOCIAL})
        assert IdleChatPolicy(channels=Channel.SOCIAL).channels == frozenset({Channel.SOCIAL})
        assert IdleChatPolicy(channels=[]).channels == frozenset()
        auto = AutoClosePolicy(after=pendulum.duration(days=2), calendar=OFFICE, enabled=False)
        callbacks = CallbackPolicy(escalate_after=pendulum.duration(minutes=20))
        desk = Desk(idle_chat=idle, auto_close=auto, callbacks=callbacks)
        assert desk is not None


# -- dropped contacts and call-backs ----------------------------------------------------------
@pytest.fixture
def call() -> tuple[Desk, ManualClock, Ticket]:
    """A phone call taken by agent Li that drops at 09:05."""
    desk, clock = scenario_desk(
        monday(9),
        callbacks=CallbackPolicy(escalate_after=20 * M),
        team_lead="lead_zhang",
    )
    ticket = open_case(desk, Channel.PHONE, assignee="agent_li")
    clock.set(monday(9, 5))
    desk.contact_dropped(ticket.id)
    return desk, clock, ticket


def escalations(desk: Desk, ticket_id: str) -> list[Event]:
    return history_of(desk, ticket_id, EventType.ESCALATED)


class TestDroppedContact:
    def test_a_dropped_call_asks_the_agent_to_call_back_at_once(
        self, call: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, _, ticket = call

        (scheduled,) = history_of(desk, ticket.id, EventType.CALLBACK_SCHEDULED)
        assert dict(scheduled.data) == {
            "reason": "contact_dropped",
            "due_at": monday(9, 5).isoformat(),
            "escalate_at": monday(9, 25).isoformat(),
        }
        (task,) = outbox(desk, "callback")
        assert task.notification.recipients == (Recipient(RecipientRole.AGENT, "agent_li"),)
        assert task.notification.created_at == monday(9, 5)
        assert task.notification.subject == f"[#{ticket.number}] Call the customer back"

    def test_a_call_back_not_made_in_time_goes_to_the_team_lead(
        self, call: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, ticket = call
        run_until(desk, clock, monday(9, 24))
        assert escalations(desk, ticket.id) == []

        run_until(desk, clock, monday(9, 40))
        (overdue,) = escalations(desk, ticket.id)
        assert overdue.at == monday(9, 25)
        assert (overdue.data["policy"], overdue.data["reason"], overdue.data["targets"]) == (
            "callback",
            "call-back not done in time",
            ["team_lead"],
        )
        (told,) = outbox(desk, "escalation")
        assert told.notification.recipients == (Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),)
        assert len(outbox(desk, "callback")) == 1  # the agent was asked once

    def test_a_call_back_made_in_time_is_recorded_and_never_escalates(
        self, call: tuple[Desk, ManualClock, Ticket]
    ) -> None:
        desk, clock, ticket = call
        clock.set(monday(9, 15))
        desk.callback_done(ticket.id, by="agent_li", outcome="reached")

        (done,) = history_of(desk, ticket.id, EventType.CALLBACK_DONE)
        assert (done.at, done.actor, done.data["outcome"]) == (
            monday(9, 15),
            "agent_li",
            "reached",
        )
        assert not any(key.startswith("callback:") for key in timer_keys(desk, ticket.id))
        run_until(desk, clock, monday(10))
        assert escalations(desk, ticket.id) == []

    def test_a_call_back_recorded_with_none_pending_records_nothing(self) -> None:
        desk, _ = scenario_desk(monday(9))
        ticket = open_case(desk, Channel.PHONE)

        after = desk.callback_done(ticket.id, by="agent_li")

        assert after.sequence == ticket.sequence
        assert history_of(desk, ticket.id, EventType.CALLBACK_DONE) == []

    def test_a_dropped_chat_of_a_group_asks_the_group(self) -> None:
        desk, _ = scenario_desk(monday(9))
        ticket = open_case(desk, Channel.CHAT, group="chat_team")
        desk.contact_dropped(ticket.id)

        (task,) = outbox(desk, "callback")
        assert task.notification.recipients == (Recipient(RecipientRole.GROUP, "chat_team"),)

    def test_a_dropped_call_nobody_owns_yet_asks_the_team_lead(self) -> None:
        desk, _ = scenario_desk(monday(9), team_lead="lead_zhang")
        ticket = open_case(desk, Channel.PHONE)
        desk.contact_dropped(ticket.id)

        (task,) = outbox(desk, "callback")
        assert task.notification.recipients == (Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),)


# -- run_due: claiming, idempotency, stale timers ---------------------------------------------
class _ClaimSpy:
    """A unit of work that tells its store when due timers were claimed through it."""

    def __init__(self, uow: UnitOfWork, store: Interleaved) -> None:
        self._uow = uow
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._uow, name)

    def claim_due_timers(self, now: datetime, limit: int, owner: str, lease: Any) -> list[Timer]:
        claimed = self._uow.claim_due_timers(now, limit, owner, lease)
        self._store.claims.append(claimed)
        return claimed

    def release_timer(self, timer: Timer, owner: str) -> None:
        if self._store.crash_on_release:
            self._store.crash_on_release = False
            raise RuntimeError("worker process killed")
        self._uow.release_timer(timer, owner)


class Interleaved:
    """A store shared with "another process": ``meanwhile`` runs right after a worker's claim
    is committed and before the worker handles what it claimed."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.meanwhile: list[Callable[[], object]] = []
        self.claims: list[list[Timer]] = []
        self.crash_on_release = False

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        claims = len(self.claims)
        with self.inner.transaction() as uow:
            yield _ClaimSpy(uow, self)
        if len(self.claims) > claims and self.claims[-1]:
            while self.meanwhile:
                self.meanwhile.pop(0)()

    def close(self) -> None:
        self.inner.close()


class TestRunDue:
    def test_running_twice_at_the_same_instant_does_the_work_once(self) -> None:
        desk, clock = scenario_desk(monday(9))
        tickets = [open_case(desk, priority=p) for p in ("urgent", "high", "normal")]
        clock.set(monday(17))

        first = desk.run_due()
        second = desk.run_due()

        assert len(first.fired) > 0
        assert {t.ticket_id for t in first.fired} == {t.id for t in tickets}
        assert (second.fired, second.dropped, second.events) == ((), (), ())
        assert first.events == tuple(
            e
            for ticket in tickets
            for e in desk.history(ticket.id)
            if e.type in (EventType.SLA_WARNING, EventType.SLA_BREACHED)
        )

    def test_each_deadline_is_recorded_at_its_own_time_not_when_the_worker_came(self) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk, priority="urgent")  # first response due in 30 minutes
        clock.set(monday(15))

        report = desk.run_due()

        assert [(t.key, t.due_at) for t in report.fired][:3] == [
            ("sla:first_response:warning:75", monday(9, 22, 30)),
            ("sla:first_response:warning:90", monday(9, 27)),
            ("sla:first_response:breach", monday(9, 30)),
        ]
        assert [e.at for e in report.events][:3] == [
            monday(9, 22, 30),
            monday(9, 27),
            monday(9, 30),
        ]
        assert all(e.ticket_id == ticket.id for e in report.events)

    def test_nothing_due_means_nothing_done(self) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk)
        next_due = desk.next_due()
        assert next_due is not None
        clock.set(next_due - timedelta(microseconds=1))

        assert desk.run_due() == desk.run_due() == DueReport()
        assert desk.get_ticket(ticket.id).version == ticket.version

    def test_a_limit_takes_the_earliest_deadlines_first(self) -> None:
        desk, clock = scenario_desk(monday(9), auto_close=AutoClosePolicy(after=H))
        tickets = []
        for minute in (7, 3, 9, 1, 5, 8, 2, 6, 4, 0):  # resolved in a shuffled order
            ticket = open_case(desk)
            clock.set(monday(10, minute))
            desk.resolve(ticket.id, by="agent_li")
            tickets.append((minute, ticket.id))
            clock.set(monday(10))
        by_time = [ticket_id for _, ticket_id in sorted(tickets)]
        clock.set(monday(12))

        batches = [desk.run_due(limit=3) for _ in range(5)]

        assert [len(b.fired) for b in batches] == [3, 3, 3, 1, 0]
        assert [t.ticket_id for b in batches for t in b.fired] == by_time
        assert [t.due_at for t in batches[0].fired] == [monday(11), monday(11, 1), monday(11, 2)]
        assert all(t.key == "autoclose" for b in batches for t in b.fired)

    def test_a_limit_below_one_and_a_naive_instant_are_refused(self) -> None:
        desk, _ = scenario_desk(monday(9))
        with pytest.raises(ValidationError) as error:
            desk.run_due(limit=0)
        assert error.value.field == "limit"
        with pytest.raises(ValidationError) as error:
            desk.run_due(now=datetime(2026, 3, 2, 12))
        assert error.value.field == "now"

    def test_next_due_names_the_earliest_deadline_of_any_ticket(self) -> None:
        desk, clock = scenario_desk(monday(9))
        assert desk.next_due() is None
        open_case(desk, priority="low")  # first response warning at 75% of 8 h: 15:00
        assert desk.next_due() == monday(15)
        clock.set(monday(9, 30))
        open_case(desk, Channel.CHAT)  # first response warning at 75% of 3 min
        assert desk.next_due() == monday(9, 32, 15)

    def test_a_timer_the_ticket_handled_itself_meanwhile_is_dropped_not_fired_twice(
        self,
    ) -> None:
        store = Interleaved()
        desk, clock = scenario_desk(monday(9), store=store)
        ticket = open_case(desk, Channel.CHAT)
        clock.set(monday(9, 1))
        desk.reply(ticket.id, "Hello, how can I help?", by="agent_li")
        clock.set(monday(9, 4))

        def customer_writes_a_minute_later() -> None:
            # The worker is slow: meanwhile the customer writes, and that command does the
            # reminder that fell due at 09:04 before taking the message.
            clock.set(monday(9, 5))
            desk.reply(ticket.id, "Sorry, I'm here.", by=WANG.id, role="customer")

        store.meanwhile.append(customer_writes_a_minute_later)
        report = desk.run_due(now=monday(9, 4))

        assert [t.key for t in store.claims[0]] == ["idle:remind"]
        assert (report.fired, report.events) == ((), ())
        assert [t.key for t in report.dropped] == ["idle:remind"]
        assert reminders(desk, ticket.id) == [(monday(9, 4), "idle_chat")]
        assert len(outbox(desk, "idle_chat")) == 1
        assert desk.run_due() == DueReport()

    def test_a_timer_whose_ticket_moved_on_is_dropped_without_effect(self) -> None:
        store = Interleaved()
        desk, clock = scenario_desk(monday(9), store=store)
        ticket = open_case(desk, Channel.CHAT)
        clock.set(monday(9, 1))
        desk.reply(ticket.id, "Hello, how can I help?", by="agent_li")
        clock.set(monday(9, 3, 30))
        # The worker's clock runs 30 seconds ahead of the desk's: it claims the reminder due
        # at 09:04, and the customer answers at 09:03:30 before it gets to the ticket.
        store.meanwhile.append(
            lambda: desk.reply(ticket.id, "I'm here.", by=WANG.id, role="customer")
        )
        before = len(desk.history(ticket.id))

        report = desk.run_due(now=monday(9, 4))

        assert [t.key for t in report.dropped] == ["idle:remind"]
        assert (report.fired, report.events) == ((), ())
        assert reminders(desk, ticket.id) == []
        assert len(desk.history(ticket.id)) == before + 1  # only the customer's message
        assert outbox(desk, "idle_chat") == []

    def test_a_worker_killed_mid_way_leaves_nothing_half_done_and_the_work_comes_back(
        self,
    ) -> None:
        store = Interleaved()
        desk, clock = scenario_desk(monday(9), store=store, timer_lease=5 * M)
        ticket = open_case(desk)
        desk.resolve(ticket.id, by="agent_li")
        clock.set(monday(9, days=7))
        store.crash_on_release = True

        with pytest.raises(RuntimeError, match="killed"):
            desk.run_due()

        assert desk.get_ticket(ticket.id).status == "resolved"
        assert closed_by_system(desk, ticket.id) == []
        # Its claim still holds the timer until the lease runs out ...
        clock.set(monday(9, 4, days=7))
        assert desk.run_due() == DueReport()
        # ... then another run does the work, once.
        clock.set(monday(9, 5, days=7))
        report = desk.run_due()
        assert [t.key for t in report.fired] == ["autoclose"]
        assert closed_by_system(desk, ticket.id) == [monday(9, days=7)]
        clock.set(monday(10, days=7))
        assert desk.run_due() == DueReport()

    def test_a_timer_leased_to_a_dead_worker_is_done_once_by_whoever_handles_the_ticket(
        self,
    ) -> None:
        desk, clock = scenario_desk(monday(9))
        ticket = open_case(desk, Channel.CHAT)
        clock.set(monday(9, 1))
        desk.reply(ticket.id, "Hello, how can I help?", by="agent_li")
        clock.set(monday(9, 4))
        with desk.store.transaction() as uow:  # a worker claims the reminder, then dies
            (claimed,) = uow.claim_due_timers(monday(9, 4), 10, "dead-worker", 10 * M)
        assert claimed.key == "idle:remind"

        run_until(desk, clock, monday(9, 30))

        assert reminders(desk, ticket.id) == [
            (monday(9, 4), "idle_chat"),
            (monday(9, 6), "idle_chat_closed"),
        ]


# -- a week of a busy desk --------------------------------------------------------------------
WEEK_TIERS = EscalationPolicy(
    "tiers",
    calendar=OFFICE,
    levels=[
        EscalationLevel("engineer", after=2 * H, reassign_group="tier2", notify=["group"]),
        EscalationLevel(
            "lead",
            sla_clock="resolution",
            fraction=0.8,
            notify=["team_lead"],
            repeat_every=2 * H,
        ),
    ],
)
WEEK_URGENT = EscalationPolicy(
    "urgent",
    levels=[
        EscalationLevel(
            "team lead",
            when=EscalationCondition(priorities=["urgent"]),
            notify=["team_lead"],
            repeat_every=H,
        ),
        EscalationLevel("manager", after=4 * H, notify=["manager"]),
    ],
)
WEEK_AUTO_CLOSE = AutoClosePolicy(after=2 * D)
SLA_POLICIES = default_sla_policies()  # chat around the clock; the rest in office hours
CHANNELS = [Channel.CHAT, Channel.EMAIL, Channel.PHONE, Channel.WEB]
PRIORITIES = [Priority.URGENT, Priority.HIGH, Priority.NORMAL, Priority.LOW]
AUTO_CLOSED = "auto-close: no reply from customer"
US = timedelta(microseconds=1)


def _sla_policy(channel: Channel) -> Any:
    return SLA_POLICIES[0] if channel is Channel.CHAT else SLA_POLICIES[1]


class _Week:
    """A desk, its clock and the cases of a week, each with a script of what people do."""

    def __init__(self, seed: int, tickets: int) -> None:
        self.rng = random.Random(seed)
        self.store = MemoryStore()
        self.desk, self.clock = scenario_desk(
            MONDAY,
            store=self.store,
            escalation=[WEEK_TIERS, WEEK_URGENT],
            auto_close=WEEK_AUTO_CLOSE,
            team_lead="lead_zhang",
        )
        self.end = MONDAY + 7 * D
        self.handled: dict[tuple[str, int], datetime] = {}  # (ticket, sequence) -> instant
        self.seen: dict[str, int] = {}  # ticket -> last sequence accounted for
        self.reports = 0
        self.actions: list[tuple[datetime, int, str, str]] = []  # (at, n, ticket key, what)
        self.counter = itertools.count()
        self.ids: dict[str, str] = {}
        for number in range(tickets):
            opened = MONDAY + timedelta(seconds=self.rng.uniform(0, 5.5 * 86_400))
            self._plan(f"case-{number}", opened)

    # -- the scripts ---------------------------------------------------------------------------
    def _at(self, when: datetime, case: str, what: str) -> None:
        if when < self.end:
            heapq.heappush(self.actions, (when, next(self.counter), case, what))

    def _plan(self, case: str, opened: datetime) -> None:
        rng = self.rng
        channel = rng.choices(CHANNELS, weights=[25, 35, 15, 25])[0]
        priority = rng.choices(PRIORITIES, weights=[5, 15, 60, 20])[0]
        self._at(opened, case, f"open:{channel.value}:{priority.value}")
        chat = channel is Channel.CHAT
        t = opened
        if rng.random() < 0.85:  # an agent answers
            t += timedelta(minutes=rng.expovariate(1 / 2) if chat else rng.expovariate(1 / 150))
            self._at(t, case, "agent")
            if rng.random() < 0.4:  # the customer writes back
                t += timedelta(minutes=rng.uniform(0, 5) if chat else rng.uniform(1, 1_500))
                self._at(t, case, "customer")
                if rng.random() < 0.5:
                    t += timedelta(minutes=rng.uniform(1, 600))
                    self._at(t, case, "agent")
            if not chat and rng.random() < 0.2:  # waits on the customer for a while
                t += timedelta(minutes=rng.uniform(1, 120))
                self._at(t, case, "wait")
                t += timedelta(minutes=rng.uniform(1, 2_000))
                self._at(t, case, "customer")
        if priority is Priority.URGENT and rng.random() < 0.5:
            self._at(opened + timedelta(minutes=rng.uniform(1, 240)), case, "acknowledge")
        if rng.random() < 0.7:
            t += timedelta(minutes=rng.uniform(10, 4_000))
            self._at(t, case, "resolve")
            if rng.random() < 0.15:  # "it happened again"
                self._at(t + timedelta(minutes=rng.uniform(1, 3_500)), case, "customer")

    def _act(self, case: str, what: str) -> Ticket | None:
        desk = self.desk
        if what.startswith("open:"):
            _, channel, priority = what.split(":")
            ticket = desk.open_ticket(
                subject=f"Case {case}",
                body="Something is wrong.",
                customer=Customer(id=f"c-{case}", name=case),
                channel=channel,
                priority=priority,
                group="first_line",
            )
            self.ids[case] = ticket.id
            self.seen[ticket.id] = 0
            return ticket
        ticket = desk.get_ticket(self.ids[case])
        category = desk.workflow.category(ticket.status)
        if category is StatusCategory.CLOSED:
            return None  # a closed case takes no more scripted work
        if what == "agent":
            return desk.reply(ticket.id, "Here is what we found.", by="agent_li")
        if what == "customer":
            return desk.reply(ticket.id, "Any news?", by=ticket.customer.id, role="customer")
        if what == "wait" and "wait_on_customer" in desk.workflow.allowed(ticket.status):
            return desk.fire(ticket.id, "wait_on_customer", by="agent_li")
        if what == "acknowledge":
            return desk.acknowledge(ticket.id, by="lead_zhang")
        if what == "resolve" and "resolve" in desk.workflow.allowed(ticket.status):
            return desk.resolve(ticket.id, by="agent_li")
        return None

    # -- the run -------------------------------------------------------------------------------
    def _account(self, ticket_id: str, upto: int, instant: datetime) -> None:
        for sequence in range(self.seen[ticket_id] + 1, upto + 1):
            self.handled.setdefault((ticket_id, sequence), instant)
        self.seen[ticket_id] = max(self.seen[ticket_id], upto)

    def run(self) -> None:
        rng, clock, desk = self.rng, self.clock, self.desk
        while clock.now() < self.end:
            clock.set(min(clock.now() + timedelta(minutes=rng.randint(1, 30)), self.end))
            instant = clock.now()
            while True:  # the worker drains what fell due
                report = desk.run_due(limit=100)
                self.reports += 1
                # The limit bounds the timers claimed, so the tickets touched; each of those
                # has every deadline that fell due handled, claimed or not.
                touched = {t.ticket_id for t in (*report.fired, *report.dropped)}
                assert len(touched) <= 100
                assert all(timer.due_at <= instant for timer in report.fired)
                for event in report.events:
                    assert (event.ticket_id, event.sequence) not in self.handled
                    self.handled[(event.ticket_id, event.sequence)] = instant
                    self.seen[event.ticket_id] = max(self.seen[event.ticket_id], event.sequence)
                if not report.fired and not report.dropped:
                    break
            while self.actions and self.actions[0][0] <= instant:  # then people act
                _, _, case, what = heapq.heappop(self.actions)
                ticket = self._act(case, what)
                if ticket is not None:
                    assert ticket.id == self.ids[case]  # nobody wrote on a closed case
                    self._account(ticket.id, ticket.sequence, instant)
        next_due = desk.next_due()
        assert next_due is None or next_due > self.end


def _check_ticket(week: _Week, ticket_id: str, counts: Counter[str]) -> None:
    history = week.desk.history(ticket_id)
    opened = history[0]
    assert opened.type == EventType.TICKET_OPENED
    channel, priority = Channel(opened.data["channel"]), Priority(opened.data["priority"])
    sla = _sla_policy(channel)
    once: set[tuple[Any, ...]] = set()
    checked: list[Event] = []
    previous_repeat: dict[tuple[str, int], datetime] = {}
    resolved_at: datetime | None = None
    for event in history:
        handled = week.handled[(ticket_id, event.sequence)]  # every event was accounted for
        assert event.at <= handled, event
        data = event.data
        if event.type == EventType.STATUS_CHANGED and data["to_category"] == "resolved":
            resolved_at = event.at
        if event.type == EventType.SLA_WARNING:
            key: tuple[Any, ...] = ("warning", data["clock"], data["cycle"], data["threshold"])
            # Not early: from the warning to the breach there is at most what it said was left.
            left = sla.calendar.between(event.at, datetime.fromisoformat(data["due_at"]))
            assert left <= timedelta(seconds=data["remaining_seconds"]) + US, event
        elif event.type == EventType.SLA_BREACHED:
            key = ("breach", data["clock"], data["cycle"])
            assert event.at >= datetime.fromisoformat(data["due_at"]), event
        elif event.type == EventType.ESCALATED:
            key = ("escalated", data["policy"], data["level"], data["repeat"])
            if data["repeat"] == 0:
                if data["name"] == "engineer":
                    assert event.at >= OFFICE.add(opened.at, 2 * H), event
                elif data["name"] == "lead":
                    target = sla.target(priority, "resolution")
                    assert sla.calendar.between(opened.at, event.at) >= target * 0.8, event
                elif data["name"] == "team lead":
                    assert (event.at, priority) == (opened.at, Priority.URGENT), event
                elif data["name"] == "manager":
                    assert event.at >= opened.at + 4 * H, event
            else:
                calendar = OFFICE if data["policy"] == "tiers" else WEEK_URGENT.calendar
                every = 2 * H if data["policy"] == "tiers" else H
                last = previous_repeat[(data["policy"], data["level"])]
                assert event.at >= calendar.add(last, every), event
            previous_repeat[(data["policy"], data["level"])] = event.at
        elif event.type == EventType.STATUS_CHANGED and data.get("reason") == AUTO_CLOSED:
            key = ("autoclose",)
            assert resolved_at is not None
            assert event.at >= WEEK_AUTO_CLOSE.due(resolved_at), event
        else:
            continue
        assert key not in once, f"{key} twice on {ticket_id}"
        once.add(key)
        checked.append(event)
        counts[key[0]] += 1
    assert [e.at for e in checked] == sorted(e.at for e in checked), ticket_id
    _check_first_response(history, sla, priority, week.end)


def _check_first_response(history: list[Event], sla: Any, priority: Priority, end: Any) -> None:
    """The first-response clock, worked out from the rules: it runs from opening until the
    first agent reply (or the case is finished), and warns and breaches exactly when due."""
    opened = history[0].at
    stop = next(
        (
            e.at
            for e in history
            if (e.type == EventType.MESSAGE_ADDED and e.data["role"] == "agent")
            or (
                e.type == EventType.STATUS_CHANGED
                and e.data["to_category"] in ("resolved", "closed")
            )
        ),
        None,
    )
    target = sla.target(priority, "first_response")
    marks = {f"warning:{p}": target * p / 100 for p in sla.warnings} | {"breach": target}
    fired = {
        (f"warning:{e.data['threshold']}" if e.type == EventType.SLA_WARNING else "breach"): e.at
        for e in history
        if e.type in (EventType.SLA_WARNING, EventType.SLA_BREACHED)
        and e.data["clock"] == "first_response"
    }
    for mark, after in marks.items():
        due = sla.calendar.add(opened, after)
        expected = due <= end if stop is None else stop >= due
        assert (mark in fired) == expected, (mark, due, stop)
        if expected:
            assert fired[mark] == due


@pytest.mark.slow
def test_a_week_of_a_busy_desk_fires_every_deadline_once_on_time_and_in_order() -> None:
    started = time.perf_counter()
    week = _Week(seed=20260302, tickets=2_000)
    week.run()
    counts: Counter[str] = Counter()
    for ticket_id in week.ids.values():
        _check_ticket(week, ticket_id, counts)

    # The week really exercised every kind of deadline, many times over.
    assert len(week.ids) == 2_000
    assert counts["warning"] > 2_000
    assert counts["breach"] > 500
    assert counts["escalated"] > 1_000
    assert counts["autoclose"] > 200
    assert time.perf_counter() - started < 60


def test_a_command_that_leaves_the_clocks_be_keeps_the_deadlines_as_stored() -> None:
    desk, clock = scenario_desk(monday(9))
    ticket = open_case(desk)
    with desk.store.transaction() as uow:
        stored = uow.timers(ticket.id)
    assert stored
    assert ticket.next_deadline == min(timer.due_at for timer in stored)
    clock.set(monday(10))
    noted = desk.add_note(ticket.id, "Checked the login logs: nothing odd.", by="agent_li")
    assigned = desk.assign(ticket.id, "agent_li", by="lead_zhao")
    assert noted.sla is ticket.sla  # the clocks did not move
    assert assigned.sla is ticket.sla
    assert noted.next_deadline == assigned.next_deadline == ticket.next_deadline
    with desk.store.transaction() as uow:
        assert uow.timers(ticket.id) == stored
    # Once the earliest deadline has come, the same kind of command handles it first.
    clock.set(ticket.next_deadline)
    desk.add_note(ticket.id, "Still looking.", by="agent_li")
    assert [e.type for e in history_of(desk, ticket.id, EventType.SLA_WARNING)] == [
        EventType.SLA_WARNING
    ]


class Nudge(DeskExtension):
    """Tells the team lead once, an hour after opening: a state flag and a notification."""

    timer_prefix = "nudge"

    def timers(self, change: Change) -> list[Timer]:
        ticket = change.ticket
        if ticket.state.get("nudged"):
            return []
        return [Timer(ticket.id, "nudge:once", ticket.created_at + timedelta(hours=1), "nudge")]

    def fire(self, change: Change, timer: Timer) -> None:
        change.set_state(nudged=True)
        change.notify("nudge", [Recipient(RecipientRole.TEAM_LEAD, "lead")], "Nudge", "Look")


def test_run_due_stores_a_deadline_whose_handling_records_no_event() -> None:
    desk, clock = scenario_desk(
        datetime(2026, 3, 2, 9, tzinfo=timezone.utc), sla=[], extensions=[Nudge()]
    )
    ticket = desk.open_ticket(
        subject="VPN down", body="...", customer=Customer(id="c-1"), channel="email"
    )
    clock.advance(hours=2)
    assert [timer.key for timer in desk.run_due().fired] == ["nudge:once"]
    assert desk.get_ticket(ticket.id).state.get("nudged") is True
    with desk.store.transaction() as uow:
        pending = uow.list_outbox(OutboxStatus.PENDING)
    assert [entry.notification.kind for entry in pending] == ["nudge"]
