"""Ticket workflows: how a desk declares its statuses and the triggers between them.

Stories of the default support workflow first, then what a badly declared workflow is told,
then guards and custom workflows, and finally the promise that one shared state machine
serves every ticket.
"""

from __future__ import annotations

import gc
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from supportflow import (
    Channel,
    Customer,
    Guard,
    InvalidTransition,
    StatusCategory,
    Ticket,
    Transition,
    ValidationError,
    Workflow,
    default_workflow,
)
from supportflow.testing import scenario_desk
from supportflow.workflow import _Holder

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def ticket_with(status: str = "received", **fields: object) -> Ticket:
    return Ticket(
        id="t-42",
        number=42,
        subject="Laptop does not boot",
        description="Black screen since the update",
        customer=Customer(id="c-1"),
        channel=Channel.WEB,
        status=status,
        created_at=MONDAY,
        updated_at=MONDAY,
        fields=fields,
    )


SERIAL_RECORDED = Guard("serial number recorded", lambda t: bool(t.fields.get("serial")))


def rma_workflow() -> Workflow:
    """A hardware repair: nobody starts diagnosing a device whose serial number is unknown."""
    return Workflow(
        name="rma",
        statuses={
            "received": "new",
            "diagnosing": "active",
            "awaiting_parts": "waiting",
            "repairing": "active",
            "shipped_back": "resolved",
            "closed": "closed",
        },
        transitions=[
            Transition("diagnose", "received", "diagnosing", guards=[SERIAL_RECORDED]),
            Transition("order_parts", "diagnosing", "awaiting_parts"),
            Transition("parts_arrived", "awaiting_parts", "repairing"),
            Transition("repair", "diagnosing", "repairing"),
            Transition("ship", "repairing", "shipped_back"),
            Transition("close", "shipped_back", "closed"),
        ],
        initial="received",
        automatic={"assign": ["diagnose"]},
    )


# -- the default support workflow ---------------------------------------------------------------
DEFAULT_PATHS = [
    ("new", "triage", "open"),
    ("new", "start", "in_progress"),
    ("open", "start", "in_progress"),
    ("open", "wait_on_customer", "waiting_on_customer"),
    ("in_progress", "wait_on_customer", "waiting_on_customer"),
    ("open", "hold", "on_hold"),
    ("in_progress", "hold", "on_hold"),
    ("waiting_on_customer", "resume", "in_progress"),
    ("on_hold", "resume", "in_progress"),
    ("waiting_on_customer", "customer_replied", "in_progress"),
    ("new", "resolve", "resolved"),
    ("open", "resolve", "resolved"),
    ("in_progress", "resolve", "resolved"),
    ("waiting_on_customer", "resolve", "resolved"),
    ("on_hold", "resolve", "resolved"),
    ("resolved", "reopen", "in_progress"),
    ("resolved", "close", "closed"),
    ("new", "cancel", "cancelled"),
    ("open", "cancel", "cancelled"),
]


@pytest.mark.parametrize(("status", "trigger", "dest"), DEFAULT_PATHS)
def test_default_workflow_moves_a_ticket_along_the_support_path(
    status: str, trigger: str, dest: str
) -> None:
    workflow = default_workflow()
    assert workflow.next_status(status, trigger) == dest
    assert workflow.destination(status, trigger) == dest
    assert trigger in workflow.allowed(status)


def test_default_workflow_declares_every_move_it_allows_and_no_other() -> None:
    workflow = default_workflow()
    declared = {(status, trigger) for status, trigger, _ in DEFAULT_PATHS}
    for status in workflow.statuses:
        for trigger in workflow.triggers:
            if (status, trigger) in declared:
                continue
            with pytest.raises(InvalidTransition):
                workflow.next_status(status, trigger)
            assert workflow.destination(status, trigger) is None


def test_default_workflow_statuses_have_the_categories_the_engines_reason_about() -> None:
    workflow = default_workflow()
    assert workflow.initial == "new"
    assert workflow.statuses == {
        "new": StatusCategory.NEW,
        "open": StatusCategory.ACTIVE,
        "in_progress": StatusCategory.ACTIVE,
        "waiting_on_customer": StatusCategory.WAITING,
        "on_hold": StatusCategory.WAITING,
        "resolved": StatusCategory.RESOLVED,
        "closed": StatusCategory.CLOSED,
        "cancelled": StatusCategory.CLOSED,
    }


@pytest.mark.parametrize("status", sorted(default_workflow().statuses))
def test_only_new_or_open_tickets_can_be_cancelled(status: str) -> None:
    workflow = default_workflow()
    if status in ("new", "open"):
        assert workflow.next_status(status, "cancel") == "cancelled"
    else:
        with pytest.raises(InvalidTransition) as refused:
            workflow.next_status(status, "cancel")
        assert "cancel" not in refused.value.allowed


def test_closed_and_cancelled_tickets_allow_no_trigger_at_all() -> None:
    workflow = default_workflow()
    assert workflow.allowed("closed") == ()
    assert workflow.allowed("cancelled") == ()


def test_default_automatic_triggers_match_what_happens_on_a_ticket() -> None:
    workflow = default_workflow()
    assert workflow.automatic == {
        "assign": ("triage",),
        "agent_reply": ("start",),
        "customer_reply": ("customer_replied", "reopen"),
    }


def test_category_of_an_unknown_status_is_a_validation_error_naming_status() -> None:
    with pytest.raises(ValidationError) as refused:
        default_workflow().category("pending")
    assert refused.value.field == "status"
    assert refused.value.value == "pending"
    assert "in_progress" in str(refused.value)


# -- what a badly declared workflow is told ------------------------------------------------------
def test_a_transition_from_an_unknown_status_names_the_transition_sources() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "done": "closed"},
            transitions=[Transition("finish", "new", "done"), Transition("x", "limbo", "done")],
            initial="new",
        )
    assert refused.value.field == "transitions[1].sources"
    assert refused.value.value == "limbo"


def test_a_transition_to_an_unknown_status_names_the_transition_dest() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "done": "closed"},
            transitions=[Transition("finish", "new", "finished")],
            initial="new",
        )
    assert refused.value.field == "transitions[0].dest"
    assert refused.value.value == "finished"


def test_a_status_no_transition_reaches_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "done": "closed", "archived": "closed"},
            transitions=[
                Transition("finish", "new", "done"),
                Transition("archive", "archived", "done"),
            ],
            initial="new",
        )
    assert refused.value.field == "statuses"
    assert refused.value.value == ["archived"]


def test_an_initial_status_that_is_not_declared_names_initial() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "done": "closed"},
            transitions=[Transition("finish", "new", "done")],
            initial="start",
        )
    assert refused.value.field == "initial"
    assert refused.value.value == "start"


def test_a_workflow_without_statuses_has_no_valid_initial_status() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(statuses={}, transitions=[], initial="new")
    assert refused.value.field == "initial"


_GO = Transition("go", "new", "done")


@pytest.mark.parametrize(
    ("field", "build"),
    [
        ("statuses", lambda: Workflow(statuses=None, transitions=[_GO], initial="new")),
        ("statuses", lambda: Workflow(statuses={1: "new"}, transitions=[_GO], initial="new")),
        ("transitions", lambda: Workflow(statuses=_TWO, transitions=None, initial="new")),
        ("transitions[0]", lambda: Workflow(statuses=_TWO, transitions=["go"], initial="new")),
        (
            "automatic",
            lambda: Workflow(statuses=_TWO, transitions=[_GO], initial="new", automatic=["assign"]),
        ),
        (
            "automatic['assign']",
            lambda: Workflow(
                statuses=_TWO, transitions=[_GO], initial="new", automatic={"assign": 5}
            ),
        ),
        ("name", lambda: Workflow(statuses=_TWO, transitions=[_GO], initial="new", name=5)),
        ("trigger", lambda: Transition(None, "new", "done")),
        ("sources", lambda: Transition("go", None, "done")),
        ("sources", lambda: Transition("go", [], "done")),
        ("dest", lambda: Transition("go", "new", "")),
        ("guards", lambda: Transition("go", "new", "done", guards=["serial"])),
        ("check", lambda: Guard("serial recorded", "fields.serial")),
    ],
)
def test_a_malformed_workflow_names_the_field(field: str, build: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert refused.value.field == field


def test_asking_the_category_of_something_unhashable_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as refused:
        default_workflow().category(["open"])  # type: ignore[arg-type]
    assert refused.value.field == "status"


_TWO = {"new": "new", "done": "closed"}


@pytest.mark.parametrize("category", [None, "pending", 3])
def test_a_status_without_a_valid_category_names_that_status(category: object) -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "parked": category, "done": "closed"},  # type: ignore[dict-item]
            transitions=[Transition("park", "new", "parked"), Transition("finish", "*", "done")],
            initial="new",
        )
    assert refused.value.field == "statuses['parked']"


def test_an_automatic_trigger_the_workflow_does_not_declare_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "done": "closed"},
            transitions=[Transition("finish", "new", "done")],
            initial="new",
            automatic={"assign": ["triage"]},
        )
    assert refused.value.field == "automatic['assign']"
    assert refused.value.value == "triage"


def test_a_misspelt_happening_is_refused_instead_of_silently_never_firing() -> None:
    with pytest.raises(ValidationError) as refused:
        Workflow(
            statuses={"new": "new", "working": "active"},
            transitions=[Transition("work", "new", "working")],
            initial="new",
            automatic={"agent_replied": ["work"]},
        )
    assert refused.value.field == "automatic"
    assert refused.value.value == "agent_replied"
    assert "agent_reply" in str(refused.value)


def test_a_lone_automatic_trigger_is_one_trigger_not_its_letters() -> None:
    workflow = Workflow(
        statuses={"new": "new", "working": "active"},
        transitions=[Transition("work", "new", "working")],
        initial="new",
        automatic={"agent_reply": "work"},
    )
    assert workflow.automatic == {"agent_reply": ("work",)}


def test_a_transition_from_any_status_leaves_every_status() -> None:
    workflow = Workflow(
        statuses={"new": "new", "working": "active", "spam": "closed"},
        transitions=[Transition("work", "new", "working"), Transition("junk", "*", "spam")],
        initial="new",
    )
    for status in ("new", "working", "spam"):
        assert workflow.next_status(status, "junk") == "spam"
        assert "junk" in workflow.allowed(status)


# -- refusals name what would have been valid ----------------------------------------------------
def test_invalid_transition_names_ticket_status_trigger_and_the_allowed_triggers() -> None:
    workflow = default_workflow()
    with pytest.raises(InvalidTransition) as refused:
        workflow.next_status("resolved", "hold", ticket_with("resolved"))
    error = refused.value
    assert (error.ticket_id, error.status, error.trigger) == ("t-42", "resolved", "hold")
    assert error.allowed == ("close", "reopen")
    assert str(error) == (
        "cannot 'hold' ticket 't-42' in status 'resolved'; triggers allowed now: close, reopen"
    )


def test_an_unknown_trigger_is_an_invalid_transition_not_a_crash() -> None:
    with pytest.raises(InvalidTransition) as refused:
        default_workflow().next_status("new", "teleport")
    assert refused.value.allowed == ("cancel", "resolve", "start", "triage")
    assert "'teleport'" in str(refused.value)


def test_desk_refusal_names_the_real_ticket_id_and_status() -> None:
    desk, _ = scenario_desk()
    ticket = desk.open_ticket(
        subject="Printer jam", body="Again", customer=Customer(id="c-1"), channel="email"
    )
    with pytest.raises(InvalidTransition) as refused:
        desk.close(ticket.id, by="agent_li")
    message = str(refused.value)
    assert ticket.id in message
    assert "'new'" in message
    assert "'close'" in message
    assert "cancel, resolve, start, triage" in message


# -- guards ------------------------------------------------------------------------------------
def test_diagnosis_needs_a_recorded_serial_number() -> None:
    workflow = rma_workflow()
    with pytest.raises(InvalidTransition) as refused:
        workflow.next_status("received", "diagnose", ticket_with())
    assert refused.value.reason == "needs serial number recorded"
    assert "serial number recorded" in str(refused.value)
    assert workflow.next_status("received", "diagnose", ticket_with(serial="SN-1")) == "diagnosing"


def test_a_guarded_transition_without_a_ticket_to_inspect_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="serial number recorded"):
        rma_workflow().next_status("received", "diagnose")


def test_guards_see_the_ticket_as_it_stands_when_the_trigger_fires() -> None:
    seen: list[str] = []

    def check(ticket: Ticket) -> bool:
        seen.append(ticket.status)
        return ticket.priority == "urgent"

    workflow = Workflow(
        statuses={"new": "new", "hot": "active", "done": "closed"},
        transitions=[
            Transition("heat", "new", "hot", guards=[Guard("urgent ticket", check)]),
            Transition("finish", ("new", "hot"), "done"),
        ],
        initial="new",
    )
    with pytest.raises(InvalidTransition, match="urgent ticket"):
        workflow.next_status("new", "heat", ticket_with("new"))
    urgent = attrs.evolve(ticket_with("new"), priority="urgent")
    assert workflow.next_status("new", "heat", urgent) == "hot"
    assert seen == ["new", "new"]


def test_the_desk_refuses_diagnosis_until_the_serial_is_recorded() -> None:
    desk, _ = scenario_desk(workflow=rma_workflow())
    ticket = desk.open_ticket(
        subject="Laptop does not boot", body="Black screen", customer=Customer(id="c-9"),
        channel="web",
    )  # fmt: skip
    assert ticket.status == "received"
    assigned = desk.assign(ticket.id, "tech_wu", by="lead")  # automatic diagnose: guard says no
    assert assigned.status == "received"
    with pytest.raises(InvalidTransition, match="needs serial number recorded"):
        desk.fire(ticket.id, "diagnose", by="tech_wu")
    desk.update(ticket.id, by="tech_wu", fields={"serial": "SN-4471"})
    assert desk.fire(ticket.id, "diagnose", by="tech_wu").status == "diagnosing"


# -- one shared machine -------------------------------------------------------------------------
def test_a_hundred_thousand_tickets_share_one_machine_and_attach_no_model() -> None:
    workflow = default_workflow()
    machine = workflow._machine
    for _ in range(100_000):
        assert workflow.next_status("new", "triage") == "open"
    assert workflow._machine is machine
    assert len(machine.models) == 0


def test_guarded_triggers_run_through_the_shared_machine_and_leave_nothing_behind() -> None:
    workflow = rma_workflow()
    machine = workflow._machine
    ready, missing = ticket_with(serial="SN-1"), ticket_with()
    for _ in range(2_000):  # guarded moves go through machine.events[...].trigger(holder)
        assert workflow.next_status("received", "diagnose", ready) == "diagnosing"
        with pytest.raises(InvalidTransition):
            workflow.next_status("received", "diagnose", missing)
    assert workflow._machine is machine
    assert len(machine.models) == 0
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, _Holder)]


def test_every_desk_ticket_runs_on_its_workflow_machine_without_binding() -> None:
    desk, _ = scenario_desk()
    for n in range(20):
        ticket = desk.open_ticket(
            subject=f"Case {n}", body="...", customer=Customer(id="c-1"), channel="email"
        )
        desk.reply(ticket.id, "On it", by="agent_li")
    assert len(desk.workflow._machine.models) == 0
