"""Support metrics computed from the event stream in one pass.

:func:`compute` reads events in time order (as ``UnitOfWork.iter_events`` yields them) once,
and returns one :class:`MetricsRow` per period and group. It keeps state only for tickets that
are still open (a few numbers each) and drops it when a ticket closes; everything else is an
aggregate per period and group. Durations are kept as plain lists of seconds (``array('d')``,
8 bytes each) per period and group, so medians and the 90th percentile are exact; memory grows
with the number of measured replies and resolutions in the range, not with the history.

What each number means (all counted in the period in which the event happened):

- ``opened``, ``resolved`` (every move into the resolved category, so a reopened ticket that is
  resolved again counts again), ``closed`` (every move into the closed category, cancelled
  tickets included) and ``backlog`` (tickets in the new, active or waiting category at the end
  of the period, grouped by their group key then).
- ``first_response``: from the ticket's creation to the first public agent reply (a message on
  a closed ticket is no reply, whatever the workflow).
  ``next_response``: from the first customer message after an agent reply to the next agent
  reply (a resolve ends the wait). ``resolution``: from creation to each resolve. ``handle``:
  time spent in active-category statuses up to each resolve. Median (the middle value, or the
  mean of the two middle ones), p90 (nearest rank: the smallest value with at least 90% of
  the values at or below it) and mean; in calendar time, and in business time on
  ``query.calendar`` (``BusinessCalendar.between``) when given.
- ``fcr_rate``: of the tickets resolved for the first time in the period, the share resolved
  with at most one public agent reply and never reopened. ``reopen_rate``: of those same
  tickets, the share reopened later, before the range's end (a reopen is counted back in the
  period of the first resolution).
- ``sla[clock]``: clocks met on time, and breached; compliance = met / (met + breached).
- ``csat``: share of CSAT answers of 4 or 5; ``nps``: % promoters (9–10) − % detractors
  (0–6); ``ces``: average effort score. From ``FeedbackRecorded`` events, and from answered
  survey records passed as ``feedback`` that the events did not already bring.
- ``escalations``: escalations reached (repeats not counted); ``follow_up_completion_rate``:
  of the follow-ups concluded in the period, the share that reached the customer.

Grouping uses the ticket's value when the event happened: channel, category, priority, group,
or agent (the assignee; for first and next response times, the agent who replied). A ticket
is opened in the group it has once its opening instant is over (triage may classify and route
it in the command that opens it). A missing
value is ``"(none)"``; a ticket first seen in the middle of its life (the stream started
after it opened) is ``"(unknown)"``.

>>> query = MetricsQuery(datetime(2026, 3, 1, tzinfo=timezone.utc),
...                      datetime(2026, 4, 1, tzinfo=timezone.utc), period="week")
>>> rows = compute(store_events, query)                         # doctest: +SKIP
>>> print(to_markdown(rows))                                    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from array import array
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from numbers import Real
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import attrs

from supportflow.calendar import BusinessCalendar
from supportflow.errors import ValidationError
from supportflow.events import Event, EventType
from supportflow.model import _is_flag
from supportflow.sla import CLOCKS

__all__ = [
    "DurationStats",
    "FeedbackRecordLike",
    "MetricsQuery",
    "MetricsRow",
    "SlaCompliance",
    "compute",
    "to_csv",
    "to_markdown",
]

GROUP_BY = ("channel", "category", "priority", "group", "agent")
PERIODS = ("day", "week", "month")
NONE = "(none)"
UNKNOWN = "(unknown)"
_UNRESOLVED = frozenset({"new", "active", "waiting"})
_UTC = timezone.utc


def _aware(instance: object, attribute: attrs.Attribute[datetime], value: datetime) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValidationError(attribute.name, value, "a timezone-aware datetime")


def _one_of(*allowed: str | None) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if value not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            raise ValidationError(attribute.name, value, f"one of {names}")

    return check


def _zone(name: object, field: str = "timezone") -> ZoneInfo:
    """The zone named ``name``; ``ValidationError`` naming ``field`` for anything else."""
    if isinstance(name, str):  # ZoneInfo would raise a bare TypeError on anything else
        try:
            return ZoneInfo(name)
        except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
            pass
    raise ValidationError(field, name, "an IANA time zone name like 'Asia/Shanghai'")


@attrs.frozen(slots=True)
class MetricsQuery:
    """What to measure: ``[start, end)``, cut into ``period``s (``None``: the whole range as one)
    in ``timezone``, grouped by ``group_by`` (``None``: one group), with business-time figures
    on ``calendar`` when given. ``include_total`` adds, when grouping, a row per period over
    all groups (its ``group`` is ``None``).

    >>> MetricsQuery(datetime(2026, 3, 1, tzinfo=timezone.utc),
    ...              datetime(2026, 3, 8, tzinfo=timezone.utc), group_by="team")
    Traceback (most recent call last):
    ...
    supportflow.errors.ValidationError: group_by='team' is invalid: expected one of None, \
'channel', 'category', 'priority', 'group', 'agent'
    """

    start: datetime = attrs.field(validator=_aware)
    end: datetime = attrs.field(validator=_aware)
    timezone: str = "UTC"
    group_by: str | None = attrs.field(default=None, validator=_one_of(None, *GROUP_BY))
    period: str | None = attrs.field(default=None, validator=_one_of(None, *PERIODS))
    calendar: BusinessCalendar | None = None
    include_total: bool = attrs.field(default=False, validator=_is_flag)

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise ValidationError("end", self.end, f"after start ({self.start.isoformat()})")
        zone = _zone(self.timezone)
        for name in ("start", "end"):
            value: datetime = getattr(self, name)
            try:  # near the ends of the calendar an instant may have no UTC or local date
                value.astimezone(_UTC)
                value.astimezone(zone)
            except OverflowError:
                raise ValidationError(
                    name, value, f"an instant within the years 1 to 9999 in UTC and {zone.key}"
                ) from None
        try:
            _periods(self)
        except (OverflowError, ValueError):  # a period would begin or end past the calendar
            raise ValidationError(
                "period", self.period, f"periods within the years 1 to 9999 in {zone.key}"
            ) from None
        if self.calendar is not None and not isinstance(self.calendar, BusinessCalendar):
            raise ValidationError("calendar", self.calendar, "a BusinessCalendar or None")


@attrs.frozen(slots=True)
class DurationStats:
    """Median, 90th percentile (nearest rank) and mean of ``count`` durations.

    >>> DurationStats.of([60.0, 120.0, 600.0]).median
    datetime.timedelta(seconds=120)
    """

    count: int = 0
    median: timedelta | None = None
    p90: timedelta | None = None
    mean: timedelta | None = None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> DurationStats:
        """The stats of durations given in seconds, in any order; no durations give ``count`` 0
        and ``None`` for the rest. ``ValidationError`` if they are not numbers."""
        try:
            if not seconds:
                return cls()
            ordered = sorted(seconds)
            n = len(ordered)
            total = math.fsum(ordered)
        except TypeError:  # not a sequence, or not numbers
            raise ValidationError("seconds", seconds, "a sequence of numbers of seconds") from None
        p90 = ordered[max(0, math.ceil(0.9 * n) - 1)]
        return cls(
            n,
            timedelta(seconds=statistics.median(ordered)),
            timedelta(seconds=p90),
            timedelta(seconds=total / n),
        )


@attrs.frozen(slots=True)
class SlaCompliance:
    """An SLA clock's record in a period: met on time, and breached."""

    met: int = 0
    breached: int = 0

    @property
    def rate(self) -> float | None:
        """Percent met on time, of met and breached; ``None`` when there were none."""
        total = self.met + self.breached
        return 100.0 * self.met / total if total else None


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


@attrs.frozen(slots=True)
class MetricsRow:
    """The metrics of one period and group (``group`` is ``None`` for all tickets).

    Counts are kept raw; the rates are properties, in percent (``nps`` in points from −100 to
    100, ``ces`` an average on 1–7), ``None`` when nothing was measured. ``*_business`` stats
    are ``None`` unless the query had a calendar.
    """

    period_start: datetime
    period_end: datetime
    period: str | None
    group: str | None
    opened: int
    resolved: int
    closed: int
    backlog: int
    first_response: DurationStats
    next_response: DurationStats
    resolution: DurationStats
    handle: DurationStats
    first_response_business: DurationStats | None
    next_response_business: DurationStats | None
    resolution_business: DurationStats | None
    handle_business: DurationStats | None
    first_resolutions: int
    first_contact_resolutions: int
    reopened: int
    sla: Mapping[str, SlaCompliance]
    csat_responses: int
    csat_satisfied: int
    nps_responses: int
    nps_promoters: int
    nps_detractors: int
    ces_responses: int
    ces_total: int
    escalations: int
    follow_ups_completed: int
    follow_ups_failed: int

    @property
    def fcr_rate(self) -> float | None:
        """Percent of ``first_resolutions`` that were ``first_contact_resolutions``; ``None`` when
        no ticket was resolved for the first time."""
        return _percent(self.first_contact_resolutions, self.first_resolutions)

    @property
    def reopen_rate(self) -> float | None:
        """Percent of ``first_resolutions`` that were ``reopened`` later; ``None`` when no ticket
        was resolved for the first time."""
        return _percent(self.reopened, self.first_resolutions)

    @property
    def csat(self) -> float | None:
        """Percent of CSAT answers that were 4 or 5 (``csat_satisfied`` of ``csat_responses``);
        ``None`` without answers."""
        return _percent(self.csat_satisfied, self.csat_responses)

    @property
    def nps(self) -> float | None:
        """``nps_promoters`` minus ``nps_detractors``, in percent of ``nps_responses`` (−100 to
        100); ``None`` without answers."""
        return _percent(self.nps_promoters - self.nps_detractors, self.nps_responses)

    @property
    def ces(self) -> float | None:
        """The average effort score, ``ces_total`` / ``ces_responses``; ``None`` without answers."""
        return self.ces_total / self.ces_responses if self.ces_responses else None

    @property
    def follow_up_completion_rate(self) -> float | None:
        """``follow_ups_completed`` in percent of the follow-ups concluded (completed plus
        ``follow_ups_failed``); ``None`` when none concluded."""
        done = self.follow_ups_completed
        return _percent(done, done + self.follow_ups_failed)

    def sla_rate(self, clock: str) -> float | None:
        """Percent of ``clock`` met on time (``None`` when it was never met nor breached)."""
        compliance = self.sla.get(clock)
        return compliance.rate if compliance is not None else None


class FeedbackRecordLike(Protocol):
    """A survey record (``supportflow.storage.Record`` fits): ``kind == "survey"``,
    ``status == "answered"``, scores and ``answered_at`` in ``data``."""

    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str | None: ...
    @property
    def data(self) -> Mapping[str, Any]: ...
    @property
    def updated_at(self) -> datetime: ...


# -- aggregation -------------------------------------------------------------------------------
class _Agg:
    """What one period and group has seen so far."""

    __slots__ = (
        "backlog", "ces_n", "ces_sum", "closed", "csat_good", "csat_n", "escalations", "fcr",
        "first", "frt", "frt_b", "fu_done", "fu_failed", "handle", "handle_b", "nps_det",
        "nps_n", "nps_pro", "nrt", "nrt_b", "opened", "reopened", "res", "res_b", "resolved",
        "sla",
    )  # fmt: skip

    def __init__(self) -> None:
        self.opened = self.resolved = self.closed = self.backlog = 0
        self.first = self.fcr = self.reopened = self.escalations = 0
        self.csat_n = self.csat_good = self.nps_n = self.nps_pro = self.nps_det = 0
        self.ces_n = self.ces_sum = self.fu_done = self.fu_failed = 0
        self.frt, self.nrt, self.res, self.handle = array("d"), array("d"), array("d"), array("d")
        self.frt_b, self.nrt_b = array("d"), array("d")
        self.res_b, self.handle_b = array("d"), array("d")
        self.sla: dict[str, list[int]] = {}

    def merge(self, other: _Agg) -> None:
        for name in _Agg.__slots__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "sla":
                for clock, (met, breached) in theirs.items():
                    counts = mine.setdefault(clock, [0, 0])
                    counts[0] += met
                    counts[1] += breached
            elif isinstance(mine, array):
                mine.extend(theirs)
            else:
                setattr(self, name, mine + theirs)

    def feedback(self, data: Mapping[str, Any]) -> None:
        csat, nps, ces = data.get("csat"), data.get("nps"), data.get("ces")
        if isinstance(csat, int):
            self.csat_n += 1
            self.csat_good += csat >= 4
        if isinstance(nps, int):
            self.nps_n += 1
            self.nps_pro += nps >= 9
            self.nps_det += nps <= 6
        if isinstance(ces, int):
            self.ces_n += 1
            self.ces_sum += ces

    def row(
        self, start: datetime, end: datetime, period: str | None, group: str | None, business: bool
    ) -> MetricsRow:
        def stats(values: array[float]) -> DurationStats | None:
            return DurationStats.of(values) if business else None

        return MetricsRow(
            period_start=start,
            period_end=end,
            period=period,
            group=group,
            opened=self.opened,
            resolved=self.resolved,
            closed=self.closed,
            backlog=self.backlog,
            first_response=DurationStats.of(self.frt),
            next_response=DurationStats.of(self.nrt),
            resolution=DurationStats.of(self.res),
            handle=DurationStats.of(self.handle),
            first_response_business=stats(self.frt_b),
            next_response_business=stats(self.nrt_b),
            resolution_business=stats(self.res_b),
            handle_business=stats(self.handle_b),
            first_resolutions=self.first,
            first_contact_resolutions=self.fcr,
            reopened=self.reopened,
            sla={clock: SlaCompliance(*counts) for clock, counts in sorted(self.sla.items())},
            csat_responses=self.csat_n,
            csat_satisfied=self.csat_good,
            nps_responses=self.nps_n,
            nps_promoters=self.nps_pro,
            nps_detractors=self.nps_det,
            ces_responses=self.ces_n,
            ces_total=self.ces_sum,
            escalations=self.escalations,
            follow_ups_completed=self.fu_done,
            follow_ups_failed=self.fu_failed,
        )


class _Open:
    """What is remembered of a ticket while it is open."""

    __slots__ = (
        "active",
        "active_b",
        "awaiting",
        "closed",
        "fcr_agg",
        "first_agg",
        "in_backlog",
        "key",
        "opened_at",
        "reopened",
        "replies",
        "resolved_once",
        "since",
    )  # fmt: skip

    def __init__(self, opened_at: datetime | None, key: str | None, at: datetime) -> None:
        self.opened_at = opened_at
        self.key = key
        self.since = at  # when the ticket entered its current status category
        self.active = self.active_b = 0.0
        self.replies = 0  # public agent replies
        self.awaiting: datetime | None = None  # a customer wrote after an agent reply
        self.resolved_once = self.reopened = self.in_backlog = False
        self.closed = False  # in the closed category (remembered only with reopens_closed)
        self.first_agg: _Agg | None = None  # where its first resolution was counted
        self.fcr_agg: _Agg | None = None  # where it counted as a first-contact resolution


def _periods(query: MetricsQuery) -> list[tuple[datetime, datetime]]:
    """Each period's nominal start and end, in the query's zone."""
    zone = _zone(query.timezone)
    if query.period is None:
        return [(query.start.astimezone(zone), query.end.astimezone(zone))]
    day = query.start.astimezone(zone).date()
    if query.period == "week":
        day -= timedelta(days=day.weekday())
    elif query.period == "month":
        day = day.replace(day=1)
    periods = []
    while True:
        if query.period == "day":
            following = day + timedelta(days=1)
        elif query.period == "week":
            following = day + timedelta(days=7)
        else:
            following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        start = datetime.combine(day, time(), zone)
        end = datetime.combine(following, time(), zone)
        periods.append((start, end))
        if end.astimezone(_UTC) >= query.end.astimezone(_UTC):
            return periods
        day = following


class _Groups(dict[str | None, _Agg]):
    """A period's groups; a group is created on first use."""

    def __missing__(self, key: str | None) -> _Agg:
        group = self[key] = _Agg()
        return group


_EVENTS = "an iterable of supportflow.events.Event, in time order"
_RECORDS = "an iterable of answered survey records (supportflow.storage.Record) with aware times"


def _is_event(event: object) -> bool:
    """Whether ``event`` is an :class:`Event` with the fields the metrics read well typed."""
    return (
        isinstance(event, Event)
        and isinstance(event.ticket_id, str)
        and isinstance(event.type, str)
        and isinstance(event.at, datetime)
        and event.at.utcoffset() is not None
    )


class _Run:
    """One pass of :func:`compute`."""

    def __init__(self, query: MetricsQuery, *, reopens_closed: bool = False) -> None:
        self.query = query
        self.reopens_closed = reopens_closed  # closed tickets are remembered, not forgotten
        self.start = query.start.astimezone(_UTC)
        self.end = query.end.astimezone(_UTC)
        self.periods = _periods(query)
        # Where each period stops counting, in UTC (the last one at the query's end).
        self.bounds = [min(end.astimezone(_UTC), self.end) for _, end in self.periods]
        self.aggs = [_Groups() for _ in self.periods]
        self.index = -1  # the period being counted; -1 before the query starts
        self.tickets: dict[str, _Open] = {}
        self.backlog: defaultdict[str | None, int] = defaultdict(int)
        self.surveys: set[str] = set()

    def _next_period(self, at: datetime) -> tuple[_Groups, datetime]:
        """Close the periods that ended before ``at``; return the one ``at`` falls in."""
        while self.index < 0 or at >= self.bounds[self.index]:
            if self.index >= 0:
                self._snapshot(self.index)
            self.index += 1
        return self.aggs[self.index], self.bounds[self.index]

    def _snapshot(self, index: int) -> None:
        groups = self.aggs[index]
        for key, count in self.backlog.items():
            if count:
                groups[key].backlog = count

    def consume(self, events: Iterable[Event]) -> None:
        """Read ``events`` once. The loop is written flat, with locals, for speed.

        Anything but an :class:`Event` among them raises ``ValidationError``; it is looked for
        only when reading an item fails, so valid input pays nothing for the check.
        """
        try:
            stream = iter(events)
        except TypeError:
            raise ValidationError("events", events, _EVENTS) from None
        query = self.query
        group_by = query.group_by
        by_agent = group_by == "agent"
        opened_field = "assignee" if by_agent else group_by
        calendar = query.calendar
        tickets, backlog = self.tickets, self.backlog
        end = self.end
        lazy_key = None if group_by is None else UNKNOWN
        unresolved_categories = _UNRESOLVED
        keep_closed = self.reopens_closed
        utc = _UTC
        cur: _Groups | None = None  # the current period's groups; None before the start
        boundary = self.start  # the next instant at which the period changes
        message_added = EventType.MESSAGE_ADDED
        status_changed = EventType.STATUS_CHANGED
        ticket_opened = EventType.TICKET_OPENED
        sla_met, sla_breached = EventType.SLA_MET, EventType.SLA_BREACHED
        escalated = EventType.ESCALATED
        assigned, priority_changed = EventType.ASSIGNED, EventType.PRIORITY_CHANGED
        updated = EventType.TICKET_UPDATED
        feedback_recorded = EventType.FEEDBACK_RECORDED
        completed, failed = EventType.FOLLOW_UP_COMPLETED, EventType.FOLLOW_UP_FAILED
        regrouping = (assigned, priority_changed, updated) if group_by is not None else ()
        sla_kinds = frozenset((sla_met, sla_breached))
        follow_up_kinds = frozenset((completed, failed))

        def rekey(ticket: _Open, key: str, at: datetime, cur: _Groups | None) -> None:
            if ticket.in_backlog:
                backlog[ticket.key] -= 1
                backlog[key] += 1
            if at == ticket.opened_at and cur is not None:
                # Classified or routed as it opened (triage, in the same command): it opens
                # in the group it was given.
                cur[ticket.key].opened -= 1
                cur[key].opened += 1
            ticket.key = key

        def dimension(data: Mapping[str, Any], ticket: _Open | None) -> str | None:
            if group_by is None:
                return None
            if group_by in data:
                return data[group_by] or NONE
            return ticket.key if ticket is not None else UNKNOWN

        event: Event | None = None
        try:
            for event in stream:
                at = event.at
                if at.tzinfo is not utc:  # the stores give UTC; others are measured in UTC
                    if at.utcoffset() is None:
                        raise TypeError("naive")  # refused as input below
                    at = at.astimezone(utc)
                if at >= boundary:
                    if at >= end:
                        break
                    cur, boundary = self._next_period(at)
                kind = event.type
                if kind == status_changed:
                    data = event.data
                    before, after = data.get("from_category"), data.get("to_category")
                    ticket = tickets.get(event.ticket_id)
                    if ticket is None:  # first seen mid-life: its history is unknown
                        ticket = tickets[event.ticket_id] = _Open(None, lazy_key, at)
                    if before == "active":
                        ticket.active += (at - ticket.since).total_seconds()
                        if calendar is not None:
                            ticket.active_b += calendar.between(ticket.since, at).total_seconds()
                    ticket.since = at
                    ticket.closed = after == "closed"
                    unresolved = after in unresolved_categories
                    if unresolved is not ticket.in_backlog:
                        backlog[ticket.key] += 1 if unresolved else -1
                        ticket.in_backlog = unresolved
                    if after == "resolved":
                        if before == "resolved":
                            continue
                        ticket.awaiting = None
                        counted = cur[ticket.key] if cur is not None else None
                        if counted is not None:
                            counted.resolved += 1
                            opened_at = ticket.opened_at
                            if opened_at is not None:
                                counted.res.append((at - opened_at).total_seconds())
                                counted.handle.append(ticket.active)
                                if calendar is not None:
                                    counted.res_b.append(
                                        calendar.between(opened_at, at).total_seconds()
                                    )
                                    counted.handle_b.append(ticket.active_b)
                        if not ticket.resolved_once:
                            ticket.resolved_once = True
                            # Only a ticket whose life was read from its opening can be
                            # resolved "for the first time" (one seen mid-life may not be).
                            if counted is not None and ticket.opened_at is not None:
                                counted.first += 1
                                ticket.first_agg = counted
                                if ticket.replies <= 1 and not ticket.reopened:
                                    counted.fcr += 1
                                    ticket.fcr_agg = counted
                    elif after == "closed":
                        # A move between two closed statuses closes nothing more.
                        if cur is not None and before != "closed":
                            cur[ticket.key].closed += 1
                        if not keep_closed:
                            del tickets[event.ticket_id]
                    elif not ticket.reopened and (
                        before == "resolved" or (before == "closed" and ticket.resolved_once)
                    ):
                        ticket.reopened = True
                        if ticket.first_agg is not None:
                            ticket.first_agg.reopened += 1
                        if ticket.fcr_agg is not None:
                            ticket.fcr_agg.fcr -= 1
                            ticket.fcr_agg = None
                elif kind == message_added:
                    ticket = tickets.get(event.ticket_id)
                    if ticket is None or ticket.closed:
                        continue  # unknown, or closed: a reply there answers nobody waiting
                    data = event.data
                    role = data.get("role")
                    if role == "agent":
                        ticket.replies += 1
                        since = ticket.opened_at if ticket.replies == 1 else ticket.awaiting
                        ticket.awaiting = None
                        if since is None or cur is None:
                            continue
                        group = cur[(data.get("author") or NONE) if by_agent else ticket.key]
                        if ticket.replies == 1:
                            group.frt.append((at - since).total_seconds())
                            if calendar is not None:
                                group.frt_b.append(calendar.between(since, at).total_seconds())
                        else:
                            group.nrt.append((at - since).total_seconds())
                            if calendar is not None:
                                group.nrt_b.append(calendar.between(since, at).total_seconds())
                    elif role == "customer" and ticket.replies and ticket.awaiting is None:
                        ticket.awaiting = at
                elif kind in sla_kinds:
                    if cur is None:
                        continue
                    data = event.data
                    breached = kind == sla_breached
                    if not breached and data.get("late"):
                        continue  # the breach was counted when it happened
                    ticket = tickets.get(event.ticket_id)
                    sla = cur[ticket.key if ticket is not None else lazy_key].sla
                    clock = data.get("clock", "?")
                    counts = sla.get(clock)
                    if counts is None:
                        counts = sla[clock] = [0, 0]
                    counts[breached] += 1
                elif kind == ticket_opened:
                    key = None
                    if opened_field is not None:
                        key = event.data.get(opened_field) or NONE
                    ticket = tickets[event.ticket_id] = _Open(at, key, at)
                    ticket.in_backlog = True
                    backlog[key] += 1
                    if cur is not None:
                        cur[key].opened += 1
                elif kind == escalated:
                    if cur is not None and not event.data.get("repeat"):
                        ticket = tickets.get(event.ticket_id)
                        cur[ticket.key if ticket is not None else lazy_key].escalations += 1
                elif kind == feedback_recorded:
                    self.surveys.add(str(event.data.get("survey_id")))
                    if cur is not None:
                        cur[dimension(event.data, tickets.get(event.ticket_id))].feedback(
                            event.data
                        )
                elif kind in follow_up_kinds:
                    if cur is not None:
                        group = cur[dimension(event.data, tickets.get(event.ticket_id))]
                        if kind == completed:
                            group.fu_done += 1
                        else:
                            group.fu_failed += 1
                elif kind in regrouping:
                    ticket = tickets.get(event.ticket_id)
                    if ticket is None:
                        continue
                    data = event.data
                    if kind == assigned and group_by in ("agent", "group"):
                        key = data.get("assignee" if by_agent else "group") or NONE
                        rekey(ticket, key, at, cur)
                    elif kind == priority_changed and group_by == "priority":
                        rekey(ticket, data.get("to") or NONE, at, cur)
                    elif kind == updated and group_by == "category":
                        change = data.get("changes", {}).get("category")
                        if change:
                            rekey(ticket, change[1] or NONE, at, cur)
        except (AttributeError, TypeError):
            if _is_event(event):
                raise  # a fault of ours, not of the input
            raise ValidationError("events", event, _EVENTS) from None
        # Periods after the last event keep the backlog as it stands.
        if self.index < 0:
            self.index = 0
        for index in range(self.index, len(self.periods)):
            self._snapshot(index)

    def add_feedback(self, records: Iterable[FeedbackRecordLike]) -> None:
        """Answered surveys the events did not bring (imported, or from another source)."""
        group_by = self.query.group_by
        try:
            stream = iter(records)
        except TypeError:
            raise ValidationError("feedback", records, _RECORDS) from None
        for record in stream:
            try:
                if (
                    record.kind != "survey"
                    or record.status != "answered"
                    or record.id in self.surveys
                ):
                    continue
                data = record.data
                answered = data.get("answered_at")
                at = datetime.fromisoformat(answered) if answered else record.updated_at
                if not self.start <= at < self.end:
                    continue
            except (AttributeError, TypeError, ValueError):  # not a record, or a bad answered_at
                raise ValidationError("feedback", record, _RECORDS) from None
            index = min(bisect_right(self.bounds, at.astimezone(_UTC)), len(self.bounds) - 1)
            key = None if group_by is None else (data.get(group_by) or NONE)
            self.aggs[index][key].feedback(data)
            self.surveys.add(record.id)

    def rows(self) -> list[MetricsRow]:
        query = self.query
        business = query.calendar is not None
        rows = []
        for (start, end), aggs in zip(self.periods, self.aggs, strict=True):
            if query.group_by is None:
                rows.append(
                    (aggs.get(None) or _Agg()).row(start, end, query.period, None, business)
                )
                continue
            if query.include_total:
                total = _Agg()
                for group in aggs.values():
                    total.merge(group)
                rows.append(total.row(start, end, query.period, None, business))
            for key in sorted(k for k in aggs if k is not None):
                rows.append(aggs[key].row(start, end, query.period, key, business))
        return rows


def compute(
    events: Iterable[Event],
    query: MetricsQuery,
    feedback: Iterable[FeedbackRecordLike] = (),
    *,
    reopens_closed: bool = False,
) -> list[MetricsRow]:
    """The metrics of ``query`` from ``events`` (in time order), read once.

    Events before ``query.start`` build up the state of open tickets (backlog, replies, time
    in status) without being counted; reading stops at the first event at or after
    ``query.end``. Rows come by period, then group (a total row first when asked for).

    ``reopens_closed``: the desk's workflow can take a ticket out of the closed category
    (``Workflow.reopens_closed``); closed tickets are then remembered (a few numbers each, as
    open ones are) so that such a move counts as a reopen of the same ticket.

    >>> rows = compute(uow.iter_events(None, end), MetricsQuery(start, end, period="day"))
    ... # doctest: +SKIP
    >>> rows[0].opened, rows[0].first_response.median               # doctest: +SKIP
    (12, datetime.timedelta(seconds=1260))
    """
    if not isinstance(query, MetricsQuery):
        raise ValidationError("query", query, "a MetricsQuery")
    if not isinstance(reopens_closed, bool):  # "no" would keep closed tickets
        raise ValidationError("reopens_closed", reopens_closed, "True or False")
    run = _Run(query, reopens_closed=reopens_closed)
    run.consume(events)
    run.add_feedback(feedback)
    return run.rows()


# -- exports -----------------------------------------------------------------------------------
_DURATIONS = ("first_response", "next_response", "resolution", "handle")


def _number(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}"


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _rows(rows: Sequence[MetricsRow]) -> Sequence[MetricsRow]:
    """``rows`` if it is a sequence of :class:`MetricsRow` (as :func:`compute` returns)."""
    if isinstance(rows, str) or not isinstance(rows, Sequence):
        raise ValidationError("rows", rows, "a sequence of MetricsRow, as compute() returns")
    for row in rows:
        if not isinstance(row, MetricsRow):
            raise ValidationError("rows", row, "MetricsRow objects, as compute() returns")
    return rows


def to_csv(rows: Sequence[MetricsRow]) -> str:
    """One line per row: counts, durations in seconds, rates in percent (empty: not measured).

    Business-time columns are present when the rows have them.
    """
    rows = _rows(rows)
    business = any(row.first_response_business is not None for row in rows)
    header = ["period_start", "period_end", "group", "opened", "resolved", "closed", "backlog"]
    for name in _DURATIONS:
        header += [f"{name}_count", f"{name}_median_s", f"{name}_p90_s", f"{name}_mean_s"]
        if business:
            header += [f"{name}_business_median_s", f"{name}_business_p90_s",
                       f"{name}_business_mean_s"]  # fmt: skip
    header += ["first_resolutions", "fcr_rate", "reopened", "reopen_rate"]
    for clock in CLOCKS:
        header += [f"sla_{clock}_met", f"sla_{clock}_breached", f"sla_{clock}_rate"]
    header += ["csat_responses", "csat", "nps_responses", "nps", "ces_responses", "ces",
               "escalations", "follow_ups_completed", "follow_ups_failed",
               "follow_up_completion_rate"]  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line: list[Any] = [row.period_start.isoformat(), row.period_end.isoformat(),
                           row.group or "", row.opened, row.resolved, row.closed,
                           row.backlog]  # fmt: skip
        for name in _DURATIONS:
            stats: DurationStats = getattr(row, name)
            line += [stats.count, *(_seconds(v) for v in (stats.median, stats.p90, stats.mean))]
            if business:
                extra: DurationStats | None = getattr(row, f"{name}_business")
                values = (extra.median, extra.p90, extra.mean) if extra else (None,) * 3
                line += [_seconds(v) for v in values]
        line += [row.first_resolutions, row.fcr_rate, row.reopened, row.reopen_rate]
        for clock in CLOCKS:
            sla = row.sla.get(clock, SlaCompliance())
            line += [sla.met, sla.breached, sla.rate]
        line += [row.csat_responses, row.csat, row.nps_responses, row.nps, row.ces_responses,
                 row.ces, row.escalations, row.follow_ups_completed, row.follow_ups_failed,
                 row.follow_up_completion_rate]  # fmt: skip
        writer.writerow([_number(v) if not isinstance(v, str) else v for v in line])
    return out.getvalue()


def format_duration(value: timedelta | None) -> str:
    """``"45s"``, ``"12m 05s"``, ``"3h 07m"``, ``"2d 04h"``; ``"–"`` when not measured."""
    if value is None:
        return "–"
    if not isinstance(value, timedelta):
        raise ValidationError("value", value, "a timedelta or None")
    seconds = round(value.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def format_rate(value: float | None, *, signed: bool = False) -> str:
    """A percentage for people (``"83.3%"``; ``"+40"`` for NPS when ``signed``)."""
    if not isinstance(signed, bool):
        raise ValidationError("signed", signed, "True or False")
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise ValidationError("value", value, "a number (a percentage) or None")
    return f"{value:+.0f}" if signed else f"{value:.1f}%"


def period_label(row: MetricsRow) -> str:
    """``"2026-03-02"`` for a day, ``"week of 2026-03-02"``, ``"2026-03"``, or the range."""
    if not isinstance(row, MetricsRow):
        raise ValidationError("row", row, "a MetricsRow")
    start = row.period_start
    if row.period == "day":
        return f"{start:%Y-%m-%d}"
    if row.period == "week":
        return f"week of {start:%Y-%m-%d}"
    if row.period == "month":
        return f"{start:%Y-%m}"
    return f"{start:%Y-%m-%d %H:%M} – {row.period_end:%Y-%m-%d %H:%M}"


def to_markdown(rows: Sequence[MetricsRow]) -> str:
    """A Markdown table: one line per row, durations and rates formatted for people."""
    rows = _rows(rows)
    business = any(row.first_response_business is not None for row in rows)
    header = ["Period", "Group", "Opened", "Resolved", "Closed", "Backlog", "FRT median",
              "FRT p90", "FRT mean"]  # fmt: skip
    if business:
        header += ["FRT median (business)", "FRT p90 (business)"]
    header += ["NRT median", "Resolution median", "Handle median", "FCR", "Reopen",
               "SLA first response", "SLA next response", "SLA resolution", "CSAT", "NPS", "CES",
               "Escalations", "Follow-ups reached"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        frt = row.first_response
        cells = [period_label(row), row.group or "all", str(row.opened), str(row.resolved),
                 str(row.closed), str(row.backlog), format_duration(frt.median),
                 format_duration(frt.p90), format_duration(frt.mean)]  # fmt: skip
        if business:
            extra = row.first_response_business or DurationStats()
            cells += [format_duration(extra.median), format_duration(extra.p90)]
        cells += [
            format_duration(row.next_response.median),
            format_duration(row.resolution.median),
            format_duration(row.handle.median),
            format_rate(row.fcr_rate),
            format_rate(row.reopen_rate),
            *(format_rate(row.sla_rate(clock)) for clock in CLOCKS),
            format_rate(row.csat),
            format_rate(row.nps, signed=True),
            f"{row.ces:.1f}" if row.ces is not None else "–",
            str(row.escalations),
            format_rate(row.follow_up_completion_rate),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
