"""Business calendars: stories of a support desk's opening hours, then properties.

Expectations are written from the rules (opening intervals, holidays, worked days, real time
across DST changes), not read off the implementation.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportflow.calendar import TWENTY_FOUR_SEVEN, BusinessCalendar
from supportflow.errors import ValidationError

H = timedelta(hours=1)
M = timedelta(minutes=1)
WEEKDAYS = range(5)

BERLIN = pendulum.timezone("Europe/Berlin")
NEW_YORK = pendulum.timezone("America/New_York")
SHANGHAI = pendulum.timezone("Asia/Shanghai")


def at(
    zone: pendulum.Timezone,
    year: int,
    month: int,
    day: int,
    *clock: int,
    fold: int = 0,
) -> datetime:
    """A wall-clock time in ``zone`` (``clock`` = hour, minute, second, microsecond)."""
    hour, minute, second, microsecond = (*clock, 0, 0, 0, 0)[:4]
    return datetime(year, month, day, hour, minute, second, microsecond, zone, fold=fold)


def utc(moment: datetime) -> datetime:
    """The same instant in UTC, where ``+`` and ``-`` are real elapsed time.

    (On a zone-aware stdlib datetime, ``+ timedelta`` and same-zone ``-`` work on the wall
    clock and ignore DST changes.)
    """
    return moment.astimezone(timezone.utc)


def office(zone: str = "Europe/Berlin", **kwargs: object) -> BusinessCalendar:
    """Monday to Friday, 09:00 to 18:00."""
    return BusinessCalendar(zone, {d: [("09:00", "18:00")] for d in WEEKDAYS}, **kwargs)  # type: ignore[arg-type]


def lunch_office(**kwargs: object) -> BusinessCalendar:
    """Shanghai: Monday to Friday, 09:00-12:00 and 13:00-18:00."""
    hours = {d: [("09:00", "12:00"), ("13:00", "18:00")] for d in WEEKDAYS}
    return BusinessCalendar("Asia/Shanghai", hours, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stories


class TestWeekend:
    def test_friday_evening_request_is_due_monday(self) -> None:
        cal = office()
        friday_5pm = at(BERLIN, 2026, 3, 6, 17)
        # One hour on Friday, one on Monday morning.
        assert cal.add(friday_5pm, 2 * H) == at(BERLIN, 2026, 3, 9, 10)
        assert cal.between(friday_5pm, at(BERLIN, 2026, 3, 9, 10)) == 2 * H

    def test_request_after_closing_counts_from_monday_opening(self) -> None:
        cal = office()
        assert cal.add(at(BERLIN, 2026, 3, 6, 19, 30), H) == at(BERLIN, 2026, 3, 9, 10)
        assert cal.add(at(BERLIN, 2026, 3, 7, 12), 30 * M) == at(BERLIN, 2026, 3, 9, 9, 30)

    def test_zero_duration_rolls_forward_to_the_next_opening(self) -> None:
        cal = office()
        assert cal.add(at(BERLIN, 2026, 3, 6, 18), timedelta(0)) == at(BERLIN, 2026, 3, 9, 9)
        inside = at(BERLIN, 2026, 3, 6, 10, 15)
        assert cal.add(inside, timedelta(0)) == inside

    def test_duration_ending_at_closing_time_returns_closing_time(self) -> None:
        cal = office()
        assert cal.add(at(BERLIN, 2026, 3, 6, 9), 9 * H) == at(BERLIN, 2026, 3, 6, 18)

    def test_weekend_is_not_counted(self) -> None:
        cal = office()
        assert cal.between(at(BERLIN, 2026, 3, 6, 18), at(BERLIN, 2026, 3, 9, 9)) == timedelta(0)
        assert cal.between(at(BERLIN, 2026, 3, 2, 9), at(BERLIN, 2026, 3, 9, 9)) == 45 * H

    def test_end_before_start_is_zero(self) -> None:
        cal = office()
        assert cal.between(at(BERLIN, 2026, 3, 9, 12), at(BERLIN, 2026, 3, 9, 10)) == timedelta(0)

    def test_two_weeks_and_a_bit(self) -> None:
        cal = office()
        # 90 h = two 45 h weeks, landing at Friday 18:00 of the second week.
        assert cal.add(at(BERLIN, 2026, 6, 1, 9), 90 * H) == at(BERLIN, 2026, 6, 12, 18)
        assert cal.add(at(BERLIN, 2026, 6, 1, 9), 91 * H) == at(BERLIN, 2026, 6, 15, 10)

    def test_microsecond_exact(self) -> None:
        cal = office()
        start = at(BERLIN, 2026, 3, 6, 17, 59, 59, 999_999)
        step = timedelta(microseconds=2)
        assert cal.add(start, step) == at(BERLIN, 2026, 3, 9, 9, 0, 0, 1)
        assert cal.between(start, at(BERLIN, 2026, 3, 9, 9, 0, 0, 1)) == step


class TestLunchBreak:
    def test_lunch_is_skipped(self) -> None:
        cal = lunch_office()
        assert cal.add(at(SHANGHAI, 2026, 5, 6, 11, 30), H) == at(SHANGHAI, 2026, 5, 6, 13, 30)
        assert cal.between(at(SHANGHAI, 2026, 5, 6, 11), at(SHANGHAI, 2026, 5, 6, 14)) == 2 * H

    def test_closed_at_lunch(self) -> None:
        cal = lunch_office()
        assert cal.is_open(at(SHANGHAI, 2026, 5, 6, 11, 59))
        assert not cal.is_open(at(SHANGHAI, 2026, 5, 6, 12))
        assert not cal.is_open(at(SHANGHAI, 2026, 5, 6, 12, 30))
        assert cal.next_opening(at(SHANGHAI, 2026, 5, 6, 12, 30)) == at(SHANGHAI, 2026, 5, 6, 13)

    def test_morning_ending_at_noon_returns_noon(self) -> None:
        cal = lunch_office()
        assert cal.add(at(SHANGHAI, 2026, 5, 6, 9), 3 * H) == at(SHANGHAI, 2026, 5, 6, 12)

    def test_a_business_day_is_eight_hours(self) -> None:
        cal = lunch_office()
        assert cal.add(at(SHANGHAI, 2026, 5, 6, 9), 8 * H + M) == at(SHANGHAI, 2026, 5, 7, 9, 1)

    def test_other_zone_input_gives_calendar_zone_output(self) -> None:
        cal = lunch_office()
        result = cal.add(datetime(2026, 5, 6, 3, 30, tzinfo=timezone.utc), H)  # 11:30 Shanghai
        assert result == at(SHANGHAI, 2026, 5, 6, 13, 30)
        assert result.utcoffset() == 8 * H
        assert (result.hour, result.minute) == (13, 30)


class TestHolidays:
    def test_tuesday_after_a_monday_holiday(self) -> None:
        cal = office(holidays=[date(2026, 4, 6)])  # Easter Monday
        assert cal.add(at(BERLIN, 2026, 4, 2, 17), 2 * H) == at(BERLIN, 2026, 4, 3, 10)
        assert cal.add(at(BERLIN, 2026, 4, 3, 17), 2 * H) == at(BERLIN, 2026, 4, 7, 10)
        assert cal.between(at(BERLIN, 2026, 4, 3, 9), at(BERLIN, 2026, 4, 8, 9)) == 18 * H

    def test_is_business_day(self) -> None:
        cal = office(holidays=[date(2026, 4, 6)])
        assert not cal.is_business_day(date(2026, 4, 6))
        assert cal.is_business_day(date(2026, 4, 7))
        assert not cal.is_business_day(date(2026, 4, 11))  # Saturday
        # An aware datetime is read as its date in the calendar's zone.
        assert not cal.is_business_day(datetime(2026, 4, 5, 23, tzinfo=timezone.utc))

    def test_a_day_the_zone_skipped_is_no_business_day(self) -> None:
        # Samoa moved across the date line: 29 December 2011 was followed by the 31st.
        every_day = {day: [("09:00", "17:00")] for day in range(7)}
        cal = BusinessCalendar("Pacific/Apia", every_day)
        assert [cal.is_business_day(date(2011, 12, d)) for d in (29, 30, 31)] == [
            True,
            False,
            True,
        ]
        # It agrees with the business time counted across those days.
        start = datetime(2011, 12, 29, 9, tzinfo=ZoneInfo("Pacific/Apia"))
        assert cal.between(start, start + timedelta(days=1)) == 8 * H

    def test_a_week_of_holidays(self) -> None:
        days = [date(2026, 10, d) for d in (1, 2, 5, 6, 7)]
        cal = lunch_office(holidays=days)
        start = at(SHANGHAI, 2026, 9, 30, 17)
        assert cal.add(start, 2 * H) == at(SHANGHAI, 2026, 10, 8, 10)

    def test_holidays_in_a_long_span(self) -> None:
        cal = office(holidays=[date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 31)])
        # December 2026 has 23 weekdays; three of them are holidays.
        december = cal.between(at(BERLIN, 2026, 12, 1), at(BERLIN, 2027, 1, 1))
        assert december == 20 * 9 * H

    def test_holidays_via_country(self) -> None:
        pytest.importorskip("holidays")
        cal = lunch_office(country="CN", working_days=[date(2026, 10, 10)])
        assert not cal.is_business_day(date(2026, 10, 1))  # National Day
        assert not cal.is_business_day(date(2026, 2, 17))  # Spring Festival
        assert cal.is_business_day(date(2026, 10, 10))  # make-up Saturday
        # National Day week: 1, 2, 5, 6, 7 October are off; Thursday 8th opens again.
        assert cal.add(at(SHANGHAI, 2026, 9, 30, 17), 2 * H) == at(SHANGHAI, 2026, 10, 8, 10)

    def test_unknown_country(self) -> None:
        pytest.importorskip("holidays")
        with pytest.raises(ValidationError) as info:
            office(country="XX")
        assert info.value.field == "country"
        with pytest.raises(ValidationError) as info:
            office(country="US", subdivision="ZZ")
        assert info.value.field == "subdivision"

    def test_country_without_the_holidays_package(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "holidays", None)  # makes `import holidays` fail
        with pytest.raises(ValidationError, match="holidays") as info:
            office(country="CN")
        assert info.value.field == "country"


class TestWorkedDays:
    def test_worked_saturday_uses_monday_hours(self) -> None:
        cal = lunch_office(holidays=[date(2026, 2, 16)], working_days=[date(2026, 2, 14)])
        friday = at(SHANGHAI, 2026, 2, 13, 17)
        assert cal.add(friday, 2 * H) == at(SHANGHAI, 2026, 2, 14, 10)
        assert cal.add(friday, 4 * H + 30 * M) == at(SHANGHAI, 2026, 2, 14, 13, 30)
        assert cal.between(friday, at(SHANGHAI, 2026, 2, 17, 9)) == 9 * H  # Monday is a holiday
        assert cal.is_business_day(date(2026, 2, 14))
        assert not cal.is_business_day(date(2026, 2, 21))

    def test_worked_day_with_its_own_hours(self) -> None:
        cal = lunch_office(working_days={date(2026, 2, 28): [("10:00", "15:00")]})
        assert cal.add(at(SHANGHAI, 2026, 2, 27, 17, 30), H) == at(SHANGHAI, 2026, 2, 28, 10, 30)
        assert cal.between(at(SHANGHAI, 2026, 2, 28), at(SHANGHAI, 2026, 3, 1)) == 5 * H

    def test_holiday_that_is_also_worked_is_worked(self) -> None:
        day = date(2026, 2, 14)
        cal = lunch_office(holidays=[day], working_days=[day])
        assert cal.is_business_day(day)
        assert cal.between(at(SHANGHAI, 2026, 2, 14), at(SHANGHAI, 2026, 2, 15)) == 8 * H

    def test_calendar_open_only_on_worked_days_gives_up(self) -> None:
        cal = BusinessCalendar("UTC", {}, working_days={date(2026, 2, 14): [("10:00", "12:00")]})
        start = datetime(2026, 2, 1, tzinfo=timezone.utc)
        assert cal.add(start, H) == datetime(2026, 2, 14, 11, tzinfo=timezone.utc)
        with pytest.raises(ValidationError) as info:
            cal.add(start, 3 * H)  # must not loop forever
        assert info.value.field == "duration"
        with pytest.raises(ValidationError) as info:
            cal.next_opening(datetime(2026, 3, 1, tzinfo=timezone.utc))
        assert info.value.field == "start"


class TestMidnight:
    def test_interval_ending_at_24_abuts_the_next_day(self) -> None:
        cal = BusinessCalendar(
            "Europe/Berlin", {"mon": [("18:00", "24:00")], "TUE": [("00:00", "06:00")]}
        )
        monday_11pm = at(BERLIN, 2026, 3, 2, 23)
        assert cal.add(monday_11pm, 2 * H) == at(BERLIN, 2026, 3, 3, 1)
        assert cal.between(monday_11pm, at(BERLIN, 2026, 3, 3, 1)) == 2 * H
        assert cal.is_open(at(BERLIN, 2026, 3, 3, 0))
        assert cal.between(at(BERLIN, 2026, 3, 2), at(BERLIN, 2026, 3, 4)) == 12 * H

    def test_duration_ending_at_midnight(self) -> None:
        cal = BusinessCalendar("Europe/Berlin", {"fri": [("20:00", "24:00")]})
        assert cal.add(at(BERLIN, 2026, 3, 6, 23), H) == at(BERLIN, 2026, 3, 7, 0)
        assert cal.add(at(BERLIN, 2026, 3, 6, 23), 2 * H) == at(BERLIN, 2026, 3, 13, 21)

    def test_time_objects_are_accepted(self) -> None:
        cal = BusinessCalendar("UTC", {0: [(time(9), time(17, 30))]})
        start = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
        assert cal.add(start, 8 * H + 30 * M) == datetime(2026, 3, 2, 17, 30, tzinfo=timezone.utc)


DST_DAYS = [
    # zone, DST change day, real length of the 24h day
    ("Europe/Berlin", date(2026, 3, 29), 23 * H),
    ("Europe/Berlin", date(2026, 10, 25), 25 * H),
    ("America/New_York", date(2026, 3, 8), 23 * H),
    ("America/New_York", date(2026, 11, 1), 25 * H),
]


class TestDaylightSaving:
    @pytest.mark.parametrize(("zone", "day", "length"), DST_DAYS)
    def test_nine_to_six_is_nine_hours(self, zone: str, day: date, length: timedelta) -> None:
        cal = BusinessCalendar(zone, {d: [("09:00", "18:00")] for d in range(7)})
        tz = pendulum.timezone(zone)
        midnight = at(tz, day.year, day.month, day.day)
        next_midnight = at(tz, day.year, day.month, day.day + 1)
        assert cal.between(midnight, next_midnight) == 9 * H
        assert cal.add(midnight, 9 * H) == at(tz, day.year, day.month, day.day, 18)
        assert cal.add(at(tz, day.year, day.month, day.day, 17), 2 * H) == at(
            tz, day.year, day.month, day.day + 1, 10
        )

    @pytest.mark.parametrize(("zone", "day", "length"), DST_DAYS)
    def test_full_day_is_23_or_25_hours(self, zone: str, day: date, length: timedelta) -> None:
        cal = BusinessCalendar(zone, {d: [("00:00", "24:00")] for d in range(5)} | {5: []})
        tz = pendulum.timezone(zone)
        midnight = at(tz, day.year, day.month, day.day)
        next_midnight = at(tz, day.year, day.month, day.day + 1)
        assert utc(next_midnight) - utc(midnight) == length  # the premise, by the zone rules
        all_days = BusinessCalendar(zone, {d: [("00:00", "24:00")] for d in range(7)})
        assert all_days.between(midnight, next_midnight) == length
        assert all_days.add(midnight, length) == next_midnight
        assert all_days.add(midnight, length - timedelta(microseconds=1)) < next_midnight
        # All these days are Sundays: closed for the Monday-to-Friday calendar.
        assert cal.between(midnight, next_midnight) == timedelta(0)

    def test_berlin_spring_forward_counts_real_time(self) -> None:
        cal = BusinessCalendar.always("Europe/Berlin")
        start = at(BERLIN, 2026, 3, 29, 1)
        result = cal.add(start, 2 * H)
        assert (result.hour, result.utcoffset()) == (4, 2 * H)  # 01:00 CET + 2 h = 04:00 CEST

    def test_new_york_fall_back_second_one_o_clock(self) -> None:
        cal = BusinessCalendar("America/New_York", {6: [("00:00", "03:00")]})
        first = at(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)
        second = at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
        assert cal.between(first, second) == H
        assert cal.between(at(NEW_YORK, 2026, 11, 1), at(NEW_YORK, 2026, 11, 2)) == 4 * H
        assert cal.add(at(NEW_YORK, 2026, 11, 1), 4 * H) == at(NEW_YORK, 2026, 11, 1, 3)

    def test_opening_inside_the_gap_moves_forward(self) -> None:
        # 02:30 does not exist on 29 March in Berlin: it resolves to 03:30 CEST.
        cal = BusinessCalendar("Europe/Berlin", {"sun": [("02:30", "05:00")]})
        assert cal.next_opening(at(BERLIN, 2026, 3, 29)) == at(BERLIN, 2026, 3, 29, 3, 30)
        assert cal.between(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)) == 90 * M
        assert cal.between(at(BERLIN, 2026, 3, 22), at(BERLIN, 2026, 3, 23)) == 150 * M

    def test_dst_week_is_skipped_with_its_real_length(self) -> None:
        cal = BusinessCalendar.always("Europe/Berlin")
        start = at(BERLIN, 2026, 3, 1)
        # Eight weeks of real time cross the spring change: one hour less of wall time.
        assert cal.add(start, timedelta(weeks=8)) == at(BERLIN, 2026, 4, 26, 1)
        every_day = BusinessCalendar("Europe/Berlin", {d: [("00:00", "24:00")] for d in range(7)})
        assert every_day.add(start, timedelta(weeks=8)) == at(BERLIN, 2026, 4, 26, 1)
        assert every_day.between(start, at(BERLIN, 2026, 4, 26)) == timedelta(weeks=8) - H


class TestAlways:
    def test_identity(self) -> None:
        start = datetime(2026, 3, 6, 17, 59, tzinfo=timezone.utc)
        assert TWENTY_FOUR_SEVEN.add(start, timedelta(days=3, microseconds=7)) == start + timedelta(
            days=3, microseconds=7
        )
        assert TWENTY_FOUR_SEVEN.between(start, start + 5 * H) == 5 * H
        assert TWENTY_FOUR_SEVEN.is_open(start)
        assert TWENTY_FOUR_SEVEN.next_opening(start) == start
        assert TWENTY_FOUR_SEVEN.timezone == "UTC"
        assert TWENTY_FOUR_SEVEN.is_business_day(date(2026, 12, 25))

    def test_pendulum_inputs(self) -> None:
        start = pendulum.datetime(2026, 3, 28, 12, tz="Europe/Berlin")
        cal = BusinessCalendar.always("America/New_York")
        assert cal.add(start, 24 * H) == start + timedelta(hours=24)
        assert cal.between(start, start.add(days=1)) == 23 * H
        assert office().between(start, pendulum.datetime(2026, 3, 30, 10, tz="Europe/Berlin")) == H


class TestErrors:
    @pytest.mark.parametrize("argument", ["start", "end"])
    def test_naive_between(self, argument: str) -> None:
        aware, naive = at(BERLIN, 2026, 3, 2, 9), datetime(2026, 3, 2, 10)
        pair = (naive, aware) if argument == "start" else (aware, naive)
        with pytest.raises(ValidationError) as info:
            office().between(*pair)
        assert info.value.field == argument

    def test_naive_add_and_at(self) -> None:
        cal = office()
        with pytest.raises(ValidationError) as info:
            cal.add(datetime(2026, 3, 2, 9), H)
        assert info.value.field == "start"
        for method in (cal.is_open, cal.next_opening):
            with pytest.raises(ValidationError) as info:
                method(datetime(2026, 3, 2, 9))
            assert info.value.field == "at"

    def test_negative_duration(self) -> None:
        with pytest.raises(ValidationError) as info:
            office().add(at(BERLIN, 2026, 3, 2, 9), -M)
        assert info.value.field == "duration"

    @pytest.mark.parametrize(
        ("hours", "field", "value"),
        [
            (
                {"mon": [("09:00", "12:00"), ("11:00", "13:00")]},
                "hours['mon'][1]",
                ("11:00", "13:00"),
            ),
            ({"mon": [("18:00", "09:00")]}, "hours['mon'][0]", ("18:00", "09:00")),
            ({"Tue": [("09:00", "09:00")]}, "hours['Tue'][0]", ("09:00", "09:00")),
            ({0: [("9am", "17:00")]}, "hours[0][0]", "9am"),
            ({0: [("09:00", "25:00")]}, "hours[0][0]", "25:00"),
            ({0: [("24:00", "24:00")]}, "hours[0][0]", "24:00"),
            ({0: [("09:60", "17:00")]}, "hours[0][0]", "09:60"),
            ({"funday": [("09:00", "17:00")]}, "hours['funday']", "funday"),
            ({7: [("09:00", "17:00")]}, "hours[7]", 7),
            ({0: "09:00-17:00"}, "hours[0]", "09:00-17:00"),
            ({0: [("09:00",)]}, "hours[0][0]", ("09:00",)),
            ({}, "hours", {}),
            ({d: [] for d in range(7)}, "hours", {d: [] for d in range(7)}),
        ],
    )
    def test_bad_hours_name_the_field(self, hours: object, field: str, value: object) -> None:
        with pytest.raises(ValidationError) as info:
            BusinessCalendar("UTC", hours)  # type: ignore[arg-type]
        assert info.value.field == field
        assert info.value.value == value
        assert repr(value) in str(info.value)

    def test_same_weekday_twice(self) -> None:
        hours: dict[int | str, list[tuple[str, str]]] = {0: [("09:00", "17:00")]}
        hours["mon"] = [("09:00", "17:00")]
        with pytest.raises(ValidationError) as info:
            BusinessCalendar("UTC", hours)
        assert info.value.field.startswith("hours[")

    def test_unknown_zone(self) -> None:
        with pytest.raises(ValidationError) as info:
            office("Mars/Olympus_Mons")
        assert (info.value.field, info.value.value) == ("timezone", "Mars/Olympus_Mons")

    def test_bad_holidays_and_working_days(self) -> None:
        with pytest.raises(ValidationError) as info:
            office(holidays=[date(2026, 1, 1), datetime(2026, 1, 2, tzinfo=timezone.utc)])
        assert info.value.field == "holidays[1]"
        with pytest.raises(ValidationError) as info:
            office(working_days={date(2026, 2, 14): [("12:00", "10:00")]})
        assert info.value.field == "working_days['2026-02-14'][0]"
        with pytest.raises(ValidationError) as info:
            BusinessCalendar("UTC", {}, working_days=[date(2026, 2, 14)])
        assert info.value.field == "working_days[0]"
        with pytest.raises(ValidationError) as info:
            office(subdivision="BY")
        assert info.value.field == "subdivision"

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"country": 5}, "country"),
            ({"country": ["DE"]}, "country"),
            ({"country": "DE", "subdivision": [1]}, "subdivision"),
            ({"country": "DE", "subdivision": 9}, "subdivision"),
            ({"subdivision": [1]}, "subdivision"),
            ({"name": 5}, "name"),
            ({"name": ["office"]}, "name"),
        ],
    )
    def test_ill_typed_options_are_refused_when_built(
        self, options: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ValidationError) as refused:
            office(**options)
        assert refused.value.field == field

    def test_names_are_kept_and_default_to_the_zone(self) -> None:
        assert office(name="Berlin office").name == "Berlin office"
        assert office(name=None).name == "business hours (Europe/Berlin)"

    def test_bad_duration_type(self) -> None:
        with pytest.raises(ValidationError) as info:
            office().add(at(BERLIN, 2026, 3, 2, 9), 60)  # type: ignore[arg-type]
        assert info.value.field == "duration"


# --------------------------------------------------------------------------- properties

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Shanghai",
    "Australia/Lord_Howe",  # 30-minute DST
    "America/Santiago",  # changes at midnight
    "UTC",
]
UTC_2026 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TWO_YEARS_US = 730 * 86_400 * 1_000_000
# UTC instants of DST changes in 2026 (Berlin, New York, Lord Howe, Santiago).
DST_CHANGES = [
    datetime(2026, 3, 29, 1, tzinfo=timezone.utc),
    datetime(2026, 10, 25, 1, tzinfo=timezone.utc),
    datetime(2026, 3, 8, 7, tzinfo=timezone.utc),
    datetime(2026, 11, 1, 6, tzinfo=timezone.utc),
    datetime(2026, 4, 4, 15, tzinfo=timezone.utc),
    datetime(2026, 10, 3, 15, 30, tzinfo=timezone.utc),
    datetime(2026, 4, 5, 3, tzinfo=timezone.utc),
    datetime(2026, 9, 6, 4, tzinfo=timezone.utc),
]


@st.composite
def day_intervals(draw: st.DrawFn) -> list[tuple[str, str]]:
    step = draw(st.sampled_from([1, 15, 30, 60]))
    points = sorted(draw(st.sets(st.integers(0, 1440 // step), max_size=6)))
    points = [p * step for p in points[: len(points) // 2 * 2]]

    def text(minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    return [(text(points[i]), text(points[i + 1])) for i in range(0, len(points), 2)]


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    zone = draw(st.sampled_from(ZONES))
    hours = {day: draw(day_intervals()) for day in range(7)}
    if not any(hours.values()):
        hours[draw(st.integers(0, 6))] = [("09:00", "17:00")]
    dates = st.dates(date(2025, 12, 1), date(2028, 1, 31))
    holidays = draw(st.lists(dates, max_size=20))
    worked = draw(st.dictionaries(dates, day_intervals(), max_size=3))
    return BusinessCalendar(zone, hours, holidays=holidays, working_days=worked)


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    if draw(st.booleans()):
        base = draw(st.sampled_from(DST_CHANGES))
        offset = draw(st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000))
    else:
        base, offset = UTC_2026, draw(st.integers(0, TWO_YEARS_US))
    if draw(st.booleans()):
        offset -= offset % 60_000_000  # whole minutes hit interval bounds exactly
    moment = base + timedelta(microseconds=offset)
    zone = draw(st.sampled_from([*ZONES, "Asia/Kolkata"]))
    return moment.astimezone(pendulum.timezone(zone))


durations = st.one_of(
    st.integers(0, 200 * 3_600_000_000).map(lambda us: timedelta(microseconds=us)),
    st.integers(0, 200 * 60).map(lambda minutes: timedelta(minutes=minutes)),
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(cal=calendars(), start=instants(), duration=durations)
def test_between_undoes_add(cal: BusinessCalendar, start: datetime, duration: timedelta) -> None:
    end = cal.add(start, duration)
    assert utc(end) >= utc(start)
    assert cal.between(start, end) == duration
    assert utc(end) - utc(start) >= duration  # business time never exceeds real time


@PROPERTY_SETTINGS
@given(cal=calendars(), start=instants(), first=durations, second=durations)
def test_add_is_monotonic_in_duration(
    cal: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    short, long = sorted([first, second])
    assert utc(cal.add(start, short)) <= utc(cal.add(start, long))
    # Adding in two steps is adding once (a zero second step only rolls to the next opening).
    in_two_steps = cal.add(cal.add(start, short), long - short)
    if long > short:
        assert utc(in_two_steps) == utc(cal.add(start, long))
    else:
        assert utc(in_two_steps) == utc(cal.next_opening(cal.add(start, long)))


@PROPERTY_SETTINGS
@given(cal=calendars(), points=st.lists(instants(), min_size=3, max_size=3))
def test_between_is_additive(cal: BusinessCalendar, points: list[datetime]) -> None:
    a, b, c = sorted(points, key=utc)
    assert cal.between(a, b) + cal.between(b, c) == cal.between(a, c)
    assert cal.between(a, c) <= utc(c) - utc(a)


@PROPERTY_SETTINGS
@given(cal=calendars(), moment=instants())
def test_next_opening_is_open(cal: BusinessCalendar, moment: datetime) -> None:
    opening = cal.next_opening(moment)
    assert utc(opening) >= utc(moment)
    assert cal.is_open(opening)
    assert cal.between(moment, opening) == timedelta(0)


@settings(max_examples=100, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=instants(),
    duration=st.integers(0, 3 * 366 * 86_400_000_000).map(lambda us: timedelta(microseconds=us)),
)
def test_always_is_the_identity(zone: str, start: datetime, duration: timedelta) -> None:
    cal = BusinessCalendar.always(zone)
    every_day = BusinessCalendar(zone, {d: [("00:00", "24:00")] for d in range(7)})
    end = utc(start) + duration
    # utc(): stdlib == across zones is always False for a wall time in a DST fold (PEP 495).
    assert utc(cal.add(start, duration)) == end
    assert utc(every_day.add(start, duration)) == end
    assert cal.between(start, end) == duration
    assert every_day.between(start, end) == duration
    assert cal.between(end, start) == timedelta(0)


@PROPERTY_SETTINGS
@given(
    cal=calendars(),
    start=instants(),
    spans=st.lists(durations, min_size=1, max_size=4),
    as_utc=st.booleans(),
)
def test_offsets_in_microseconds_add_as_durations_do(
    cal: BusinessCalendar, start: datetime, spans: list[timedelta], as_utc: bool
) -> None:
    # The SLA engine passes UTC instants and integer offsets: the same answers as timedeltas.
    begin = utc(start) if as_utc else start
    offsets = [span // timedelta(microseconds=1) for span in spans]
    found = cal.add_offsets_utc(begin, offsets)
    assert found == [utc(cal.add(start, span)) for span in spans]
    assert all(moment.tzinfo is timezone.utc for moment in found)


@pytest.mark.parametrize("offset", [True, -1, 1.5, "60"])
def test_offsets_must_be_whole_non_negative_microseconds(offset: object) -> None:
    monday = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    with pytest.raises(ValidationError) as raised:
        office().add_offsets_utc(monday, [60_000_000, offset])  # type: ignore[list-item]
    assert raised.value.field == "duration"
    assert raised.value.value == offset


def test_offsets_past_the_year_9999_are_refused() -> None:
    late = datetime(9999, 12, 1, tzinfo=timezone.utc)
    with pytest.raises(ValidationError) as raised:
        office().add_offsets_utc(late, [365 * 86_400_000_000])
    assert raised.value.field == "duration"


@pytest.mark.parametrize(
    "instant",
    [datetime(1, 1, 5, tzinfo=timezone.utc), datetime(9999, 12, 20, tzinfo=timezone.utc)],
)
def test_an_instant_too_near_the_ends_of_time_is_refused_with_the_range_allowed(
    instant: datetime,
) -> None:
    with pytest.raises(ValidationError) as raised:
        office().between(instant, datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert raised.value.field == "start"
    assert "from 0001-01-08 to 9999-12-13" in str(raised.value)


@PROPERTY_SETTINGS
@given(
    warm=calendars(),
    base=instants(),
    steps=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 3 * 24 * 60).map(lambda minutes: timedelta(minutes=minutes)),
            st.lists(durations, min_size=1, max_size=3),
        ),
        min_size=2,
        max_size=8,
    ),
)
def test_a_calendar_in_use_answers_as_a_fresh_one(
    warm: BusinessCalendar, base: datetime, steps: list[tuple[bool, timedelta, list[timedelta]]]
) -> None:
    # The calendar remembers the last opening it found (steps near each other share one):
    # its answers must not depend on it.
    pristine = copy.deepcopy(warm)
    for adding, later, spans in steps:
        fresh = copy.deepcopy(pristine)
        begin = utc(base) + later
        if adding:
            offsets = [span // timedelta(microseconds=1) for span in spans]
            assert warm.add_offsets_utc(begin, offsets) == fresh.add_offsets_utc(begin, offsets)
        else:
            end = begin + spans[0]
            assert warm.between(begin, end) == fresh.between(begin, end)


def test_the_remembered_opening_ends_where_the_opening_ends() -> None:
    weekdays = BusinessCalendar("UTC", {day: [("09:00", "18:00")] for day in WEEKDAYS})
    monday = datetime(2026, 3, 2, tzinfo=timezone.utc)
    second = timedelta(seconds=1)
    weekdays.add_offsets_utc(monday + 10 * H, [3_600_000_000])  # finds Monday 09:00-18:00
    late = monday + 18 * H - 30 * second
    assert weekdays.add_offsets_utc(late, [30_000_000, 60_000_000]) == [
        monday + 18 * H,
        monday + 24 * H + 9 * H + 30 * second,
    ]
    assert weekdays.between(late, late + 60 * second) == 30 * second
    assert weekdays.between(monday + 8 * H, monday + 9 * H + 30 * second) == 30 * second
    assert weekdays.between(monday + 9 * H, monday + 18 * H) == 9 * H


def test_none_as_the_first_instant_a_process_converts_is_refused() -> None:
    # The calendar remembers the last instant it converted; in a fresh process nothing has
    # been converted yet, and None must not pass for it.
    program = (
        "from datetime import timedelta\n"
        "from supportflow.calendar import BusinessCalendar\n"
        "from supportflow.errors import ValidationError\n"
        "office = BusinessCalendar('UTC', {0: [('09:00', '17:00')]})\n"
        "try:\n"
        "    print(office.add(None, timedelta(minutes=1)))\n"
        "except ValidationError as error:\n"
        "    print(error.field)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "start"
