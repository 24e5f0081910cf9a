"""Business calendars: when the desk is open, and how much open time lies between two instants.

A :class:`BusinessCalendar` has a time zone, opening intervals per weekday, holidays (explicit
dates and/or a country's public holidays through the optional ``holidays`` package) and
worked days (dates that are open although their weekday is closed). It answers two questions
exactly, to the microsecond and across daylight-saving changes:

* :meth:`BusinessCalendar.add` — the instant at which a given amount of business time has
  elapsed after a start;
* :meth:`BusinessCalendar.between` — the business time elapsed between two instants.

Business time is real elapsed time inside opening intervals. Each interval's wall-clock bounds
are resolved to instants in the calendar's zone; a wall time that does not exist (spring-forward
gap) is moved forward, as ``zoneinfo``/``pendulum`` do with ``fold=0``.

>>> office = BusinessCalendar("Europe/Berlin", {d: [("09:00", "18:00")] for d in range(5)})
>>> friday = datetime(2026, 3, 27, 17, 0, tzinfo=pendulum.timezone("Europe/Berlin"))
>>> office.add(friday, timedelta(hours=2)).isoformat()
'2026-03-30T10:00:00+02:00'
"""

from __future__ import annotations

import datetime as _dt
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pendulum

from supportflow.clock import ensure_aware
from supportflow.errors import ValidationError
from supportflow.model import LONGEST_DURATION

__all__ = ["TWENTY_FOUR_SEVEN", "BusinessCalendar"]

_US = timedelta(microseconds=1)
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal(); ordinal 1 (0001-01-01) is a Monday
# Instants whose whole week is representable as a datetime in any zone.
_MIN_US = (date(1, 1, 8).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
_MAX_US = (date(9999, 12, 13).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
_IN_RANGE = "an instant from 0001-01-08 to 9999-12-13 00:00 UTC"
# The last instant ``_to_us`` converted, and its value (an object no caller holds at first:
# ``None`` would match a ``None`` given in error).
_LAST_US: tuple[object, int] = (object(), 0)
_US_PER_WEEK = 7 * _US_PER_DAY
_LONGEST_SPAN_US = LONGEST_DURATION // _US
_SEARCH_WEEKS = 522  # give up after ~10 years without a single open minute
_BLOCK_BITS = 6  # plain/irregular week flags are computed 64 weeks at a time
_BLOCK = 1 << _BLOCK_BITS
_CACHE_LIMIT = 8192  # entries per cache before it is simply cleared

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")

Intervals = tuple[tuple[int, int], ...]  # (start, end) in microseconds since local midnight
TimeSpec = str | _dt.time
IntervalSpec = tuple[TimeSpec, TimeSpec]
# Mapping is invariant in its key: accept int-keyed, str-keyed and mixed mappings alike.
HoursSpec = (
    Mapping[int, Sequence[IntervalSpec]]
    | Mapping[str, Sequence[IntervalSpec]]
    | Mapping[int | str, Sequence[IntervalSpec]]
)


class _Week:
    """One real week (Monday 00:00 to next Monday 00:00, local) resolved to UTC microseconds.

    ``before[i]`` is the business time in the week before interval ``i`` (``before[n]`` is the
    week's total) and ``upto[i]`` the business time up to the end of interval ``i``; together
    with bisect they turn "where is instant t" and "where is business offset x" into O(log n).
    """

    __slots__ = ("before", "end", "ends", "start", "starts", "total", "upto")

    def __init__(self, start: int, end: int, starts: list[int], ends: list[int]) -> None:
        self.start = start
        self.end = end
        self.starts = starts
        self.ends = ends
        before = [0]
        for s, e in zip(starts, ends, strict=True):
            before.append(before[-1] + e - s)
        self.before = before
        self.upto = before[1:]
        self.total = before[-1]

    def position(self, t: int) -> int:
        """Business time from the week's start to instant ``t`` (which lies in the week)."""
        i = bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return self.before[i] + t - self.starts[i]
        return self.before[i + 1]


def _parse_time(value: object, field: str, *, end: bool) -> int:
    """A wall-clock time as microseconds since midnight; ``"24:00"`` only as an end."""
    if isinstance(value, _dt.time):
        if value.tzinfo is not None:
            raise ValidationError(field, value, "a naive time; the calendar's zone applies")
        us = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
        return us + value.microsecond
    if isinstance(value, str):
        match = _TIME_RE.match(value.strip())
        if match:
            hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
            if (hour, minute, second) == (24, 0, 0) and end:
                return _US_PER_DAY
            if hour < 24 and minute < 60 and second < 60:
                return ((hour * 60 + minute) * 60 + second) * 1_000_000
    expected = "a time 'HH:MM' from 00:00 to 24:00" if end else "a time 'HH:MM' from 00:00 to 23:59"
    raise ValidationError(field, value, expected + " or a datetime.time")


def _parse_intervals(value: object, field: str) -> Intervals:
    """Validate a list of (start, end) pairs; sorted, abutting ones merged, none overlapping."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValidationError(field, value, "a list of (start, end) pairs like ('09:00', '18:00')")
    parsed: list[tuple[int, int, int]] = []
    for index, pair in enumerate(value):
        where = f"{field}[{index}]"
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValidationError(where, pair, "a (start, end) pair like ('09:00', '18:00')")
        start = _parse_time(pair[0], where, end=False)
        stop = _parse_time(pair[1], where, end=True)
        if stop <= start:
            raise ValidationError(
                where, pair, "an end after the start (use '24:00' for the end of the day)"
            )
        parsed.append((start, stop, index))
    parsed.sort()
    merged: list[tuple[int, int]] = []
    for position, (start, stop, index) in enumerate(parsed):
        if merged and start < merged[-1][1]:
            raise ValidationError(
                f"{field}[{index}]",
                value[index],
                f"an interval not overlapping {value[parsed[position - 1][2]]!r}",
            )
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], stop)  # abutting intervals are one opening
        else:
            merged.append((start, stop))
    return tuple(merged)


def _weekday(key: object) -> int:
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= 6:
        return key
    if isinstance(key, str):
        lowered = key.strip().lower()
        if lowered in _DAY_NAMES:
            return _DAY_NAMES.index(lowered)
        if lowered in _FULL_DAY_NAMES:
            return _FULL_DAY_NAMES.index(lowered)
    raise ValidationError(
        f"hours[{key!r}]", key, "a weekday: 0 (Monday) to 6 (Sunday) or 'mon' to 'sun'"
    )


def _plain_date(value: object, field: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValidationError(field, value, "a datetime.date")
    return value


class BusinessCalendar:
    """Opening hours in a time zone, with holidays and worked days; counts business time.

    ``hours`` maps weekdays (0 = Monday … 6 = Sunday, or ``'mon'`` … ``'sun'``) to lists of
    ``("HH:MM", "HH:MM")`` intervals; ``"24:00"`` may end a day. Missing weekdays are closed.
    ``holidays`` are closed dates; ``country``/``subdivision`` add that country's public
    holidays (needs the ``holidays`` extra). ``working_days`` are dates open although their
    weekday is closed: as a plain iterable they take their own weekday's hours if it has any,
    else those of the first open weekday; as a mapping they take the intervals given. A date
    that is both a holiday and a working day is worked.

    >>> shanghai = BusinessCalendar(
    ...     "Asia/Shanghai",
    ...     {d: [("09:00", "12:00"), ("13:00", "18:00")] for d in range(5)},
    ...     holidays=[date(2026, 10, 1)],
    ...     working_days=[date(2026, 10, 10)],  # a make-up Saturday
    ...     name="Shanghai office",
    ... )
    >>> tz = pendulum.timezone("Asia/Shanghai")
    >>> shanghai.add(datetime(2026, 5, 6, 11, 0, tzinfo=tz), timedelta(hours=2)).isoformat()
    '2026-05-06T14:00:00+08:00'
    >>> shanghai.is_business_day(date(2026, 10, 10)), shanghai.is_business_day(date(2026, 10, 1))
    (True, False)
    """

    def __init__(
        self,
        timezone: str,
        hours: HoursSpec,
        holidays: Iterable[date] = (),
        *,
        country: str | None = None,
        subdivision: str | None = None,
        working_days: Iterable[date] | Mapping[date, Sequence[IntervalSpec]] = (),
        name: str | None = None,
    ) -> None:
        if not isinstance(timezone, str) or not timezone.strip():
            raise ValidationError(
                "timezone", timezone, "an IANA time zone name like 'Asia/Shanghai'"
            )
        try:
            zone = pendulum.timezone(timezone)
        except Exception:  # pendulum raises InvalidTimezone, zoneinfo ValueError/KeyError
            raise ValidationError(
                "timezone", timezone, "an IANA time zone name like 'Asia/Shanghai'"
            ) from None
        if not isinstance(zone, _dt.tzinfo):  # pragma: no cover - defensive
            raise ValidationError("timezone", timezone, "an IANA time zone name")
        self._zone: _dt.tzinfo = zone
        self._timezone = timezone
        if name is not None and not isinstance(name, str):
            raise ValidationError("name", name, "a label (a string), or None")
        self._name = name if name is not None else f"business hours ({timezone})"

        # Weekly hours, in microseconds since local midnight.
        if not isinstance(hours, Mapping):
            raise ValidationError("hours", hours, "a mapping of weekday to opening intervals")
        weekly: list[Intervals] = [()] * 7
        seen: dict[int, object] = {}
        for key, value in hours.items():
            day = _weekday(key)
            if day in seen:
                raise ValidationError(
                    f"hours[{key!r}]", key, f"one entry per weekday ({day} twice)"
                )
            seen[day] = key
            weekly[day] = _parse_intervals(value, f"hours[{key!r}]")
        self._weekly: tuple[Intervals, ...] = tuple(weekly)
        first_open = next((spec for spec in weekly if spec), ())

        # Explicit holidays.
        if isinstance(holidays, (str, bytes, date)) or not isinstance(holidays, Iterable):
            raise ValidationError("holidays", holidays, "an iterable of datetime.date")
        self._holidays = frozenset(
            _plain_date(day, f"holidays[{index}]") for index, day in enumerate(holidays)
        )

        # Worked days: date -> intervals.
        worked: dict[date, Intervals] = {}
        if isinstance(working_days, Mapping):
            for when, value in working_days.items():
                where = f"working_days[{when.isoformat() if isinstance(when, date) else when!r}]"
                worked[_plain_date(when, where)] = _parse_intervals(value, where)
        elif isinstance(working_days, (str, bytes, date)) or not isinstance(working_days, Iterable):
            raise ValidationError(
                "working_days", working_days, "an iterable of dates or a mapping date -> intervals"
            )
        else:
            for index, when in enumerate(working_days):
                checked = _plain_date(when, f"working_days[{index}]")
                spec = weekly[checked.weekday()] or first_open
                if not spec:
                    raise ValidationError(
                        f"working_days[{index}]",
                        when,
                        "a mapping date -> intervals, since no weekday has opening hours to copy",
                    )
                worked[checked] = spec
        self._worked = worked
        if not any(weekly) and not any(worked.values()):
            raise ValidationError(
                "hours", hours, "at least one opening interval (this calendar is never open)"
            )

        # Country holidays, loaded lazily per year.
        if country is not None and not isinstance(country, str):
            raise ValidationError("country", country, "an ISO 3166 country code such as 'US'")
        if subdivision is not None and not isinstance(subdivision, str):
            raise ValidationError("subdivision", subdivision, "a subdivision code such as 'CA'")
        self._country = country
        self._subdivision = subdivision
        self._country_years: dict[int, frozenset[date]] = {}
        if subdivision is not None and country is None:
            raise ValidationError("subdivision", subdivision, "to be given together with country")
        if country is not None:
            self._check_country(country, subdivision)

        # Nominal length of a plain week: no override, no UTC-offset change.
        self._nominal = sum(e - s for spec in weekly for s, e in spec)
        full_day = ((0, _US_PER_DAY),)
        self._always = (
            all(spec == full_day for spec in weekly)
            and all(spec == full_day for spec in worked.values())
            and not self._holidays
            and country is None
        )
        # Any offset within a day of the truth makes the first week guess right or one off.
        probe = zone.utcoffset(datetime(2026, 1, 1))
        self._guess_offset = (probe // _US) if probe is not None else 0
        self._weeks: dict[int, _Week] = {}
        # The last opening found around an instant, [start, end) in UTC microseconds: an SLA
        # clock mostly counts and falls due within the opening it started in, where business
        # time is elapsed time. Swapped whole, so safe to read from any thread.
        self._opening = (0, 0)
        self._blocks: dict[int, tuple[int, ...]] = {}

    @classmethod
    def always(cls, timezone: str = "UTC") -> BusinessCalendar:
        """A calendar open around the clock: business time is elapsed time.

        ``add(s, d)`` is the instant ``d`` after ``s`` and ``between(a, b)`` is ``b - a``,
        both in real time (as computed on UTC datetimes), in any ``timezone``.

        >>> BusinessCalendar.always().between(
        ...     datetime(2026, 1, 1, tzinfo=_dt.timezone.utc),
        ...     datetime(2026, 1, 2, tzinfo=_dt.timezone.utc))
        datetime.timedelta(days=1)
        """
        return cls(timezone, {d: [("00:00", "24:00")] for d in range(7)}, name="24x7")

    @property
    def timezone(self) -> str:
        """The IANA name of the calendar's time zone."""
        return self._timezone

    @property
    def name(self) -> str:
        """A label for people (logs, reports)."""
        return self._name

    def __repr__(self) -> str:
        return f"BusinessCalendar(name={self._name!r}, timezone={self._timezone!r})"

    # ------------------------------------------------------------------ public operations

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant when ``duration`` of business time has elapsed after ``start``.

        A ``start`` outside opening hours counts from the next opening; a zero duration gives
        that opening. The result is an aware datetime in the calendar's zone. When the
        duration ends exactly at a closing time, the closing time is returned.

        >>> office = BusinessCalendar("UTC", {"mon": [("09:00", "12:00"), ("13:00", "18:00")]})
        >>> monday = datetime(2026, 3, 2, 11, 30, tzinfo=_dt.timezone.utc)
        >>> office.add(monday, timedelta(hours=1)).isoformat()  # lunch is not counted
        '2026-03-02T13:30:00+00:00'
        """
        return self._from_us(self._add_us(self._to_us(start, "start"), duration, start))

    def _add_us(self, t: int, duration: timedelta, start: datetime) -> int:
        """:meth:`add` in UTC microseconds (``start`` is ``t`` as given, for error messages)."""
        d = self._duration_us(duration)
        if t + d > _MAX_US:
            raise ValidationError("duration", duration, "a result before the year 9999")
        if self._always:
            return t + d
        rec, w = self._locate(t)
        starts = rec.starts
        i = bisect_right(starts, t) - 1
        inside = i >= 0 and t < rec.ends[i]
        if d == 0:
            if inside:
                return t
            if i + 1 < len(starts):
                return starts[i + 1]
            try:
                return self._walk(w, 1, "start", start)[0].starts[0]
            except OverflowError:
                raise ValidationError("start", start, "an opening before the year 9999") from None
        target = (rec.before[i] + t - starts[i] if inside else rec.before[i + 1]) + d
        return self._at(rec, w, target, duration)

    def add_many(self, start: datetime, durations: Iterable[timedelta]) -> list[datetime]:
        """``[add(start, d) for d in durations]``, finding where ``start`` falls only once
        (an SLA clock works out its warnings and its breach from the same start).

        >>> office = BusinessCalendar("UTC", {"mon": [("09:00", "12:00"), ("13:00", "18:00")]})
        >>> monday = datetime(2026, 3, 2, 11, 30, tzinfo=_dt.timezone.utc)
        >>> [at.isoformat() for at in office.add_many(monday, [timedelta(0), timedelta(hours=1)])]
        ['2026-03-02T11:30:00+00:00', '2026-03-02T13:30:00+00:00']
        """
        return [self._from_us(us) for us in self._add_many_us(start, durations)]

    def add_many_utc(self, start: datetime, durations: Iterable[timedelta]) -> list[datetime]:
        """:meth:`add_many` with the results as stdlib UTC datetimes, the form the engines
        store (no conversion to the calendar's zone and back).

        >>> office = BusinessCalendar("Europe/Berlin", {"mon": [("09:00", "18:00")]})
        >>> monday = datetime(2026, 3, 2, 8, 30, tzinfo=_dt.timezone.utc)  # 09:30 in Berlin
        >>> office.add_many_utc(monday, [timedelta(hours=1)])
        [datetime.datetime(2026, 3, 2, 9, 30, tzinfo=datetime.timezone.utc)]
        """
        return [_EPOCH + _US * us for us in self._add_many_us(start, durations)]

    def add_offsets_utc(self, start: datetime, offsets: Iterable[int]) -> list[datetime]:
        """:meth:`add_many_utc` with the durations given in whole microseconds (for callers
        that keep them as integers, such as the SLA engine's memo of a target's warnings).

        >>> office = BusinessCalendar("UTC", {"mon": [("09:00", "18:00")]})
        >>> monday = datetime(2026, 3, 2, 17, 30, tzinfo=_dt.timezone.utc)
        >>> office.add_offsets_utc(monday, [3_600_000_000])  # an hour: 30 min today, 30 next
        [datetime.datetime(2026, 3, 9, 9, 30, tzinfo=datetime.timezone.utc)]
        """
        t = self._to_us(start, "start")
        checked = list(offsets)
        for offset in checked:
            # ``type(...) is int`` also turns bools away; anything unusual gets the full check.
            if type(offset) is not int or offset < 0 or t + offset > _MAX_US:
                self._checked_us(t, offset)
        return [_EPOCH + _US * us for us in self._positions_us(t, checked, start)]

    def _add_many_us(self, start: datetime, durations: Iterable[timedelta]) -> list[int]:
        t = self._to_us(start, "start")
        checked: list[int] = []
        for duration in durations:
            d = self._duration_us(duration)
            if t + d > _MAX_US:
                raise ValidationError("duration", duration, "a result before the year 9999")
            checked.append(d)
        return self._positions_us(t, checked, start)

    @staticmethod
    def _checked_us(t: int, d: int) -> int:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValidationError("duration", d, "a non-negative whole number of microseconds")
        if t + d > _MAX_US:
            raise ValidationError("duration", _US * d, "a result before the year 9999")
        return d

    def _positions_us(self, t: int, durations: list[int], start: datetime) -> list[int]:
        """``t`` plus each business duration (microseconds, checked), finding where ``t``
        falls only once."""
        if self._always:
            return [t + d for d in durations]
        opens, closes = self._opening
        rec: _Week | None = None  # the week ``t`` falls in, found when first needed
        w = position = 0
        found: list[int] = []
        for d in durations:
            if d == 0:
                found.append(self._add_us(t, _US * d, start))  # the next opening: rare
                continue
            if opens <= t and t + d <= closes:  # ends within the opening ``t`` is in
                found.append(t + d)
                continue
            if rec is None:
                rec, w = self._locate(t)
                starts = rec.starts
                i = bisect_right(starts, t) - 1
                inside = i >= 0 and t < rec.ends[i]
                position = rec.before[i] + t - starts[i] if inside else rec.before[i + 1]
                if inside:
                    self._opening = (starts[i], rec.ends[i])
            found.append(self._at(rec, w, position + d, d))
        return found

    def _at(self, rec: _Week, w: int, target: int, duration: timedelta | int) -> int:
        """The instant (UTC microseconds) at business position ``target`` of week ``w`` (or
        a later week); ``duration`` (microseconds or a timedelta) is for error messages."""
        if target > rec.total:
            shown = duration if isinstance(duration, timedelta) else _US * duration
            try:
                rec, target = self._walk(w, target - rec.total, "duration", shown)
            except OverflowError:
                raise ValidationError("duration", shown, "a result before the year 9999") from None
        j = bisect_left(rec.upto, target)
        return rec.starts[j] + target - rec.before[j]

    def between(self, start: datetime, end: datetime) -> timedelta:
        """The business time elapsed from ``start`` to ``end``; ``timedelta(0)`` if not after.

        >>> office = BusinessCalendar("UTC", {d: [("09:00", "18:00")] for d in range(5)})
        >>> friday = datetime(2026, 3, 6, 17, 0, tzinfo=_dt.timezone.utc)
        >>> office.between(friday, friday + timedelta(days=3))  # to Monday 17:00
        datetime.timedelta(seconds=32400)
        """
        a = self._to_us(start, "start")
        b = self._to_us(end, "end")
        if b <= a:
            return timedelta(0)
        if self._always:
            return _US * (b - a)
        opens, closes = self._opening
        if opens <= a and b <= closes:  # both within one opening: all of it counts
            return _US * (b - a)
        rec_a, wa = self._locate(a)
        if b < rec_a.end:
            return _US * (rec_a.position(b) - rec_a.position(a))
        rec_b, wb = self._locate(b)
        total = rec_a.total - rec_a.position(a) + rec_b.position(b)
        total += self._weeks_total(wa + 1, wb)
        return _US * total

    def is_open(self, at: datetime) -> bool:
        """Whether the desk is open at ``at`` (intervals include their start, not their end)."""
        t = self._to_us(at, "at")
        if self._always:
            return True
        rec, _ = self._locate(t)
        i = bisect_right(rec.starts, t) - 1
        return i >= 0 and t < rec.ends[i]

    def next_opening(self, at: datetime) -> datetime:
        """``at`` itself if open, else the next instant the desk opens (in the calendar's zone)."""
        if self.is_open(at):
            return at
        return self.add(at, timedelta(0))

    def is_business_day(self, day: date) -> bool:
        """Whether ``day`` has opening hours (holidays and worked days applied).

        An aware datetime is read as its date in the calendar's zone. A day the zone skipped
        (Pacific/Apia went from 29 to 31 December 2011) has no business time and is no
        business day.
        """
        if isinstance(day, datetime):
            day = ensure_aware(day, "day").astimezone(self._zone).date()
        elif not isinstance(day, date):
            raise ValidationError("day", day, "a datetime.date")
        if not self._day_spec(day):
            return False
        ordinal = day.toordinal()
        try:
            rec = self._week((ordinal - 1) // 7)
            lo, hi = self._resolve(ordinal, 0), self._resolve(ordinal + 1, 0)
        except (OverflowError, ValueError):
            return True  # the first or last days datetime can hold: no zone change there
        # The week's openings are clipped to each day's real span: any within it counts.
        return any(s < hi and e > lo for s, e in zip(rec.starts, rec.ends, strict=True))

    def check_span(self, field: str, duration: timedelta) -> None:
        """``ValidationError`` naming ``field`` unless this calendar counts ``duration`` (a
        setting :func:`~supportflow.model.check_duration` passed) within 1,000 years: a sparse
        calendar stretches a long duration past the year 9999, where every deadline set with
        it would fail. Policies check their durations with it when they are built.

        >>> weekly = BusinessCalendar("UTC", {"mon": [("09:00", "09:01")]}, name="weekly")
        >>> weekly.check_span("after", timedelta(hours=1))  # sixty Mondays
        >>> weekly.check_span("after", timedelta(hours=900))
        Traceback (most recent call last):
        ...
        supportflow.errors.ValidationError: after=datetime.timedelta(days=37, seconds=43200) is \
invalid: expected a duration that calendar 'weekly' counts within 1,000 years
        """
        # Plain weeks needed at least; holidays add days a year to that, not centuries. (A
        # calendar open on listed days only has no plain week: its deadlines are checked
        # when they are set.)
        weeks_us = self._duration_us(duration) * _US_PER_WEEK
        if self._nominal and weeks_us > self._nominal * _LONGEST_SPAN_US:
            raise ValidationError(
                field,
                duration,
                f"a duration that calendar {self._name!r} counts within 1,000 years",
            )

    # ------------------------------------------------------------------ conversions

    @staticmethod
    def _to_us(value: datetime, field: str) -> int:
        """UTC microseconds since the epoch; exact, and fast for stdlib and pendulum inputs."""
        global _LAST_US
        last = _LAST_US
        if value is last[0]:
            # The same instant again (an SLA step reads one ``now`` for several clocks, and
            # datetimes are immutable): its conversion, already checked.
            return last[1]
        if type(value) is datetime and value.tzinfo is timezone.utc:
            us: int = (value - _EPOCH) // _US  # what the engines store: the operator is fastest
        else:
            if not isinstance(value, datetime) or value.utcoffset() is None:
                ensure_aware(value, field)  # raises with the argument's name
            # datetime.__sub__ keeps pendulum.DateTime on the C path (its own __sub__ is slow).
            try:
                us = datetime.__sub__(value, _EPOCH) // _US
            except OverflowError:
                us = _MIN_US - 1
        if not _MIN_US <= us <= _MAX_US:
            raise ValidationError(field, value, _IN_RANGE)
        _LAST_US = (value, us)  # one tuple, swapped whole: safe to read from any thread
        return us

    def _from_us(self, us: int) -> datetime:
        return (_EPOCH + _US * us).astimezone(self._zone)

    @staticmethod
    def _duration_us(duration: timedelta) -> int:
        if not isinstance(duration, timedelta):
            raise ValidationError("duration", duration, "a datetime.timedelta")
        # Field arithmetic: pendulum.Duration overrides the operators.
        us = (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds
        if us < 0:
            raise ValidationError("duration", duration, "a non-negative duration")
        return us

    # ------------------------------------------------------------------ days and weeks

    def _check_country(self, country: str, subdivision: str | None) -> None:
        try:
            import holidays as holidays_package
        except ImportError:
            raise ValidationError(
                "country",
                country,
                "the optional 'holidays' package: pip install 'supportflow[holidays]'",
            ) from None
        try:
            holidays_package.country_holidays(country)
        except NotImplementedError:
            raise ValidationError(
                "country", country, "an ISO 3166 country code known to the holidays package"
            ) from None
        if subdivision is not None:
            try:
                holidays_package.country_holidays(country, subdiv=subdivision)
            except NotImplementedError:
                raise ValidationError(
                    "subdivision", subdivision, f"a subdivision of {country} known to holidays"
                ) from None

    def _country_holidays(self, year: int) -> frozenset[date]:
        cached = self._country_years.get(year)
        if cached is None and self._country is not None:
            import holidays as holidays_package

            found = holidays_package.country_holidays(
                self._country, subdiv=self._subdivision, years=year
            )
            cached = frozenset(day for day in found if day.year == year)
            self._country_years[year] = cached
        return cached or frozenset()

    def _is_override(self, day: date) -> bool:
        """Whether ``day`` does not follow its weekday's hours."""
        return (
            day in self._worked
            or day in self._holidays
            or (self._country is not None and day in self._country_holidays(day.year))
        )

    def _day_spec(self, day: date) -> Intervals:
        spec = self._worked.get(day)
        if spec is not None:
            return spec
        if day in self._holidays:
            return ()
        if self._country is not None and day in self._country_holidays(day.year):
            return ()
        return self._weekly[day.weekday()]

    def _resolve(self, ordinal: int, us: int) -> int:
        """Local wall time (day ordinal, microseconds since midnight) as UTC microseconds.

        ``utcoffset`` of a naive wall time uses fold=0: in a gap the offset from before the
        change applies, which moves the wall time forward; ``24:00`` is the next day's 00:00.
        """
        wall = datetime.fromordinal(ordinal) + timedelta(microseconds=us)
        offset = self._zone.utcoffset(wall)
        local = (ordinal - _EPOCH_ORDINAL) * _US_PER_DAY + us
        return local - (offset // _US if offset is not None else 0)

    def _week(self, w: int) -> _Week:
        rec = self._weeks.get(w)
        if rec is None:
            rec = self._build_week(w)
        return rec

    def _build_week(self, w: int) -> _Week:
        first = w * 7 + 1  # ordinal of the week's Monday
        try:
            midnights = [self._resolve(first + k, 0) for k in range(8)]
        except (OverflowError, ValueError):
            raise OverflowError("week beyond the range of datetime") from None
        starts: list[int] = []
        ends: list[int] = []
        for k in range(7):
            lo, hi = midnights[k], midnights[k + 1]
            spans: list[tuple[int, int]] = []
            for s, e in self._day_spec(date.fromordinal(first + k)):
                rs = lo if s == 0 else self._resolve(first + k, s)
                re_ = hi if e == _US_PER_DAY else self._resolve(first + k, e)
                # Each day owns [its midnight, next midnight): around a gap, wall times can
                # resolve out of order or past the day, so clip and merge.
                rs, re_ = max(rs, lo), min(re_, hi)
                if re_ > rs:
                    spans.append((rs, re_))
            spans.sort()
            for rs, re_ in spans:
                if ends and rs <= ends[-1]:
                    ends[-1] = max(ends[-1], re_)
                else:
                    starts.append(rs)
                    ends.append(re_)
        rec = _Week(midnights[0], midnights[7], starts, ends)
        if len(self._weeks) >= _CACHE_LIMIT:
            self._weeks.clear()
        self._weeks[w] = rec
        return rec

    def _locate(self, t: int) -> tuple[_Week, int]:
        """The week containing instant ``t``, and its index."""
        w = ((t + self._guess_offset) // _US_PER_DAY + _EPOCH_ORDINAL - 1) // 7
        rec = self._week(w)
        while t < rec.start:
            w -= 1
            rec = self._week(w)
        while t >= rec.end:
            w += 1
            rec = self._week(w)
        return rec, w

    def _plain_runs(self, w: int) -> int:
        """How many consecutive weeks from ``w`` (within its block) are plain.

        A plain week has no holiday or worked day and the same UTC offset at all eight of its
        midnights, so its real length is the nominal weekly hours: it can be skipped with
        arithmetic. (Two offset changes within one day do not occur in the tz database.)
        """
        block = w >> _BLOCK_BITS
        runs = self._blocks.get(block)
        if runs is None:
            runs = self._build_block(block)
        return runs[w - (block << _BLOCK_BITS)]

    def _build_block(self, block: int) -> tuple[int, ...]:
        first_week = block << _BLOCK_BITS
        first = first_week * 7 + 1
        zone = self._zone
        try:
            offsets = [
                zone.utcoffset(datetime.fromordinal(first + k)) for k in range(_BLOCK * 7 + 1)
            ]
        except (OverflowError, ValueError):
            # Near the ends of the datetime range: treat every week as irregular.
            return (0,) * _BLOCK
        plain = []
        for i in range(_BLOCK):
            day0 = first + i * 7
            same = all(offsets[i * 7 + k] == offsets[i * 7] for k in range(1, 8))
            plain.append(
                same and not any(self._is_override(date.fromordinal(day0 + k)) for k in range(7))
            )
        runs = [0] * (_BLOCK + 1)
        for i in range(_BLOCK - 1, -1, -1):
            runs[i] = runs[i + 1] + 1 if plain[i] else 0
        result = tuple(runs[:_BLOCK])
        if len(self._blocks) >= _CACHE_LIMIT:
            self._blocks.clear()
        self._blocks[block] = result
        return result

    def _walk(self, w: int, remaining: int, field: str, value: object) -> tuple[_Week, int]:
        """From the end of week ``w``, find the week where ``remaining`` business time ends.

        Returns that week and the business offset inside it (0 < offset <= its total).
        Runs of plain weeks are skipped arithmetically; O(weeks) only across irregular ones.
        ``field``/``value`` name the argument blamed when the calendar never opens again.
        """
        nominal = self._nominal
        last_open = w
        while True:
            w += 1
            if w - last_open > _SEARCH_WEEKS:
                raise ValidationError(
                    field, value, "a calendar that opens again: it has no opening for 10 years"
                )
            run = self._plain_runs(w)
            if run:
                # Skip whole plain weeks, but keep the last one if the end falls in it.
                skip = run if nominal == 0 else min(run, (remaining - 1) // nominal)
                if skip:
                    remaining -= skip * nominal
                    if nominal:
                        last_open = w + skip - 1
                    w += skip - 1
                    continue
            rec = self._week(w)
            if remaining <= rec.total:
                return rec, remaining
            if rec.total:
                last_open = w
            remaining -= rec.total

    def _weeks_total(self, first: int, stop: int) -> int:
        """Business time in weeks ``first`` .. ``stop - 1``."""
        total = 0
        w = first
        while w < stop:
            run = self._plain_runs(w)
            if run:
                skip = min(run, stop - w)
                total += skip * self._nominal
                w += skip
            else:
                total += self._week(w).total
                w += 1
        return total


def _is_calendar(instance: object, attribute: Any, value: object) -> None:
    """attrs validator for the policies' ``calendar`` settings."""
    if not isinstance(value, BusinessCalendar):
        raise ValidationError(attribute.name, value, "a BusinessCalendar")


TWENTY_FOUR_SEVEN: BusinessCalendar = BusinessCalendar.always("UTC")
"""Open around the clock, in UTC: business time is elapsed time."""
