"""The worker: fires due timers and delivers notifications, in a loop, until told to stop.

Run one per machine (or several): on PostgreSQL, timer and outbox claims use
``FOR UPDATE SKIP LOCKED`` with leases, so workers share the work and a killed worker's batch
is picked up by another once its lease expires. On SQLite, claims are write transactions.

>>> worker = Worker(desk)                     # doctest: +SKIP
>>> worker.run()  # until SIGTERM or SIGINT   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from types import FrameType

import attrs

from supportflow.clock import to_utc
from supportflow.desk import Desk, DueReport
from supportflow.errors import ValidationError
from supportflow.model import whole_number
from supportflow.notify import DispatchReport

__all__ = ["Worker", "WorkerReport"]

log = logging.getLogger("supportflow.worker")


@attrs.frozen(slots=True)
class WorkerReport:
    """What one pass of the worker did."""

    due: DueReport
    delivery: DispatchReport | None

    @property
    def busy(self) -> bool:
        """True if the pass handled anything, so the next pass should come at once."""
        delivered = self.delivery is not None and not self.delivery.idle
        return bool(self.due.fired or self.due.dropped or delivered)


class Worker:
    """Runs ``desk.run_due`` and ``desk.deliver_pending`` in batches.

    Between passes with nothing to do it sleeps until the next timer is due, but never longer
    than ``max_sleep`` (notifications to retry, or timers written by other processes, may be
    waiting). A timer that was already due when the worker last claimed, yet was not handed to
    it, is leased by another worker (perhaps a dead one); when its lease ends is not known
    here, so the worker then sleeps ``max_sleep`` rather than polling without pause.
    ``stop()`` (or SIGTERM/SIGINT while :meth:`run` has installed its handlers) ends the loop
    after the batch in hand.
    """

    def __init__(
        self,
        desk: Desk,
        *,
        batch_size: int = 100,
        max_sleep: timedelta = timedelta(seconds=5),
        deliver: bool = True,
    ) -> None:
        if not isinstance(desk, Desk):
            raise ValidationError("desk", desk, "a supportflow.Desk")
        batch_size = whole_number("batch_size", batch_size, 1)
        if not isinstance(max_sleep, timedelta) or max_sleep <= timedelta(0):
            raise ValidationError("max_sleep", max_sleep, "a positive duration (a timedelta)")
        if not isinstance(deliver, bool):
            raise ValidationError("deliver", deliver, "True or False")
        self.desk = desk
        self.batch_size = batch_size
        self.max_sleep = max_sleep
        self.deliver = deliver
        self.passes = 0
        # stop() may run inside a signal handler, which interrupts the main thread between any
        # two bytecodes -- possibly while it holds a threading.Event's internal lock, where
        # Event.set() would deadlock. So stopping takes no lock: a plain flag, and a wake-up
        # token on a SimpleQueue, whose put() is reentrant (implemented in C).
        self._stop_requested = False
        self._wakeup: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._signal: int | None = None
        self._claimed_at: datetime | None = None

    def run_once(self) -> WorkerReport:
        """One batch of due timers, then one batch of notifications."""
        instant = to_utc(self.desk.clock.now(), "clock.now()")
        due = self.desk.run_due(instant, limit=self.batch_size, errors="continue")
        self._claimed_at = instant
        delivery = self.desk.deliver_pending(self.batch_size) if self.deliver else None
        self.passes += 1
        return WorkerReport(due, delivery)

    def run(self, *, handle_signals: bool = True, max_passes: int | None = None) -> int:
        """Loop until stopped; returns the number of passes made."""
        if max_passes is not None:
            max_passes = whole_number("max_passes", max_passes, 1)
        with self._signals() if handle_signals else _nothing():
            made = 0
            while not self._stop_requested:
                report = self.run_once()
                made += 1
                if report.due.fired:
                    log.info("fired %d timer(s)", len(report.due.fired))
                if max_passes is not None and made >= max_passes:
                    break
                if not report.busy and not self._stop_requested:
                    self._sleep(self._idle_seconds())
            if self._signal is not None:
                log.info("signal %d: stopped after the batch in hand", self._signal)
            return made

    def stop(self) -> None:
        """Finish the batch in hand, then leave :meth:`run`.

        Safe from any thread and from a signal handler: it takes no lock.
        """
        self._stop_requested = True
        self._wakeup.put(None)

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with suppress(queue.Empty):
            self._wakeup.get(timeout=seconds)

    def _idle_seconds(self) -> float:
        limit = self.max_sleep.total_seconds()
        due = self.desk.next_due()
        if due is None:
            return limit
        if self._claimed_at is not None and due <= self._claimed_at:
            # Due when we claimed, yet not ours: another worker holds its lease.
            return limit
        wait = (due - self.desk.clock.now()).total_seconds()
        return min(max(wait, 0.0), limit)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            # No logging here: it would write to a stream the interrupted code may be writing.
            self._signal = signum
            self.stop()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
