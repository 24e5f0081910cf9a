"""Daily, weekly and monthly reports a support manager reads, from a desk's store.

Each report streams ``uow.iter_events(history_from, end)`` through
:func:`supportflow.metrics.compute` once. By default it reads from the beginning of the
history, not from the report's start: the backlog at the end of the period, the first
response of a ticket opened the day before, or a reopen of a ticket resolved last month all
need what happened earlier. Only what falls inside the report's range is counted. On a large
store pass ``history_from`` (say, 90 days before the start) to bound the read; tickets opened
before it then count in the backlog only once they next change status, as ``"(unknown)"`` when
grouping.

>>> report = monthly_report(desk, 2026, 3, "Asia/Shanghai", group_by="channel")  # doctest: +SKIP
>>> print(report.to_markdown())                                                  # doctest: +SKIP
# Monthly support report: 2026-03
...
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from numbers import Integral
from zoneinfo import ZoneInfo

import attrs

from supportflow.calendar import BusinessCalendar
from supportflow.clock import ensure_aware
from supportflow.desk import Desk
from supportflow.errors import ValidationError
from supportflow.metrics import (
    DurationStats,
    MetricsQuery,
    MetricsRow,
    _zone,
    compute,
    format_duration,
    format_rate,
    to_csv,
    to_markdown,
)
from supportflow.model import whole_number

__all__ = ["Report", "daily_report", "monthly_report", "report", "weekly_report"]

_GROUP_TITLES = {
    "channel": "By channel",
    "category": "By category",
    "priority": "By priority",
    "group": "By team",
    "agent": "By agent",
}


@attrs.frozen(slots=True)
class Report:
    """A report: its title, the query, and the rows (the total over all groups first)."""

    title: str
    query: MetricsQuery
    rows: tuple[MetricsRow, ...]

    @property
    def total(self) -> MetricsRow:
        """The row over all tickets."""
        return next(row for row in self.rows if row.group is None)

    @property
    def groups(self) -> tuple[MetricsRow, ...]:
        """One row per group, when the report is grouped."""
        return tuple(row for row in self.rows if row.group is not None)

    def to_csv(self) -> str:
        """The rows as CSV text, the total row first (see :func:`supportflow.metrics.to_csv`)."""
        return to_csv(self.rows)

    def to_markdown(self) -> str:
        """The report as Markdown: the headline figures, then a table per group if grouped."""
        query, total = self.query, self.total
        lines = [
            f"# {self.title}",
            "",
            f"From {query.start.astimezone(ZoneInfo(query.timezone)):%Y-%m-%d %H:%M} to "
            f"{query.end.astimezone(ZoneInfo(query.timezone)):%Y-%m-%d %H:%M} "
            f"({query.timezone}).",
            "",
            "## At a glance",
            "",
            "| Measure | Value |",
            "|---|---|",
        ]
        for measure, value in _headline(total):
            lines.append(f"| {measure} | {value} |")
        if query.group_by is not None:
            lines += ["", f"## {_GROUP_TITLES[query.group_by]}", ""]
            groups = self.groups
            lines.append(to_markdown(groups).rstrip("\n") if groups else "No activity.")
        return "\n".join(lines) + "\n"


def _stats(stats: DurationStats, *parts: str) -> str:
    if not stats.count:
        return "–"
    values = " / ".join(format_duration(getattr(stats, part)) for part in parts)
    return f"{values} ({stats.count})"


def _answers(value: str, count: int) -> str:
    return f"{value} ({count} answers)" if count else "–"


def _headline(row: MetricsRow) -> list[tuple[str, str]]:
    concluded = row.follow_ups_completed + row.follow_ups_failed
    lines = [
        ("Tickets opened", str(row.opened)),
        ("Resolved / closed", f"{row.resolved} / {row.closed}"),
        ("Backlog at the end", str(row.backlog)),
        (
            "First response: median / p90 / mean",
            _stats(row.first_response, "median", "p90", "mean"),
        ),
    ]
    if row.first_response_business is not None:
        lines.append(
            ("First response in business hours: median / p90 / mean",
             _stats(row.first_response_business, "median", "p90", "mean"))
        )  # fmt: skip
    lines += [
        ("Next response: median / p90", _stats(row.next_response, "median", "p90")),
        ("Resolution time: median / p90", _stats(row.resolution, "median", "p90")),
        ("Handle time: median / mean", _stats(row.handle, "median", "mean")),
        ("First-contact resolution", format_rate(row.fcr_rate)),
        ("Reopened", format_rate(row.reopen_rate)),
        ("SLA met: first response / next response / resolution",
         " / ".join(format_rate(row.sla_rate(c)) for c in
                    ("first_response", "next_response", "resolution"))),
        ("CSAT (4 or 5 of 5)", _answers(format_rate(row.csat), row.csat_responses)),
        ("NPS", _answers(format_rate(row.nps, signed=True), row.nps_responses)),
        ("Customer effort (1 easy – 7 hard)",
         _answers(f"{row.ces:.1f}" if row.ces is not None else "–", row.ces_responses)),
        ("Escalations", str(row.escalations)),
        ("Follow-ups that reached the customer",
         f"{format_rate(row.follow_up_completion_rate)} of {concluded}" if concluded else "–"),
    ]  # fmt: skip
    return lines


def report(
    desk: Desk,
    start: datetime,
    end: datetime,
    tz: str = "UTC",
    *,
    title: str,
    group_by: str | None = None,
    calendar: BusinessCalendar | None = None,
    history_from: datetime | None = None,
) -> Report:
    """The metrics of ``[start, end)`` as one period (grouped when asked), read in one pass."""
    _desk(desk)
    _zone(tz, "tz")
    if not isinstance(title, str):
        raise ValidationError("title", title, "a string")
    if history_from is not None:
        ensure_aware(history_from, "history_from")
    query = MetricsQuery(start, end, tz, group_by=group_by, calendar=calendar, include_total=True)
    with desk.store.transaction() as uow:
        rows: Sequence[MetricsRow] = compute(
            uow.iter_events(history_from, query.end),
            query,
            reopens_closed=desk.workflow.reopens_closed,
        )
    return Report(title, query, tuple(rows))


def _desk(desk: object) -> None:
    if not isinstance(desk, Desk):
        raise ValidationError("desk", desk, "a supportflow Desk")


def _day(field: str, value: object) -> date:
    if not isinstance(value, date):  # a datetime is a date too: its day is used
        raise ValidationError(field, value, "a datetime.date")
    return value


def _midnight(field: str, day: date, tz: str) -> datetime:
    midnight = datetime.combine(day, time(), _zone(tz, "tz"))
    try:  # the first and last days of the calendar may have no UTC time in ``tz``
        midnight.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(
            field, day, f"a date whose midnight in {tz} is after 0001-01-01 UTC"
        ) from None
    return midnight


def _days_after(field: str, day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        raise ValidationError(field, day, "a date within the calendar's range") from None


def daily_report(
    desk: Desk,
    day: date,
    tz: str = "UTC",
    *,
    group_by: str | None = None,
    calendar: BusinessCalendar | None = None,
    history_from: datetime | None = None,
) -> Report:
    """The report of one day, midnight to midnight in ``tz``."""
    _desk(desk)
    _day("day", day)
    start = _midnight("day", day, tz)
    end = _midnight("day", _days_after("day", day, 1), tz)
    return report(desk, start, end, tz, title=f"Daily support report: {day:%Y-%m-%d}",
                  group_by=group_by, calendar=calendar, history_from=history_from)  # fmt: skip


def weekly_report(
    desk: Desk,
    week_of: date,
    tz: str = "UTC",
    *,
    group_by: str | None = None,
    calendar: BusinessCalendar | None = None,
    history_from: datetime | None = None,
) -> Report:
    """The report of the week (Monday to Sunday in ``tz``) that contains ``week_of``."""
    _desk(desk)
    _day("week_of", week_of)
    monday = _days_after("week_of", week_of, -week_of.weekday())
    start = _midnight("week_of", monday, tz)
    end = _midnight("week_of", _days_after("week_of", monday, 7), tz)
    return report(desk, start, end, tz, title=f"Weekly support report: week of {monday:%Y-%m-%d}",
                  group_by=group_by, calendar=calendar, history_from=history_from)  # fmt: skip


def monthly_report(
    desk: Desk,
    year: int,
    month: int,
    tz: str = "UTC",
    *,
    group_by: str | None = None,
    calendar: BusinessCalendar | None = None,
    history_from: datetime | None = None,
) -> Report:
    """The report of a calendar month in ``tz``."""
    _desk(desk)
    year = whole_number("year", year, 1)
    if year > 9999:
        raise ValidationError("year", year, "a whole number from 1 to 9999")
    if isinstance(month, bool) or not isinstance(month, Integral) or not 1 <= month <= 12:
        raise ValidationError("month", month, "1 to 12")
    month = int(month)
    first = date(year, month, 1)
    if (year, month) == (9999, 12):
        raise ValidationError("month", month, "a month that ends before the year 10000")
    following = date(year + month // 12, month % 12 + 1, 1)
    start, end = _midnight("year", first, tz), _midnight("year", following, tz)
    return report(desk, start, end, tz, title=f"Monthly support report: {first:%Y-%m}",
                  group_by=group_by, calendar=calendar, history_from=history_from)  # fmt: skip
