"""Benchmark: Desk commands per second and memory per stored ticket, on the memory store.

Run with ``python benchmarks/bench_core.py`` (from the repository root; ``--profile`` adds a
cProfile of the command path). Each ticket goes through a whole life of seven commands — open,
assign, agent reply, wait on customer, customer reply, resolve, close — on a ``MemoryStore``
driven by a ``ManualClock``, once with the default SLA policies and once with ``sla=[]``.
Beside it, measured in the same run, the rate of bare ``transitions`` triggers on one shared
``Machine(model=None, ...)``: the floor the workflow part of a command is built on.

Memory: ``tracemalloc`` before and after storing 20,000 tickets through the same life, minus
the bytes of their subject, body and message strings, per ticket. Makes no assertions.

``--instructions`` adds CPU instructions per command, counted by valgrind's callgrind (when
it is installed): the difference between 20 and 170 lives, so start-up cost drops out, at a
fixed ``PYTHONHASHSEED``. Unlike the rates, these counts repeat exactly on a shared, noisy
machine, so they are the figures to compare two versions of the code by. ``--per-command``
with it splits them by command of the life (lives cut after each command, each count minus
the one before; about ten minutes).

Targets (the core issue's, for reading the figures): at least 25,000 commands/s, at most
2 KB per stored ticket beyond its text.
"""

from __future__ import annotations

import cProfile
import gc
import io
import itertools
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transitions import Machine

from supportflow import Customer, Desk, ManualClock, default_workflow
from supportflow.storage import MemoryStore, TicketQuery

TICKETS = 2_000  # per timed run: 14,000 commands
MEMORY_TICKETS = 20_000
COMMANDS_PER_LIFE = 7
LIFE_TRIGGERS = ("triage", "start", "wait_on_customer", "customer_replied", "resolve", "close")
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
CUSTOMER = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})


def make_desk(sla: list[Any] | None) -> tuple[Desk, ManualClock]:
    clock = ManualClock(MONDAY)
    return Desk(store=MemoryStore(), clock=clock, sla=sla), clock


LIFE_STEPS = (
    "open",
    "assign",
    "agent reply",
    "wait on customer",
    "customer reply",
    "resolve",
    "close",
)  # the commands of ``life``, in order


def life(desk: Desk, clock: ManualClock, n: int, steps: int = COMMANDS_PER_LIFE) -> int:
    """One ticket's whole life (its first ``steps`` commands: ``LIFE_STEPS``); returns the
    bytes of the text it stored."""
    subject = f"Password reset mail #{n} never arrives"
    body = f"I asked for a reset link three times (request {n}) and got nothing."
    answer = f"Could you look in your spam folder? (ref {n})"
    thanks = f"Found it, thanks! ({n})"
    ticket = desk.open_ticket(subject=subject, body=body, customer=CUSTOMER, channel="email")
    if steps > 1:
        desk.assign(ticket.id, "agent_li", by="lead_zhao")
    clock.advance(seconds=30)
    if steps > 2:
        desk.reply(ticket.id, answer, by="agent_li")
    if steps > 3:
        desk.fire(ticket.id, "wait_on_customer", by="agent_li")
    if steps > 4:
        desk.reply(ticket.id, thanks, by="c-17", role="customer")
    if steps > 5:
        desk.resolve(ticket.id, by="agent_li", resolution="Mail was filtered as spam")
    if steps > 6:
        desk.close(ticket.id, by="c-17", reason="customer confirmed")
    return sum(sys.getsizeof(text) for text in (subject, body, answer, thanks))


def command_rate(sla: list[Any] | None, runs: int = 3) -> float:
    """Best of ``runs`` fresh desks, in commands per second."""
    best = float("inf")
    for _ in range(runs):
        desk, clock = make_desk(sla)
        gc.collect()
        started = time.perf_counter()
        for n in range(TICKETS):
            life(desk, clock, n)
        best = min(best, time.perf_counter() - started)
    return TICKETS * COMMANDS_PER_LIFE / best


class _Holder:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = "new"


def bare_machine_events() -> list[Any]:
    """The events of one ticket life on one shared ``Machine(model=None)`` of the default
    workflow, without supportflow in the way."""
    workflow = default_workflow()
    machine = Machine(
        model=None,
        states=list(workflow.statuses),
        initial=workflow.initial,
        transitions=[
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for t in workflow.transitions
        ],
        auto_transitions=False,
        send_event=True,
    )
    return [machine.events[trigger] for trigger in LIFE_TRIGGERS]


def bare_transitions_rate(runs: int = 3) -> float:
    """Triggers per second on one shared ``Machine(model=None)`` of the default workflow."""
    events = bare_machine_events()
    holder = _Holder()
    lives = TICKETS * 5
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(lives):
            holder.state = "new"
            for event in events:
                event.trigger(holder)
        best = min(best, time.perf_counter() - started)
    assert holder.state == "closed"
    return lives * len(events) / best


def next_status_rate(runs: int = 3) -> float:
    """Triggers per second through :meth:`Workflow.next_status` (what a command calls)."""
    workflow = default_workflow()
    lives = TICKETS * 5
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(lives):
            status = "new"
            for trigger in LIFE_TRIGGERS:
                status = workflow.next_status(status, trigger)
        best = min(best, time.perf_counter() - started)
    return lives * len(LIFE_TRIGGERS) / best


def memory_per_ticket() -> tuple[float, list[tuple[str, float]]]:
    """Bytes per stored ticket beyond its text, and the top allocation sites per ticket."""
    desk, clock = make_desk(None)
    life(desk, clock, -1)  # warm caches (calendar, machine, interned names) before measuring
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    baseline = tracemalloc.get_traced_memory()[0]
    text = 0
    for n in range(MEMORY_TICKETS):
        text += life(desk, clock, n)
    gc.collect()
    stored = tracemalloc.get_traced_memory()[0] - baseline
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    sites = [
        (f"{stat.traceback[0].filename.split('/src/')[-1]}:{stat.traceback[0].lineno}",
         stat.size_diff / MEMORY_TICKETS)
        for stat in after.compare_to(before, "lineno")[:8]
    ]  # fmt: skip
    with desk.store.transaction() as uow:
        assert len(uow.find_tickets(TicketQuery())) == MEMORY_TICKETS + 1
    return (stored - text) / MEMORY_TICKETS, sites


def profile(sla: list[Any] | None, top: int = 25) -> str:
    desk, clock = make_desk(sla)
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(TICKETS):
        life(desk, clock, n)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def counted_run(what: str, lives: int, steps: int = COMMANDS_PER_LIFE) -> None:
    """What ``instructions`` counts: ``lives`` ticket lives (``sla`` or ``no-sla``; their
    first ``steps`` commands), or as many lives of bare triggers (``bare``)."""
    if what == "bare":
        events, holder = bare_machine_events(), _Holder()
        for _ in range(lives):
            holder.state = "new"
            for event in events:
                event.trigger(holder)
        return
    desk, clock = make_desk(None if what == "sla" else [])
    for n in range(lives):
        life(desk, clock, n, steps)


def _collected(what: str, lives: int, steps: int = COMMANDS_PER_LIFE) -> int:
    """Instructions callgrind counts for a fresh interpreter running ``counted_run``."""
    program = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import bench_core; bench_core.counted_run({what!r}, {lives}, {steps})"
    )
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", program],
        env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : ([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr}")
    return int(found[1].replace(",", ""))


def instructions(what: str, per_life: int, few: int = 20, many: int = 170) -> float:
    """Instructions per command (or per bare trigger): ``many`` lives minus ``few``."""
    return (_collected(what, many) - _collected(what, few)) / ((many - few) * per_life)


def instructions_per_step(what: str, few: int = 20, many: int = 170) -> list[float]:
    """Instructions of each command of the life (``LIFE_STEPS``): lives cut after each step,
    each count minus the one before it."""
    totals = [0.0]
    for steps in range(1, COMMANDS_PER_LIFE + 1):
        counted = _collected(what, many, steps) - _collected(what, few, steps)
        totals.append(counted / (many - few))
    return [after - before for before, after in itertools.pairwise(totals)]


def report(label: str, value: float, unit: str, target: str, ok: Callable[[float], bool]) -> None:
    verdict = "meets" if ok(value) else "MISSES"
    print(f"{label:<44} {value:>12,.0f} {unit:<12} ({verdict} target {target})")


def print_instructions() -> None:
    if shutil.which("valgrind") is None:
        print("\ninstructions per command: valgrind is not installed (apt-get install valgrind)")
        return
    print("\nCPU instructions (callgrind, 170 lives minus 20):")
    bare = instructions("bare", len(LIFE_TRIGGERS))
    for what, label in (("sla", "default SLA"), ("no-sla", "sla=[]")):
        per_command = instructions(what, COMMANDS_PER_LIFE)
        print(f"{'per Desk command, ' + label:<44} {per_command:>12,.0f} instructions")
        print(f"{'ratio command : bare trigger, ' + label:<44} {per_command / bare:>12.1f} x")
    print(f"{'per bare transitions trigger':<44} {bare:>12,.0f} instructions")
    if "--per-command" not in sys.argv:
        return
    with_sla, without_sla = instructions_per_step("sla"), instructions_per_step("no-sla")
    print(
        f"\n{'instructions per command':<20} {'default SLA':>12} {'sla=[]':>12} {'SLA share':>12}"
    )
    for step, a, b in zip(LIFE_STEPS, with_sla, without_sla, strict=True):
        print(f"{step:<20} {a:>12,.0f} {b:>12,.0f} {a - b:>12,.0f}")


def main() -> None:
    print(f"{TICKETS:,} ticket lives x {COMMANDS_PER_LIFE} commands on MemoryStore, best of 3")
    with_sla = command_rate(None)
    without_sla = command_rate([])
    bare = bare_transitions_rate()
    through_workflow = next_status_rate()
    report("Desk commands/s, default SLA policies", with_sla, "commands/s", ">= 25,000",
           lambda v: v >= 25_000)  # fmt: skip
    report("Desk commands/s, sla=[]", without_sla, "commands/s", ">= 25,000",
           lambda v: v >= 25_000)  # fmt: skip
    print(f"{'bare transitions triggers/s, shared Machine':<44} {bare:>12,.0f} triggers/s")
    print(f"{'Workflow.next_status triggers/s':<44} {through_workflow:>12,.0f} triggers/s")
    print(f"{'ratio bare triggers : commands (default SLA)':<44} {bare / with_sla:>12.1f} x")
    print(f"{'ratio bare triggers : commands (sla=[])':<44} {bare / without_sla:>12.1f} x")
    per_ticket, sites = memory_per_ticket()
    report(f"memory per stored ticket ({MEMORY_TICKETS:,}) beyond text", per_ticket,
           "bytes/ticket", "<= 2,048", lambda v: v <= 2_048)  # fmt: skip
    print("  largest allocation sites, bytes per ticket:")
    for site, size in sites:
        print(f"    {size:>8,.0f}  {site}")
    if "--instructions" in sys.argv:
        print_instructions()
    if "--profile" in sys.argv:
        for sla, label in ((None, "default SLA"), ([], "sla=[]")):
            print(f"\ncProfile, {label}, by own time:")
            print(profile(sla))


if __name__ == "__main__":
    main()
