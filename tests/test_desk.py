"""The Desk: stories of tickets from first message to closing, told through its commands.

Each story drives a desk on a memory store with a manual clock (Monday 2 March 2026, 09:00
UTC) and checks what a support centre would see: statuses, the audit history, SLA clocks,
and that a refused command leaves no trace.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from supportflow import (
    Channel,
    ConcurrencyConflict,
    Customer,
    Desk,
    Event,
    Guard,
    InvalidTransition,
    ManualClock,
    Priority,
    Recipient,
    Role,
    SlaClockState,
    StatusCategory,
    SupportflowError,
    Ticket,
    TicketNotFound,
    Timer,
    Transition,
    ValidationError,
    Workflow,
    default_workflow,
)
from supportflow.clock import to_utc
from supportflow.extensions import Change, DeskExtension
from supportflow.storage import MemoryStore, OutboxStatus
from supportflow.storage.sqlite import SqliteStore
from supportflow.testing import scenario_desk

WANG = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})


@pytest.fixture
def desk_clock() -> tuple[Desk, ManualClock]:
    return scenario_desk()


@pytest.fixture
def desk(desk_clock: tuple[Desk, ManualClock]) -> Desk:
    return desk_clock[0]


@pytest.fixture
def clock(desk_clock: tuple[Desk, ManualClock]) -> ManualClock:
    return desk_clock[1]


def open_case(desk: Desk, subject: str = "Password reset mail never arrives", **kw: Any) -> Ticket:
    kw.setdefault("body", "I asked for a reset link three times and got nothing.")
    kw.setdefault("customer", WANG)
    kw.setdefault("channel", "email")
    return desk.open_ticket(subject=subject, **kw)


def types(desk: Desk, ticket_id: str) -> list[str]:
    return [event.type for event in desk.history(ticket_id)]


def last(desk: Desk, ticket_id: str, event_type: str) -> Event:
    return [e for e in desk.history(ticket_id) if e.type == event_type][-1]


def timers(desk: Desk, ticket_id: str) -> list[Timer]:
    with desk.store.transaction() as uow:
        return uow.timers(ticket_id)


def footprint(desk: Desk, ticket_id: str) -> tuple[Ticket, list[Event], list[Timer]]:
    """Everything stored about a ticket: to prove a refused command changed nothing."""
    return desk.get_ticket(ticket_id), desk.history(ticket_id), timers(desk, ticket_id)


def clock_state(desk: Desk, ticket_id: str, name: str) -> SlaClockState:
    return {reading.name: reading.state for reading in desk.sla(ticket_id)}[name]


# -- opening a case -----------------------------------------------------------------------------
def test_tickets_are_numbered_one_two_three_in_order_of_arrival(desk: Desk) -> None:
    numbers = [open_case(desk, f"Case {n}").number for n in range(3)]
    assert numbers == [1, 2, 3]
    assert [t.number for t in desk.tickets()] == [1, 2, 3]


def test_a_new_case_is_recorded_with_its_sla_and_starts_at_version_one(desk: Desk) -> None:
    ticket = open_case(desk, priority="high", tags=["billing"], fields={"plan": "pro"})
    assert ticket.status == "new"
    assert ticket.version == 1
    assert ticket.priority is Priority.HIGH
    assert ticket.priority_explicit
    assert ticket.tags == {"billing"}
    assert ticket.fields == {"plan": "pro"}
    assert ticket.description.startswith("I asked")
    assert types(desk, ticket.id) == ["TicketOpened", "SlaPolicyApplied"]
    opened = desk.history(ticket.id)[0]
    assert opened.actor == "c-17"
    assert opened.data["number"] == 1
    assert opened.data["customer_id"] == "c-17"
    assert ticket.sequence == 2
    assert clock_state(desk, ticket.id, "first_response") is SlaClockState.RUNNING
    assert desk.get_ticket(ticket.id) == ticket


def test_a_case_opened_without_priority_is_normal_and_not_explicit(desk: Desk) -> None:
    ticket = open_case(desk)
    assert ticket.priority is Priority.NORMAL
    assert not ticket.priority_explicit


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("subject", {"subject": ""}),
        ("subject", {"subject": "   "}),
        ("subject", {"subject": 42}),
        ("body", {"body": None}),
        ("customer", {"customer": "c-17"}),
        ("channel", {"channel": "fax"}),
        ("priority", {"priority": "asap"}),
        ("tags", {"tags": None}),
        ("tags", {"tags": [["vip"]]}),
        ("tags", {"tags": [7]}),
        ("fields", {"fields": 7}),
        ("fields", {"fields": ["plan"]}),
        ("fields", {"fields": {1: "gold"}}),
        ("category", {"category": ["billing"]}),
        ("assignee", {"assignee": ["agent_li"]}),
        ("group", {"group": 3}),
        ("kind", {"kind": ""}),
        ("impact", {"impact": 2}),
        ("fields.score", {"fields": {"score": float("nan")}}),
        ("fields.seen", {"fields": {"seen": {1, 2}}}),
        ("fields.sizes", {"fields": {"sizes": {38: "in stock"}}}),
        ("fields.limits[1]", {"fields": {"limits": [1, float("inf")]}}),
        ("fields.order.placed", {"fields": {"order": {"placed": datetime(2026, 3, 2, 9)}}}),
    ],
)
def test_opening_a_malformed_case_names_the_field_and_stores_nothing(
    desk: Desk, field: str, overrides: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {
        "subject": "VPN down",
        "body": "Since 9:00",
        "customer": WANG,
        "channel": "email",
        **overrides,
    }
    with pytest.raises(ValidationError) as refused:
        desk.open_ticket(**arguments)
    assert refused.value.field == field
    assert desk.tickets() == []


def refused_on_a_case(desk: Desk, command: Any) -> ValidationError:
    """The ``ValidationError`` that ``command(ticket_id)`` raises on a new case, which it must
    leave as it was."""
    ticket = open_case(desk)
    before = footprint(desk, ticket.id)
    with pytest.raises(ValidationError) as refused:
        command(ticket.id)
    assert footprint(desk, ticket.id) == before
    return refused.value


_COMMANDS_ON_A_TICKET: dict[str, Any] = {
    "get_ticket": lambda desk, t: desk.get_ticket(t),
    "history": lambda desk, t: desk.history(t),
    "reply": lambda desk, t: desk.reply(t, "Hello", by="agent_li"),
    "add_note": lambda desk, t: desk.add_note(t, "Checked the logs", by="agent_li"),
    "assign": lambda desk, t: desk.assign(t, "agent_li", by="lead_zhao"),
    "fire": lambda desk, t: desk.fire(t, "triage", by="agent_li"),
    "resolve": lambda desk, t: desk.resolve(t, by="agent_li"),
    "close": lambda desk, t: desk.close(t, by="agent_li"),
    "cancel": lambda desk, t: desk.cancel(t, by="agent_li", reason="spam"),
    "set_priority": lambda desk, t: desk.set_priority(t, "high", by="agent_li"),
    "update": lambda desk, t: desk.update(t, by="agent_li", category="billing"),
    "acknowledge": lambda desk, t: desk.acknowledge(t, by="agent_li"),
    "contact_dropped": lambda desk, t: desk.contact_dropped(t),
    "execute": lambda desk, t: desk.execute(t, lambda change: None),
}


@pytest.mark.parametrize("command", sorted(_COMMANDS_ON_A_TICKET))
@pytest.mark.parametrize("ticket_id", [None, 7, "", "  ", ["t-1"], b"t-1"])
def test_a_command_given_no_ticket_id_names_it_and_changes_nothing(
    desk: Desk, command: str, ticket_id: object
) -> None:
    # ``None`` in particular must not reach the path that opens a new ticket.
    refused = refused_on_a_case(desk, lambda case: _COMMANDS_ON_A_TICKET[command](desk, ticket_id))
    assert (refused.field, refused.value) == ("ticket_id", ticket_id)
    assert len(desk.tickets()) == 1


@pytest.mark.parametrize(
    ("field", "query"),
    [
        ("limit", {"limit": 1.5}),
        ("limit", {"limit": True}),
        ("limit", {"limit": -1}),
        ("status", {"status": 7}),
        ("assignee", {"assignee": ["agent_li"]}),
        ("tag", {"tag": ["vip"]}),
    ],
)
def test_a_malformed_listing_filter_is_named(desk: Desk, field: str, query: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        desk.tickets(**query)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("store", {"store": "memory"}),
        ("clock", {"clock": "system"}),
        ("workflow", {"workflow": {"new": "active"}}),
        ("sla", {"sla": 7}),
        ("sla", {"sla": ["standard"]}),
        ("escalation", {"escalation": [None]}),
        ("extensions", {"extensions": [object()]}),
        ("verify_channels", {"verify_channels": None}),
        ("verify_channels", {"verify_channels": ["fax"]}),
        ("max_attempts", {"max_attempts": 0}),
        ("max_attempts", {"max_attempts": None}),
        ("team_lead", {"team_lead": ""}),
        ("manager", {"manager": None}),
        ("timer_lease", {"timer_lease": 300}),
        ("id_factory", {"id_factory": "uuid4"}),
        ("worker_id", {"worker_id": 7}),
        ("idle_chat", {"idle_chat": object()}),
        ("auto_close", {"auto_close": 5}),
        ("callbacks", {"callbacks": "daily"}),
        ("triage", {"triage": object()}),
        ("reply_policy", {"reply_policy": 5}),
        ("notify_customers", {"notify_customers": "no"}),
        ("notifiers", {"notifiers": [1]}),
        ("notifiers", {"notifiers": {"agent": 5}}),
        ("dispatcher_options", {"dispatcher_options": {"bogus": 1}}),
    ],
)
def test_a_desk_built_wrongly_names_the_option(field: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        Desk(**options)
    assert refused.value.field == field


def test_a_desk_takes_one_channel_to_verify_as_a_string() -> None:
    assert Desk(verify_channels="phone").rules.verify_channels == {Channel.PHONE}


def test_an_empty_body_is_a_valid_first_message(desk: Desk) -> None:
    assert open_case(desk, body="").description == ""


def test_a_customer_without_an_id_is_refused(desk: Desk) -> None:
    with pytest.raises(ValidationError) as refused:
        open_case(desk, customer=Customer(id=""))
    assert refused.value.field == "customer"


def test_a_single_tag_given_as_a_string_stays_one_tag(desk: Desk) -> None:
    ticket = open_case(desk, tags="vip")
    assert ticket.tags == {"vip"}
    assert desk.update(ticket.id, by="agent_li", add_tags="billing").tags == {"vip", "billing"}


def test_naive_instants_are_refused_wherever_a_time_is_given(desk: Desk) -> None:
    ticket = open_case(desk)
    naive = datetime(2026, 3, 2, 12, 0)
    with pytest.raises(ValidationError) as refused:
        desk.sla(ticket.id, at=naive)
    assert refused.value.field == "at"
    with pytest.raises(ValidationError) as refused:
        desk.run_due(now=naive)
    assert refused.value.field == "now"
    with pytest.raises(ValidationError) as refused:
        desk.tickets(created_from=naive)
    assert refused.value.field == "created_from"
    with pytest.raises(ValidationError) as refused:
        ManualClock(naive)
    assert refused.value.field == "start"


def test_sla_can_be_read_at_a_future_instant(desk: Desk) -> None:
    ticket = open_case(desk)
    later = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
    first = {r.name: r for r in desk.sla(ticket.id, at=later)}["first_response"]
    assert first.elapsed == timedelta(hours=1)
    assert first.remaining == timedelta(hours=3)


# -- replies -------------------------------------------------------------------------------------
def test_an_agent_reply_starts_work_and_meets_the_first_response(
    desk: Desk, clock: ManualClock
) -> None:
    ticket = open_case(desk)
    clock.advance(minutes=10)
    replied = desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")
    assert replied.status == "in_progress"
    assert replied.version == 2
    assert types(desk, ticket.id)[2:] == ["MessageAdded", "StatusChanged", "SlaMet"]
    changed = last(desk, ticket.id, "StatusChanged")
    assert changed.data["trigger"] == "start"
    assert changed.data["automatic"] == "agent_reply"
    assert changed.actor == "agent_li"
    met = last(desk, ticket.id, "SlaMet")
    assert met.data["clock"] == "first_response"
    assert met.data["elapsed_seconds"] == 600
    assert replied.public_messages[-1].body == "Could you look in your spam folder?"


def test_customer_reply_brings_waiting_ticket_back_to_work(desk: Desk, clock: ManualClock) -> None:
    ticket = open_case(desk)
    desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")
    waiting = desk.fire(ticket.id, "wait_on_customer", by="agent_li")
    assert waiting.status == "waiting_on_customer"
    assert clock_state(desk, ticket.id, "resolution") is SlaClockState.PAUSED
    clock.advance(hours=2)
    back = desk.reply(ticket.id, "Found it, thanks!", by="c-17", role="customer")
    assert back.status == "in_progress"
    changed = last(desk, ticket.id, "StatusChanged")
    assert (changed.data["trigger"], changed.data["automatic"]) == (
        "customer_replied",
        "customer_reply",
    )
    assert clock_state(desk, ticket.id, "resolution") is SlaClockState.RUNNING
    resolution = {r.name: r for r in desk.sla(ticket.id)}["resolution"]
    assert resolution.elapsed == timedelta(0)  # the two waiting hours did not count


def test_customer_reply_on_a_resolved_ticket_reopens_it(desk: Desk) -> None:
    ticket = open_case(desk)
    desk.reply(ticket.id, "Try again now", by="agent_li")
    desk.resolve(ticket.id, by="agent_li", resolution="Mail queue flushed")
    reopened = desk.reply(ticket.id, "Still nothing arrives", by="c-17", role="customer")
    assert reopened.status == "in_progress"
    changed = last(desk, ticket.id, "StatusChanged")
    assert changed.data["trigger"] == "reopen"
    assert changed.data["from"] == "resolved"
    assert "autoclose" not in {timer.key for timer in timers(desk, ticket.id)}


def test_customer_writing_on_a_closed_ticket_opens_a_new_ticket_that_follows_it(
    desk: Desk,
) -> None:
    old = open_case(desk)
    desk.reply(old.id, "Fixed", by="agent_li")
    desk.resolve(old.id, by="agent_li")
    closed = desk.close(old.id, by="c-17")
    follow_up = desk.reply(old.id, "It broke again", by="c-17", role="customer")
    assert follow_up.id != old.id
    assert follow_up.number == 2
    assert follow_up.status == "new"
    assert follow_up.subject == old.subject
    assert follow_up.description == "It broke again"
    assert follow_up.customer == old.customer
    assert follow_up.linked("follows") == (old.id,)
    assert desk.get_ticket(follow_up.id) == follow_up
    after = desk.get_ticket(old.id)
    assert after.status == "closed"
    assert after.linked("followed_by") == (follow_up.id,)
    assert after.messages == closed.messages  # the message went to the new ticket only
    assert types(desk, old.id)[-1] == "TicketLinked"
    assert types(desk, follow_up.id)[:2] == ["TicketOpened", "SlaPolicyApplied"]
    assert "TicketLinked" in types(desk, follow_up.id)


def test_an_agent_may_still_write_on_a_closed_ticket_without_reopening_it(desk: Desk) -> None:
    ticket = open_case(desk)
    desk.resolve(ticket.id, by="agent_li")
    desk.close(ticket.id, by="agent_li")
    after = desk.reply(ticket.id, "For the record: fixed in 2.3", by="agent_li")
    assert after.id == ticket.id
    assert after.status == "closed"


def test_an_internal_note_is_private_and_answers_nobody(desk: Desk) -> None:
    ticket = open_case(desk)
    noted = desk.add_note(ticket.id, "Customer is on the legacy mail relay", by="agent_li")
    assert noted.status == "new"
    note = noted.messages[-1]
    assert note.public is False
    assert note.author == "agent_li"
    assert noted.public_messages == ()
    added = last(desk, ticket.id, "NoteAdded")
    assert added.data == {"message_id": note.id, "author": "agent_li"}
    assert "MessageAdded" not in types(desk, ticket.id)
    assert clock_state(desk, ticket.id, "first_response") is SlaClockState.RUNNING


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (lambda d, t: d.reply(t, "", by="agent_li"), "body"),
        (lambda d, t: d.reply(t, "Hi", by=""), "by"),
        (lambda d, t: d.reply(t, "Hi", by="agent_li", role="boss"), "role"),
        (lambda d, t: d.add_note(t, "  ", by="agent_li"), "body"),
        (lambda d, t: d.assign(t, by="lead"), "assignee"),
        (lambda d, t: d.cancel(t, by="agent_li", reason=""), "reason"),
        (lambda d, t: d.set_priority(t, "asap", by="lead"), "priority"),
        (lambda d, t: d.verify_customer(t, by="agent_li", method="vibes"), "method"),
        (lambda d, t: d.link(t, t, by="agent_li"), "other_id"),
        (lambda d, t: d.fire(t, "triage", by=None), "by"),
        (lambda d, t: d.assign(t, ["agent_li"], by="lead_zhao"), "assignee"),
        (lambda d, t: d.assign(t, group=7, by="lead_zhao"), "group"),
        (lambda d, t: d.fire(t, ["triage"], by="agent_li"), "trigger"),
        (lambda d, t: d.resolve(t, by="agent_li", resolution=["spam"]), "resolution"),
        (lambda d, t: d.close(t, by="agent_li", reason=1), "reason"),
        (lambda d, t: d.reply(t, "Hi", by="a", override_role=2), "override_role"),
        (lambda d, t: d.update(t, by="agent_li", category=7), "category"),
        (lambda d, t: d.update(t, by="agent_li", add_tags=None), "add_tags"),
        (lambda d, t: d.update(t, by="agent_li", remove_tags=[1]), "remove_tags"),
        (lambda d, t: d.update(t, by="agent_li", fields=["plan"]), "fields"),
        (lambda d, t: d.update(t, by="agent_li", fields={"plan": {1: "pro"}}), "fields.plan"),
        (lambda d, t: d.fire(t, "triage", by="agent_li", score=float("nan")), "score"),
        (lambda d, t: d.fire(t, "triage", by="agent_li", seen={1, 2}), "seen"),
        (lambda d, t: d.fire(t, "triage", by="agent_li", notes={"a": {2: "b"}}), "notes.a"),
        (lambda d, t: d.link(t, ["t-2"], by="agent_li"), "other_id"),
        (lambda d, t: d.link(t, "t-2", kind=None, by="agent_li"), "kind"),
        (lambda d, t: d.callback_done(t, by="agent_li", outcome=None), "outcome"),
        (lambda d, t: d.execute(t, "close it"), "action"),
    ],
)
def test_malformed_commands_name_the_field(desk: Desk, command: Any, field: str) -> None:
    assert refused_on_a_case(desk, lambda case: command(desk, case)).field == field


def test_custom_fields_and_trigger_data_are_kept_as_every_store_reads_them_back(
    desk: Desk,
) -> None:
    sizes = [38, 39]
    ticket = open_case(desk, fields={"sizes": sizes, "pair": (1, 2), "plan": Priority.HIGH})
    sizes.append(40)  # the caller's list is theirs: the ticket keeps its own copy
    assert ticket.fields == {"sizes": [38, 39], "pair": [1, 2], "plan": "high"}
    assert type(ticket.fields["plan"]) is str
    assert desk.get_ticket(ticket.id).fields == ticket.fields
    desk.fire(ticket.id, "triage", by="agent_li", checked=("vpn", "dns"))
    assert last(desk, ticket.id, "StatusChanged").data["checked"] == ["vpn", "dns"]


def test_a_negative_zero_is_kept_as_the_zero_every_store_reads_back(desk: Desk) -> None:
    # PostgreSQL's jsonb has no -0.0: a store that cached what it wrote would disagree.
    ticket = open_case(desk, fields={"delta": -0.0, "deltas": [{"d": -0.0}]})
    desk.fire(ticket.id, "triage", by="agent_li", delta=-0.0)
    read = [
        ticket.fields["delta"],
        ticket.fields["deltas"][0]["d"],
        last(desk, ticket.id, "StatusChanged").data["delta"],
    ]
    assert [math.copysign(1.0, value) for value in read] == [1.0, 1.0, 1.0]


# -- assignment and triggers ---------------------------------------------------------------------
def test_assigning_a_new_ticket_opens_it(desk: Desk) -> None:
    ticket = open_case(desk)
    assigned = desk.assign(ticket.id, "agent_li", group="tier1", by="lead_zhao")
    assert (assigned.status, assigned.assignee, assigned.group) == ("open", "agent_li", "tier1")
    event = last(desk, ticket.id, "Assigned")
    assert event.actor == "lead_zhao"
    assert event.data == {
        "assignee": "agent_li",
        "group": "tier1",
        "previous_assignee": None,
        "previous_group": None,
    }
    changed = last(desk, ticket.id, "StatusChanged")
    assert (changed.data["trigger"], changed.data["automatic"]) == ("triage", "assign")


def test_a_case_opened_already_assigned_is_open_at_once(desk: Desk) -> None:
    assert open_case(desk, assignee="agent_li").status == "open"


def test_reassigning_keeps_the_status_and_remembers_the_previous_agent(desk: Desk) -> None:
    ticket = open_case(desk)
    desk.assign(ticket.id, "agent_li", by="lead")
    desk.reply(ticket.id, "Looking", by="agent_li")
    moved = desk.assign(ticket.id, group="tier2", by="agent_li")
    assert (moved.status, moved.assignee, moved.group) == ("in_progress", "agent_li", "tier2")
    assert last(desk, ticket.id, "Assigned").data["previous_group"] is None


def test_assigning_the_same_agent_again_records_nothing(desk: Desk) -> None:
    ticket = open_case(desk)
    assigned = desk.assign(ticket.id, "agent_li", by="lead")
    again = desk.assign(ticket.id, "agent_li", by="lead")
    assert again == assigned
    assert desk.get_ticket(ticket.id).version == assigned.version


def test_an_unknown_trigger_is_refused_naming_the_allowed_ones(desk: Desk) -> None:
    ticket = open_case(desk)
    with pytest.raises(InvalidTransition) as refused:
        desk.fire(ticket.id, "escalate_to_mars", by="agent_li")
    assert refused.value.ticket_id == ticket.id
    assert refused.value.allowed == ("cancel", "resolve", "start", "triage")


def test_fire_records_extra_data_with_the_status_change(desk: Desk) -> None:
    ticket = open_case(desk, assignee="agent_li")
    desk.fire(ticket.id, "hold", by="agent_li", waiting_for="R&D")
    changed = last(desk, ticket.id, "StatusChanged")
    assert changed.data["waiting_for"] == "R&D"
    assert (changed.data["from_category"], changed.data["to_category"]) == ("active", "waiting")


def test_resolve_reopen_resolve_and_close(desk: Desk, clock: ManualClock) -> None:
    ticket = open_case(desk)
    desk.reply(ticket.id, "Try now", by="agent_li")
    resolved = desk.resolve(ticket.id, by="agent_li", resolution="Mail queue flushed")
    assert resolved.status == "resolved"
    assert resolved.resolution == "Mail queue flushed"
    assert last(desk, ticket.id, "StatusChanged").data["resolution"] == "Mail queue flushed"
    assert clock_state(desk, ticket.id, "resolution") is SlaClockState.MET
    assert "autoclose" in {timer.key for timer in timers(desk, ticket.id)}
    clock.advance(hours=1)
    reopened = desk.reopen(ticket.id, by="agent_li", reason="customer says no")
    assert reopened.status == "in_progress"
    assert last(desk, ticket.id, "StatusChanged").data["reason"] == "customer says no"
    assert clock_state(desk, ticket.id, "resolution") is SlaClockState.RUNNING
    desk.resolve(ticket.id, by="agent_li")
    assert desk.get_ticket(ticket.id).resolution == "Mail queue flushed"  # kept
    closed = desk.close(ticket.id, by="c-17", reason="customer confirmed")
    assert closed.status == "closed"
    assert timers(desk, ticket.id) == []


def test_a_resolved_ticket_nobody_answers_closes_by_itself_after_a_week(
    desk: Desk, clock: ManualClock
) -> None:
    ticket = open_case(desk)
    desk.resolve(ticket.id, by="agent_li")
    clock.advance(days=7)
    report = desk.run_due()
    assert [timer.key for timer in report.fired] == ["autoclose"]
    closed = desk.get_ticket(ticket.id)
    assert closed.status == "closed"
    assert last(desk, ticket.id, "StatusChanged").actor == "system"


def test_only_a_resolved_ticket_can_be_closed(desk: Desk) -> None:
    ticket = open_case(desk)
    with pytest.raises(InvalidTransition, match="'close'"):
        desk.close(ticket.id, by="agent_li")


@pytest.mark.parametrize("assigned", [False, True])
def test_spam_is_cancelled_while_new_or_open(desk: Desk, assigned: bool) -> None:
    ticket = open_case(desk, subject="WIN A PRIZE")
    if assigned:
        desk.assign(ticket.id, "agent_li", by="lead")
    cancelled = desk.cancel(ticket.id, by="agent_li", reason="spam")
    assert cancelled.status == "cancelled"
    assert last(desk, ticket.id, "StatusChanged").data["reason"] == "spam"
    assert desk.workflow.category(cancelled.status) is StatusCategory.CLOSED
    assert timers(desk, ticket.id) == []


def test_a_ticket_in_work_can_no_longer_be_cancelled(desk: Desk) -> None:
    ticket = open_case(desk)
    desk.reply(ticket.id, "On it", by="agent_li")
    with pytest.raises(InvalidTransition) as refused:
        desk.cancel(ticket.id, by="agent_li", reason="duplicate")
    assert refused.value.status == "in_progress"
    assert "cancel" not in refused.value.allowed


# -- priority, classification, links -----------------------------------------------------------
def test_raising_the_priority_is_recorded_as_explicit_and_retargets_the_sla(desk: Desk) -> None:
    ticket = open_case(desk)
    raised = desk.set_priority(ticket.id, "urgent", by="lead_zhao", reason="whole office down")
    assert raised.priority is Priority.URGENT
    assert raised.priority_explicit
    changed = last(desk, ticket.id, "PriorityChanged")
    assert changed.actor == "lead_zhao"
    assert changed.data == {
        "from": "normal",
        "to": "urgent",
        "reason": "whole office down",
        "explicit": True,
    }
    applied = last(desk, ticket.id, "SlaPolicyApplied")
    assert applied.data["priority"] == "urgent"
    assert applied.data["targets"]["first_response"] == 30 * 60


def test_setting_an_explicit_priority_twice_records_it_once(desk: Desk) -> None:
    ticket = open_case(desk)
    desk.set_priority(ticket.id, Priority.HIGH, by="lead")
    version = desk.get_ticket(ticket.id).version
    desk.set_priority(ticket.id, "high", by="lead")
    assert desk.get_ticket(ticket.id).version == version
    assert types(desk, ticket.id).count("PriorityChanged") == 1


def test_an_update_records_each_changed_field_old_and_new(desk: Desk) -> None:
    ticket = open_case(desk, tags=["mail"])
    updated = desk.update(
        ticket.id,
        by="agent_li",
        category="account",
        kind="incident",
        add_tags=["spam-filter"],
        remove_tags=["mail"],
        fields={"mailbox": "wang.fang@example.com"},
        impact="single user",
    )
    assert updated.category == "account"
    assert updated.tags == {"spam-filter"}
    assert updated.fields == {"mailbox": "wang.fang@example.com"}
    event = last(desk, ticket.id, "TicketUpdated")
    assert event.actor == "agent_li"
    assert event.data == {
        "changes": {
            "category": [None, "account"],
            "kind": ["request", "incident"],
            "impact": [None, "single user"],
            "tags": [["mail"], ["spam-filter"]],
            "fields.mailbox": [None, "wang.fang@example.com"],
        }
    }


def test_an_update_that_changes_nothing_records_nothing(desk: Desk) -> None:
    ticket = open_case(desk, tags=["mail"], category="account")
    same = desk.update(ticket.id, by="agent_li", category="account", add_tags=["mail"])
    assert same.version == ticket.version
    assert "TicketUpdated" not in types(desk, ticket.id)


@pytest.mark.parametrize(
    ("kind", "reverse"), [("related", "related"), ("parent", "child"), ("child", "parent")]
)
def test_a_link_is_recorded_on_both_tickets(desk: Desk, kind: str, reverse: str) -> None:
    incident = open_case(desk, "Mail relay down")
    report = open_case(desk, "No mail since noon")
    linked = desk.link(report.id, incident.id, kind=kind, by="lead")
    assert linked.linked(kind) == (incident.id,)
    assert desk.get_ticket(incident.id).linked(reverse) == (report.id,)
    assert last(desk, report.id, "TicketLinked").data == {"kind": kind, "ticket_id": incident.id}
    assert last(desk, incident.id, "TicketLinked").data == {
        "kind": reverse,
        "ticket_id": report.id,
    }


def test_linking_twice_records_the_link_once(desk: Desk) -> None:
    a, b = open_case(desk, "A"), open_case(desk, "B")
    desk.link(a.id, b.id, by="lead")
    desk.link(a.id, b.id, by="lead")
    assert types(desk, a.id).count("TicketLinked") == 1
    assert types(desk, b.id).count("TicketLinked") == 1


def test_linking_a_ticket_as_followed_by_records_follows_on_the_other(desk: Desk) -> None:
    old, new = open_case(desk, "Old"), open_case(desk, "New")
    desk.link(old.id, new.id, kind="followed_by", by="lead")
    assert desk.get_ticket(new.id).linked("follows") == (old.id,)


def test_a_change_can_drop_custom_fields(desk: Desk) -> None:
    ticket = open_case(desk, fields={"order_no": "A-1", "shop": "Pudong", "note": None})
    desk.execute(
        ticket.id,
        lambda change: change.update(
            "system", {}, frozenset(), frozenset(), {"extra": 1},
            drop_fields=["shop", "note", "extra", "never_set"],
        ),
    )  # fmt: skip
    assert dict(desk.get_ticket(ticket.id).fields) == {"order_no": "A-1"}
    last = desk.history(ticket.id)[-1]
    assert (last.type, last.actor) == ("TicketUpdated", "system")
    # A dropped field's after is None; a field given and dropped at once changed nothing.
    assert last.data["changes"] == {"fields.shop": ["Pudong", None], "fields.note": [None, None]}
    before = types(desk, ticket.id)
    desk.execute(
        ticket.id,
        lambda change: change.update(
            "system", {}, frozenset(), frozenset(), {}, drop_fields=["never_set"]
        ),
    )
    assert types(desk, ticket.id) == before  # nothing to drop: nothing recorded


def test_linking_to_a_missing_ticket_changes_nothing(desk: Desk) -> None:
    ticket = open_case(desk)
    before = footprint(desk, ticket.id)
    with pytest.raises(TicketNotFound):
        desk.link(ticket.id, "no-such-ticket", by="lead")
    assert footprint(desk, ticket.id) == before


# -- reading -------------------------------------------------------------------------------------
@pytest.fixture
def busy_desk(desk: Desk) -> dict[str, Ticket]:
    """Four cases in four situations."""
    fresh = open_case(desk, "Fresh", tags=["vip"])
    working = open_case(desk, "Working", channel="phone")
    desk.assign(working.id, "agent_li", by="lead")
    desk.reply(working.id, "On it", by="agent_li")
    waiting = open_case(desk, "Waiting", tags=["vip"])
    desk.assign(waiting.id, "agent_wu", by="lead")
    desk.fire(waiting.id, "wait_on_customer", by="agent_wu")
    held = open_case(desk, "Held")
    desk.assign(held.id, "agent_li", by="lead")
    desk.fire(held.id, "hold", by="agent_li")
    return {"fresh": fresh, "working": working, "waiting": waiting, "held": held}


def subjects(tickets: list[Ticket]) -> list[str]:
    return [t.subject for t in tickets]


def test_tickets_are_listed_by_status_category_assignee_tag_and_limit(
    desk: Desk, busy_desk: dict[str, Ticket]
) -> None:
    assert subjects(desk.tickets()) == ["Fresh", "Working", "Waiting", "Held"]
    assert subjects(desk.tickets(status="in_progress")) == ["Working"]
    assert subjects(desk.tickets(status=["new", "on_hold"])) == ["Fresh", "Held"]
    assert subjects(desk.tickets(category="waiting")) == ["Waiting", "Held"]
    assert subjects(desk.tickets(category=StatusCategory.NEW)) == ["Fresh"]
    assert subjects(desk.tickets(status="new", category="waiting")) == []
    assert subjects(desk.tickets(assignee="agent_li")) == ["Working", "Held"]
    assert subjects(desk.tickets(tag="vip")) == ["Fresh", "Waiting"]
    assert subjects(desk.tickets(channel="phone")) == ["Working"]
    assert subjects(desk.tickets(customer_id="c-17", limit=2)) == ["Fresh", "Working"]
    assert subjects(desk.tickets(category="waiting", assignee="agent_li")) == ["Held"]
    assert desk.tickets(limit=0) == []


def test_listing_an_unknown_status_or_category_names_the_field(
    desk: Desk, busy_desk: dict[str, Ticket]
) -> None:
    with pytest.raises(ValidationError) as refused:
        desk.tickets(status="pending")
    assert refused.value.field == "status"
    with pytest.raises(ValidationError) as refused:
        desk.tickets(category="sleeping")
    assert refused.value.field == "category"


def test_a_negative_listing_limit_is_refused(desk: Desk, busy_desk: dict[str, Ticket]) -> None:
    with pytest.raises(ValidationError) as refused:
        desk.tickets(limit=-1)
    assert refused.value.field == "limit"


def test_history_is_the_audit_trail_in_order_without_gaps(desk: Desk, clock: ManualClock) -> None:
    ticket = open_case(desk)
    desk.assign(ticket.id, "agent_li", by="lead")
    clock.advance(minutes=5)
    desk.reply(ticket.id, "Try now", by="agent_li")
    desk.add_note(ticket.id, "relay restarted", by="agent_li")
    desk.resolve(ticket.id, by="agent_li")
    history = desk.history(ticket.id)
    assert [e.type for e in history] == [
        "TicketOpened",
        "SlaPolicyApplied",
        "Assigned",
        "StatusChanged",
        "MessageAdded",
        "StatusChanged",
        "SlaMet",
        "NoteAdded",
        "StatusChanged",
        "SlaMet",
    ]
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))
    assert all(e.ticket_id == ticket.id for e in history)
    assert [e.at for e in history] == sorted(e.at for e in history)
    current = desk.get_ticket(ticket.id)
    assert current.sequence == len(history)
    assert current.version == 5  # open, assign, reply, note, resolve


@pytest.mark.parametrize(
    "command",
    [
        lambda d: d.get_ticket("t-missing"),
        lambda d: d.history("t-missing"),
        lambda d: d.reply("t-missing", "Hello", by="agent_li"),
        lambda d: d.fire("t-missing", "triage", by="agent_li"),
        lambda d: d.sla("t-missing"),
    ],
)
def test_a_missing_ticket_is_ticket_not_found(desk: Desk, command: Any) -> None:
    with pytest.raises(TicketNotFound) as refused:
        command(desk)
    assert refused.value.ticket_id == "t-missing"
    assert isinstance(refused.value, LookupError)


# -- identity verification -----------------------------------------------------------------------
@pytest.fixture
def phone_desk() -> Desk:
    desk, _ = scenario_desk(verify_channels=["phone"])
    return desk


def phone_call(desk: Desk) -> Ticket:
    return open_case(desk, "Change my bank account", channel="phone")


@pytest.mark.parametrize(
    "command",
    [
        lambda d, t: d.fire(t, "triage", by="agent_li"),
        lambda d, t: d.fire(t, "start", by="agent_li"),
        lambda d, t: d.resolve(t, by="agent_li"),
    ],
)
def test_a_phone_caller_must_be_verified_before_the_case_moves_on(
    phone_desk: Desk, command: Any
) -> None:
    ticket = phone_call(phone_desk)
    before = footprint(phone_desk, ticket.id)
    with pytest.raises(InvalidTransition) as refused:
        command(phone_desk, ticket.id)
    assert "verification is missing" in str(refused.value)
    assert "verify_customer" in str(refused.value)
    assert refused.value.status == "new"
    assert footprint(phone_desk, ticket.id) == before


def test_an_agent_may_talk_to_an_unverified_caller_and_the_case_stays_new(
    phone_desk: Desk,
) -> None:
    ticket = phone_call(phone_desk)
    replied = phone_desk.reply(ticket.id, "Can you confirm your date of birth?", by="agent_li")
    assert replied.status == "new"
    assigned = phone_desk.assign(ticket.id, "agent_li", by="lead")
    assert (assigned.status, assigned.assignee) == ("new", "agent_li")
    assert "StatusChanged" not in types(phone_desk, ticket.id)
    assert clock_state(phone_desk, ticket.id, "first_response") is SlaClockState.MET


def test_an_unverified_call_can_still_be_cancelled(phone_desk: Desk) -> None:
    ticket = phone_call(phone_desk)
    assert phone_desk.cancel(ticket.id, by="agent_li", reason="prank call").status == "cancelled"


def test_after_verification_the_case_moves_on(phone_desk: Desk) -> None:
    ticket = phone_call(phone_desk)
    verified = phone_desk.verify_customer(ticket.id, by="agent_li", method="security_question")
    assert verified.customer.verified
    assert verified.verification is not None
    assert verified.verification.by == "agent_li"
    event = last(phone_desk, ticket.id, "CustomerVerified")
    assert event.actor == "agent_li"
    assert event.data == {"method": "security_question", "by": "agent_li"}
    assert phone_desk.fire(ticket.id, "triage", by="agent_li").status == "open"
    assert phone_desk.reply(ticket.id, "Done", by="agent_li").status == "in_progress"


def test_email_cases_need_no_verification_on_a_phone_verifying_desk(phone_desk: Desk) -> None:
    ticket = open_case(phone_desk, channel="email")
    assert phone_desk.fire(ticket.id, "triage", by="agent_li").status == "open"


def test_a_verification_refusal_lists_only_what_is_allowed_now(phone_desk: Desk) -> None:
    ticket = phone_call(phone_desk)
    with pytest.raises(InvalidTransition) as refused:
        phone_desk.fire(ticket.id, "triage", by="agent_li")
    assert refused.value.allowed == ("cancel",)


# -- all or nothing ------------------------------------------------------------------------------
def test_a_refused_trigger_leaves_version_history_and_timers_unchanged(
    desk: Desk, clock: ManualClock
) -> None:
    ticket = open_case(desk)
    desk.reply(ticket.id, "On it", by="agent_li")
    before = footprint(desk, ticket.id)
    assert before[2]  # the resolution clock has deadlines to keep
    clock.advance(days=3)  # deadlines fall due: the refused command must not record them either
    with pytest.raises(InvalidTransition):
        desk.reopen(ticket.id, by="agent_li")
    assert footprint(desk, ticket.id) == before


def test_a_command_failing_after_its_writes_is_rolled_back_entirely(desk: Desk) -> None:
    ticket = open_case(desk)
    before = footprint(desk, ticket.id)

    def note_then_fail(change: Any) -> None:
        change.message("half-done", "agent_li", Role.AGENT, public=True)

        def fail(uow: Any) -> None:
            raise ValidationError("follow_up", None, "something that works")

        change.follow_ups.append(fail)  # runs after the ticket, events and timers are written

    with pytest.raises(ValidationError):
        desk.execute(ticket.id, note_then_fail)
    assert footprint(desk, ticket.id) == before
    assert desk.tickets() == [before[0]]


def test_a_change_lists_its_events_numbered_as_they_are_stored(desk: Desk) -> None:
    ticket = open_case(desk)
    seen: list[Event] = []

    def reply_and_look(change: Any) -> None:
        change.message("On it", "agent_li", Role.AGENT, public=True)
        change.record("Custom", {"note": "checked"}, actor="bot")
        seen.extend(change.events)

    desk.execute(ticket.id, reply_and_look)
    stored = desk.history(ticket.id)[-len(seen) :]
    assert seen == stored
    assert [event.sequence for event in seen] == list(
        range(ticket.sequence + 1, ticket.sequence + 1 + len(seen))
    )
    assert seen[-1].actor == "bot"
    assert seen[-1].ticket_id == ticket.id


class Field(str, enum.Enum):
    ORDER = "order_id"


def test_a_custom_field_named_by_a_str_enum_is_kept_under_its_text(desk: Desk) -> None:
    ticket = open_case(desk, fields={Field.ORDER: "A-17"})
    assert ticket.fields == {"order_id": "A-17"}
    assert all(type(key) is str for key in ticket.fields)


def test_custom_fields_that_hold_themselves_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    desk = Desk()
    with pytest.raises(ValidationError) as refused:
        open_case(desk, fields={"tree": loop})
    assert refused.value.field == "fields"
    assert desk.tickets() == []


def test_a_custom_command_that_only_notifies_and_keeps_state_is_stored(desk: Desk) -> None:
    ticket = open_case(desk)

    def remind(change: Any) -> None:
        change.set_state(reminded="agent_li")
        change.notify("reminder", [Recipient("agent", "agent_li")], "Reminder", "Still open")

    returned = desk.execute(ticket.id, remind)

    stored = desk.get_ticket(ticket.id)
    assert stored == returned
    assert (stored.state["reminded"], stored.version) == ("agent_li", ticket.version + 1)
    with desk.store.transaction() as uow:
        (entry,) = uow.list_outbox(OutboxStatus.PENDING)
    assert entry.notification.kind == "reminder"


def test_a_custom_command_that_changes_nothing_stores_nothing(desk: Desk) -> None:
    ticket = open_case(desk)
    desk.execute(ticket.id, lambda change: change.set_state(reminded=None))
    assert desk.get_ticket(ticket.id).version == ticket.version


# -- concurrency ---------------------------------------------------------------------------------
class FlakyStore:
    """A memory store whose ``update_ticket`` reports a conflict the first ``failures`` times."""

    def __init__(self, failures: int, only: str | None = None) -> None:
        self.inner = MemoryStore()
        self.failures = failures
        self.only = only  # the one ticket that conflicts, when given
        self.conflicts = 0

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.inner.transaction() as uow:
            yield _FlakyUnitOfWork(uow, self)

    def close(self) -> None:
        self.inner.close()


class _FlakyUnitOfWork:
    def __init__(self, uow: Any, store: FlakyStore) -> None:
        self._uow = uow
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._uow, name)

    def update_ticket(self, ticket: Ticket, expected_version: int) -> None:
        store = self._store
        if store.conflicts < store.failures and store.only in (None, ticket.id):
            store.conflicts += 1
            raise ConcurrencyConflict(ticket.id, expected_version, expected_version + 1)
        self._uow.update_ticket(ticket, expected_version)


def test_a_conflicting_write_is_retried_on_a_fresh_load_until_it_succeeds() -> None:
    store = FlakyStore(failures=0)
    desk, _ = scenario_desk(store=store, max_attempts=5)
    ticket = open_case(desk)
    store.failures = 4
    replied = desk.reply(ticket.id, "On it", by="agent_li")
    assert store.conflicts == 4
    assert replied.version == 2
    history = desk.history(ticket.id)
    assert [e.type for e in history].count("MessageAdded") == 1
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))


def test_a_write_that_keeps_conflicting_gives_up_after_max_attempts() -> None:
    store = FlakyStore(failures=0)
    desk, _ = scenario_desk(store=store, max_attempts=3)
    ticket = open_case(desk)
    before = footprint(desk, ticket.id)
    store.failures = 3
    with pytest.raises(ConcurrencyConflict) as refused:
        desk.reply(ticket.id, "On it", by="agent_li")
    assert refused.value.ticket_id == ticket.id
    assert store.conflicts == 3
    assert footprint(desk, ticket.id) == before


def test_retrying_runs_the_work_again_on_conflicts_only_up_to_max_attempts() -> None:
    desk, _ = scenario_desk(max_attempts=3)
    runs: list[int] = []

    def conflicting_twice(uow: Any) -> str:
        runs.append(len(runs) + 1)
        if len(runs) < 3:
            raise ConcurrencyConflict("voice/r-1", 1, 2)
        return "done"

    assert desk.retrying(conflicting_twice) == "done"
    assert runs == [1, 2, 3]

    def always_conflicting(uow: Any) -> None:
        runs.append(0)
        raise ConcurrencyConflict("voice/r-1", 1, 2)

    runs.clear()
    with pytest.raises(ConcurrencyConflict):
        desk.retrying(always_conflicting)
    assert runs == [0, 0, 0]

    def failing(uow: Any) -> None:  # any other error is the caller's: not run again
        runs.append(0)
        raise ValidationError("record_id", "r-9", "a known record")

    runs.clear()
    with pytest.raises(ValidationError):
        desk.retrying(failing)
    assert runs == [0]


def test_a_link_whose_other_side_cannot_be_written_is_not_recorded_at_all() -> None:
    store = FlakyStore(failures=0)
    desk, _ = scenario_desk(store=store, max_attempts=2)
    report, incident = open_case(desk, "No mail since noon"), open_case(desk, "Mail relay down")
    before = footprint(desk, report.id)
    store.failures, store.only = 2, incident.id
    with pytest.raises(ConcurrencyConflict):
        desk.link(report.id, incident.id, kind="parent", by="lead")
    assert footprint(desk, report.id) == before


def test_max_attempts_below_one_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Desk(max_attempts=0)
    assert refused.value.field == "max_attempts"


class StaleReadStore(FlakyStore):
    """Hands out a stale copy of a ticket once, as if another writer committed meanwhile."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.stale: Ticket | None = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.inner.transaction() as uow:
            yield _StaleUnitOfWork(uow, self)


class _StaleUnitOfWork(_FlakyUnitOfWork):
    _store: StaleReadStore

    def get_ticket(self, ticket_id: str) -> Ticket:
        stale, self._store.stale = self._store.stale, None
        return stale if stale is not None else self._uow.get_ticket(ticket_id)


def test_a_retried_update_keeps_the_tag_another_agent_added_meanwhile() -> None:
    store = StaleReadStore()
    desk, _ = scenario_desk(store=store)
    ticket = open_case(desk, tags=["mail"])
    desk.update(ticket.id, by="agent_wu", add_tags=["vip", "outage"])  # the other writer
    store.stale = ticket  # our agent loaded the ticket before that update
    after = desk.update(ticket.id, by="agent_li", add_tags=["vip"])
    assert after.tags == {"mail", "vip", "outage"}


def test_two_agents_replying_at_once_lose_no_message() -> None:
    desk, _ = scenario_desk()
    ticket = open_case(desk)
    versions: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def agent(name: str) -> None:
        start.wait()
        try:
            for n in range(100):
                versions.append(desk.reply(ticket.id, f"{name} {n}", by=name).version)
        except BaseException as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=agent, args=(name,)) for name in ("li", "wu")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    history = desk.history(ticket.id)
    added = [e for e in history if e.type == "MessageAdded"]
    assert len(added) == 200
    assert sorted(versions) == list(range(2, 202))
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))
    final = desk.get_ticket(ticket.id)
    assert final.version == 201
    assert len(final.messages) == 200
    assert len({m.id for m in final.messages}) == 200


def test_every_error_is_a_supportflow_error() -> None:
    for error in (InvalidTransition, TicketNotFound, ConcurrencyConflict, ValidationError):
        assert issubclass(error, SupportflowError)


def test_ids_and_limits_may_be_subclasses_of_str_and_int(desk: Desk) -> None:
    class TicketId(str):
        pass

    class Page(enum.IntEnum):
        TEN = 10

    ticket = open_case(desk)
    assert desk.get_ticket(TicketId(ticket.id)).id == ticket.id
    assert desk.reply(TicketId(ticket.id), "Hello", by="agent_li").version == ticket.version + 1
    assert [t.id for t in desk.tickets(limit=Page.TEN)] == [ticket.id]


# -- fire()'s details never replace what a StatusChanged event says of the move itself ----------
@pytest.mark.parametrize("key", ["from", "to", "from_category", "to_category", "automatic"])
def test_fire_details_cannot_rewrite_the_move_they_are_recorded_with(desk: Desk, key: str) -> None:
    refused = refused_on_a_case(
        desk, lambda case: desk.fire(case, "triage", by="agent_li", **{key: "resolved"})
    )
    assert refused.field == key


def test_a_status_change_records_the_move_made_whatever_an_extension_passes(desk: Desk) -> None:
    ticket = open_case(desk)

    def forged(change: Any) -> None:
        change.fire("triage", "agent_li", {"to": "resolved", "note": "n"})

    desk.execute(ticket.id, forged)
    data = last(desk, ticket.id, "StatusChanged").data
    assert (data["to"], data["to_category"], data["note"]) == ("open", "active", "n")


# -- Identity verification follows where a guarded trigger really takes the ticket --------------
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SPAM = Guard("marked as spam", lambda t: "spam" in t.tags)


def intake_desk(transitions: list[Transition] | None = None) -> Desk:
    """Phone calls need verification; by default ``take`` drops a spam call, and otherwise
    starts work on it (also on assignment)."""
    workflow = Workflow(
        statuses={"new": "new", "working": "active", "dropped": "closed"},
        transitions=transitions
        or [
            Transition("take", "new", "dropped", guards=[SPAM]),
            Transition("take", "new", "working"),
        ],
        initial="new",
        automatic={"assign": ["take"]},
    )
    return Desk(
        store=MemoryStore(), clock=ManualClock(MONDAY), workflow=workflow, verify_channels=["phone"]
    )


def test_a_guard_choosing_an_active_status_does_not_skip_verification() -> None:
    desk = intake_desk()
    call = desk.open_ticket(
        subject="Change my bank account", body="...", customer=Customer(id="c-1"), channel="phone"
    )
    with pytest.raises(InvalidTransition) as refused:
        desk.fire(call.id, "take", by="agent_li")
    assert "verification is missing" in str(refused.value)
    assert desk.get_ticket(call.id).status == "new"
    assert desk.assign(call.id, "agent_li", by="lead").status == "new"  # automatic: it waits


def test_a_guard_choosing_a_closed_status_needs_no_verification() -> None:
    desk = intake_desk()
    call = desk.open_ticket(
        subject="Prank", body="...", customer=Customer(id="c-1"), channel="phone", tags=["spam"]
    )
    assert desk.fire(call.id, "take", by="agent_li").status == "dropped"


def test_an_unverified_refusal_lists_a_trigger_that_can_still_close_the_call() -> None:
    known = Guard("known caller", lambda t: "known" in t.tags)
    desk = intake_desk(
        [Transition("take", "new", "working", guards=[known]), Transition("take", "new", "dropped")]
    )
    call = desk.open_ticket(subject="s", body="b", customer=Customer(id="c-1"), channel="phone")
    assert desk.fire(call.id, "take", by="agent_li").status == "dropped"


# -- An extension's events, state and notifications are checked as the desk's commands are ------
WHEN = datetime(2026, 3, 2, tzinfo=timezone.utc)
AGENT = [Recipient("agent", "agent_li")]


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (lambda c: c.record("Audited", {"at": WHEN}), "data.at"),
        (lambda c: c.record("Audited", {"score": float("nan")}), "data.score"),
        (lambda c: c.record("Audited", {"seen": {1, 2}}), "data.seen"),
        (lambda c: c.record(float("nan"), {}), "kind"),
        (lambda c: c.record(("Audited",), {}), "kind"),
        (lambda c: c.record("Audited", {}, actor={"id": 1}), "actor"),
        (lambda c: c.record("Audited", ["not", "a", "mapping"]), "data"),
        (lambda c: c.set_state(checked_at=WHEN), "state.checked_at"),
        (lambda c: c.notify("audit", AGENT, "s", "b", at=WHEN), "data.at"),
        (lambda c: c.notify(7, AGENT, "s", "b"), "kind"),
        (lambda c: c.fire("triage", "agent_li", {"at": WHEN}), "data.at"),
        (lambda c: c.fire(["triage"], "agent_li", {}), "trigger"),
    ],
)
def test_an_extension_writing_what_no_store_keeps_is_refused_naming_it(
    desk: Desk, action: Any, field: str
) -> None:
    assert refused_on_a_case(desk, lambda case: desk.execute(case, action)).field == field


# -- Desk.tickets: an empty filter value is a filter, never a filter left out -------------------
def test_no_status_in_a_category_finds_nothing(desk: Desk) -> None:
    waiting = open_case(desk)
    desk.assign(waiting.id, "agent_li", by="lead_zhao")
    desk.fire(waiting.id, "wait_on_customer", by="agent_li")
    assert desk.tickets(status=[]) == []
    assert desk.tickets(status=[], category="waiting") == []
    assert [t.id for t in desk.tickets(category="waiting")] == [waiting.id]


@pytest.mark.parametrize(
    "filters", [{"channel": ""}, {"priority": ""}, {"created_from": ""}, {"created_to": 0}]
)
def test_an_empty_filter_value_is_refused_naming_it(desk: Desk, filters: dict[str, Any]) -> None:
    open_case(desk)
    with pytest.raises(ValidationError) as refused:
        desk.tickets(**filters)
    assert refused.value.field == next(iter(filters))


# -- A limit larger than a database integer means "all of them", on every store -----------------


@pytest.mark.parametrize("make_store", [MemoryStore, lambda: SqliteStore(":memory:")])
@pytest.mark.parametrize(
    "read",
    [
        lambda d: d.tickets(limit=2**63),
        lambda d: d.run_due(limit=10**30),
        lambda d: d.deliver_pending(limit=2**64),
        lambda d: d.dead_letters(limit=2**63),
    ],
)
def test_a_limit_past_a_database_integer_means_all(make_store: Any, read: Any) -> None:
    desk = Desk(store=make_store(), clock=ManualClock(MONDAY))
    desk.open_ticket(subject="VPN down", body="...", customer=Customer(id="c-1"), channel="email")
    read(desk)  # no OverflowError from the database driver
    assert len(desk.tickets(limit=2**63)) == 1


# -- Who acts, who is assigned and which group: never a blank name ------------------------------
@pytest.mark.parametrize(
    ("command", "field"),
    [
        (lambda d, t: d.assign(t, "", by="lead_zhao"), "assignee"),
        (lambda d, t: d.assign(t, "   ", by="lead_zhao"), "assignee"),
        (lambda d, t: d.assign(t, group="\t", by="lead_zhao"), "group"),
    ],
)
def test_a_blank_assignee_or_group_is_refused(desk: Desk, command: Any, field: str) -> None:
    assert refused_on_a_case(desk, lambda case: command(desk, case)).field == field


@pytest.mark.parametrize("field", ["by", "assignee", "group"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_a_case_is_not_opened_by_or_for_a_blank_name(desk: Desk, field: str, blank: str) -> None:
    with pytest.raises(ValidationError) as refused:
        desk.open_ticket(
            subject="VPN down", body="...", customer=WANG, channel="email", **{field: blank}
        )
    assert refused.value.field == field
    assert desk.tickets() == []


# -- A workflow asked about, or built with, something that is no name answers in its own terms ---
@pytest.mark.parametrize("initial", [["new"], {"new": 1}, None, 3])
def test_an_initial_status_that_is_no_name_is_refused_naming_it(initial: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(statuses={"new": "new"}, transitions=[], initial=initial)
    assert refused.value.field == "initial"


def test_a_blank_status_name_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(statuses={"   ": "new"}, transitions=[], initial="   ")
    assert refused.value.field == "statuses"


def test_questions_about_a_status_or_trigger_that_is_no_name() -> None:
    workflow = default_workflow()
    assert workflow.allowed(["new"]) == ()
    assert workflow.unguarded_next("new", ["triage"]) is None
    with pytest.raises(InvalidTransition):
        workflow.next_status(["new"], "triage")
    with pytest.raises(InvalidTransition):
        workflow.next_status("new", ["triage"])


# -- An instant that UTC cannot hold is a ValidationError, not an OverflowError -----------------
LATE = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))  # past 9999 in UTC
EARLY = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))  # before year 1 in UTC


@pytest.mark.parametrize("instant", [LATE, EARLY])
def test_an_instant_past_the_calendar_in_utc_is_refused_naming_the_argument(
    instant: datetime,
) -> None:
    with pytest.raises(ValidationError) as refused:
        to_utc(instant, "due_at")
    assert refused.value.field == "due_at"
    clock = ManualClock(datetime(2026, 3, 2, 9, tzinfo=timezone.utc))
    with pytest.raises(ValidationError, match="instant"):
        clock.set(instant)
    assert clock.now() == datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    with pytest.raises(ValidationError, match="start"):
        ManualClock(instant)


def test_run_due_at_an_instant_whose_lease_ends_past_the_calendar_is_refused() -> None:
    from supportflow import Customer, Desk

    desk = Desk(clock=ManualClock(datetime(2026, 3, 2, 9, tzinfo=timezone.utc)))
    desk.open_ticket(subject="s", body="b", customer=Customer(id="c-1"), channel="email")
    with pytest.raises(ValidationError) as refused:
        desk.run_due(now=datetime.max.replace(tzinfo=timezone.utc))
    assert refused.value.field == "now"


# -- an extension's move is checked as the desk's are ------------------------------------------
@pytest.mark.parametrize("make_store", [MemoryStore, SqliteStore], ids=["memory", "sqlite"])
def test_an_extension_cannot_fire_with_details_keyed_by_non_text(make_store: Any) -> None:
    class HoldOnRequest(DeskExtension):
        def message_added(self, change: Change, message: Any) -> None:
            if message.body == "hold it":
                change.fire("hold", change.actor, {1: "one"})  # memory kept 1, SQLite "1"

    clock = ManualClock(datetime(2026, 3, 2, 9, tzinfo=timezone.utc))
    desk = Desk(store=make_store(), clock=clock, extensions=[HoldOnRequest()])
    ticket = desk.open_ticket(subject="s", body="b", customer=Customer(id="c"), channel="email")
    desk.reply(ticket.id, "first", by="agent_li")
    with pytest.raises(ValidationError) as refused:
        desk.reply(ticket.id, "hold it", by="agent_li")
    assert refused.value.field == "data"
    assert desk.get_ticket(ticket.id).status == "in_progress"  # nothing written


@pytest.mark.parametrize("field", ["group", "assignee", "by"])
def test_blank_names_are_refused_on_open(desk: Desk, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        desk.open_ticket(subject="s", body="b", customer=Customer(id="c"), channel="email",
                         **{field: "  "})  # fmt: skip
    assert refused.value.field == field
