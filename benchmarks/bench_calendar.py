"""Benchmark: business-time additions and differences on a Shanghai office calendar.

Run with ``python benchmarks/bench_calendar.py`` (from the repository root). Prints operations
per second for :meth:`BusinessCalendar.add` and :meth:`BusinessCalendar.between` over 20,000
random cases, next to a baseline measured in the same run: plain ``start + duration`` datetime
additions and ``end - start`` subtractions. Makes no assertions about time.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pendulum

from supportflow.calendar import BusinessCalendar

CASES = 20_000
SEED = 20260101

Cases = list[tuple[datetime, timedelta, datetime]]

HOLIDAYS = [
    date(2026, 1, 1), date(2026, 2, 16), date(2026, 2, 17), date(2026, 2, 18),
    date(2026, 2, 19), date(2026, 2, 20), date(2026, 4, 6), date(2026, 5, 1),
    date(2026, 5, 4), date(2026, 5, 5), date(2026, 6, 19), date(2026, 9, 25),
    date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 5), date(2026, 10, 6),
    date(2026, 10, 7), date(2027, 1, 1), date(2027, 2, 5), date(2027, 2, 8),
]  # fmt: skip


def make_calendar() -> BusinessCalendar:
    hours = {day: [("09:00", "12:00"), ("13:00", "18:00")] for day in range(5)}
    return BusinessCalendar("Asia/Shanghai", hours, holidays=HOLIDAYS, name="Shanghai office")


def make_cases() -> Cases:
    """(start, duration, end): starts spread over 2026-2027, durations up to 60 business hours."""
    rng = random.Random(SEED)
    zone = pendulum.timezone("Asia/Shanghai")
    origin = datetime(2026, 1, 1, tzinfo=zone)
    span = 2 * 365 * 86_400 * 1_000_000
    cases = []
    for _ in range(CASES):
        start = origin + timedelta(microseconds=rng.randrange(span))
        duration = timedelta(microseconds=rng.randrange(60 * 3_600 * 1_000_000 + 1))
        end = start + timedelta(microseconds=rng.randrange(14 * 86_400 * 1_000_000))
        cases.append((start, duration, end))
    return cases


def rate(run: Callable[[Cases], None], cases: Cases) -> float:
    """Best of three runs, in operations per second."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        run(cases)
        best = min(best, time.perf_counter() - began)
    return len(cases) / best


def main() -> None:
    calendar = make_calendar()
    cases = make_cases()
    add, between = calendar.add, calendar.between

    def plain_add(cs: Cases) -> None:
        for start, duration, _ in cs:
            _ = start + duration

    def plain_sub(cs: Cases) -> None:
        for start, _, end in cs:
            _ = end - start

    def business_add(cs: Cases) -> None:
        for start, duration, _ in cs:
            add(start, duration)

    def business_between(cs: Cases) -> None:
        for start, _, end in cs:
            between(start, end)

    # Sanity check while warming the caches: between undoes add.
    for start, duration, _ in cases[:2000]:
        if between(start, add(start, duration)) != duration:
            raise SystemExit(f"inverse property broken at {start} + {duration}")

    base_add = rate(plain_add, cases)
    base_sub = rate(plain_sub, cases)
    adds = rate(business_add, cases)
    betweens = rate(business_between, cases)
    print(f"calendar: {calendar.name}, {len(HOLIDAYS)} holidays, {CASES:,} cases")
    print(f"baseline  start + duration : {base_add:>12,.0f} /s")
    print(f"baseline  end - start      : {base_sub:>12,.0f} /s")
    print(
        f"add       (business)       : {adds:>12,.0f} /s  (baseline / add = {base_add / adds:.0f})"
    )
    print(f"between   (business)       : {betweens:>12,.0f} /s  ", end="")
    print(f"(baseline / between = {base_sub / betweens:.0f})")


if __name__ == "__main__":
    main()
