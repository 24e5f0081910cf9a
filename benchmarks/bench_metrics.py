"""Throughput and memory of ``supportflow.metrics.compute`` on 100,000 tickets' histories.

Run with ``PYTHONPATH=src python benchmarks/bench_metrics.py [tickets]``. The histories are
synthesised directly as ``Event`` objects (no Desk, for speed): each ticket is opened, triaged,
answered (the first response on time or after a breach), sometimes waits on the customer,
sometimes escalates, is resolved, sometimes reopened and resolved again, and closed a few days
later, with the SLA events a desk records. Tickets open every 20 seconds or so, so about a
tenth of them are open at any time.

Prints, for the same list of events and in the same run: a bare loop that only counts events
by type (the baseline), ``compute`` by day and channel, and ``compute`` with business time on
a calendar; events per second for each, the ratio to the baseline, and the peak memory
``compute`` allocated (tracemalloc, measured in a separate pass because tracing slows Python
down). No assertions: the numbers are for people.
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from supportflow.calendar import BusinessCalendar
from supportflow.events import Event, EventType
from supportflow.metrics import MetricsQuery, compute

TICKETS = 100_000
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
CHANNELS = ("email", "chat", "phone", "web", "email", "email", "chat")
PRIORITIES = ("normal", "normal", "normal", "high", "low", "urgent")
AGENTS = tuple(f"agent_{n}" for n in range(40))


def _status(trigger: str, before: str, after: str, categories: tuple[str, str]) -> dict[str, Any]:
    return {"trigger": trigger, "from": before, "to": after, "from_category": categories[0],
            "to_category": categories[1]}  # fmt: skip


def ticket_history(rng: random.Random, number: int, opened: datetime) -> list[Event]:
    """One ticket's events, in time order."""
    tid = f"t-{number}"
    agent = rng.choice(AGENTS)
    events: list[Event] = []
    t = opened

    def add(kind: str, data: dict[str, Any], actor: str = "system") -> None:
        events.append(Event(tid, len(events) + 1, kind, t, actor, data))

    add(EventType.TICKET_OPENED, {"subject": "...", "number": number,
        "channel": rng.choice(CHANNELS), "priority": rng.choice(PRIORITIES), "category": None,
        "kind": "request", "status": "new", "customer_id": f"c-{number % 7000}",
        "customer_tier": "standard", "group": "tier1", "assignee": agent},
        f"c-{number}")  # fmt: skip
    add(EventType.SLA_POLICY_APPLIED, {"policy": "standard", "reason": "applies to every ticket"})
    add(EventType.STATUS_CHANGED, _status("triage", "new", "open", ("new", "active")))
    t += timedelta(minutes=rng.expovariate(1 / 45))
    if t - opened > timedelta(hours=1):
        add(EventType.SLA_BREACHED, {"clock": "first_response", "target_seconds": 3600.0})
    add(EventType.MESSAGE_ADDED, {"message_id": "m1", "role": "agent", "public": True,
                                  "author": agent}, agent)  # fmt: skip
    add(EventType.SLA_MET, {"clock": "first_response", "late": t - opened > timedelta(hours=1),
                            "elapsed_seconds": (t - opened).total_seconds()})  # fmt: skip
    add(EventType.STATUS_CHANGED, _status("start", "open", "in_progress", ("active", "active")))
    if rng.random() < 0.3:
        t += timedelta(minutes=rng.uniform(1, 20))
        add(EventType.STATUS_CHANGED,
            _status("wait_on_customer", "in_progress", "waiting_on_customer",
                    ("active", "waiting")), agent)  # fmt: skip
        t += timedelta(hours=rng.uniform(0.5, 20))
        add(EventType.MESSAGE_ADDED, {"message_id": "m2", "role": "customer", "public": True,
                                      "author": "customer"})  # fmt: skip
        add(EventType.STATUS_CHANGED,
            _status("customer_replied", "waiting_on_customer", "in_progress",
                    ("waiting", "active")))  # fmt: skip
        t += timedelta(minutes=rng.expovariate(1 / 60))
        add(EventType.MESSAGE_ADDED, {"message_id": "m3", "role": "agent", "public": True,
                                      "author": agent}, agent)  # fmt: skip
        add(EventType.SLA_MET, {"clock": "next_response", "late": False})
    if rng.random() < 0.05:
        t += timedelta(hours=rng.uniform(1, 4))
        add(EventType.ESCALATED, {"policy": "tiers", "level": 1, "name": "lead",
                                  "reason": "open too long", "repeat": 0})  # fmt: skip
    t += timedelta(hours=rng.expovariate(1 / 6))
    add(EventType.STATUS_CHANGED,
        _status("resolve", "in_progress", "resolved", ("active", "resolved")), agent)  # fmt: skip
    add(EventType.SLA_MET, {"clock": "resolution", "late": False})
    if rng.random() < 0.08:
        t += timedelta(hours=rng.uniform(1, 30))
        add(EventType.MESSAGE_ADDED, {"message_id": "m4", "role": "customer", "public": True,
                                      "author": "customer"})  # fmt: skip
        add(EventType.STATUS_CHANGED,
            _status("reopen", "resolved", "in_progress", ("resolved", "active")))  # fmt: skip
        t += timedelta(minutes=rng.uniform(5, 120))
        add(EventType.MESSAGE_ADDED, {"message_id": "m5", "role": "agent", "public": True,
                                      "author": agent}, agent)  # fmt: skip
        t += timedelta(minutes=rng.uniform(5, 120))
        add(EventType.STATUS_CHANGED,
            _status("resolve", "in_progress", "resolved", ("active", "resolved")))  # fmt: skip
        add(EventType.SLA_MET, {"clock": "resolution", "late": False})
    t += timedelta(days=rng.uniform(0.5, 7))
    add(EventType.STATUS_CHANGED, _status("close", "resolved", "closed", ("resolved", "closed")))
    return events


def build(tickets: int) -> list[Event]:
    rng = random.Random(7)
    events: list[Event] = []
    opened = START
    for number in range(tickets):
        opened += timedelta(seconds=rng.expovariate(1 / 20))
        events.extend(ticket_history(rng, number, opened))
    events.sort(key=lambda e: e.at)  # the store streams events in time order
    return events


def baseline(events: list[Event]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event.type] = counts.get(event.type, 0) + 1
    return counts


def timed(label: str, run: Callable[[], object], count: int, base: float | None) -> float:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    rate = count / seconds
    ratio = f"   {base / rate:5.1f}x the baseline's time" if base else ""
    print(f"{label:<44} {seconds:7.2f} s  {rate:>11,.0f} events/s{ratio}")
    return rate


def peak(run: Callable[[], object]) -> float:
    tracemalloc.start()
    run()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 1e6


def main() -> None:
    tickets = int(sys.argv[1]) if len(sys.argv) > 1 else TICKETS
    started = time.perf_counter()
    events = build(tickets)
    print(f"{tickets:,} tickets, {len(events):,} events, built in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    end = events[-1].at + timedelta(seconds=1)
    by_day = MetricsQuery(START, end, group_by="channel", period="day")
    office = BusinessCalendar("UTC", {day: [("09:00", "18:00")] for day in range(5)})
    business = MetricsQuery(START, end, group_by="agent", period="week", calendar=office)

    base = timed("baseline: count events by type", lambda: baseline(events), len(events), None)
    rate = timed("compute: by day and channel", lambda: compute(iter(events), by_day),
                 len(events), base)  # fmt: skip
    timed("compute: by week and agent, business time", lambda: compute(iter(events), business),
          len(events), base)  # fmt: skip
    rows = compute(iter(events), by_day)
    print(
        f"rows: {len(rows):,}; opened {sum(r.opened for r in rows):,}, "
        f"resolved {sum(r.resolved for r in rows):,}, closed {sum(r.closed for r in rows):,}"
    )
    print(f"peak memory: baseline {peak(lambda: baseline(events)):.2f} MB, compute "
          f"{peak(lambda: compute(iter(events), by_day)):.2f} MB "
          f"(the events themselves are not counted)")  # fmt: skip
    print(f"target 200,000 events/s: {'met' if rate >= 200_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
