"""A ticket's whole life on the embedded SQLite store.

A customer writes in by e-mail, an agent answers, the ticket waits on the customer, the
customer answers, the agent resolves, the customer confirms, and the ticket closes. A second
ticket the customer never confirms closes by itself a week later. The history is printed.

Run it with ``make demo``.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from supportflow import (
    BusinessCalendar,
    Channel,
    Customer,
    Desk,
    ManualClock,
    Priority,
    SlaPolicy,
    SlaTarget,
)
from supportflow.storage import SqliteStore


def main(database: Path) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    office = BusinessCalendar(
        "Asia/Shanghai", {day: [("09:00", "12:00"), ("13:00", "18:00")] for day in range(5)}
    )
    clock = ManualClock(datetime(2026, 3, 6, 16, 30, tzinfo=shanghai))  # a Friday afternoon
    desk = Desk(
        store=SqliteStore(database),
        clock=clock,
        sla=[
            SlaPolicy(
                "standard",
                calendar=office,
                targets={
                    Priority.NORMAL: SlaTarget(
                        first_response=timedelta(minutes=30), resolution=timedelta(hours=4)
                    )
                },
            )
        ],
    )
    customer = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})

    ticket = desk.open_ticket(
        subject="Password reset mail never arrives",
        body="I asked for a reset link three times and got nothing.",
        customer=customer,
        channel=Channel.EMAIL,
    )
    clock.advance(minutes=10)
    desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")
    desk.fire(ticket.id, "wait_on_customer", by="agent_li")  # the resolution clock pauses
    clock.advance(hours=2)
    desk.reply(ticket.id, "Found it, thanks!", by="c-17", role="customer")  # back to work
    desk.resolve(ticket.id, by="agent_li", resolution="Mail was filtered as spam")
    desk.close(ticket.id, by="c-17", reason="customer confirmed")

    other = desk.open_ticket(
        subject="Invoice for February", body="Where can I download it?",
        customer=customer, channel="web",
    )  # fmt: skip
    desk.reply(other.id, "Under Billing > Invoices.", by="agent_li")
    desk.resolve(other.id, by="agent_li", resolution="Pointed to the billing page")
    clock.advance(days=7)
    report = desk.run_due()  # the resolved ticket closes by itself

    for shown in (ticket, other):
        current = desk.get_ticket(shown.id)
        print(f"ticket #{current.number} {current.subject!r}: {current.status}")
        for reading in desk.sla(shown.id):
            print(f"  SLA {reading.name}: {reading.state.value}, elapsed {reading.elapsed}")
        for event in desk.history(shown.id):
            local = event.at.astimezone(shanghai).strftime("%a %d %b %H:%M")
            detail = ""
            if event.type == "StatusChanged":
                detail = f"{event.data['from']} -> {event.data['to']}"
            elif event.type in ("SlaMet", "SlaBreached", "SlaWarning"):
                detail = str(event.data["clock"])
            print(f"  {event.sequence:>2} {local}  {event.type:<17} {event.actor:<9} {detail}")
    print(f"run_due fired {len(report.fired)} timer(s): {[t.key for t in report.fired]}")
    assert desk.get_ticket(ticket.id).status == "closed"
    assert desk.get_ticket(other.id).status == "closed"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(Path(folder) / "desk.db")
