"""A hardware repair (RMA) desk on its own workflow, with no change to supportflow.

A customer sends in a laptop. The repair desk has its own statuses — received, diagnosing,
awaiting parts, repairing, shipped back, closed — each mapped to one of the categories the
engines understand (new, active, waiting, resolved, closed), so the SLA clock pauses while
parts are on order and a shipped-back repair closes by itself a week later, exactly as a
support ticket would. Nobody may start diagnosing before the serial number is recorded: a
guard on the transition says so. The history is printed at the end.

Run it with ``python examples/custom_workflow.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from supportflow import (
    Customer,
    Desk,
    Guard,
    InvalidTransition,
    ManualClock,
    Priority,
    SlaPolicy,
    SlaTarget,
    StatusCategory,
    Ticket,
    Transition,
    Workflow,
)
from supportflow.storage import MemoryStore


def serial_recorded(ticket: Ticket) -> bool:
    return bool(ticket.fields.get("serial"))


def rma_workflow() -> Workflow:
    """Received → diagnosing → (awaiting parts →) repairing → shipped back → closed."""
    return Workflow(
        name="rma",
        statuses={
            "received": StatusCategory.NEW,
            "diagnosing": StatusCategory.ACTIVE,
            "awaiting_parts": StatusCategory.WAITING,  # the repair clock pauses
            "repairing": StatusCategory.ACTIVE,
            "shipped_back": StatusCategory.RESOLVED,
            "closed": StatusCategory.CLOSED,
            "rejected": StatusCategory.CLOSED,
        },
        transitions=[
            Transition(
                "diagnose",
                "received",
                "diagnosing",
                guards=[Guard("serial number recorded", serial_recorded)],
            ),
            Transition("order_parts", "diagnosing", "awaiting_parts"),
            Transition("parts_arrived", "awaiting_parts", "repairing"),
            Transition("repair", "diagnosing", "repairing"),
            Transition("ship", "repairing", "shipped_back"),
            Transition("still_broken", "shipped_back", "diagnosing"),
            Transition("close", "shipped_back", "closed"),  # also what auto-close fires
            Transition("reject", ("received", "diagnosing"), "rejected"),
        ],
        initial="received",
        automatic={
            # Assigning a technician starts the diagnosis, once the guard lets it.
            "assign": ["diagnose"],
            # The customer writing after we shipped means the device is still broken.
            "customer_reply": ["still_broken"],
        },
    )


def main() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))  # a Monday morning
    repair_promise = SlaPolicy(
        "rma",
        targets={
            priority: SlaTarget(first_response=timedelta(hours=8), resolution=timedelta(days=5))
            for priority in Priority
        },
    )
    desk = Desk(store=MemoryStore(), clock=clock, workflow=rma_workflow(), sla=[repair_promise])
    customer = Customer(id="c-88", name="Li Lei", contacts={"email": "li.lei@example.com"})

    ticket = desk.open_ticket(
        subject="Laptop does not boot",
        body="Black screen since Friday; the power light blinks three times.",
        customer=customer,
        channel="web",
        kind="rma",
    )
    print(f"RMA #{ticket.number} opened: {ticket.status}")

    assigned = desk.assign(ticket.id, "tech_wu", group="repair_bench", by="lead_zhao")
    print(f"assigned to {assigned.assignee}, still {assigned.status}: no serial number yet")
    try:
        desk.fire(ticket.id, "diagnose", by="tech_wu")
    except InvalidTransition as refused:
        print(f"refused: {refused}")

    clock.advance(hours=1)
    desk.update(ticket.id, by="tech_wu", fields={"serial": "SN-5CG1234XYZ"})
    print(f"serial recorded, now {desk.fire(ticket.id, 'diagnose', by='tech_wu').status}")
    desk.reply(ticket.id, "The mainboard has failed; a replacement is on order.", by="tech_wu")
    desk.fire(ticket.id, "order_parts", by="tech_wu", part="mainboard")

    clock.advance(days=4)  # the parts take their time; the repair clock is paused meanwhile
    desk.fire(ticket.id, "parts_arrived", by="tech_wu")
    clock.advance(hours=5)
    shipped = desk.fire(ticket.id, "ship", by="tech_wu", tracking="SF1234567890")
    print(f"repaired and shipped back: {shipped.status}")

    clock.advance(days=7)  # the customer never writes back
    report = desk.run_due()
    print(f"a week later run_due fired {[timer.key for timer in report.fired]}")

    final = desk.get_ticket(ticket.id)
    print(f"RMA #{final.number} is {final.status}; fields {dict(final.fields)}")
    for reading in desk.sla(ticket.id):
        if reading.target is not None:
            state, used = reading.state.value, reading.elapsed
            print(f"  SLA {reading.name}: {state}, {used} of {reading.target}")
    for event in desk.history(ticket.id):
        detail = ""
        if event.type == "StatusChanged":
            detail = f"{event.data['from']} -> {event.data['to']} ({event.data['trigger']})"
        elif event.type in ("SlaMet", "SlaBreached", "SlaWarning"):
            detail = str(event.data["clock"])
        elif event.type == "TicketUpdated":
            detail = ", ".join(event.data["changes"])
        when = event.at.strftime("%a %d %b %H:%M")
        print(f"  {event.sequence:>2} {when}  {event.type:<17} {event.actor:<9} {detail}")
    assert final.status == "closed"


if __name__ == "__main__":
    main()
