"""An urgent hardware fault climbs the support tiers as its SLA runs down.

A customer phones in: a server's fans have stopped. The first-line agent records the case as
urgent. Nobody on the first line can fix it, so after two business hours it passes to a
technical support engineer (tier 2); when 80% of the four-hour resolution target is used up it
passes to the hardware team, and the team lead is told. A worker (here: a loop that moves the
manual clock and calls ``run_due()``) does the due work. The escalation path and every
notification written to the outbox are printed.

Run it with ``.venv/bin/python examples/escalation.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from supportflow import (
    BusinessCalendar,
    Channel,
    Customer,
    Desk,
    EscalationLevel,
    EscalationPolicy,
    EventType,
    ManualClock,
    Priority,
    SlaPolicy,
    SlaTarget,
)
from supportflow.storage import MemoryStore, OutboxStatus

SHANGHAI = ZoneInfo("Asia/Shanghai")


def main() -> None:
    office = BusinessCalendar(
        "Asia/Shanghai",
        {day: [("09:00", "12:00"), ("13:00", "18:00")] for day in range(5)},
        name="Shanghai office",
    )
    tiers = EscalationPolicy(
        "tiers",
        calendar=office,
        levels=[
            # Technical support engineers take over after two business hours.
            EscalationLevel(
                "technical support engineer",
                after=timedelta(hours=2),
                reassign_group="tier2",
                notify=["group"],
            ),
            # The hardware team takes over at 80% of the resolution target; the lead hears.
            EscalationLevel(
                "hardware team",
                sla_clock="resolution",
                fraction=0.8,
                reassign_group="hardware",
                notify=["group", "team_lead"],
            ),
        ],
    )
    clock = ManualClock(datetime(2026, 3, 9, 9, 30, tzinfo=SHANGHAI))  # a Monday morning
    desk = Desk(
        store=MemoryStore(),
        clock=clock,
        sla=[
            SlaPolicy(
                "hardware",
                calendar=office,
                targets={
                    Priority.URGENT: SlaTarget(
                        first_response=timedelta(minutes=30), resolution=timedelta(hours=4)
                    )
                },
            )
        ],
        escalation=[tiers],
        team_lead="lead_zhang",
    )

    ticket = desk.open_ticket(
        subject="Server fans stopped, temperature alarm",
        body="Rack 4, unit 12 has been beeping since this morning.",
        customer=Customer(id="c-17", name="Wang Fang", contacts={"phone": "+86 21 5555 0117"}),
        channel=Channel.PHONE,
        priority=Priority.URGENT,
        group="first_line",
        assignee="agent_li",
        by="agent_li",
    )
    clock.advance(minutes=5)
    desk.reply(ticket.id, "We are on it; please keep the server powered.", by="agent_li")

    # The worker: every ten minutes, do whatever fell due.
    end = datetime(2026, 3, 9, 15, 0, tzinfo=SHANGHAI)
    while clock.now() < end:
        clock.advance(minutes=10)
        desk.run_due()

    desk.resolve(ticket.id, by="hw_zhou", resolution="Replaced the fan tray")

    def local(moment: datetime) -> str:
        return moment.astimezone(SHANGHAI).strftime("%a %H:%M")

    print(f"Ticket #{ticket.number}: {ticket.subject}")
    print("\nEscalation path:")
    path = [e for e in desk.history(ticket.id) if e.type == EventType.ESCALATED]
    for event in path:
        data = event.data
        print(
            f"  {local(event.at)}  level {data['level']} ({data['name']}): {data['reason']}; "
            f"targets {', '.join(data['targets'])}; actions {'; '.join(data['actions']) or '-'}"
        )
    final = desk.get_ticket(ticket.id)
    print(f"\nNow with group {final.group!r}, status {final.status!r}.")

    print("\nNotifications in the outbox:")
    with desk.store.transaction() as uow:
        entries = uow.list_outbox(OutboxStatus.PENDING, limit=1000)
    for entry in entries:
        note = entry.notification
        to = ", ".join(f"{r.role.value}:{r.address}" for r in note.recipients)
        print(f"  {local(note.created_at)}  {note.kind:<10} to {to}: {note.subject}")

    levels = [event.data["name"] for event in path]
    assert levels == ["technical support engineer", "hardware team"], levels
    assert final.group == "hardware"


if __name__ == "__main__":
    main()
