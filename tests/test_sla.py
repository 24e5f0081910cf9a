"""SLA clocks, told as the stories of tickets on business calendars.

Every expectation below is worked out by hand from the rules of the SLA engine and written as
a literal: the three clocks (first response, next response, resolution) count business time
on the policy's calendar, the resolution clock pauses while the ticket waits, warnings and
breaches are timers that ``Desk.run_due`` fires at their own due time, and changes of
priority or policy keep the business time already counted.

Each story drives a ``Desk`` on a ``MemoryStore`` with a ``ManualClock``. Dates are in 2026;
the office keeps 09:00–18:00, Monday to Friday, unless a story says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from supportflow import (
    AutoClosePolicy,
    BusinessCalendar,
    ClockReading,
    Customer,
    Desk,
    Event,
    ManualClock,
    Priority,
    SlaClockState,
    SlaCondition,
    SlaPolicy,
    SlaTarget,
    StatusCategory,
    Ticket,
    Transition,
    ValidationError,
    Workflow,
    default_sla_policies,
)
from supportflow.sla import SlaEngine
from supportflow.storage import MemoryStore

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

ANNA = Customer(id="c-anna", name="Anna Schmidt", contacts={"email": "anna@example.com"})
RUNNING, PAUSED, MET, BREACHED, STOPPED = (
    SlaClockState.RUNNING,
    SlaClockState.PAUSED,
    SlaClockState.MET,
    SlaClockState.BREACHED,
    SlaClockState.STOPPED,
)


# -- the setting -----------------------------------------------------------------------------
def weekly(days: range, *intervals: tuple[str, str]) -> dict[int, list[tuple[str, str]]]:
    """The same opening intervals on each of ``days`` (0 = Monday)."""
    return {day: list(intervals) for day in days}


def office(zone: str, holidays: Iterable[date] = (), *, lunch: bool = False) -> BusinessCalendar:
    """09:00–18:00 Monday to Friday in ``zone`` (with a 12:00–13:00 lunch break if asked)."""
    day = [("09:00", "12:00"), ("13:00", "18:00")] if lunch else [("09:00", "18:00")]
    return BusinessCalendar(zone, weekly(range(5), *day), holidays)


def promise(
    first: timedelta | None = None,
    nxt: timedelta | None = None,
    resolution: timedelta | None = None,
) -> SlaTarget:
    return SlaTarget(first_response=first, next_response=nxt, resolution=resolution)


def standard(calendar: BusinessCalendar, **targets: SlaTarget) -> SlaPolicy:
    """One policy for every ticket; ``targets`` by priority name (``normal=...``)."""
    return SlaPolicy("standard", calendar=calendar, targets=targets)


def make_desk(start: datetime, *policies: SlaPolicy) -> tuple[Desk, ManualClock]:
    clock = ManualClock(start)
    desk = Desk(
        store=MemoryStore(),
        clock=clock,
        sla=list(policies),
        auto_close=AutoClosePolicy(enabled=False),
        notify_customers=False,
        triage=None,  # no classification: only the stories' own changes move the clocks
    )
    return desk, clock


def open_case(desk: Desk, **kw: object) -> Ticket:
    kw.setdefault("subject", "Invoice shows the wrong VAT rate")
    kw.setdefault("body", "My March invoice charges 19% instead of 7%.")
    kw.setdefault("customer", ANNA)
    kw.setdefault("channel", "email")
    return desk.open_ticket(**kw)  # type: ignore[arg-type]


def read(desk: Desk, ticket_id: str, name: str, at: datetime | None = None) -> ClockReading:
    return {reading.name: reading for reading in desk.sla(ticket_id, at=at)}[name]


def sla_events(events: Iterable[Event]) -> list[tuple[str, str, int | None, datetime]]:
    """SLA warnings and breaches as (type, clock, threshold, at)."""
    return [
        (event.type, event.data["clock"], event.data.get("threshold"), event.at)
        for event in events
        if event.type in ("SlaWarning", "SlaBreached")
    ]


def of_type(desk: Desk, ticket_id: str, kind: str) -> list[Mapping[str, object]]:
    return [event.data for event in desk.history(ticket_id) if event.type == kind]


# -- business hours, lunch breaks and holidays ------------------------------------------------
def test_a_friday_evening_ticket_is_due_on_monday_morning() -> None:
    berlin_office = office("Europe/Berlin")
    desk, _ = make_desk(
        datetime(2026, 6, 5, 17, 30, tzinfo=BERLIN), standard(berlin_office, normal=promise(HOUR))
    )
    ticket = open_case(desk)

    first = read(desk, ticket.id, "first_response")
    assert first.state is RUNNING
    assert first.due_at == datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN)
    # Half an hour is used on Friday evening; the weekend does not count.
    assert read(desk, ticket.id, "first_response", at=datetime(2026, 6, 6, 12, tzinfo=BERLIN)) == (
        ClockReading(
            "first_response",
            RUNNING,
            HOUR,
            30 * MINUTE,
            30 * MINUTE,
            datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN),
            None,
            None,
        )
    )
    monday = datetime(2026, 6, 8, 9, 20, tzinfo=BERLIN)
    assert read(desk, ticket.id, "first_response", at=monday).remaining == 10 * MINUTE


def test_the_lunch_break_is_not_counted() -> None:
    shanghai_office = office("Asia/Shanghai", lunch=True)
    desk, clock = make_desk(
        datetime(2026, 5, 6, 11, 0, tzinfo=SHANGHAI),  # a Wednesday
        standard(shanghai_office, normal=promise(first=2 * HOUR, resolution=4 * HOUR)),
    )
    ticket = open_case(desk)

    assert read(desk, ticket.id, "first_response").due_at == datetime(
        2026, 5, 6, 14, 0, tzinfo=SHANGHAI
    )
    assert read(desk, ticket.id, "resolution").due_at == datetime(
        2026, 5, 6, 16, 0, tzinfo=SHANGHAI
    )
    # 11:00–12:00 counts, 12:00–13:00 is lunch.
    for wall, left in [((12, 30), HOUR), ((13, 0), HOUR), ((13, 30), 30 * MINUTE)]:
        at = datetime(2026, 5, 6, *wall, tzinfo=SHANGHAI)
        assert read(desk, ticket.id, "first_response", at=at).remaining == left

    # 75% of two hours is 90 minutes: one hour before lunch, half an hour after.
    clock.set(datetime(2026, 5, 6, 13, 40, tzinfo=SHANGHAI))
    report = desk.run_due()
    assert sla_events(report.events) == [
        ("SlaWarning", "first_response", 75, datetime(2026, 5, 6, 13, 30, tzinfo=SHANGHAI))
    ]


def test_holidays_are_skipped_like_weekends() -> None:
    # Good Friday (3 April) and Easter Monday (6 April) 2026 are closed.
    easter = office("Europe/Berlin", holidays=[date(2026, 4, 3), date(2026, 4, 6)])
    desk, _ = make_desk(
        datetime(2026, 4, 2, 17, 30, tzinfo=BERLIN),  # Maundy Thursday, half an hour to close
        standard(easter, normal=promise(first=HOUR, resolution=9 * HOUR)),
    )
    ticket = open_case(desk)

    assert read(desk, ticket.id, "first_response").due_at == datetime(
        2026, 4, 7, 9, 30, tzinfo=BERLIN
    )
    # Nine hours: 30 minutes on Thursday and 8 h 30 on Tuesday.
    assert read(desk, ticket.id, "resolution").due_at == datetime(2026, 4, 7, 17, 30, tzinfo=BERLIN)
    easter_monday_noon = datetime(2026, 4, 6, 12, tzinfo=BERLIN)
    assert read(desk, ticket.id, "first_response", at=easter_monday_noon).remaining == 30 * MINUTE


def test_a_country_holiday_moves_the_due_time_to_the_next_working_day() -> None:
    pytest.importorskip("holidays")
    germany = BusinessCalendar("Europe/Berlin", weekly(range(5), ("09:00", "18:00")), country="DE")
    desk, _ = make_desk(
        datetime(2026, 5, 22, 17, 30, tzinfo=BERLIN),  # the Friday before Whit Monday
        standard(germany, normal=promise(HOUR)),
    )
    ticket = open_case(desk)
    assert read(desk, ticket.id, "first_response").due_at == datetime(
        2026, 5, 26, 9, 30, tzinfo=BERLIN
    )


# -- daylight saving time ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "opened", "due"),
    [
        # Friday 17:00 + 2 business hours = Monday 10:00 local, whatever the offset did.
        ("Europe/Berlin", datetime(2026, 3, 27, 17), datetime(2026, 3, 30, 10)),
        ("Europe/Berlin", datetime(2026, 10, 23, 17), datetime(2026, 10, 26, 10)),
        ("America/New_York", datetime(2026, 3, 6, 17), datetime(2026, 3, 9, 10)),
        ("America/New_York", datetime(2026, 10, 30, 17), datetime(2026, 11, 2, 10)),
    ],
    ids=["berlin-spring", "berlin-autumn", "new-york-spring", "new-york-autumn"],
)
def test_office_hours_across_a_dst_weekend(zone: str, opened: datetime, due: datetime) -> None:
    tz = ZoneInfo(zone)
    desk, _ = make_desk(
        opened.replace(tzinfo=tz), standard(office(zone), normal=promise(first=2 * HOUR))
    )
    ticket = open_case(desk)
    first = read(desk, ticket.id, "first_response")
    assert first.due_at == due.replace(tzinfo=tz)
    monday_0930 = due.replace(hour=9, minute=30, tzinfo=tz)
    assert read(desk, ticket.id, "first_response", at=monday_0930).remaining == 30 * MINUTE


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        # Saturday 17:00 EST + 1 h on Saturday + 1 h on Sunday 8 March: 10:00 EDT, 16 h later.
        (datetime(2026, 3, 7, 17, tzinfo=NEW_YORK), datetime(2026, 3, 8, 10, tzinfo=NEW_YORK)),
        # Saturday 17:00 EDT + 1 h + 1 h on Sunday 1 November: 10:00 EST, 18 h later.
        (datetime(2026, 10, 31, 17, tzinfo=NEW_YORK), datetime(2026, 11, 1, 10, tzinfo=NEW_YORK)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_seven_day_office_is_open_nine_hours_on_the_dst_sunday(
    opened: datetime, due: datetime
) -> None:
    every_day = BusinessCalendar("America/New_York", weekly(range(7), ("09:00", "18:00")))
    desk, _ = make_desk(opened, standard(every_day, normal=promise(first=2 * HOUR)))
    ticket = open_case(desk)
    assert read(desk, ticket.id, "first_response").due_at == due
    sunday_0930 = due.replace(hour=9, minute=30)
    assert read(desk, ticket.id, "first_response", at=sunday_0930).remaining == 30 * MINUTE


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        # A 00:00–06:00 night desk: on 29 March 02:00–03:00 does not exist (5 real hours), so
        # six hours of work end on Monday at 01:00.
        (datetime(2026, 3, 29, 0, tzinfo=BERLIN), datetime(2026, 3, 30, 1, tzinfo=BERLIN)),
        # On 25 October 02:00–03:00 happens twice (7 real hours): done at 05:00 CET.
        (datetime(2026, 10, 25, 0, tzinfo=BERLIN), datetime(2026, 10, 25, 5, tzinfo=BERLIN)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_night_desk_open_through_the_clock_change_counts_real_hours(
    opened: datetime, due: datetime
) -> None:
    nights = BusinessCalendar("Europe/Berlin", weekly(range(7), ("00:00", "06:00")))
    desk, _ = make_desk(opened, standard(nights, normal=promise(resolution=6 * HOUR)))
    ticket = open_case(desk)
    assert read(desk, ticket.id, "resolution").due_at == due


@pytest.mark.parametrize(
    ("zone", "opened", "due"),
    [
        # 24x7 is real time: 3 hours after 01:30 CET on 29 March is 05:30 CEST.
        ("Europe/Berlin", datetime(2026, 3, 29, 1, 30), datetime(2026, 3, 29, 5, 30)),
        # ... and after 01:30 CEST on 25 October it is 03:30 CET.
        ("Europe/Berlin", datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 3, 30)),
        ("America/New_York", datetime(2026, 3, 8, 0, 30), datetime(2026, 3, 8, 4, 30)),
        ("America/New_York", datetime(2026, 11, 1, 0, 30), datetime(2026, 11, 1, 2, 30)),
    ],
    ids=["berlin-spring", "berlin-autumn", "new-york-spring", "new-york-autumn"],
)
def test_a_24x7_chat_promise_counts_real_hours_on_dst_nights(
    zone: str, opened: datetime, due: datetime
) -> None:
    tz = ZoneInfo(zone)
    chat = SlaPolicy(
        "chat",
        calendar=BusinessCalendar.always(zone),
        targets={"normal": promise(first=3 * HOUR)},
    )
    desk, clock = make_desk(opened.replace(tzinfo=tz), chat)
    ticket = open_case(desk, channel="chat")
    assert read(desk, ticket.id, "first_response").due_at == due.replace(tzinfo=tz)

    clock.set(due.replace(tzinfo=tz) + HOUR)
    report = desk.run_due()
    assert sla_events(report.events)[-1] == (
        "SlaBreached",
        "first_response",
        None,
        due.replace(tzinfo=tz),
    )


def test_a_24x7_day_across_the_spring_change_is_23_wall_clock_hours() -> None:
    chat = SlaPolicy(
        "chat",
        calendar=BusinessCalendar.always("Europe/Berlin"),
        targets={"normal": promise(resolution=24 * HOUR)},
    )
    desk, _ = make_desk(datetime(2026, 3, 28, 12, tzinfo=BERLIN), chat)
    ticket = open_case(desk, channel="chat")
    assert read(desk, ticket.id, "resolution").due_at == datetime(2026, 3, 29, 13, tzinfo=BERLIN)


# -- pausing, resuming, reopening -------------------------------------------------------------
def test_waiting_on_the_customer_pauses_the_resolution_clock_exactly() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),  # Monday
        standard(office("Europe/Berlin"), normal=promise(first=HOUR, resolution=8 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN))
    desk.reply(ticket.id, "Which invoice number is it?", by="agent_li")
    clock.set(datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN))
    desk.fire(ticket.id, "wait_on_customer", by="agent_li")

    paused = read(desk, ticket.id, "resolution")
    assert (paused.state, paused.elapsed, paused.remaining, paused.due_at) == (
        PAUSED,
        2 * HOUR,
        6 * HOUR,
        None,
    )
    tuesday = datetime(2026, 6, 9, 15, 0, tzinfo=BERLIN)
    assert read(desk, ticket.id, "resolution", at=tuesday).remaining == 6 * HOUR
    # The first-response clock was met before and stays so.
    assert read(desk, ticket.id, "first_response").state is MET

    clock.set(datetime(2026, 6, 10, 10, 0, tzinfo=BERLIN))  # Wednesday
    resumed = desk.reply(ticket.id, "It is INV-2026-0311.", by=ANNA.id, role="customer")
    assert resumed.status == "in_progress"
    running = read(desk, ticket.id, "resolution")
    assert (running.state, running.remaining, running.due_at) == (
        RUNNING,
        6 * HOUR,
        datetime(2026, 6, 10, 16, 0, tzinfo=BERLIN),
    )
    at_noon = datetime(2026, 6, 10, 12, 0, tzinfo=BERLIN)
    assert read(desk, ticket.id, "resolution", at=at_noon).remaining == 4 * HOUR


def test_resolving_a_waiting_ticket_meets_resolution_with_the_time_before_the_pause() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(resolution=8 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN))
    desk.fire(ticket.id, "start", by="agent_li")
    desk.fire(ticket.id, "wait_on_customer", by="agent_li")
    clock.set(datetime(2026, 6, 12, 12, 0, tzinfo=BERLIN))  # no answer all week
    desk.resolve(ticket.id, by="agent_li", resolution="no answer from the customer")

    resolution = read(desk, ticket.id, "resolution")
    assert (resolution.state, resolution.elapsed, resolution.met_at) == (
        MET,
        3 * HOUR,
        datetime(2026, 6, 12, 12, 0, tzinfo=BERLIN),
    )
    [met] = of_type(desk, ticket.id, "SlaMet")
    assert (met["clock"], met["elapsed_seconds"], met["late"]) == ("resolution", 10800.0, False)


def test_a_reopened_ticket_resumes_resolution_where_it_stopped() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(resolution=9 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN))
    desk.resolve(ticket.id, by="agent_li", resolution="corrected invoice sent")
    met = read(desk, ticket.id, "resolution")
    assert (met.state, met.elapsed, met.due_at) == (MET, 3 * HOUR, None)

    clock.set(datetime(2026, 6, 9, 10, 0, tzinfo=BERLIN))
    desk.reopen(ticket.id, by="agent_li", reason="the corrected invoice is wrong too")
    resumed = read(desk, ticket.id, "resolution")
    assert (resumed.state, resumed.elapsed, resumed.met_at, resumed.due_at) == (
        RUNNING,
        3 * HOUR,
        None,
        datetime(2026, 6, 9, 16, 0, tzinfo=BERLIN),
    )
    eleven = datetime(2026, 6, 9, 11, 0, tzinfo=BERLIN)
    assert read(desk, ticket.id, "resolution", at=eleven).remaining == 5 * HOUR


def test_a_customer_writing_on_a_resolved_ticket_reopens_it_and_resolution_resumes() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(resolution=9 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 13, 0, tzinfo=BERLIN))
    desk.resolve(ticket.id, by="agent_li")
    clock.set(datetime(2026, 6, 9, 9, 0, tzinfo=BERLIN))
    reopened = desk.reply(ticket.id, "Still wrong, sorry.", by=ANNA.id, role="customer")
    assert reopened.status == "in_progress"
    assert read(desk, ticket.id, "resolution").due_at == datetime(2026, 6, 9, 14, tzinfo=BERLIN)


def test_a_closed_ticket_reopened_by_its_workflow_resumes_resolution() -> None:
    two_step = Workflow(
        name="two step",
        statuses={"new": "new", "working": "active", "closed": "closed"},
        transitions=[
            Transition("start", "new", "working"),
            Transition("close", "working", "closed"),
            Transition("reopen", "closed", "working"),
        ],
        initial="new",
    )
    clock = ManualClock(datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN))
    desk = Desk(
        store=MemoryStore(),
        clock=clock,
        workflow=two_step,
        sla=[standard(office("Europe/Berlin"), normal=promise(resolution=9 * HOUR))],
    )
    ticket = open_case(desk)
    desk.fire(ticket.id, "start", by="agent_li")
    clock.set(datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN))
    desk.fire(ticket.id, "close", by="agent_li")
    assert read(desk, ticket.id, "resolution").state is STOPPED

    clock.set(datetime(2026, 6, 9, 9, 0, tzinfo=BERLIN))
    desk.fire(ticket.id, "reopen", by="agent_li")
    resumed = read(desk, ticket.id, "resolution")
    assert (resumed.state, resumed.elapsed, resumed.due_at) == (
        RUNNING,
        2 * HOUR,
        datetime(2026, 6, 9, 16, 0, tzinfo=BERLIN),
    )


# -- priority and policy changes --------------------------------------------------------------
def test_raising_the_priority_keeps_the_time_used_and_brings_the_due_time_forward() -> None:
    berlin_office = office("Europe/Berlin")
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(
            berlin_office,
            normal=promise(first=4 * HOUR, resolution=27 * HOUR),
            high=promise(first=2 * HOUR, resolution=9 * HOUR),
        ),
    )
    ticket = open_case(desk)
    assert read(desk, ticket.id, "first_response").due_at == datetime(2026, 6, 8, 13, tzinfo=BERLIN)

    clock.set(datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN))
    desk.set_priority(ticket.id, "high", by="lead_wu", reason="the customer cannot pay")

    first = read(desk, ticket.id, "first_response")
    assert (first.target, first.elapsed, first.due_at) == (
        2 * HOUR,
        30 * MINUTE,
        datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN),
    )
    resolution = read(desk, ticket.id, "resolution")
    # 9 h minus the 30 min used: exactly to closing time.
    assert resolution.due_at == datetime(2026, 6, 8, 18, 0, tzinfo=BERLIN)
    applied = of_type(desk, ticket.id, "SlaPolicyApplied")
    assert [(a["policy"], a["priority"]) for a in applied] == [
        ("standard", "normal"),
        ("standard", "high"),
    ]
    assert applied[-1]["targets"] == {
        "first_response": 7200.0,
        "next_response": None,
        "resolution": 32400.0,
    }


def test_a_priority_raised_past_the_new_target_breaches_at_once_without_warnings() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(
            office("Europe/Berlin"),
            normal=promise(first=4 * HOUR),
            urgent=promise(first=30 * MINUTE),
        ),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN))
    desk.set_priority(ticket.id, Priority.URGENT, by="lead_wu")

    first = read(desk, ticket.id, "first_response")
    assert (first.state, first.breached_at, first.remaining) == (
        BREACHED,
        datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN),
        -30 * MINUTE,
    )
    # Warnings only come before a breach: the breach is the only news here.
    assert sla_events(desk.history(ticket.id)) == [
        ("SlaBreached", "first_response", None, datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN))
    ]


def test_a_category_that_selects_another_policy_keeps_the_time_used_on_its_calendar() -> None:
    outage = SlaPolicy(
        "outage",
        calendar=BusinessCalendar.always("Europe/Berlin"),
        targets={"normal": promise(first=2 * HOUR)},
        condition=SlaCondition(categories=["outage"]),
    )
    desk, clock = make_desk(
        datetime(2026, 6, 5, 17, 0, tzinfo=BERLIN),  # Friday
        outage,
        standard(office("Europe/Berlin"), normal=promise(first=4 * HOUR)),
    )
    ticket = open_case(desk, subject="Nobody can log in")
    assert (ticket.sla.policy, ticket.sla.reason) == ("standard", "applies to every ticket")
    assert read(desk, ticket.id, "first_response").due_at == datetime(2026, 6, 8, 12, tzinfo=BERLIN)

    clock.set(datetime(2026, 6, 5, 17, 30, tzinfo=BERLIN))
    updated = desk.update(ticket.id, by="agent_li", category="outage")

    assert updated.sla is not None
    assert (updated.sla.policy, updated.sla.reason) == ("outage", "category outage")
    first = read(desk, ticket.id, "first_response")
    # 30 office minutes used; the rest counts around the clock from 17:30.
    assert (first.target, first.elapsed, first.due_at) == (
        2 * HOUR,
        30 * MINUTE,
        datetime(2026, 6, 5, 19, 0, tzinfo=BERLIN),
    )
    assert of_type(desk, ticket.id, "SlaPolicyApplied")[-1]["reason"] == "category outage"


def test_a_breach_stays_a_breach_when_the_priority_is_lowered() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(HOUR), low=promise(8 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN))
    desk.run_due()
    desk.set_priority(ticket.id, "low", by="lead_wu", reason="not that pressing after all")

    first = read(desk, ticket.id, "first_response")
    assert (first.state, first.target, first.breached_at, first.due_at, first.remaining) == (
        BREACHED,
        8 * HOUR,
        datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN),
        None,
        5 * HOUR,
    )
    clock.set(datetime(2026, 6, 8, 18, 0, tzinfo=BERLIN))
    assert sla_events(desk.run_due().events) == []
    assert [e[0] for e in sla_events(desk.history(ticket.id))].count("SlaBreached") == 1


def test_a_clock_without_a_promise_for_the_new_priority_keeps_counting() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(2 * HOUR), low=promise()),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN))
    desk.set_priority(ticket.id, "low", by="lead_wu")
    no_promise = read(desk, ticket.id, "first_response")
    assert (no_promise.state, no_promise.target, no_promise.due_at, no_promise.remaining) == (
        RUNNING,
        None,
        None,
        None,
    )

    clock.set(datetime(2026, 6, 8, 10, 30, tzinfo=BERLIN))
    desk.set_priority(ticket.id, "normal", by="lead_wu")
    back = read(desk, ticket.id, "first_response")
    assert (back.elapsed, back.due_at) == (90 * MINUTE, datetime(2026, 6, 8, 11, tzinfo=BERLIN))


def test_an_answer_without_a_promise_is_no_sla_result() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(2 * HOUR), low=promise()),
    )
    ticket = open_case(desk)
    desk.set_priority(ticket.id, "low", by="lead_wu")
    clock.set(datetime(2026, 6, 8, 15, 0, tzinfo=BERLIN))
    desk.reply(ticket.id, "Done.", by="agent_li")

    answered = read(desk, ticket.id, "first_response")
    assert (answered.state, answered.elapsed, answered.breached_at) == (MET, 6 * HOUR, None)
    assert of_type(desk, ticket.id, "SlaMet") == []  # neither met nor breached for metrics


def test_a_clock_that_gets_a_promise_later_starts_then() -> None:
    vip = SlaPolicy(
        "vip",
        calendar=office("Europe/Berlin"),
        targets={"normal": promise(first=2 * HOUR, resolution=4 * HOUR)},
        condition=SlaCondition(tags=["vip"]),
    )
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        vip,
        standard(office("Europe/Berlin"), normal=promise(first=4 * HOUR)),
    )
    ticket = open_case(desk)
    assert read(desk, ticket.id, "resolution").state is STOPPED

    clock.set(datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN))
    desk.update(ticket.id, by="agent_li", add_tags=["vip"])
    resolution = read(desk, ticket.id, "resolution")
    assert (resolution.state, resolution.elapsed, resolution.due_at) == (
        RUNNING,
        timedelta(0),
        datetime(2026, 6, 8, 14, 0, tzinfo=BERLIN),
    )
    first = read(desk, ticket.id, "first_response")  # running since creation: one hour used
    assert (first.elapsed, first.due_at) == (HOUR, datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN))


def test_a_ticket_no_policy_covers_has_no_clocks_until_one_does() -> None:
    billing = SlaPolicy(
        "billing",
        calendar=office("Europe/Berlin"),
        targets={"normal": promise(first=2 * HOUR)},
        condition=SlaCondition(categories=["billing"]),
    )
    desk, clock = make_desk(datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN), billing)
    ticket = open_case(desk)
    assert ticket.sla is None
    assert desk.sla(ticket.id) == []

    clock.set(datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN))
    updated = desk.update(ticket.id, by="agent_li", category="billing")
    assert updated.sla is not None
    assert (updated.sla.policy, updated.sla.reason) == ("billing", "category billing")
    assert read(desk, ticket.id, "first_response").due_at == datetime(2026, 6, 8, 13, tzinfo=BERLIN)


def test_a_done_ticket_without_clocks_gets_none_from_a_desk_with_policies() -> None:
    start = datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN)
    plain, clock = make_desk(start)  # no policies: the ticket is opened and resolved bare
    ticket = open_case(plain)
    plain.resolve(ticket.id, by="agent_li")
    desk = Desk(store=plain.store, clock=clock, triage=None)  # the default policies

    closed = desk.close(ticket.id, by="c-anna")
    assert closed.sla is None
    clock.set(datetime(2026, 7, 8, 9, 0, tzinfo=BERLIN))
    assert desk.run_due().events == ()


# -- warnings and breaches as timers ----------------------------------------------------------
def test_warnings_at_75_and_90_percent_fire_once_each_at_their_own_time() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR)),
    )
    open_case(desk)

    clock.set(datetime(2026, 6, 8, 9, 50, tzinfo=BERLIN))
    first_run = desk.run_due()
    assert sla_events(first_run.events) == [
        ("SlaWarning", "first_response", 75, datetime(2026, 6, 8, 9, 45, tzinfo=BERLIN))
    ]
    assert [timer.key for timer in first_run.fired] == ["sla:first_response:warning:75"]
    [warning] = first_run.events
    assert (warning.data["remaining_seconds"], warning.data["cycle"]) == (900.0, 1)
    assert sla_events(desk.run_due().events) == []

    clock.set(datetime(2026, 6, 8, 9, 57, tzinfo=BERLIN))
    assert sla_events(desk.run_due().events) == [
        ("SlaWarning", "first_response", 90, datetime(2026, 6, 8, 9, 54, tzinfo=BERLIN))
    ]
    clock.set(datetime(2026, 6, 8, 9, 59, tzinfo=BERLIN))
    assert sla_events(desk.run_due().events) == []


def test_the_store_holds_the_next_deadline_of_each_running_clock() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR, resolution=8 * HOUR)),
    )
    ticket = open_case(desk)

    def stored() -> list[tuple[str, datetime]]:
        with desk.store.transaction() as uow:
            return [(timer.key, timer.due_at) for timer in uow.timers(ticket.id)]

    assert stored() == [
        ("sla:first_response:warning:75", datetime(2026, 6, 8, 9, 45, tzinfo=BERLIN)),
        ("sla:resolution:warning:75", datetime(2026, 6, 8, 15, 0, tzinfo=BERLIN)),
    ]
    clock.set(datetime(2026, 6, 8, 9, 50, tzinfo=BERLIN))
    desk.run_due()
    assert stored()[0] == (
        "sla:first_response:warning:90",
        datetime(2026, 6, 8, 9, 54, tzinfo=BERLIN),
    )


def test_a_run_late_in_the_day_fires_every_deadline_at_its_own_instant_in_order() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 15, 0, tzinfo=BERLIN))
    report = desk.run_due()
    assert sla_events(report.events) == [
        ("SlaWarning", "first_response", 75, datetime(2026, 6, 8, 9, 45, tzinfo=BERLIN)),
        ("SlaWarning", "first_response", 90, datetime(2026, 6, 8, 9, 54, tzinfo=BERLIN)),
        ("SlaBreached", "first_response", None, datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN)),
    ]
    first = read(desk, ticket.id, "first_response")
    assert (first.state, first.breached_at, first.remaining) == (
        BREACHED,
        datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN),
        -5 * HOUR,
    )


def test_no_warning_or_breach_once_the_agent_has_answered() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 9, 40, tzinfo=BERLIN))
    desk.reply(ticket.id, "We are correcting the invoice.", by="agent_li")
    clock.set(datetime(2026, 6, 9, 12, 0, tzinfo=BERLIN))

    assert desk.run_due().events == ()
    assert sla_events(desk.history(ticket.id)) == []
    [met] = of_type(desk, ticket.id, "SlaMet")
    assert met == {
        "clock": "first_response",
        "policy": "standard",
        "elapsed_seconds": 2400.0,
        "target_seconds": 3600.0,
        "late": False,
        "cycle": 1,
    }


def test_no_warning_while_the_resolution_clock_is_paused() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(resolution=4 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN))
    desk.fire(ticket.id, "start", by="agent_li")
    desk.fire(ticket.id, "wait_on_customer", by="agent_li")

    clock.set(datetime(2026, 6, 9, 18, 0, tzinfo=BERLIN))
    assert desk.run_due().events == ()

    clock.set(datetime(2026, 6, 10, 9, 0, tzinfo=BERLIN))
    desk.fire(ticket.id, "resume", by="agent_li")
    clock.set(datetime(2026, 6, 10, 12, 0, tzinfo=BERLIN))
    # Two hours were left: 75% (3 h) is one hour in, 90% (3 h 36) at 10:36, due at 11:00.
    assert sla_events(desk.run_due().events) == [
        ("SlaWarning", "resolution", 75, datetime(2026, 6, 10, 10, 0, tzinfo=BERLIN)),
        ("SlaWarning", "resolution", 90, datetime(2026, 6, 10, 10, 36, tzinfo=BERLIN)),
        ("SlaBreached", "resolution", None, datetime(2026, 6, 10, 11, 0, tzinfo=BERLIN)),
    ]


def test_a_policy_can_warn_at_its_own_thresholds() -> None:
    early = SlaPolicy(
        "early",
        calendar=office("Europe/Berlin"),
        targets={"normal": promise(first=HOUR)},
        warnings=[50],
    )
    desk, clock = make_desk(datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN), early)
    open_case(desk)
    clock.set(datetime(2026, 6, 8, 9, 59, tzinfo=BERLIN))
    assert sla_events(desk.run_due().events) == [
        ("SlaWarning", "first_response", 50, datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN))
    ]


def test_the_breach_is_recorded_at_its_due_time_not_when_run_due_runs() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR), high=promise(first=HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 14, 0, tzinfo=BERLIN))
    report = desk.run_due()
    [breach] = [event for event in report.events if event.type == "SlaBreached"]
    assert breach.at == datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN)
    assert datetime.fromisoformat(breach.data["due_at"]) == breach.at
    assert breach.data["target_seconds"] == 3600.0

    clock.set(datetime(2026, 6, 9, 14, 0, tzinfo=BERLIN))
    desk.set_priority(ticket.id, "high", by="lead_wu")
    assert desk.run_due().events == ()
    assert read(desk, ticket.id, "first_response").state is BREACHED


def test_a_reading_after_the_due_time_shows_the_breach_before_run_due_records_it() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR)),
    )
    ticket = open_case(desk)
    later = datetime(2026, 6, 8, 10, 20, tzinfo=BERLIN)
    projected = read(desk, ticket.id, "first_response", at=later)
    assert (projected.state, projected.breached_at, projected.due_at, projected.remaining) == (
        BREACHED,
        datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN),
        None,
        -20 * MINUTE,
    )
    clock.set(later)
    desk.run_due()
    assert read(desk, ticket.id, "first_response") == projected


def test_a_reading_before_the_tickets_last_change_is_refused_not_made_up() -> None:
    # Monday 09:00, four hours to answer; at 10:00 the priority goes up to two hours, and
    # the breach falls at 11:00. Read at 09:30, the stored clocks would say one hour used,
    # and after 11:00 a breach at 11:00: neither was so at 09:30.
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=4 * HOUR), high=promise(2 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN))
    desk.set_priority(ticket.id, "high", by="lead_wu")
    clock.set(datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN))
    desk.run_due()
    half_past_nine = datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN)
    with pytest.raises(ValidationError) as refused:
        desk.sla(ticket.id, at=half_past_nine)
    assert (refused.value.field, refused.value.value) == ("at", half_past_nine)
    # From the last change on, readings stand (here: the breach run_due recorded at noon).
    noon = read(desk, ticket.id, "first_response", at=datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN))
    assert (noon.state, noon.breached_at, noon.remaining) == (
        BREACHED,
        datetime(2026, 6, 8, 11, 0, tzinfo=BERLIN),
        -HOUR,
    )


def test_an_answer_after_the_breach_is_met_late_with_both_instants() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR)),
    )
    ticket = open_case(desk)
    # Nobody ran run_due: the reply itself catches up with the breach first.
    clock.set(datetime(2026, 6, 8, 10, 30, tzinfo=BERLIN))
    desk.reply(ticket.id, "Sorry for the wait.", by="agent_li")

    first = read(desk, ticket.id, "first_response")
    assert (first.state, first.met_at, first.breached_at, first.elapsed) == (
        MET,
        datetime(2026, 6, 8, 10, 30, tzinfo=BERLIN),
        datetime(2026, 6, 8, 10, 0, tzinfo=BERLIN),
        90 * MINUTE,
    )
    [met] = of_type(desk, ticket.id, "SlaMet")
    assert (met["late"], met["elapsed_seconds"]) == (True, 5400.0)
    types = [event.type for event in desk.history(ticket.id)]
    assert types.index("SlaBreached") < types.index("SlaMet")


def test_run_due_twice_at_the_same_instant_does_nothing_the_second_time() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR, resolution=2 * HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN))
    first = desk.run_due()
    assert len(sla_events(first.events)) == 6
    history = desk.history(ticket.id)

    second = desk.run_due()
    assert (second.fired, second.events) == ((), ())
    assert desk.history(ticket.id) == history


# -- next response cycles ---------------------------------------------------------------------
def test_each_customer_message_after_an_answer_starts_a_new_next_response_cycle() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(first=HOUR, nxt=HOUR)),
    )
    ticket = open_case(desk)

    def at(hour: int, minute: int) -> datetime:
        return clock.set(datetime(2026, 6, 8, hour, minute, tzinfo=BERLIN))

    at(9, 10)
    desk.reply(ticket.id, "Could you send the invoice number?", by="agent_li")
    assert read(desk, ticket.id, "next_response").state is STOPPED

    at(9, 30)
    desk.reply(ticket.id, "INV-2026-0311", by=ANNA.id, role="customer")
    cycle_one = read(desk, ticket.id, "next_response")
    assert (cycle_one.state, cycle_one.due_at) == (
        RUNNING,
        datetime(2026, 6, 8, 10, 30, tzinfo=BERLIN),
    )
    at(9, 45)
    desk.reply(ticket.id, "Also the one from February.", by=ANNA.id, role="customer")
    assert read(desk, ticket.id, "next_response").due_at == datetime(
        2026, 6, 8, 10, 30, tzinfo=BERLIN
    )

    at(10, 0)
    desk.reply(ticket.id, "Both corrected.", by="agent_li")
    answered = read(desk, ticket.id, "next_response")
    assert (answered.state, answered.elapsed) == (MET, 30 * MINUTE)

    at(11, 0)
    desk.reply(ticket.id, "Thanks, one more question.", by=ANNA.id, role="customer")
    at(12, 0)
    desk.run_due()
    cycle_two = read(desk, ticket.id, "next_response")
    assert (cycle_two.state, cycle_two.due_at, cycle_two.breached_at) == (
        BREACHED,
        None,
        datetime(2026, 6, 8, 12, 0, tzinfo=BERLIN),
    )
    assert [(m["clock"], m["cycle"]) for m in of_type(desk, ticket.id, "SlaMet")] == [
        ("first_response", 1),
        ("next_response", 1),
    ]
    # The 75% warning is given once per cycle: at 10:15 in the first cycle it was not reached.
    warnings = of_type(desk, ticket.id, "SlaWarning")
    assert [(w["clock"], w["threshold"], w["cycle"]) for w in warnings] == [
        ("next_response", 75, 2),
        ("next_response", 90, 2),
    ]


def test_a_customer_message_before_any_answer_starts_no_next_response_clock() -> None:
    desk, clock = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        standard(office("Europe/Berlin"), normal=promise(nxt=HOUR)),
    )
    ticket = open_case(desk)
    clock.set(datetime(2026, 6, 8, 9, 30, tzinfo=BERLIN))
    desk.reply(ticket.id, "Any news?", by=ANNA.id, role="customer")
    assert read(desk, ticket.id, "next_response").state is STOPPED

    desk.add_note(ticket.id, "Asked finance.", by="agent_li")  # a note is no answer
    desk.reply(ticket.id, "Hello?", by=ANNA.id, role="customer")
    assert read(desk, ticket.id, "next_response").state is STOPPED


# -- the defaults -----------------------------------------------------------------------------
def test_default_chat_is_answered_within_three_minutes_around_the_clock() -> None:
    desk, _ = make_desk(datetime(2026, 6, 6, 23, 59, tzinfo=UTC), *default_sla_policies())
    ticket = open_case(desk, channel="chat", subject="Card declined")
    assert ticket.sla is not None
    assert (ticket.sla.policy, ticket.sla.reason) == ("chat", "channel chat")
    first = read(desk, ticket.id, "first_response")
    assert (first.target, first.due_at) == (3 * MINUTE, datetime(2026, 6, 7, 0, 2, tzinfo=UTC))


def test_default_email_is_answered_in_office_hours_and_resolved_in_three_business_days() -> None:
    desk, _ = make_desk(datetime(2026, 6, 5, 16, 0, tzinfo=UTC), *default_sla_policies())
    ticket = open_case(desk)
    assert ticket.sla is not None
    assert (ticket.sla.policy, ticket.sla.reason) == ("standard", "applies to every ticket")
    first = read(desk, ticket.id, "first_response")
    # 4 business hours: 16:00–18:00 on Friday, 09:00–11:00 on Monday (UTC office hours).
    assert (first.target, first.due_at) == (4 * HOUR, datetime(2026, 6, 8, 11, tzinfo=UTC))
    resolution = read(desk, ticket.id, "resolution")
    # 3 business days of 9 hours: 2 h on Friday, Monday, Tuesday, and 7 h on Wednesday.
    assert (resolution.target, resolution.due_at) == (
        27 * HOUR,
        datetime(2026, 6, 10, 16, tzinfo=UTC),
    )


def test_a_desk_without_sla_settings_uses_the_defaults_in_the_given_office() -> None:
    clock = ManualClock(datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN))
    desk = Desk(store=MemoryStore(), clock=clock)
    ticket = open_case(desk)
    assert read(desk, ticket.id, "resolution").due_at == datetime(2026, 6, 10, 18, tzinfo=UTC)

    berlin_defaults = default_sla_policies(office("Europe/Berlin"))
    desk, _ = make_desk(datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN), *berlin_defaults)
    ticket = open_case(desk)
    assert read(desk, ticket.id, "resolution").due_at == datetime(2026, 6, 10, 18, tzinfo=BERLIN)


# -- which policy, and why --------------------------------------------------------------------
def test_the_first_matching_policy_applies_and_says_why() -> None:
    urgent_vip = SlaPolicy(
        "urgent vip",
        targets={"urgent": promise(first=15 * MINUTE)},
        condition=SlaCondition(
            priorities=["urgent"], channels=["email", "phone"], tiers=["VIP"], tags=["vip", "x"]
        ),
    )
    desk, _ = make_desk(
        datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN),
        urgent_vip,
        standard(office("Europe/Berlin"), urgent=promise(first=HOUR)),
    )
    vip = Customer(id="c-vip", name="Ops Lead", tier="Vip")
    ticket = open_case(desk, customer=vip, priority="urgent", tags=["vip", "x", "billing"])
    assert ticket.sla is not None
    assert ticket.sla.policy == "urgent vip"
    assert ticket.sla.reason == "priority urgent, channel email, tier vip, tag vip, x"
    [applied] = of_type(desk, ticket.id, "SlaPolicyApplied")
    assert applied == {
        "policy": "urgent vip",
        "reason": "priority urgent, channel email, tier vip, tag vip, x",
        "priority": "urgent",
        "targets": {"first_response": 900.0, "next_response": None, "resolution": None},
    }

    other = open_case(desk, customer=vip, priority="urgent", channel="chat")
    assert other.sla is not None
    assert (other.sla.policy, other.sla.reason) == ("standard", "applies to every ticket")


def test_the_reason_follows_the_fields_that_made_the_policy_match() -> None:
    vip = SlaPolicy(
        "vip",
        targets={"normal": promise(first=HOUR)},
        condition=SlaCondition(tags=["vip", "gold"]),
    )
    desk, _ = make_desk(datetime(2026, 6, 8, 9, 0, tzinfo=BERLIN), vip)
    ticket = open_case(desk, tags=["vip"])
    updated = desk.update(ticket.id, by="agent_li", add_tags=["gold"])
    assert updated.sla is not None
    assert (updated.sla.policy, updated.sla.reason) == ("vip", "tag gold, vip")
    assert len(of_type(desk, ticket.id, "SlaPolicyApplied")) == 1  # the same promise


def test_conditions_refuse_unknown_channels_and_priorities() -> None:
    with pytest.raises(ValidationError, match="channels"):
        SlaCondition(channels=["e-mail"])
    with pytest.raises(ValidationError, match="priorities"):
        SlaCondition(priorities=["critical"])
    assert SlaCondition(tags="vip").tags == frozenset({"vip"})
    assert SlaCondition(channels="chat").channels == frozenset({"chat"})


@pytest.mark.parametrize(
    ("field", "build"),
    [
        ("channels", lambda: SlaCondition(channels=None)),
        ("tags", lambda: SlaCondition(tags=7)),
        ("targets", lambda: SlaPolicy("p", targets=None)),
        ("targets", lambda: SlaPolicy("p", targets={"high": timedelta(hours=1)})),
        ("warnings", lambda: SlaPolicy("p", targets={}, warnings=None)),
        ("warnings", lambda: SlaPolicy("p", targets={}, warnings=[True])),
        ("warnings", lambda: SlaPolicy("p", targets={}, warnings=[75.5])),
        ("warnings", lambda: SlaPolicy("p", targets={}, warnings=[100])),
    ],
)
def test_malformed_policies_name_the_field(field: str, build: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert refused.value.field == field


def test_warnings_may_be_given_by_a_generator() -> None:
    assert SlaPolicy("p", targets={}, warnings=(p for p in (90, 75))).warnings == (75, 90)


CHAT_START = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("UTC"))


def chat_ticket_due_in_three_minutes() -> tuple[Desk, ManualClock, Ticket]:
    """A chat ticket opened at ``CHAT_START`` whose first response is due 3 minutes later."""
    clock = ManualClock(CHAT_START)
    policy = SlaPolicy(
        "chat", targets={Priority.NORMAL: SlaTarget(first_response=timedelta(minutes=3))}
    )
    desk = Desk(store=MemoryStore(), clock=clock, sla=[policy])
    ticket = desk.open_ticket(
        subject="Hi", body="anyone?", customer=Customer(id="c"), channel="chat"
    )
    return desk, clock, ticket


def test_an_answer_at_the_due_instant_meets_the_target() -> None:
    desk, clock, ticket = chat_ticket_due_in_three_minutes()
    clock.advance(minutes=3)
    desk.reply(ticket.id, "Hello!", by="agent_li")
    met = [e for e in desk.history(ticket.id) if e.type == "SlaMet"]
    assert [e.data["late"] for e in met] == [False]
    assert not [e for e in desk.history(ticket.id) if e.type == "SlaBreached"]


def test_a_reading_at_the_due_instant_is_what_run_due_then_records() -> None:
    desk, clock, ticket = chat_ticket_due_in_three_minutes()
    due = CHAT_START + timedelta(minutes=3)
    just_before = read(desk, ticket.id, "first_response", due - timedelta(microseconds=1))
    assert (just_before.state, just_before.remaining) == (RUNNING, timedelta(microseconds=1))
    at_due = read(desk, ticket.id, "first_response", due)
    assert (at_due.state, at_due.remaining, at_due.breached_at) == (BREACHED, timedelta(0), due)
    clock.set(due)
    desk.run_due()
    assert read(desk, ticket.id, "first_response") == at_due
    assert [e.type for e in desk.history(ticket.id)][-1] == "SlaBreached"


def test_a_target_for_an_unknown_clock_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as refused:
        SlaTarget().for_clock("for_clock")
    assert (refused.value.field, refused.value.value) == ("clock", "for_clock")


def test_a_policy_target_for_an_unknown_clock_is_refused_for_any_priority() -> None:
    policy = SlaPolicy("p", targets={Priority.HIGH: SlaTarget(resolution=timedelta(hours=4))})
    with pytest.raises(ValidationError) as refused:
        policy.target(Priority.LOW, "resolutoin")
    assert refused.value.field == "clock"


def test_the_engine_reads_a_category_given_by_name_as_the_category() -> None:
    # Each engine remembers its decisions by the category: a name must not stand in for it.
    desk = Desk(clock=ManualClock(datetime(2026, 3, 2, 9, tzinfo=ZoneInfo("UTC"))))
    ticket = desk.open_ticket(subject="VPN down", body="Since 9:00", customer=Customer(id="c"),
                              channel="email")  # fmt: skip
    now = ticket.created_at + timedelta(hours=1)
    for category in ("resolved", StatusCategory.RESOLVED):
        engine = SlaEngine(default_sla_policies())
        state, events = engine.update(
            ticket, ticket, now, category_before=StatusCategory.NEW, category_after=category
        )
        assert state is not None
        assert state.clock("resolution").state is SlaClockState.MET
        assert [event.type for event in events] == ["SlaMet"]


@pytest.mark.parametrize(
    ("field", "value"), [("tags", [None]), ("tags", b"vip"), ("tiers", [1]), ("categories", [2.5])]
)
def test_a_condition_refuses_what_is_no_name(field: str, value: Any) -> None:
    # str() used to make names of them: None became "None", b"vip" the bytes 118, 105, 112.
    with pytest.raises(ValidationError) as refused:
        SlaCondition(**{field: value})
    assert refused.value.field == field
