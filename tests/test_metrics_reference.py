"""The metrics against a reference written straight from docs/metrics.md.

Hypothesis plays a desk — tickets opened on several channels, priorities, teams and agents,
agent and customer replies, internal notes, assignments, priority and category changes, any
trigger the workflow allows (the default one, or a custom one with extra active, waiting,
resolved and closed statuses that can take a closed case back), survey answers and follow-up
calls — while a manual clock jumps by minutes to days across New York's DST switch and
``run_due`` fires the SLA, escalation, survey and auto-close deadlines. Then a report range is
drawn: anywhere in that history (cutting tickets' lives, starting on an event's instant or
before the first one), cut into days, weeks or months in a zone with DST (or none), grouped by
any dimension, with business time on an office calendar, and sometimes reading only from a
later ``history_from`` (tickets first seen mid-life).

The reference replays each ticket's own events in order and applies the documented meaning of
each figure; business time is counted from the office hours themselves, not with
``BusinessCalendar.between``. Every figure of every row must agree — and the SQLite store
must give the same events and figures as the memory store, and so must PostgreSQL when
``SUPPORTFLOW_PG_URL`` is set (``.ci/run``).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from supportflow.errors import SupportflowError
from supportflow.events import Event
from supportflow.extensions import Triage
from supportflow.extensions.feedback import FeedbackExtension
from supportflow.feedback import FeedbackPolicy
from supportflow.metrics import DurationStats, MetricsQuery, MetricsRow, compute
from supportflow.services import FeedbackService, monthly_report
from supportflow.storage import MemoryStore, OutboxStatus, SqliteStore, SqlStore, Storage
from supportflow.testing import ManualClock
from supportflow.testing.postgres import private_schema

UTC = timezone.utc
START = datetime(2026, 3, 6, 14, tzinfo=UTC)  # two days before New York springs forward
OFFICE_ZONE = "America/New_York"
OFFICE_HOURS = {day: [("08:00", "12:00"), ("13:00", "17:30")] for day in range(5)} | {
    5: [("22:00", "24:00")]
}
OFFICE = BusinessCalendar(OFFICE_ZONE, OFFICE_HOURS)
ZONES = ("America/New_York", "Europe/Berlin", "Asia/Shanghai", "America/Santiago")
AGENTS = ("ann", "bob", "cy")
UNRESOLVED = frozenset({"new", "active", "waiting"})


def rma_workflow() -> Workflow:
    """Extra statuses in every category, and a trigger that takes a closed case back."""
    return Workflow(
        name="rma",
        statuses={"new": "new", "triaged": "active", "working": "active", "vendor": "waiting",
                  "customer": "waiting", "solved": "resolved", "verified": "resolved",
                  "closed": "closed", "archived": "closed", "spam": "closed"},
        transitions=[
            Transition("triage", "new", "triaged"),
            Transition("start", ("new", "triaged"), "working"),
            Transition("to_vendor", ("triaged", "working"), "vendor"),
            Transition("wait", ("triaged", "working"), "customer"),
            Transition("back", ("vendor", "customer"), "working"),
            Transition("customer_replied", "customer", "working"),
            Transition("solve", ("new", "triaged", "working", "vendor", "customer"), "solved"),
            Transition("verify", "solved", "verified"),
            Transition("reopen", ("solved", "verified"), "working"),
            Transition("close", ("solved", "verified"), "closed"),
            Transition("archive", "closed", "archived"),
            Transition("revive", ("closed", "archived"), "working"),
            Transition("junk", ("new", "triaged"), "spam"),
        ],
        initial="new",
        automatic={"agent_reply": ["start"], "assign": ["triage"],
                   "customer_reply": ["customer_replied", "reopen"]},
    )  # fmt: skip


TRIAGE_RULES = [  # a ticket may be classified and routed in the command that opens it
    Rule("billing", Keywords(["refund", "invoice"]), [SetCategory("billing"), RouteTo("finance")]),
    Rule("urgent", Keywords(["refund"]), [RaisePriority("high"), AssignTo("cy")]),
    Rule("network", Keywords(["vpn"]), [SetCategory("network")]),
]


# -- the desk, played ---------------------------------------------------------------------------
STEPS = (0, 3, 20, 45, 90, 240, 600, 1500, 3000)
OPS = st.lists(
    st.tuples(st.integers(0, 11), st.integers(0, 7), st.integers(0, 5), st.sampled_from(STEPS)),
    min_size=5,
    max_size=70,
)


def play(ops: Sequence[tuple[int, int, int, int]], custom: bool, store: Storage) -> Desk:
    """Run ``ops`` on a fresh desk; commands the desk refuses are part of the game."""
    clock = ManualClock(START)
    feedback = FeedbackExtension(
        FeedbackPolicy(secret=b"metrics-reference-secret-0123", survey_delay=timedelta(minutes=30),
                       follow_up_delay=timedelta(hours=1), follow_up_retries=1,
                       follow_up_retry_interval=timedelta(hours=1))
    )  # fmt: skip
    target = SlaTarget(timedelta(minutes=60), timedelta(minutes=120), timedelta(hours=8))
    counter = itertools.count(1)
    desk = Desk(
        store, clock, rma_workflow() if custom else None,
        sla=[SlaPolicy("std", dict.fromkeys(Priority, target), calendar=OFFICE)],
        escalation=[EscalationPolicy("lead", levels=[
            EscalationLevel("lead", after=timedelta(minutes=90), notify=["team_lead"],
                            repeat_every=timedelta(hours=4))])],
        idle_chat=IdleChatPolicy(enabled=False),
        triage=Triage(Classifier(TRIAGE_RULES)),
        extensions=feedback.extensions,
        id_factory=lambda: f"id-{next(counter):05d}",
    )  # fmt: skip
    service = FeedbackService(desk, feedback)
    tickets: list[str] = []
    answered: set[str] = set()
    for kind, pick, param, minutes in ops:
        try:
            if kind == 0 or not tickets:
                ticket = desk.open_ticket(
                    subject=("cannot log in", "refund please", "vpn down", "wrong invoice")[
                        (pick + param) % 4
                    ], body="...", customer=Customer(id=f"c{len(tickets)}"),
                    channel=("email", "chat", "phone", "web")[param % 4],
                    priority=(None, "low", "high")[pick % 3],
                    category=(None, "billing", "tech")[param % 3],
                    group=(None, "t1", "t2")[pick % 3], assignee=(None, *AGENTS)[param % 4],
                )  # fmt: skip
                tickets.append(ticket.id)
            else:
                ticket_id = tickets[-1 - pick % len(tickets)]
                ticket = desk.get_ticket(ticket_id)
                if kind in (1, 2):
                    desk.reply(ticket_id, "answer", by=AGENTS[param % 3])
                elif kind == 3:
                    follow_up = desk.reply(ticket_id, "more", by="customer", role="customer")
                    if follow_up.id != ticket_id:  # written on a closed ticket: a new one
                        tickets.append(follow_up.id)
                elif kind == 4:
                    desk.add_note(ticket_id, "note", by=AGENTS[param % 3])
                elif kind == 5:
                    if param % 2:
                        desk.assign(ticket_id, AGENTS[param % 3], by="lead")
                    else:
                        desk.assign(ticket_id, group=("t1", "t2", "t3")[param % 3], by="lead")
                elif kind == 6:
                    desk.set_priority(ticket_id, ("low", "normal", "high")[param % 3], by="lead")
                    desk.update(ticket_id, by="lead", category=("billing", "tech")[param % 2])
                elif kind in (7, 8, 9):
                    allowed = desk.workflow.allowed(ticket.status)
                    if allowed:
                        trigger = allowed[param % len(allowed)]
                        extra = {"reason": "duplicate"} if trigger == "cancel" else {}
                        desk.fire(ticket_id, trigger, by=AGENTS[param % 3], **extra)
                elif kind == 10:
                    tokens = _survey_tokens(desk, answered)
                    if tokens:
                        token = tokens[pick % len(tokens)]
                        answered.add(token)
                        service.respond(token, csat=1 + param % 5, nps=(0, 6, 8, 9, 10, 3)[param],
                                        ces=None if param == 5 else 1 + param)  # fmt: skip
                else:
                    pending = service.follow_ups(status="scheduled")
                    if pending:
                        outcome = ("reached_satisfied", "not_reachable",
                                   "reached_not_satisfied")[param % 3]  # fmt: skip
                        service.complete_follow_up(
                            pending[pick % len(pending)].ticket_id, outcome, by="ann"
                        )
        except SupportflowError:
            pass
        clock.advance(minutes=minutes)
        if kind % 3 == 0:
            desk.run_due(limit=10_000)
    clock.advance(hours=1)
    desk.run_due(limit=10_000)
    return desk


def _survey_tokens(desk: Desk, answered: set[str]) -> list[str]:
    with desk.store.transaction() as uow:
        notes = [e.notification for e in uow.list_outbox(OutboxStatus.PENDING, limit=100_000)]
    tokens = (str(n.data["token"]) for n in notes if n.kind == "survey")
    return [token for token in tokens if token not in answered]


def history(desk: Desk) -> list[Event]:
    with desk.store.transaction() as uow:
        return list(uow.iter_events())


# -- the reference ------------------------------------------------------------------------------
def periods(start: datetime, end: datetime, zone: ZoneInfo, period: str | None) -> list[datetime]:
    """Each period's end: midnights in ``zone`` after ``start``, the last one cut at ``end``."""
    if period is None:
        return [end]
    day = start.astimezone(zone).date()
    ends = []
    while True:
        if period == "day":
            day += timedelta(days=1)
        elif period == "week":
            day += timedelta(days=7 - day.weekday())
        else:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        midnight = datetime.combine(day, time(), zone)
        ends.append(min(midnight, end))
        if midnight >= end:
            return ends


def office_seconds(start: datetime, end: datetime) -> float:
    """Business seconds from ``start`` to ``end``, from the office hours day by day."""
    zone, total = ZoneInfo(OFFICE_ZONE), 0.0
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        for opens, closes in OFFICE_HOURS.get(day.weekday(), ()):
            low = datetime.combine(day, time.fromisoformat(opens), zone).astimezone(UTC)
            high = (
                datetime.combine(day + timedelta(days=1), time(), zone)
                if closes == "24:00"
                else datetime.combine(day, time.fromisoformat(closes), zone)
            ).astimezone(UTC)
            total += max(0.0, (min(high, end) - max(low, start)).total_seconds())
        day += timedelta(days=1)
    return total


class Figures:
    """What the reference counts for one period and group."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.durations: defaultdict[str, list[float]] = defaultdict(list)
        self.sla: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])

    def summary(self, business: bool) -> dict[str, Any]:
        names = ["frt", "nrt", "res", "handle"]
        names += [f"{name}_b" for name in names] if business else []
        counts = {name: count for name, count in self.counts.items() if count}
        sla = {clock: tuple(v) for clock, v in sorted(self.sla.items()) if any(v)}
        return {"counts": counts, "sla": sla,
                **{name: stats(self.durations[name]) for name in names}}  # fmt: skip


def stats(seconds: list[float]) -> tuple[int, float, float, float] | None:
    """Count, median, nearest-rank p90 and mean, by their definitions."""
    if not seconds:
        return None
    ordered, n = sorted(seconds), len(seconds)
    middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    p90 = next(v for rank, v in enumerate(ordered, 1) if rank * 10 >= n * 9)
    return (n, round(middle, 3), round(p90, 3), round(sum(ordered) / n, 3))


def reference(
    events: Iterable[Event],
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    period: str | None,
    group_by: str | None,
    business: bool,
) -> dict[tuple[int, str | None], dict[str, Any]]:
    """Figures per (period index, group), each ticket's events replayed on their own (a closed
    ticket's too: whether the workflow can take it back or not changes no figure)."""
    ends = periods(start, end, zone, period)
    figures: defaultdict[tuple[int, str | None], Figures] = defaultdict(Figures)
    per_ticket: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        per_ticket[event.ticket_id].append(event)
    none, unknown = ("(none)", "(unknown)") if group_by else (None, None)

    def period_of(at: datetime) -> int | None:
        if not start <= at < end:
            return None
        return next(index for index, bound in enumerate(ends) if at < bound)

    def count(at: datetime, key: str | None, name: str, by: int = 1) -> None:
        index = period_of(at)
        if index is not None:
            figures[index, key].counts[name] += by

    def measure(at: datetime, key: str | None, name: str, seconds: float) -> None:
        index = period_of(at)
        if index is not None:
            figures[index, key].durations[name].append(seconds)

    for stream in per_ticket.values():
        opened_at: datetime | None = None
        key, category, since = unknown, None, None  # None: not yet known (first seen later)
        opened_key = key
        active = active_b = 0.0
        replies, awaiting = 0, None
        resolved_once = reopened = False
        first_counted: tuple[int, str | None] | None = None
        fcr_candidate = False
        states: list[tuple[datetime, bool, str | None]] = []  # (at, in backlog, group) after
        for event in sorted(stream, key=lambda e: e.sequence):
            at, data, kind = event.at, event.data, event.type
            if kind == "TicketOpened":
                opened_at, since, category = at, at, "new"
                field = "assignee" if group_by == "agent" else group_by
                key = opened_key = (data.get(field) or none) if field else None
                states.append((at, True, key))
            elif kind == "StatusChanged":
                before, after = data["from_category"], data["to_category"]
                if category is None:
                    since = at
                if before == "active" and since is not None:
                    active += (at - since).total_seconds()
                    active_b += office_seconds(since, at)
                since, category = at, after
                states.append((at, after in UNRESOLVED, key))
                if after == "resolved":
                    if before == "resolved":  # between two resolved statuses
                        continue
                    awaiting = None
                    count(at, key, "resolved")
                    if opened_at is not None:
                        measure(at, key, "res", (at - opened_at).total_seconds())
                        measure(at, key, "handle", active)
                        measure(at, key, "res_b", office_seconds(opened_at, at))
                        measure(at, key, "handle_b", active_b)
                    if not resolved_once:
                        resolved_once = True
                        index = period_of(at)
                        if index is not None and opened_at is not None:
                            figures[index, key].counts["first"] += 1
                            first_counted = (index, key)
                            fcr_candidate = replies <= 1
                elif after == "closed":
                    if before != "closed":
                        count(at, key, "closed")
                elif not reopened and (
                    before == "resolved" or (before == "closed" and resolved_once)
                ):
                    reopened, fcr_candidate = True, False
                    if first_counted is not None:
                        figures[first_counted].counts["reopened"] += 1
            elif kind == "MessageAdded" and category not in (None, "closed"):
                if data["role"] == "agent":
                    replies += 1
                    waited_from = opened_at if replies == 1 else awaiting
                    awaiting = None
                    if waited_from is not None:
                        group = data["author"] if group_by == "agent" else key
                        name = "frt" if replies == 1 else "nrt"
                        measure(at, group, name, (at - waited_from).total_seconds())
                        measure(at, group, f"{name}_b", office_seconds(waited_from, at))
                elif data["role"] == "customer" and replies and awaiting is None:
                    awaiting = at
            elif kind in ("SlaMet", "SlaBreached"):
                index = period_of(at)
                breached = kind == "SlaBreached"
                if index is not None and (breached or not data.get("late")):
                    figures[index, key].sla[data["clock"]][breached] += 1
            elif kind == "Escalated" and not data.get("repeat"):
                count(at, key, "escalations")
            elif kind in ("FeedbackRecorded", "FollowUpCompleted", "FollowUpFailed"):
                group = (data.get(group_by) or none) if group_by else None
                if kind == "FeedbackRecorded":
                    for score, good in (("csat", 4), ("nps", 9)):
                        if data.get(score) is not None:
                            count(at, group, f"{score}_n")
                            if data[score] >= good:
                                count(at, group, f"{score}_good")
                    if data.get("nps") is not None and data["nps"] <= 6:
                        count(at, group, "nps_bad")
                    if data.get("ces") is not None:
                        count(at, group, "ces_n")
                        count(at, group, "ces_sum", data["ces"])
                else:
                    count(at, group, "fu_done" if kind == "FollowUpCompleted" else "fu_failed")
            elif category is not None and (
                (kind == "Assigned" and group_by in ("agent", "group"))
                or (kind == "PriorityChanged" and group_by == "priority")
                or (kind == "TicketUpdated" and group_by == "category")
            ):
                if kind == "Assigned":
                    key = data["assignee" if group_by == "agent" else "group"] or none
                elif kind == "PriorityChanged":
                    key = data["to"] or none
                elif "category" in data["changes"]:
                    key = data["changes"]["category"][1] or none
                states.append((at, category in UNRESOLVED, key))
                if at == opened_at:  # classified or routed as it opened
                    opened_key = key
        if opened_at is not None:  # in the group it had once its opening instant was over
            count(opened_at, opened_key, "opened")
        if fcr_candidate and first_counted is not None:
            figures[first_counted].counts["fcr"] += 1
        for index, bound in enumerate(ends):
            before_bound = [(backlog, group) for at, backlog, group in states if at < bound]
            if before_bound and before_bound[-1][0]:
                figures[index, before_bound[-1][1]].counts["backlog"] += 1
    return {slot: f.summary(business) for slot, f in figures.items()}


def library(rows: Sequence[MetricsRow], ends: list[datetime]) -> dict[Any, dict[str, Any]]:
    """The same summary of the library's rows."""

    def seconds(value: DurationStats | None) -> tuple[int, float, float, float] | None:
        if value is None or not value.count:
            return None
        assert value.median is not None
        assert value.p90 is not None
        assert value.mean is not None
        return (value.count, *(round(v.total_seconds(), 3) for v in
                               (value.median, value.p90, value.mean)))  # fmt: skip

    out = {}
    for row in rows:
        index = ends.index(min(row.period_end, ends[-1]))
        counts = {
            "opened": row.opened, "resolved": row.resolved, "closed": row.closed,
            "backlog": row.backlog, "first": row.first_resolutions,
            "fcr": row.first_contact_resolutions, "reopened": row.reopened,
            "escalations": row.escalations, "csat_n": row.csat_responses,
            "csat_good": row.csat_satisfied, "nps_n": row.nps_responses,
            "nps_good": row.nps_promoters, "nps_bad": row.nps_detractors,
            "ces_n": row.ces_responses, "ces_sum": row.ces_total,
            "fu_done": row.follow_ups_completed, "fu_failed": row.follow_ups_failed,
        }  # fmt: skip
        summary: dict[str, Any] = {
            "counts": {name: value for name, value in counts.items() if value},
            "sla": {c: (s.met, s.breached) for c, s in row.sla.items() if s.met or s.breached},
        }
        for name, field in (("frt", "first_response"), ("nrt", "next_response"),
                            ("res", "resolution"), ("handle", "handle")):  # fmt: skip
            summary[name] = seconds(getattr(row, field))
            if row.first_response_business is not None:
                summary[f"{name}_b"] = seconds(getattr(row, f"{field}_business"))
        out[index, row.group] = summary
    return out


QUERIES = st.fixed_dictionaries(
    {
        "start": st.integers(-600, 60 * 24 * 12),
        "length": st.integers(1, 60 * 24 * 40),
        "on_event": st.booleans(),
        "zone": st.sampled_from(ZONES),
        "period": st.sampled_from([None, "day", "week", "month"]),
        "group_by": st.sampled_from([None, "channel", "category", "priority", "group", "agent"]),
        "business": st.booleans(),
        "history_from": st.none() | st.integers(0, 60 * 24 * 3),
    }
)


def check(events: list[Event], desk: Desk, query: dict[str, Any]) -> None:
    start = START + timedelta(minutes=query["start"])
    if query["on_event"]:  # the range starts on an event's instant
        start = min(events, key=lambda e: abs(e.at - start)).at
    end = start + timedelta(minutes=query["length"])
    read_from = None
    if query["history_from"] is not None:
        read_from = start - timedelta(minutes=query["history_from"])
    zone = ZoneInfo(query["zone"])
    calendar = OFFICE if query["business"] else None
    metrics = MetricsQuery(start, end, query["zone"], group_by=query["group_by"],
                           period=query["period"], calendar=calendar)  # fmt: skip
    read = [e for e in events if read_from is None or e.at >= read_from]
    rows = compute(iter(read), metrics, reopens_closed=desk.workflow.reopens_closed)
    ends = periods(start, end, zone, query["period"])
    # What happened after the range is unknown to it (a later reopen included).
    seen = [e for e in read if e.at < end]
    want = reference(seen, start, end, zone, query["period"], query["group_by"],
                     query["business"])  # fmt: skip
    got = library(rows, ends)
    empty = Figures().summary(query["business"])
    got = {slot: v for slot, v in got.items() if v != empty}
    want = {slot: v for slot, v in want.items() if v != empty}
    assert got == want


@settings(max_examples=300, deadline=None)
@given(ops=OPS, custom=st.booleans(), queries=st.lists(QUERIES, min_size=1, max_size=4))
def test_every_figure_matches_the_documented_definition(
    ops: list[tuple[int, int, int, int]], custom: bool, queries: list[dict[str, Any]]
) -> None:
    desk = play(ops, custom, MemoryStore())
    events = history(desk)
    for query in queries:
        check(events, desk, query)


def same_figures(memory: Desk, other: Desk, query: dict[str, Any]) -> None:
    """``other`` holds the events ``memory`` holds, and its reports and rows agree."""
    events = history(memory)
    assert history(other) == events
    check(events, other, query)
    start = START + timedelta(minutes=query["start"])
    end = start + timedelta(minutes=query["length"])
    metrics = MetricsQuery(start, end, query["zone"], group_by=query["group_by"],
                           period=query["period"], include_total=True)  # fmt: skip
    rows: list[list[MetricsRow]] = []
    reports = []
    for desk in (memory, other):
        with desk.store.transaction() as uow:
            rows.append(compute(uow.iter_events(None, end), metrics))
        day = start.astimezone(ZoneInfo(query["zone"])).date()
        month = monthly_report(desk, day.year, day.month, query["zone"],
                               group_by=query["group_by"], calendar=OFFICE)  # fmt: skip
        reports.append(month.to_csv())
    assert rows[0] == rows[1]
    assert reports[0] == reports[1]


@settings(max_examples=15, deadline=None)
@given(ops=OPS, custom=st.booleans(), query=QUERIES)
def test_sqlite_gives_the_events_and_figures_memory_gives(
    ops: list[tuple[int, int, int, int]], custom: bool, query: dict[str, Any]
) -> None:
    same_figures(play(ops, custom, MemoryStore()), play(ops, custom, SqliteStore()), query)


PG_URL = os.environ.get("SUPPORTFLOW_PG_URL", "")


@pytest.mark.postgres
@pytest.mark.skipif(
    not PG_URL and os.environ.get("CI") != "true",
    reason="SUPPORTFLOW_PG_URL is not set (run .ci/run, or point it at a PostgreSQL)",
)
@settings(max_examples=6, deadline=None)
@given(ops=OPS, custom=st.booleans(), query=QUERIES)
def test_postgres_gives_the_events_and_figures_memory_gives(
    ops: list[tuple[int, int, int, int]], custom: bool, query: dict[str, Any]
) -> None:
    assert PG_URL, "CI=true but SUPPORTFLOW_PG_URL is not set: .ci/run should start PostgreSQL"
    memory = play(ops, custom, MemoryStore())
    with private_schema(PG_URL, "sf_metrics") as url:
        store = SqlStore(url)
        try:
            same_figures(memory, play(ops, custom, store), query)
        finally:
            store.close()
