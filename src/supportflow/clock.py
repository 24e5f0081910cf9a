"""Clocks: where ``now`` comes from.

The :class:`Desk` never asks the operating system for the time; it asks its clock. Tests and
examples use :class:`ManualClock` to drive weeks of work in milliseconds.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from supportflow.errors import ValidationError

__all__ = ["Clock", "ManualClock", "SystemClock", "ensure_aware", "to_utc"]


def ensure_aware(value: datetime, field: str) -> datetime:
    """Return ``value`` unchanged if it carries a time zone, else raise ``ValidationError``.

    >>> ensure_aware(datetime(2026, 1, 1), "due_at")
    Traceback (most recent call last):
    ...
    supportflow.errors.ValidationError: due_at=datetime.datetime(2026, 1, 1, 0, 0) is invalid: ...
    """
    if not isinstance(value, datetime):
        raise ValidationError(field, value, "a timezone-aware datetime")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValidationError(field, value, "a timezone-aware datetime (this one is naive)")
    return value


def to_utc(value: datetime, field: str = "datetime") -> datetime:
    """Check ``value`` is aware and return the same instant as a stdlib UTC datetime."""
    if type(value) is datetime and value.tzinfo is timezone.utc:
        return value  # already what storage wants: the common case, kept cheap
    aware = ensure_aware(value, field)
    try:
        utc = aware.astimezone(timezone.utc)
    except OverflowError:  # within a day of datetime.min or .max, and out of range in UTC
        raise ValidationError(field, value, "an instant in the years 1 to 9999 in UTC") from None
    # pendulum.DateTime is a datetime subclass; normalise to the stdlib type for storage.
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
        tzinfo=timezone.utc,
    )  # fmt: skip


@runtime_checkable
class Clock(Protocol):
    """Anything with a ``now()`` that returns an aware datetime."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


class SystemClock:
    """The operating system's clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualClock:
    """A clock that moves only when told to.

    >>> clock = ManualClock(datetime(2026, 3, 6, 16, 30, tzinfo=timezone.utc))
    >>> clock.advance(hours=2).hour
    18
    """

    def __init__(self, start: datetime) -> None:
        self._now = to_utc(start, "start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def advance(
        self,
        *,
        weeks: float = 0,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
    ) -> datetime:
        """Move forward by the given amounts of elapsed time and return the new instant."""
        try:
            step = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        except (TypeError, ValueError, OverflowError):  # not a number, NaN, too large
            amounts = {"weeks": weeks, "days": days, "hours": hours, "minutes": minutes,
                       "seconds": seconds}  # fmt: skip
            for unit, amount in amounts.items():
                if not isinstance(amount, (int, float)):
                    raise ValidationError(unit, amount, "a number") from None
            raise ValidationError("advance", amounts, "a duration timedelta can hold") from None
        if step < timedelta(0):
            raise ValidationError("advance", step, "a non-negative duration; use set() to go back")
        with self._lock:
            try:
                self._now = self._now + step
            except OverflowError:
                raise ValidationError(
                    "advance", step, "a step ending before the year 10000"
                ) from None
            return self._now

    def set(self, instant: datetime) -> datetime:
        """Jump to ``instant`` (aware); returns it in UTC."""
        with self._lock:
            self._now = to_utc(instant, "instant")
            return self._now
