"""The worker: fires due timers and delivers notifications, in a loop, until told to stop.

Run one per machine (or several): on PostgreSQL, timer and outbox claims use
``FOR UPDATE SKIP LOCKED`` with leases, so workers share the work and a killed worker's batch
is picked up by another once its lease expires. On SQLite, claims are write transactions.

>>> worker = Worker(desk)                     # doctest: +SKIP
>>> worker.run()                              # until SIGTERM or SIGINT
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType

import attrs

from supportflow.desk import Desk, DueReport
from supportflow.errors import ValidationError
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
    waiting). ``stop()`` (or SIGTERM/SIGINT while :meth:`run` has installed its handlers)
    ends the loop after the batch in hand.
    """

    def __init__(
        self,
        desk: Desk,
        *,
        batch_size: int = 100,
        max_sleep: timedelta = timedelta(seconds=5),
        deliver: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValidationError("batch_size", batch_size, "at least 1")
        if max_sleep <= timedelta(0):
            raise ValidationError("max_sleep", max_sleep, "a positive duration")
        self.desk = desk
        self.batch_size = batch_size
        self.max_sleep = max_sleep
        self.deliver = deliver
        self._stopping = threading.Event()
        self.passes = 0

    def run_once(self) -> WorkerReport:
        """One batch of due timers, then one batch of notifications."""
        due = self.desk.run_due(limit=self.batch_size)
        delivery = self.desk.deliver_pending(self.batch_size) if self.deliver else None
        self.passes += 1
        return WorkerReport(due, delivery)

    def run(self, *, handle_signals: bool = True, max_passes: int | None = None) -> int:
        """Loop until stopped; returns the number of passes made."""
        with self._signals() if handle_signals else _nothing():
            made = 0
            while not self._stopping.is_set():
                report = self.run_once()
                made += 1
                if report.due.fired:
                    log.info("fired %d timer(s)", len(report.due.fired))
                if max_passes is not None and made >= max_passes:
                    break
                if not report.busy:
                    self._stopping.wait(self._idle_seconds())
            return made

    def stop(self) -> None:
        """Finish the batch in hand, then leave :meth:`run`."""
        self._stopping.set()

    def _idle_seconds(self) -> float:
        limit = self.max_sleep.total_seconds()
        due = self.desk.next_due()
        if due is None:
            return limit
        wait = (due - self.desk.clock.now()).total_seconds()
        return min(max(wait, 0.0), limit)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the batch in hand", signum)
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
