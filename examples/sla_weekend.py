"""An e-mail that arrives on a Friday evening before a long weekend.

The Berlin office is open 09:00–18:00, Monday to Friday, and closed on Whit Monday (25 May
2026). A customer writes at 17:30 on Friday 22 May; the promise is a first answer within one
business hour. Half an hour is used on Friday evening, the weekend and the holiday do not
count, and the remaining half hour runs on Tuesday morning: due at 09:30.

The manual clock walks through the weekend and Tuesday morning. Each time, ``run_due()``
fires what fell due — the 75% and 90% warnings, then the breach — each recorded at its own
due time, and ``desk.sla()`` tells the exact business time left.

Run it with ``python examples/sla_weekend.py``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from supportflow import (
    BusinessCalendar,
    ClockReading,
    Customer,
    Desk,
    Event,
    ManualClock,
    Priority,
    SlaPolicy,
    SlaTarget,
)
from supportflow.storage import MemoryStore

BERLIN = ZoneInfo("Europe/Berlin")


def local(instant: datetime) -> str:
    return instant.astimezone(BERLIN).strftime("%a %d %b %H:%M")


def hours(duration: timedelta) -> str:
    minutes = abs(round(duration.total_seconds() / 60))
    return f"{minutes // 60}:{minutes % 60:02d}"


def left(duration: timedelta | None) -> str:
    """Business time left as ``h:mm left``, or ``h:mm overdue`` once negative."""
    if duration is None:
        return "no promise"
    return f"{hours(duration)} {'overdue' if duration < timedelta(0) else 'left'}"


def first_response(desk: Desk, ticket_id: str) -> ClockReading:
    return next(r for r in desk.sla(ticket_id) if r.name == "first_response")


def describe(event: Event) -> str:
    if event.type == "SlaWarning":
        return f"warning: {event.data['threshold']}% of the {event.data['clock']} target used"
    if event.type == "SlaBreached":
        return f"breached: {event.data['clock']} is late"
    return event.type


def main() -> None:
    office = BusinessCalendar(
        "Europe/Berlin",
        {day: [("09:00", "18:00")] for day in range(5)},
        holidays=[date(2026, 5, 25)],  # Whit Monday
        name="Berlin office",
    )
    clock = ManualClock(datetime(2026, 5, 22, 17, 30, tzinfo=BERLIN))  # Friday evening
    desk = Desk(
        store=MemoryStore(),
        clock=clock,
        sla=[
            SlaPolicy(
                "standard",
                calendar=office,
                targets={Priority.NORMAL: SlaTarget(first_response=timedelta(hours=1))},
            )
        ],
        notify_customers=False,
    )
    ticket = desk.open_ticket(
        subject="Cannot download my invoice",
        body="The download link in my account gives an error.",
        customer=Customer(id="c-jonas", name="Jonas Weber"),
        channel="email",
    )
    assert ticket.sla is not None
    opened = first_response(desk, ticket.id)
    assert opened.due_at is not None
    print(
        f"{local(clock.now())}  ticket opened; policy {ticket.sla.policy!r} ({ticket.sla.reason})"
    )
    print(f"{'':18}first response due {local(opened.due_at)}, {left(opened.remaining)}")

    fired: list[Event] = []
    walk = [
        datetime(2026, 5, 23, 12, 0),  # Saturday
        datetime(2026, 5, 25, 12, 0),  # Whit Monday
        datetime(2026, 5, 26, 9, 10),  # Tuesday morning
        datetime(2026, 5, 26, 9, 20),
        datetime(2026, 5, 26, 9, 27),
        datetime(2026, 5, 26, 9, 45),
    ]
    for wall in walk:
        clock.set(wall.replace(tzinfo=BERLIN))
        report = desk.run_due()
        reading = first_response(desk, ticket.id)
        now = local(clock.now())
        print(f"{now}  run_due: {len(report.events)} event(s); {left(reading.remaining)}")
        for event in report.events:
            print(f"{'':18}  {local(event.at)}  {describe(event)}")
        fired.extend(report.events)

    clock.set(datetime(2026, 5, 26, 9, 50, tzinfo=BERLIN))
    desk.reply(ticket.id, "Sorry for the wait: here is your invoice.", by="agent_mia")
    answered = first_response(desk, ticket.id)
    assert answered.met_at is not None
    assert answered.breached_at is not None
    print(
        f"{local(answered.met_at)}  answered, {hours(answered.elapsed)} of business time after "
        f"the e-mail (late: breached at {local(answered.breached_at)})"
    )

    # The key facts of the story.
    tuesday = datetime(2026, 5, 26, tzinfo=BERLIN)
    assert opened.due_at == tuesday.replace(hour=9, minute=30)
    assert [(e.type, e.data.get("threshold"), e.at) for e in fired] == [
        ("SlaWarning", 75, tuesday.replace(hour=9, minute=15)),
        ("SlaWarning", 90, tuesday.replace(hour=9, minute=24)),
        ("SlaBreached", None, tuesday.replace(hour=9, minute=30)),
    ]
    assert answered.state.value == "met"
    assert answered.elapsed == timedelta(minutes=80)
    print("All facts check out: due on Tuesday at 09:30, warned at 09:15 and 09:24.")


if __name__ == "__main__":
    main()
