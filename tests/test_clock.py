"""Clocks: a desk asks its clock for the time, and a test moves a manual clock at will."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pendulum
import pytest

from supportflow import Clock, ManualClock, SystemClock, ValidationError
from supportflow.clock import ensure_aware, to_utc

SHANGHAI = ZoneInfo("Asia/Shanghai")
FRIDAY_AFTERNOON = datetime(2026, 3, 6, 16, 30, tzinfo=SHANGHAI)


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: such a datetime is naive in Python's terms."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


def test_manual_clock_starts_where_told_and_reports_utc() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    assert clock.now() == FRIDAY_AFTERNOON
    assert clock.now().tzinfo is timezone.utc
    assert clock.now() == datetime(2026, 3, 6, 8, 30, tzinfo=timezone.utc)


def test_manual_clock_stands_still_until_it_is_moved() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    assert clock.now() == clock.now() == FRIDAY_AFTERNOON


def test_advancing_two_hours_and_a_week_is_real_elapsed_time() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    assert clock.advance(hours=2) == FRIDAY_AFTERNOON + timedelta(hours=2)
    assert clock.advance(weeks=1, days=1, minutes=30, seconds=15) == FRIDAY_AFTERNOON + timedelta(
        days=8, hours=2, minutes=30, seconds=15
    )
    assert clock.now() == FRIDAY_AFTERNOON + timedelta(days=8, hours=2, minutes=30, seconds=15)


def test_advancing_by_nothing_is_allowed_and_changes_nothing() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    assert clock.advance() == FRIDAY_AFTERNOON


def test_advancing_across_a_dst_change_counts_real_hours() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock = ManualClock(datetime(2026, 3, 29, 1, 30, tzinfo=berlin))  # clocks jump at 02:00
    clock.advance(hours=1)
    assert clock.now().astimezone(berlin) == datetime(2026, 3, 29, 3, 30, tzinfo=berlin)


def test_going_back_with_advance_is_refused_and_the_clock_does_not_move() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    with pytest.raises(ValidationError) as refused:
        clock.advance(minutes=-5)
    assert refused.value.field == "advance"
    assert "set()" in str(refused.value)
    assert clock.now() == FRIDAY_AFTERNOON


def test_set_jumps_to_an_instant_even_backwards_and_returns_it_in_utc() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    clock.advance(days=3)
    earlier = datetime(2026, 3, 1, 8, 0, tzinfo=SHANGHAI)
    assert clock.set(earlier) == earlier
    assert clock.now().tzinfo is timezone.utc
    assert clock.now() == datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "naive", [datetime(2026, 3, 6, 16, 30), datetime(2026, 3, 6, tzinfo=_NoOffset())]
)
def test_a_naive_instant_is_refused_by_set_and_names_the_argument(naive: datetime) -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)
    with pytest.raises(ValidationError) as refused:
        clock.set(naive)
    assert refused.value.field == "instant"
    assert isinstance(refused.value, ValueError)
    assert clock.now() == FRIDAY_AFTERNOON


def test_a_manual_clock_cannot_start_at_a_naive_instant() -> None:
    with pytest.raises(ValidationError) as refused:
        ManualClock(datetime(2026, 3, 6, 16, 30))
    assert refused.value.field == "start"


def test_a_pendulum_start_is_stored_as_a_plain_utc_datetime() -> None:
    clock = ManualClock(pendulum.datetime(2026, 3, 6, 16, 30, tz="Asia/Shanghai"))
    assert type(clock.now()) is datetime
    assert clock.now() == FRIDAY_AFTERNOON


def test_concurrent_advances_are_never_lost() -> None:
    clock = ManualClock(FRIDAY_AFTERNOON)

    def tick() -> None:
        for _ in range(2_000):
            clock.advance(seconds=1)

    workers = [threading.Thread(target=tick) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert clock.now() == FRIDAY_AFTERNOON + timedelta(seconds=8_000)


def test_system_clock_tells_the_current_time_in_utc() -> None:
    before = datetime.now(timezone.utc)
    now = SystemClock().now()
    after = datetime.now(timezone.utc)
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after


def test_both_clocks_satisfy_the_clock_port() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(FRIDAY_AFTERNOON), Clock)


def test_ensure_aware_names_the_field_and_rejects_non_datetimes() -> None:
    with pytest.raises(ValidationError) as refused:
        ensure_aware("2026-03-06T16:30", "due_at")  # type: ignore[arg-type]
    assert refused.value.field == "due_at"
    with pytest.raises(ValidationError, match="naive"):
        ensure_aware(datetime(2026, 3, 6), "due_at")
    assert ensure_aware(FRIDAY_AFTERNOON, "due_at") is FRIDAY_AFTERNOON


def test_to_utc_keeps_the_instant() -> None:
    assert to_utc(FRIDAY_AFTERNOON) == FRIDAY_AFTERNOON
    assert to_utc(FRIDAY_AFTERNOON).tzinfo is timezone.utc


@pytest.mark.parametrize("unit", ["weeks", "days", "hours", "minutes", "seconds"])
def test_advancing_by_something_not_a_number_names_the_unit(unit: str) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    with pytest.raises(ValidationError) as refused:
        clock.advance(**{unit: None})
    assert refused.value.field == unit
    assert clock.now() == datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_advancing_past_what_a_timedelta_holds_is_refused() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    with pytest.raises(ValidationError) as refused:
        clock.advance(days=1e12)
    assert refused.value.field == "advance"


@pytest.mark.parametrize("amounts", [{"seconds": float("nan")}, {"days": 3_000_000}])
def test_advancing_by_nan_or_past_the_calendar_is_refused(amounts: dict[str, float]) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    with pytest.raises(ValidationError):
        clock.advance(**amounts)
    assert clock.now() == datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
