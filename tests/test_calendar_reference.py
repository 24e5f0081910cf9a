"""Business calendars against a brute-force reference, across time zones and DST changes.

The calendar resolves weeks into UTC instants, remembers the last opening it found and skips
plain weeks arithmetically. The reference here does none of that: it resolves each day's
wall-clock intervals with ``zoneinfo`` (a wall time in a spring-forward gap moves forward, an
ambiguous one means its first occurrence, ``24:00`` is the next midnight, each day owns its
midnight to the next), and walks them one by one. Every public operation must agree with it to
the microsecond: ``add``, ``add_many``, ``add_many_utc``, ``add_offsets_utc``, ``between``,
``is_open``, ``next_opening`` and ``is_business_day``.

The zones change their clocks both ways (London, New York, Santiago at midnight, Lord Howe by
30 minutes), not at all (Kolkata, UTC), or skip a whole day (Apia, 30 December 2011); opening
bounds are drawn around the change hours and at midnight, and instants around the changes and
at the edges of openings, as UTC, zone-aware and ``pendulum`` datetimes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportflow.calendar import BusinessCalendar

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
DAY_US = 86_400_000_000
Minutes = list[tuple[int, int]]


def to_us(moment: datetime) -> int:
    """UTC microseconds since the epoch (``datetime.__sub__``: real time, any zone)."""
    return datetime.__sub__(moment, EPOCH) // US


def from_us(us: int) -> datetime:
    return EPOCH + us * US


class Reference:
    """Opening intervals resolved day by day with zoneinfo; answers by walking them."""

    def __init__(
        self,
        zone: str,
        weekly: list[Minutes],
        holidays: set[date],
        worked: dict[date, Minutes],
    ) -> None:
        self.zone = ZoneInfo(zone)
        self.weekly = weekly
        self.holidays = holidays
        self.worked = worked
        self.days: dict[date, list[tuple[int, int]]] = {}
        self.weekly_us = sum(e - s for spec in weekly for s, e in spec) * 60_000_000

    def wall(self, day: date, minutes: int) -> int:
        """A wall time (minutes after midnight, 1440 = next midnight) as UTC microseconds."""
        day += timedelta(days=minutes // 1440)
        minutes %= 1440
        moment = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
        return to_us(moment.replace(tzinfo=self.zone, fold=0))

    def day(self, day: date) -> list[tuple[int, int]]:
        """The day's openings in UTC, clipped to its own midnights and merged."""
        if day not in self.days:
            spec = self.worked.get(day)
            if spec is None:
                spec = [] if day in self.holidays else self.weekly[day.weekday()]
            low, high = self.wall(day, 0), self.wall(day, 1440)
            spans = sorted(
                (max(self.wall(day, s), low), min(self.wall(day, e), high)) for s, e in spec
            )
            merged: list[tuple[int, int]] = []
            for s, e in spans:
                if e <= s:
                    continue
                if merged and s <= merged[-1][1]:  # bounds in a gap can resolve to overlap
                    merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
                else:
                    merged.append((s, e))
            self.days[day] = merged
        return self.days[day]

    def openings(self, t: int) -> Iterator[tuple[int, int]]:
        day = from_us(t).astimezone(self.zone).date() - timedelta(days=2)
        while True:
            yield from self.day(day)
            day += timedelta(days=1)

    def between(self, a: int, b: int) -> int:
        total = 0
        for s, e in self.openings(a):
            if s >= b:
                break
            total += max(0, min(e, b) - max(s, a))
        return total

    def add(self, t: int, d: int) -> int:
        for s, e in self.openings(t):
            if e <= t:
                continue
            s = max(s, t)
            if d == 0:
                return s
            if e - s >= d:
                return s + d
            d -= e - s
        raise AssertionError("unreachable")

    def is_open(self, t: int) -> bool:
        for s, e in self.openings(t):
            if s > t:
                return False
            if t < e:
                return True
        raise AssertionError("unreachable")


# -- what is drawn ---------------------------------------------------------------------------
ZONES = {
    "Europe/London": 2026,
    "America/New_York": 2026,
    "Australia/Lord_Howe": 2026,  # 30-minute changes
    "America/Santiago": 2026,  # changes at midnight
    "Pacific/Apia": 2011,  # skipped 30 December 2011
    "Asia/Kolkata": 2026,  # no changes
    "UTC": 2026,
}


def changes(zone: str, year: int) -> list[int]:
    """UTC instants (microseconds) at which ``zone`` changes its offset in ``year``."""
    tz = ZoneInfo(zone)
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    before = moment.astimezone(tz).utcoffset()
    while moment.year == year:
        moment += timedelta(minutes=30)
        offset = moment.astimezone(tz).utcoffset()
        if offset != before:
            found.append(to_us(moment))
        before = offset
    return found


CHANGES = {zone: changes(zone, year) or [to_us(datetime(year, 6, 1, tzinfo=UTC))]
           for zone, year in ZONES.items()}  # fmt: skip
# Change hours, their neighbours, midnight and office hours, in minutes after midnight.
NOTABLE = [0, 1, 30, 59, 60, 61, 90, 120, 150, 180, 540, 720, 780, 1080, 1380, 1410, 1439, 1440]


def text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def day_hours(draw: st.DrawFn) -> Minutes:
    bound = st.one_of(st.sampled_from(NOTABLE), st.integers(0, 1440))
    points = sorted(draw(st.sets(bound, max_size=6)))
    points = points[: len(points) // 2 * 2]
    return [(points[i], points[i + 1]) for i in range(0, len(points), 2)]


@st.composite
def calendars(draw: st.DrawFn) -> tuple[str, Reference, BusinessCalendar]:
    zone = draw(st.sampled_from(sorted(ZONES)))
    weekly = [draw(day_hours()) for _ in range(7)]
    if not any(weekly):
        weekly[draw(st.integers(0, 6))] = [(540, 1080)]
    year = ZONES[zone]
    near_change = st.builds(
        lambda us, k: from_us(us).astimezone(ZoneInfo(zone)).date() + timedelta(days=k),
        st.sampled_from(CHANGES[zone]),
        st.integers(-2, 2),
    )
    dates = st.one_of(near_change, st.dates(date(year - 1, 12, 1), date(year + 1, 2, 1)))
    holidays = draw(st.sets(dates, max_size=10))
    worked = draw(st.dictionaries(dates, day_hours(), max_size=3))
    reference = Reference(zone, weekly, holidays, worked)
    calendar = BusinessCalendar(
        zone,
        {day: [(text(s), text(e)) for s, e in weekly[day]] for day in range(7)},
        holidays=holidays,
        working_days={day: [(text(s), text(e)) for s, e in spec] for day, spec in worked.items()},
    )
    return zone, reference, calendar


@st.composite
def instants(draw: st.DrawFn, zone: str, reference: Reference) -> int:
    """UTC microseconds: around a change, at an opening's edges, a wall time in either fold."""
    tz = ZoneInfo(zone)
    change = draw(st.sampled_from(CHANGES[zone]))
    kind = draw(st.sampled_from(["near", "edge", "wall", "year"]))
    if kind == "year":
        us = to_us(datetime(ZONES[zone], 1, 1, tzinfo=UTC)) + draw(st.integers(0, 365 * DAY_US))
    elif kind == "near":
        us = change + draw(st.integers(-3 * DAY_US, 3 * DAY_US))
    else:
        day = from_us(change).astimezone(tz).date() + timedelta(days=draw(st.integers(-1, 1)))
        spans = reference.day(day)
        if kind == "edge" and spans:
            edge = draw(st.sampled_from([bound for span in spans for bound in span]))
            return edge + draw(st.sampled_from([-1, 0, 1]))
        minutes = min(draw(st.sampled_from(NOTABLE)), 1439)
        wall = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
        return to_us(wall.replace(tzinfo=tz, fold=draw(st.integers(0, 1))))
    return us - us % 60_000_000 if draw(st.booleans()) else us


def shown(draw: st.DrawFn, us: int, zone: str) -> datetime:
    """The instant as a caller may give it: UTC, in the calendar's zone, in pendulum, elsewhere."""
    moment = from_us(us)
    form = draw(st.sampled_from(["utc", "zone", "pendulum", "kolkata"]))
    if form == "zone":
        return moment.astimezone(ZoneInfo(zone))
    if form == "pendulum":
        return pendulum.instance(moment).in_timezone(zone)
    if form == "kolkata":
        return moment.astimezone(ZoneInfo("Asia/Kolkata"))
    return moment


durations = st.one_of(
    st.integers(0, 3),  # microseconds
    st.integers(0, 300).map(lambda minutes: minutes * 60_000_000),
    st.integers(0, 200 * 3_600_000_000),
    st.integers(0, 100 * DAY_US),  # up to about three months
)


@st.composite
def spans_from(draw: st.DrawFn, reference: Reference, t: int) -> list[int]:
    """Business durations from ``t``: any (at most 200 weeks of opening hours, which the
    reference walks one by one), or to within a microsecond of one of the next closings."""
    spans = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            spans.append(draw(durations) % (200 * reference.weekly_us + 1))
            continue
        closings = []
        for _, end in reference.openings(t):
            if end > t:
                closings.append(end)
            if len(closings) == 3:
                break
        to_closing = reference.between(t, draw(st.sampled_from(closings)))
        spans.append(max(0, to_closing + draw(st.sampled_from([-1, 0, 1]))))
    return spans


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- properties ------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_adding_agrees_with_the_reference(data: st.DataObject) -> None:
    zone, reference, calendar = data.draw(calendars())
    t = data.draw(instants(zone, reference))
    spans = data.draw(spans_from(reference, t))
    start = shown(data.draw, t, zone)
    expected = [reference.add(t, d) for d in spans]
    assert [to_us(calendar.add(start, d * US)) for d in spans] == expected
    assert [to_us(at) for at in calendar.add_many(start, [d * US for d in spans])] == expected
    utc_results = calendar.add_many_utc(start, [d * US for d in spans])
    assert [to_us(at) for at in utc_results] == expected
    assert calendar.add_offsets_utc(start, spans) == utc_results
    assert all(at.tzinfo is UTC for at in utc_results)
    assert calendar.add(start, spans[0] * US).tzinfo is not None
    assert calendar.is_open(start) == reference.is_open(t)
    assert to_us(calendar.next_opening(start)) == reference.add(t, 0)


@SETTINGS
@given(data=st.data())
def test_between_agrees_with_the_reference(data: st.DataObject) -> None:
    zone, reference, calendar = data.draw(calendars())
    a = data.draw(instants(zone, reference))
    b = data.draw(
        st.one_of(
            instants(zone, reference),
            st.just(a),
            st.integers(-DAY_US, 60 * DAY_US).map(lambda span: a + span),
        )
    )
    start, end = shown(data.draw, a, zone), shown(data.draw, b, zone)
    elapsed = calendar.between(start, end)
    assert elapsed == (reference.between(a, b) if b > a else 0) * US
    if elapsed:
        # Adding it back gives the first instant that much business time has passed: ``end``
        # itself, or the closing time ``end`` lies after.
        back = to_us(calendar.add(start, elapsed))
        assert back <= b
        assert reference.between(a, back) == elapsed // US
        assert reference.between(back, b) == 0


@SETTINGS
@given(data=st.data())
def test_business_days_agree_with_the_reference(data: st.DataObject) -> None:
    zone, reference, calendar = data.draw(calendars())
    t = data.draw(instants(zone, reference))
    day = from_us(t).astimezone(ZoneInfo(zone)).date()
    assert calendar.is_business_day(day) == bool(reference.day(day))
    assert calendar.is_business_day(from_us(t)) == bool(reference.day(day))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_calendar_in_use_answers_as_the_reference(data: st.DataObject) -> None:
    # One calendar asked many questions in a row near each other: what it remembers of the
    # last opening and the last instant must never show in its answers.
    zone, reference, calendar = data.draw(calendars())
    t = data.draw(instants(zone, reference))
    for _ in range(12):
        t += data.draw(st.sampled_from([0, 1, -1, 60_000_000, 3_600_000_000, DAY_US]))
        spans = data.draw(spans_from(reference, t))
        start = from_us(t)
        found = calendar.add_offsets_utc(start, spans)
        assert [to_us(at) for at in found] == [reference.add(t, d) for d in spans]
        closing = next(end for _, end in reference.openings(t) if end > t)
        end = data.draw(
            st.one_of(
                st.integers(t, t + 3 * DAY_US),
                st.sampled_from([closing - 1, closing, closing + 1]),
            )
        )
        assert calendar.between(start, from_us(end)) == reference.between(t, end) * US


# -- the stories the reference is built on ---------------------------------------------------
LONDON = ZoneInfo("Europe/London")


def test_the_first_and_the_second_half_past_one_in_autumn_count_differently() -> None:
    night = BusinessCalendar("Europe/London", {"sun": [("00:00", "03:00")]})
    first = datetime(2026, 10, 25, 1, 30, tzinfo=LONDON)
    second = first.replace(fold=1)
    three = datetime(2026, 10, 25, 3, 0, tzinfo=LONDON)
    assert night.between(first, three) == timedelta(hours=2, minutes=30)
    assert night.between(second, three) == timedelta(hours=1, minutes=30)
    assert night.add(first, timedelta(hours=1)).astimezone(UTC) == second.astimezone(UTC)
    assert night.add_offsets_utc(second, [3_600_000_000]) == [
        datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
    ]


def test_openings_that_meet_inside_the_spring_gap_count_once() -> None:
    # 01:01 and 02:00-02:01 do not exist on 29 March 2026 in London: both resolve into
    # 02:00-02:01 BST, which is counted once.
    cal = BusinessCalendar("Europe/London", {"sun": [("00:00", "01:01"), ("02:00", "02:01")]})
    midnight = datetime(2026, 3, 29, tzinfo=UTC)
    assert cal.between(midnight, midnight + timedelta(hours=3)) == timedelta(hours=1, minutes=1)
    assert cal.between(midnight + timedelta(hours=1), midnight + timedelta(hours=2)) == timedelta(
        minutes=1
    )


def test_the_day_apia_skipped_has_no_business_time() -> None:
    apia = ZoneInfo("Pacific/Apia")
    every_day = BusinessCalendar("Pacific/Apia", {d: [("09:00", "17:00")] for d in range(7)})
    thursday = datetime(2011, 12, 29, 16, 0, tzinfo=apia)  # one hour before closing, UTC-10
    # Friday the 30th never happened: the next hour is Saturday 09:00-10:00 (UTC+14).
    assert every_day.add(thursday, timedelta(hours=2)) == datetime(2011, 12, 31, 10, tzinfo=apia)
    assert every_day.between(thursday, datetime(2012, 1, 1, tzinfo=apia)) == timedelta(hours=9)
    assert not every_day.is_business_day(date(2011, 12, 30))


@pytest.mark.parametrize(
    ("zone", "day", "length"),
    [
        ("Australia/Lord_Howe", date(2026, 4, 5), timedelta(hours=24, minutes=30)),
        ("Australia/Lord_Howe", date(2026, 10, 4), timedelta(hours=23, minutes=30)),
        ("America/Santiago", date(2026, 4, 5), timedelta(hours=24)),
        ("America/Santiago", date(2026, 4, 4), timedelta(hours=25)),
        ("America/Santiago", date(2026, 9, 6), timedelta(hours=23)),
        ("Asia/Kolkata", date(2026, 3, 29), timedelta(hours=24)),
    ],
)
def test_a_whole_day_lasts_as_long_as_the_zone_makes_it(
    zone: str, day: date, length: timedelta
) -> None:
    cal = BusinessCalendar(zone, {d: [("00:00", "24:00")] for d in range(7)}, holidays=[])
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
    assert cal.between(start, end) == length
    reference = Reference(zone, [[(0, 1440)]] * 7, set(), {})
    assert reference.between(to_us(start), to_us(end)) * US == length


def test_offsets_across_the_spring_change_in_one_call_match_one_by_one() -> None:
    cal = BusinessCalendar("America/New_York", {d: [("09:00", "17:00")] for d in range(5)})
    friday = datetime(2026, 3, 6, 16, 59, tzinfo=ZoneInfo("America/New_York"))
    offsets = [4 * 3_600_000_000 * k for k in range(11)]
    one_by_one = [cal.add(friday, offset * US).astimezone(UTC) for offset in offsets]
    assert cal.add_offsets_utc(friday, offsets) == one_by_one
    assert one_by_one[-1] == datetime(2026, 3, 13, 20, 59, tzinfo=UTC)  # Friday 16:59 EDT
