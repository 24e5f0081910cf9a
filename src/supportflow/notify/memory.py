"""``MemoryNotifier``: keeps deliveries in a list, for tests and examples."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from supportflow.clock import Clock, SystemClock
from supportflow.errors import ValidationError
from supportflow.model import Notification, Recipient
from supportflow.notify.base import DeliveryError

__all__ = ["Delivery", "MemoryNotifier"]


class Delivery(NamedTuple):
    """One delivery attempt seen by a :class:`MemoryNotifier`."""

    notification: Notification
    recipients: tuple[Recipient, ...]
    at: datetime


class MemoryNotifier:
    """A notifier that records what it delivers and can be told to fail.

    ``deliveries`` holds the successful deliveries, ``failures`` the attempts it failed on
    purpose, both as ``(notification, recipients, at)`` in the order they were attempted.

    >>> from datetime import datetime, timezone
    >>> note = Notification("k-1", "ticket_created", (), "Hi", "Body",
    ...                     datetime(2026, 1, 5, tzinfo=timezone.utc))
    >>> notifier = MemoryNotifier()
    >>> notifier.fail_next(1)
    >>> notifier.deliver(note, [])
    Traceback (most recent call last):
    ...
    supportflow.notify.base.DeliveryError: MemoryNotifier failing on purpose (0 more to fail)
    >>> notifier.deliver(note, [])
    >>> notifier.keys()
    ['k-1']
    """

    def __init__(self, clock: Clock | None = None) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise ValidationError("clock", clock, "a supportflow.Clock (with now()), or None")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_permanent = False
        self._fail_response: str | None = None
        self.deliveries: list[Delivery] = []
        self.failures: list[Delivery] = []

    def fail_next(
        self, count: int, *, permanent: bool = False, response: str | None = None
    ) -> None:
        """Make the next ``count`` deliveries raise :class:`DeliveryError`."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValidationError("count", count, "a non-negative number of deliveries")
        with self._lock:
            self._fail_left = count
            self._fail_permanent = permanent
            self._fail_response = response

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        """Record the delivery; while told to fail (:meth:`fail_next`), raise ``DeliveryError``."""
        attempt = Delivery(notification, tuple(recipients), self._clock.now())
        with self._lock:
            if self._fail_left > 0:
                self._fail_left -= 1
                self.failures.append(attempt)
                raise DeliveryError(
                    f"MemoryNotifier failing on purpose ({self._fail_left} more to fail)",
                    permanent=self._fail_permanent,
                    response=self._fail_response,
                )
            self.deliveries.append(attempt)

    def keys(self) -> list[str]:
        """Idempotency keys of the successful deliveries, in order (repeats included)."""
        with self._lock:
            return [delivery.notification.idempotency_key for delivery in self.deliveries]

    def clear(self) -> None:
        """Forget recorded deliveries and failures."""
        with self._lock:
            self.deliveries.clear()
            self.failures.clear()
