"""Benchmark: finding due work among a million timers, and handling it through the desk.

Run with ``python benchmarks/bench_due.py`` (from the repository root). Two measurements:

1. A :class:`MemoryStore` holding 1,000,000 scheduled timers (written with ``replace_timers``,
   due at random instants over a month). Claiming the next 100 due timers
   (``claim_due_timers(now, 100, owner, lease)``, each claim its own unit of work) is timed
   many times; the median and p95 are printed in microseconds, next to two baselines measured
   in the same run on the same due times: ``sorted()`` of all of them, and a linear scan that
   picks the 100 earliest due ones (``heapq.nsmallest``), which is what a store without an
   index on ``due_at`` would have to do for every claim. The target is well under 1 ms.
2. ``Desk.run_due`` throughput: 20,000 resolved tickets whose auto-close timers are all due,
   drained in batches; timers handled per second.

Makes no assertions about time.
"""

from __future__ import annotations

import heapq
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from supportflow import Customer, Desk, ManualClock, Timer
from supportflow.storage import MemoryStore

SEED = 20260302
TIMERS = 1_000_000
TIMERS_PER_TICKET = 5
BATCH = 100
CLAIMS = 2_000
DESK_TICKETS = 20_000
START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
MONTH_US = 30 * 86_400 * 1_000_000
KEYS = ("sla:first_response:breach", "sla:resolution:warning:75", "sla:resolution:breach",
        "escalation:tiers:level:0", "autoclose")  # fmt: skip


def fill(store: MemoryStore, rng: random.Random) -> list[datetime]:
    """Schedule TIMERS timers on TIMERS / TIMERS_PER_TICKET tickets; return their due times."""
    dues: list[datetime] = []
    with store.transaction() as uow:
        for number in range(TIMERS // TIMERS_PER_TICKET):
            ticket_id = f"t-{number:07d}"
            timers = []
            for key in KEYS[:TIMERS_PER_TICKET]:
                due = START + timedelta(microseconds=rng.randrange(MONTH_US))
                timers.append(Timer(ticket_id, key, due, key.split(":", 1)[0]))
                dues.append(due)
            uow.replace_timers(ticket_id, timers)
    return dues


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_claims() -> None:
    rng = random.Random(SEED)
    store = MemoryStore()
    started = time.perf_counter()
    dues = fill(store, rng)
    print(
        f"filled a MemoryStore with {len(dues):,} timers in {time.perf_counter() - started:.1f} s"
    )

    # Everything is due at the end of the month; each claim takes the next 100 in due order.
    now = START + timedelta(days=31)
    lease = timedelta(minutes=5)
    samples: list[float] = []
    claimed_dues: list[datetime] = []
    for _ in range(CLAIMS):
        began = time.perf_counter()
        with store.transaction() as uow:
            claimed = uow.claim_due_timers(now, BATCH, "bench-worker", lease)
        samples.append((time.perf_counter() - began) * 1e6)
        assert len(claimed) == BATCH
        claimed_dues.extend(timer.due_at for timer in claimed)
    median, p95 = statistics.median(samples), percentile(samples, 0.95)
    print(f"claim_due_timers(now, {BATCH}) x {CLAIMS:,}: median {median:,.0f} us, "
          f"p95 {p95:,.0f} us")  # fmt: skip

    # Baselines on the same due times: sort everything, or scan everything for the 100 earliest.
    began = time.perf_counter()
    ordered = sorted(dues)
    sort_us = (time.perf_counter() - began) * 1e6
    assert claimed_dues == ordered[: CLAIMS * BATCH], "claims must come in due order"
    scans = []
    for _ in range(5):
        began = time.perf_counter()
        heapq.nsmallest(BATCH, (due for due in dues if due <= now))
        scans.append((time.perf_counter() - began) * 1e6)
    scan_us = statistics.median(scans)
    print(f"baseline sorted() of {len(dues):,} due times: {sort_us:,.0f} us "
          f"({sort_us / median:,.0f}x the median claim)")  # fmt: skip
    print(f"baseline linear scan for the {BATCH} earliest due: {scan_us:,.0f} us "
          f"({scan_us / median:,.0f}x the median claim)")  # fmt: skip
    print(f"target: median claim well under 1 ms -> {'met' if median < 1_000 else 'MISSED'}")


def bench_run_due() -> None:
    clock = ManualClock(START)
    desk = Desk(store=MemoryStore(), clock=clock)
    customer = Customer(id="c-1", name="Wang Fang")
    started = time.perf_counter()
    for number in range(DESK_TICKETS):
        ticket = desk.open_ticket(
            subject=f"Case {number}", body="...", customer=customer, channel="email"
        )
        desk.resolve(ticket.id, by="agent_li", resolution="Answered")
    print(f"\nopened and resolved {DESK_TICKETS:,} tickets in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip

    clock.advance(days=8)  # every auto-close timer is due
    handled = 0
    began = time.perf_counter()
    while True:
        report = desk.run_due(limit=1_000)
        if not report.fired and not report.dropped:
            break
        handled += len(report.fired)
    elapsed = time.perf_counter() - began
    closed = len(desk.tickets(status="closed"))
    assert handled == closed == DESK_TICKETS, (handled, closed)
    print(f"Desk.run_due: {handled:,} auto-close timers in {elapsed:.2f} s = "
          f"{handled / elapsed:,.0f} timers/s")  # fmt: skip


if __name__ == "__main__":
    bench_claims()
    bench_run_due()
