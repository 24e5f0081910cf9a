"""Metrics from the event stream, checked against numbers worked out by hand.

The scenario (``six_tickets``) runs through a real Desk on Monday 1 June 2026, UTC times:

====  ==========================================================================================
T1    email, agent_a. Opened 01:00, reply 01:10, resolved 02:00. Survey: CSAT 5, NPS 10, CES 2.
T2    chat, agent_b. Opened 01:30, reply 01:50, waits on the customer 01:55, customer writes
      02:00, reply 02:30, resolved 02:50. Survey: CSAT 2, NPS 6, CES 5 -> a follow-up, reached
      and satisfied at 09:00.
T3    email, agent_a. Opened 02:00; first response breached at 03:00; escalated 03:30; reply
      04:00; resolved 05:00; the customer writes 05:50 (reopened); reply 06:30; resolved 07:00.
T4    phone, agent_b. Opened 03:00, reply 03:40, reply 04:00, escalated 04:30, resolved 05:00.
T5    email, unassigned. Opened 04:00, reply by agent_a 04:50, escalated 05:30; still open.
T6    web, unassigned. Opened 05:00, cancelled 05:30.
====  ==========================================================================================

SLA (24x7): first response 1 h, resolution 8 h. Escalation: the team lead after 90 minutes.
Office hours for business time: Shanghai 09:30-12:00 and 13:00-18:00, i.e. 01:30-04:00 and
05:00-10:00 UTC on that Monday. In New York (UTC-4) 04:00 UTC is midnight between Sunday
31 May and Monday 1 June: a day, a week and a month boundary at once.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from supportflow import (
    BusinessCalendar,
    Customer,
    Desk,
    EscalationLevel,
    EscalationPolicy,
    IdleChatPolicy,
    Priority,
    SlaPolicy,
    SlaTarget,
    Transition,
    Workflow,
)
from supportflow.classify import (
    AssignTo,
    Classifier,
    Keywords,
    RaisePriority,
    RouteTo,
    Rule,
    SetCategory,
)
from supportflow.errors import ValidationError
from supportflow.events import Event, EventType
from supportflow.extensions import Triage
from supportflow.extensions.feedback import FeedbackExtension
from supportflow.feedback import FeedbackPolicy
from supportflow.metrics import (
    DurationStats,
    MetricsQuery,
    MetricsRow,
    _Run,
    compute,
    format_duration,
    format_rate,
    period_label,
    to_csv,
    to_markdown,
)
from supportflow.services import FeedbackService, daily_report, monthly_report, weekly_report
from supportflow.services.reports import report
from supportflow.storage import OutboxStatus, Record
from supportflow.testing import ManualClock, scenario_desk

UTC = timezone.utc
MONDAY = datetime(2026, 6, 1, tzinfo=UTC)
SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
OFFICE = BusinessCalendar(
    SHANGHAI, {day: [("09:30", "12:00"), ("13:00", "18:00")] for day in range(5)}
)
SECRET = b"metrics-test-secret-0123456789"


def at(hour: int, minute: int = 0) -> datetime:
    return MONDAY + timedelta(hours=hour, minutes=minute)


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def stats(median: float, p90: float, mean: float, count: int) -> DurationStats:
    return DurationStats(count, minutes(median), minutes(p90), minutes(mean))


def survey_token(desk: Desk, ticket_id: str) -> str:
    with desk.store.transaction() as uow:
        for entry in uow.list_outbox(OutboxStatus.PENDING, limit=10_000):
            note = entry.notification
            if note.kind == "survey" and note.ticket_id == ticket_id:
                return str(note.data["token"])
    raise AssertionError(f"no survey was sent for {ticket_id}")


@attrs.frozen
class Scenario:
    desk: Desk
    clock: ManualClock
    ids: dict[str, str]

    def events(self) -> list[Event]:
        with self.desk.store.transaction() as uow:
            return list(uow.iter_events())

    def compute(self, start: datetime, end: datetime, **options: Any) -> list[MetricsRow]:
        return compute(iter(self.events()), MetricsQuery(start, end, **options))


def _open(desk: Desk, name: str, channel: str, assignee: str | None) -> str:
    ticket = desk.open_ticket(
        subject=f"{name}: cannot log in",
        body="...",
        customer=Customer(id=f"c-{name}", name=name, contacts={"email": f"{name}@example.com"}),
        channel=channel,
        assignee=assignee,
    )
    return ticket.id


@pytest.fixture(scope="module")
def six_tickets() -> Scenario:
    feedback = FeedbackExtension(
        FeedbackPolicy(secret=SECRET, survey_delay=timedelta(hours=1),
                       follow_up_delay=timedelta(hours=2))
    )  # fmt: skip
    desk, clock = scenario_desk(
        at(1),
        sla=[SlaPolicy("standard", targets={Priority.NORMAL: SlaTarget(
            first_response=timedelta(hours=1), resolution=timedelta(hours=8))})],
        escalation=[EscalationPolicy("lead", levels=[
            EscalationLevel("team lead", after=minutes(90), notify=["team_lead"])])],
        idle_chat=IdleChatPolicy(enabled=False),
        extensions=feedback.extensions,
    )  # fmt: skip
    service = FeedbackService(desk, feedback)
    ids: dict[str, str] = {}

    def step(hour: int, minute: int = 0) -> None:
        clock.set(at(hour, minute))

    ids["T1"] = _open(desk, "T1", "email", "agent_a")
    step(1, 10)
    desk.reply(ids["T1"], "Try this", by="agent_a")
    step(1, 30)
    ids["T2"] = _open(desk, "T2", "chat", "agent_b")
    step(1, 50)
    desk.reply(ids["T2"], "Which browser?", by="agent_b")
    step(1, 55)
    desk.fire(ids["T2"], "wait_on_customer", by="agent_b")
    step(2)
    desk.resolve(ids["T1"], by="agent_a")
    desk.reply(ids["T2"], "Firefox", by="c-T2", role="customer")
    ids["T3"] = _open(desk, "T3", "email", "agent_a")
    step(2, 30)
    desk.reply(ids["T2"], "Clear the cache", by="agent_b")
    step(2, 50)
    desk.resolve(ids["T2"], by="agent_b")
    step(3)
    ids["T4"] = _open(desk, "T4", "phone", "agent_b")
    step(3, 40)
    desk.reply(ids["T4"], "Checking", by="agent_b")
    step(4)
    desk.reply(ids["T3"], "Sorry for the wait", by="agent_a")
    desk.reply(ids["T4"], "Found it", by="agent_b")
    ids["T5"] = _open(desk, "T5", "email", None)
    step(4, 50)
    desk.reply(ids["T5"], "On it", by="agent_a")
    step(5)
    desk.resolve(ids["T3"], by="agent_a")
    desk.resolve(ids["T4"], by="agent_b")
    ids["T6"] = _open(desk, "T6", "web", None)
    step(5, 30)
    desk.cancel(ids["T6"], by="agent_a", reason="duplicate")
    step(5, 50)
    desk.reply(ids["T3"], "Still broken", by="c-T3", role="customer")
    step(6, 30)
    desk.reply(ids["T3"], "Fixed for real", by="agent_a")
    step(7)
    desk.resolve(ids["T3"], by="agent_a")
    step(7, 30)
    desk.run_due()
    step(8)
    service.respond(survey_token(desk, ids["T1"]), csat=5, nps=10, ces=2)
    service.respond(survey_token(desk, ids["T2"]), csat=2, nps=6, ces=5)
    step(9)
    service.complete_follow_up(ids["T2"], "reached_satisfied", by="agent_b")
    return Scenario(desk, clock, ids)


SHANGHAI_DAY = (datetime(2026, 6, 1, tzinfo=ZoneInfo(SHANGHAI)),
                datetime(2026, 6, 2, tzinfo=ZoneInfo(SHANGHAI)))  # fmt: skip


def test_the_day_in_one_row_matches_the_hand_count(six_tickets: Scenario) -> None:
    [row] = six_tickets.compute(*SHANGHAI_DAY, timezone=SHANGHAI, calendar=OFFICE)
    assert (row.opened, row.resolved, row.closed, row.backlog) == (6, 5, 1, 1)
    # First responses: 10, 20, 40, 120 (T3, breached) and 50 minutes.
    assert row.first_response == stats(40, 120, 48, 5)
    # In office hours T1 (before 09:30) and T5 (over lunch) took none: 0, 0, 20, 40, 120.
    assert row.first_response_business == stats(20, 120, 36, 5)
    assert row.next_response == stats(35, 40, 35, 2)  # T2 30 min, T3 40 min
    # Resolutions 60, 80, 120, 180 and (T3 again) 300 minutes from creation.
    assert row.resolution == stats(120, 300, 148, 5)
    # Time in active statuses: T1 60, T2 25 + 50, T4 120, T3 180 then 180 + 70.
    assert row.handle == stats(120, 250, 137, 5)
    assert (row.first_resolutions, row.first_contact_resolutions, row.reopened) == (4, 1, 1)
    assert row.fcr_rate == 25.0
    assert row.reopen_rate == 25.0
    assert (row.sla["first_response"].met, row.sla["first_response"].breached) == (4, 1)
    assert row.sla_rate("first_response") == 80.0
    assert (row.sla["resolution"].met, row.sla["resolution"].breached) == (5, 0)
    assert row.sla_rate("resolution") == 100.0
    assert row.sla_rate("next_response") is None
    assert (row.csat_responses, row.csat, row.nps, row.ces) == (2, 50.0, 0.0, 3.5)
    assert row.escalations == 3
    assert (row.follow_ups_completed, row.follow_ups_failed) == (1, 0)
    assert row.follow_up_completion_rate == 100.0


def test_grouping_by_channel(six_tickets: Scenario) -> None:
    rows = six_tickets.compute(*SHANGHAI_DAY, timezone=SHANGHAI, group_by="channel")
    by = {row.group: row for row in rows}
    assert list(by) == ["chat", "email", "phone", "web"]
    email, chat = by["email"], by["chat"]
    assert (email.opened, email.resolved, email.closed, email.backlog) == (3, 3, 0, 1)
    assert email.first_response == stats(50, 120, 60, 3)
    assert (email.sla["first_response"].met, email.sla["first_response"].breached) == (2, 1)
    assert (email.fcr_rate, email.reopen_rate, email.escalations) == (50.0, 50.0, 2)
    assert (email.csat, email.nps, email.ces) == (100.0, 100.0, 2.0)
    assert (chat.opened, chat.resolved, chat.first_response.median) == (1, 1, minutes(20))
    assert chat.next_response == stats(30, 30, 30, 1)
    assert (chat.csat, chat.nps, chat.ces, chat.follow_ups_completed) == (0.0, -100.0, 5.0, 1)
    assert (by["phone"].escalations, by["phone"].fcr_rate) == (1, 0.0)
    assert (by["web"].opened, by["web"].closed, by["web"].backlog) == (1, 1, 0)
    assert by["web"].first_response.count == 0
    assert by["web"].first_response_business is None  # no calendar asked for


def test_grouping_by_agent_gives_response_times_to_who_replied(six_tickets: Scenario) -> None:
    rows = six_tickets.compute(
        *SHANGHAI_DAY, timezone=SHANGHAI, group_by="agent", include_total=True
    )
    total, *groups = rows
    by = {row.group: row for row in groups}
    assert total.group is None
    assert (total.opened, total.first_response) == (6, stats(40, 120, 48, 5))
    assert list(by) == ["(none)", "agent_a", "agent_b"]
    # T5 has no assignee, but agent_a answered it.
    assert by["agent_a"].first_response == stats(50, 120, 60, 3)
    assert by["agent_b"].first_response == stats(30, 40, 30, 2)
    assert by["(none)"].first_response.count == 0
    assert (by["(none)"].opened, by["(none)"].backlog, by["(none)"].escalations) == (2, 1, 1)
    assert (by["agent_a"].opened, by["agent_a"].resolved, by["agent_a"].csat) == (2, 3, 100.0)
    assert (by["agent_b"].resolved, by["agent_b"].csat, by["agent_b"].follow_ups_completed) == (
        2,
        0.0,
        1,
    )


def _split_in_new_york(row_may: MetricsRow, row_june: MetricsRow) -> None:
    assert (row_may.opened, row_may.resolved, row_may.closed, row_may.backlog) == (4, 2, 0, 2)
    assert row_may.first_response == stats(20, 40, 70 / 3, 3)
    assert (row_may.sla["first_response"].met, row_may.sla["first_response"].breached) == (3, 1)
    assert (row_may.fcr_rate, row_may.escalations) == (50.0, 1)
    assert (row_june.opened, row_june.resolved, row_june.closed, row_june.backlog) == (2, 3, 1, 1)
    assert row_june.first_response == stats(85, 120, 85, 2)
    assert (row_june.sla["first_response"].met, row_june.sla["first_response"].breached) == (1, 0)
    assert (row_june.fcr_rate, row_june.reopen_rate, row_june.escalations) == (0.0, 50.0, 2)
    assert row_june.csat_responses == 2


@pytest.mark.parametrize(
    ("period", "first_start"),
    [("day", datetime(2026, 5, 31)), ("week", datetime(2026, 5, 25)),
     ("month", datetime(2026, 5, 1))],
)  # fmt: skip
def test_periods_cut_at_new_york_midnight(
    six_tickets: Scenario, period: str, first_start: datetime
) -> None:
    zone = ZoneInfo(NEW_YORK)
    start, end = datetime(2026, 5, 31, tzinfo=zone), datetime(2026, 6, 2, tzinfo=zone)
    rows = six_tickets.compute(start, end, timezone=NEW_YORK, period=period)
    if period == "day":
        assert [r.period_start for r in rows] == [start, datetime(2026, 6, 1, tzinfo=zone)]
    assert rows[0].period_start == first_start.replace(tzinfo=zone)
    assert rows[0].period_start.utcoffset() == timedelta(hours=-4)
    assert rows[1].period_start == datetime(2026, 6, 1, tzinfo=zone)
    _split_in_new_york(rows[0], rows[1])


def test_backlog_is_carried_through_quiet_periods(six_tickets: Scenario) -> None:
    zone = ZoneInfo(SHANGHAI)
    rows = six_tickets.compute(
        datetime(2026, 6, 1, tzinfo=zone), datetime(2026, 6, 5, tzinfo=zone),
        timezone=SHANGHAI, period="day",
    )  # fmt: skip
    assert [(r.opened, r.backlog) for r in rows] == [(6, 1), (0, 1), (0, 1), (0, 1)]


def test_events_before_the_range_build_state_but_do_not_count(six_tickets: Scenario) -> None:
    # From 05:00 UTC on: T3's reopen and NRT count, its opening and first resolution do not.
    [row] = six_tickets.compute(at(5), at(12))
    assert (row.opened, row.resolved, row.closed, row.backlog) == (1, 3, 1, 1)
    assert row.next_response == stats(40, 40, 40, 1)
    assert row.resolution == stats(180, 300, 200, 3)  # T4 120, T3 180 and 300
    assert row.first_resolutions == 2  # T3 and T4 were first resolved at 05:00
    assert row.reopened == 1


def test_csv_and_markdown_shapes(six_tickets: Scenario) -> None:
    rows = six_tickets.compute(*SHANGHAI_DAY, timezone=SHANGHAI, group_by="channel",
                               include_total=True, calendar=OFFICE)  # fmt: skip
    table = list(csv.reader(io.StringIO(to_csv(rows))))
    header, lines = table[0], table[1:]
    assert len(lines) == 5
    assert header[:7] == ["period_start", "period_end", "group", "opened", "resolved",
                          "closed", "backlog"]  # fmt: skip
    assert "first_response_business_median_s" in header
    assert all(len(line) == len(header) for line in lines)
    total = dict(zip(header, lines[0], strict=True))
    assert (total["group"], total["opened"], total["first_response_median_s"]) == (
        "",
        "6",
        "2400.00",
    )
    assert (total["fcr_rate"], total["sla_first_response_rate"], total["nps"]) == (
        "25.00",
        "80.00",
        "0.00",
    )
    assert total["sla_next_response_rate"] == ""  # never measured
    assert total["period_start"] == "2026-06-01T00:00:00+08:00"
    markdown = to_markdown(rows).splitlines()
    assert len(markdown) == 2 + 5
    assert markdown[0].startswith("| Period | Group | Opened |")
    assert markdown[1].count("---") == markdown[0].count("|") - 1
    assert "| all | 6 | 5 | 1 | 1 | 40m 00s | 2h 00m | 48m 00s | 20m 00s |" in markdown[2]
    assert "| email | 3 |" in markdown[4]
    assert "| 25.0% | 25.0% | 80.0% | – | 100.0% | 50.0% | +0 | 3.5 | 3 | 100.0% |" in markdown[2]


def test_reports_read_the_store(six_tickets: Scenario) -> None:
    desk = six_tickets.desk
    daily = daily_report(desk, MONDAY.date(), SHANGHAI, group_by="channel")
    assert daily.total.opened == 6
    assert [r.group for r in daily.groups] == ["chat", "email", "phone", "web"]
    text = daily.to_markdown()
    assert text.startswith("# Daily support report: 2026-06-01\n")
    assert "| Tickets opened | 6 |" in text
    assert "| First response: median / p90 / mean | 40m 00s / 2h 00m / 48m 00s (5) |" in text
    assert "| CSAT (4 or 5 of 5) | 50.0% (2 answers) |" in text
    assert "## By channel" in text
    weekly = weekly_report(desk, MONDAY.date(), NEW_YORK)
    assert (weekly.total.opened, weekly.total.backlog) == (2, 1)  # Monday to Sunday in New York
    monthly = monthly_report(desk, 2026, 5, NEW_YORK)
    assert (monthly.total.opened, monthly.total.backlog) == (4, 2)
    assert monthly.groups == ()
    assert "## By" not in monthly.to_markdown()


def test_feedback_records_fill_in_answers_the_events_lack() -> None:
    opened = Event("t-1", 1, EventType.TICKET_OPENED, at(1), "c-1", {"channel": "email"})
    answered = Event("t-1", 2, EventType.FEEDBACK_RECORDED, at(2), "c-1",
                     {"survey_id": "s-1", "csat": 5, "channel": "email"})  # fmt: skip
    imported = Record("survey", "s-2", {"csat": 1, "nps": 10, "channel": "phone",
                                        "answered_at": at(3).isoformat()},
                      at(3), at(3), "t-2", "answered")  # fmt: skip
    repeated = attrs.evolve(imported, id="s-1", data={"csat": 1, "channel": "email"})
    outside = attrs.evolve(imported, id="s-3", data={"csat": 1, "answered_at": at(30).isoformat()})
    unanswered = attrs.evolve(imported, id="s-4", status="sent")
    query = MetricsQuery(at(0), at(24), group_by="channel")
    rows = compute([opened, answered], query, [imported, repeated, outside, unanswered])
    by = {row.group: row for row in rows}
    assert (by["email"].csat_responses, by["email"].csat) == (1, 100.0)
    assert (by["phone"].csat_responses, by["phone"].csat, by["phone"].nps) == (1, 0.0, 100.0)


def _history(count: int) -> Iterator[Event]:
    """``count`` tickets opened a minute apart, each closed ten minutes after it opened."""
    for number in range(count):
        ticket = f"t-{number}"
        opened_at = at(0) + minutes(number)
        yield Event(ticket, 1, EventType.TICKET_OPENED, opened_at, "c", {"channel": "email"})
        yield Event(ticket, 2, EventType.STATUS_CHANGED, opened_at + minutes(10), "a",
                    {"from_category": "new", "to_category": "closed"})  # fmt: skip


def test_closed_tickets_are_forgotten_and_the_stream_is_read_once() -> None:
    events = sorted(_history(200), key=lambda e: e.at)
    stream = iter(events)
    run = _Run(MetricsQuery(at(0), at(24)))
    run.consume(stream)
    assert next(stream, None) is None
    assert run.tickets == {}  # only open tickets are remembered
    [row] = run.rows()
    assert (row.opened, row.closed, row.backlog) == (200, 200, 0)


def rma_desk() -> tuple[Desk, ManualClock]:
    """A custom workflow that takes a closed case back into work, and moves closed cases to
    an archive that is closed too."""
    workflow = Workflow(
        name="rma",
        statuses={"new": "new", "working": "active", "solved": "resolved", "closed": "closed",
                  "archived": "closed"},
        transitions=[
            Transition("start", "new", "working"),
            Transition("solve", ("new", "working"), "solved"),
            Transition("close", "solved", "closed"),
            Transition("reopen", ("solved", "closed"), "working"),
            Transition("archive", "closed", "archived"),
        ],
        initial="new",
        automatic={"agent_reply": ["start"]},
    )  # fmt: skip
    return scenario_desk(at(9), workflow=workflow, sla=[], idle_chat=IdleChatPolicy(enabled=False))


def test_a_case_taken_back_out_of_closed_is_a_reopen_of_the_same_case() -> None:
    desk, clock = rma_desk()
    ticket = desk.open_ticket(subject="Broken hinge", body="It snapped", customer=Customer(id="c"),
                              channel="email", assignee="agent_a").id  # fmt: skip
    clock.advance(hours=1)
    desk.reply(ticket, "Send it in", by="agent_a")
    for trigger in ("solve", "close", "reopen", "solve"):
        clock.advance(hours=1)
        desk.fire(ticket, trigger, by="agent_a")
    assert desk.workflow.reopens_closed

    [total, agent] = report(desk, at(0), at(24), title="RMA", group_by="agent").rows

    assert agent.group == "agent_a"
    for row in (total, agent):
        assert (row.resolved, row.first_resolutions, row.reopened) == (2, 1, 1)
        assert (row.first_contact_resolutions, row.resolution.count, row.closed) == (0, 2, 1)


def test_a_move_between_closed_statuses_is_not_a_second_close() -> None:
    desk, clock = rma_desk()
    ticket = desk.open_ticket(subject="Broken hinge", body="It snapped", customer=Customer(id="c"),
                              channel="email").id  # fmt: skip
    for trigger in ("solve", "close", "archive"):
        clock.advance(hours=1)
        desk.fire(ticket, trigger, by="agent_a")

    [row] = report(desk, at(0), at(24), title="RMA").rows

    assert (row.opened, row.closed, row.backlog) == (1, 1, 0)


def test_the_default_workflow_never_takes_a_case_out_of_closed() -> None:
    assert not Desk().workflow.reopens_closed


def test_a_ticket_first_seen_mid_life_is_no_first_resolution() -> None:
    desk, clock = scenario_desk(at(1), sla=[])
    ticket = desk.open_ticket(subject="Printer jams", body="Again", customer=Customer(id="c"),
                              channel="email").id  # fmt: skip
    desk.reply(ticket, "Try the rear tray", by="agent_a")
    desk.resolve(ticket, by="agent_a")
    clock.advance(hours=1)
    desk.reopen(ticket, by="agent_a")
    clock.advance(hours=6)  # 08:00: reports read from here on
    desk.resolve(ticket, by="agent_a")

    [row] = report(desk, at(0), at(24), title="Day", history_from=at(8)).rows

    assert (row.resolved, row.first_resolutions, row.first_contact_resolutions) == (1, 0, 0)
    assert row.fcr_rate is None


def test_reading_stops_at_the_end_of_the_range() -> None:
    events = sorted(_history(30), key=lambda e: e.at)
    stream = iter(events)
    [row] = compute(stream, MetricsQuery(at(0), at(0) + minutes(15)))
    assert (row.opened, row.closed, row.backlog) == (15, 5, 10)
    assert next(stream).at >= at(0) + minutes(15)  # the rest was left unread


def test_query_is_checked() -> None:
    with pytest.raises(ValidationError, match="end="):
        MetricsQuery(at(2), at(1))
    with pytest.raises(ValidationError, match="timezone="):
        MetricsQuery(at(0), at(1), timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="period="):
        MetricsQuery(at(0), at(1), period="fortnight")
    with pytest.raises(ValidationError, match="start="):
        MetricsQuery(datetime(2026, 6, 1), at(1))  # naive


def test_month_report_example_runs() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "month_report.py"
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "# Monthly support report: 2026-03" in result.stdout
    assert "## By channel" in result.stdout


# -- ill-typed arguments ------------------------------------------------------------------------
QUERY = MetricsQuery(MONDAY, MONDAY + timedelta(days=1))
OPENED = Event("t-1", 1, EventType.TICKET_OPENED, at(1), "c-1", {"channel": "email"})
ANSWERED = Record("survey", "s-1", {"csat": 5, "answered_at": at(2).isoformat()}, at(2), at(2),
                  "t-1", "answered")  # fmt: skip


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda: MetricsQuery(at(0), at(1), timezone=None), "timezone"),
     (lambda: MetricsQuery(at(0), at(1), timezone=ZoneInfo(SHANGHAI)), "timezone"),
     (lambda: MetricsQuery(at(0), at(1), include_total="yes"), "include_total"),
     (lambda: MetricsQuery(None, at(1)), "start"),
     (lambda: compute(None, QUERY), "events"), (lambda: compute(5, QUERY), "events"),
     (lambda: compute([object()], QUERY), "events"),
     (lambda: compute(["TicketOpened"], QUERY), "events"),
     (lambda: compute(iter([OPENED, {"type": "TicketOpened"}]), QUERY), "events"),
     (lambda: compute([attrs.evolve(OPENED, at=datetime(2026, 6, 1, 1))], QUERY), "events"),
     (lambda: compute([attrs.evolve(OPENED, at=None)], QUERY), "events"),
     (lambda: compute([], None), "query"), (lambda: compute([OPENED], "day"), "query"),
     (lambda: compute([OPENED], QUERY, reopens_closed="no"), "reopens_closed"),
     (lambda: compute([], QUERY, None), "feedback"),
     (lambda: compute([], QUERY, [object()]), "feedback"),
     (lambda: compute([], QUERY, [attrs.evolve(ANSWERED, data={"answered_at": "noon"})]),
      "feedback"),
     (lambda: to_csv(None), "rows"), (lambda: to_csv([None]), "rows"),
     (lambda: to_markdown("rows"), "rows"),
     (lambda: format_duration(5), "value"), (lambda: format_duration("1h"), "value"),
     (lambda: format_rate(""), "value"), (lambda: format_rate(True), "value"),
     (lambda: format_rate(50.0, signed="yes"), "signed"),
     (lambda: period_label(None), "row"),
     (lambda: DurationStats.of(5), "seconds"), (lambda: DurationStats.of(["60"]), "seconds")],
)  # fmt: skip
def test_metrics_refuse_ill_typed_arguments(call: Callable[[], object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        call()
    assert refused.value.field == field


def test_metrics_still_take_what_they_took() -> None:
    [row] = compute(iter([OPENED]), QUERY, (ANSWERED,))
    assert (row.opened, row.csat_responses) == (1, 1)
    assert to_csv(rows=[row]) == to_csv((row,))
    assert [format_duration(None), format_duration(minutes(2))] == ["–", "2m 00s"]
    assert [format_rate(None), format_rate(80), format_rate(40.0, signed=True)] == [
        "–",
        "80.0%",
        "+40",
    ]
    assert DurationStats.of([]) == DurationStats()


def test_a_fault_inside_the_loop_is_not_blamed_on_the_events() -> None:
    class Broken(BusinessCalendar):
        def between(self, start: datetime, end: datetime) -> timedelta:
            raise TypeError("a bug, not bad input")

    calendar = Broken("UTC", {day: [("00:00", "24:00")] for day in range(7)})
    reply = Event("t-1", 2, EventType.MESSAGE_ADDED, at(2), "agent_a",
                  {"role": "agent", "author": "agent_a"})  # fmt: skip
    with pytest.raises(TypeError, match="a bug"):
        compute([OPENED, reply], MetricsQuery(at(0), at(24), calendar=calendar))


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda desk: daily_report(None, MONDAY.date()), "desk"),
     (lambda desk: daily_report(desk, None), "day"),
     (lambda desk: daily_report(desk, "2026-06-01"), "day"),
     (lambda desk: daily_report(desk, MONDAY.date(), tz=None), "tz"),
     (lambda desk: daily_report(desk, MONDAY.date(), tz=ZoneInfo(SHANGHAI)), "tz"),
     (lambda desk: daily_report(desk, MONDAY.date(), "Mars/Olympus"), "tz"),
     (lambda desk: daily_report(desk, date.max), "day"),
     (lambda desk: daily_report(desk, MONDAY.date(), group_by="team"), "group_by"),
     (lambda desk: daily_report(desk, MONDAY.date(), history_from="2026-01-01"), "history_from"),
     (lambda desk: weekly_report(desk, None), "week_of"),
     (lambda desk: weekly_report(object(), MONDAY.date()), "desk"),
     (lambda desk: monthly_report(desk, 2026, None), "month"),
     (lambda desk: monthly_report(desk, 2026, 13), "month"),
     (lambda desk: monthly_report(desk, 2026, 3.0), "month"),
     (lambda desk: monthly_report(desk, "2026", 3), "year"),
     (lambda desk: monthly_report(desk, 0, 3), "year"),
     (lambda desk: monthly_report(desk, 9999, 12), "month"),
     (lambda desk: monthly_report(None, 2026, 3), "desk"),
     (lambda desk: report(desk, at(0), at(1), title=None), "title"),
     (lambda desk: report(desk, at(0), None, title="x"), "end")],
)  # fmt: skip
def test_reports_refuse_ill_typed_arguments(
    six_tickets: Scenario, call: Callable[[Desk], object], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        call(six_tickets.desk)
    assert refused.value.field == field


def test_a_report_day_may_still_be_a_datetime(six_tickets: Scenario) -> None:
    desk = six_tickets.desk
    by_date = daily_report(desk, MONDAY.date(), SHANGHAI)
    assert daily_report(desk, MONDAY, SHANGHAI).rows == by_date.rows
    june = monthly_report(desk, 2026, 6, SHANGHAI, history_from=at(0) - timedelta(days=1))
    assert june.total.opened == 6


@pytest.mark.parametrize("make_desk", [rma_desk, lambda: scenario_desk(at(9), sla=[])])
def test_a_reply_on_a_closed_ticket_is_no_response_whatever_the_workflow(
    make_desk: Callable[[], tuple[Desk, ManualClock]],
) -> None:
    # Whether the workflow can take a closed case back (rma) or not (the default one), an
    # agent writing on a case closed unanswered answers nobody waiting: no first response.
    desk, clock = make_desk()
    ticket = desk.open_ticket(subject="Broken hinge", body="It snapped", customer=Customer(id="c"),
                              channel="email").id  # fmt: skip
    clock.advance(hours=1)
    if desk.workflow.reopens_closed:
        desk.fire(ticket, "solve", by="agent_a")
        desk.fire(ticket, "close", by="agent_a")
    else:
        desk.cancel(ticket, by="agent_a", reason="duplicate")
    clock.advance(hours=5)
    desk.reply(ticket, "Sorry, we missed this", by="agent_b")

    [row] = report(desk, at(0), at(24), title="Day").rows

    assert (row.opened, row.closed, row.first_response.count) == (1, 1, 0)


def test_events_stamped_in_a_local_zone_are_measured_in_real_time() -> None:
    # New York springs forward at 02:00 on 8 March 2026: 01:00 to 04:00 local is two hours.
    new_york = ZoneInfo(NEW_YORK)

    def local(hour: int) -> datetime:
        return datetime(2026, 3, 8, hour, tzinfo=new_york)

    opened = attrs.evolve(OPENED, at=local(1))
    reply = Event("t-1", 2, EventType.MESSAGE_ADDED, local(4), "agent_a",
                  {"role": "agent", "author": "agent_a"})  # fmt: skip
    resolved = Event("t-1", 3, EventType.STATUS_CHANGED, local(5), "agent_a",
                     {"from_category": "new", "to_category": "resolved"})  # fmt: skip
    query = MetricsQuery(local(0), local(23), timezone=NEW_YORK)

    [row] = compute([opened, reply, resolved], query)

    assert row.first_response.median == timedelta(hours=2)
    assert row.resolution.median == timedelta(hours=3)


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda: MetricsQuery(datetime(1, 1, 1, tzinfo=ZoneInfo(SHANGHAI)),
                           datetime(1, 1, 2, tzinfo=ZoneInfo(SHANGHAI))), "start"),
     (lambda: MetricsQuery(datetime(9999, 12, 31, 20, tzinfo=UTC),
                           datetime(9999, 12, 31, 22, tzinfo=UTC), timezone="Asia/Tokyo"), "start"),
     (lambda: MetricsQuery(datetime(9999, 12, 1, tzinfo=UTC), datetime(9999, 12, 2, tzinfo=UTC),
                           period="month"), "period"),
     (lambda: MetricsQuery(datetime(9999, 12, 31, 10, tzinfo=UTC),
                           datetime(9999, 12, 31, 12, tzinfo=UTC), timezone="Asia/Tokyo",
                           period="day"), "period")],
)  # fmt: skip
def test_a_range_beyond_the_calendar_is_refused(call: Callable[[], object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        call()
    assert refused.value.field == field


def test_a_report_on_the_first_day_of_the_calendar_names_the_day() -> None:
    desk, _ = scenario_desk(at(0), sla=[])
    for call, field in [(lambda: daily_report(desk, date(1, 1, 1), SHANGHAI), "day"),
                        (lambda: weekly_report(desk, date(1, 1, 3), SHANGHAI), "week_of"),
                        (lambda: monthly_report(desk, 1, 1, SHANGHAI), "year")]:  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            call()
        assert refused.value.field == field


@pytest.mark.parametrize(
    ("group_by", "groups"),
    [("category", {"billing": 2, "(none)": 1}), ("group", {"finance": 2, "(none)": 1}),
     ("priority", {"high": 2, "normal": 1}), ("agent", {"agent_b": 2, "(none)": 1})],
)  # fmt: skip
def test_a_ticket_classified_as_it_opens_is_opened_in_its_group(
    group_by: str, groups: dict[str, int]
) -> None:
    # Triage sets the category, team, priority and agent in the command that opens the
    # ticket: the ticket opens in those groups, where its backlog is too.
    actions = [
        SetCategory("billing"),
        RouteTo("finance"),
        RaisePriority("high"),
        AssignTo("agent_b"),
    ]
    billing = Rule("billing", Keywords(["refund"]), actions)
    desk, _ = scenario_desk(at(1), sla=[], triage=Triage(Classifier([billing])))
    for subject in ("A refund, please", "Refund for order 7", "The app crashes"):
        desk.open_ticket(subject=subject, body="...", customer=Customer(id="c"), channel="email")

    rows = report(desk, at(0), at(24), title="Day", group_by=group_by).groups

    assert {row.group: row.opened for row in rows} == groups
    assert {row.group: row.backlog for row in rows} == groups
