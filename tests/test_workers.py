"""The worker, alone and in company: its loop, its sleep, its signals, and several worker
processes sharing one database.

The proofs at the bottom start real processes: ``supportflow worker`` (the CLI an operator
runs) with ``--desk tests._worker_desks:...``, and helper programs from ``_worker_desks``.
PostgreSQL runs when ``SUPPORTFLOW_PG_URL`` is set (``.ci/run`` starts a throw-away server and
sets it); without it those tests are skipped, except on CI (``CI=true``), where a missing
server is a failure. Each PostgreSQL test gets a private, freshly migrated schema.

Every wait is bounded, and every process a test starts is killed and reaped if it is still
there when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from _worker_desks import LEASE, make_desk, read_log
from supportflow import Customer, Desk, ManualClock, Ticket
from supportflow.cli import main as cli_main
from supportflow.events import Event, EventType
from supportflow.model import Timer
from supportflow.storage import MemoryStore, Storage, TicketQuery, open_store
from supportflow.storage.sqlite import SqliteStore
from supportflow.testing.postgres import private_schema
from supportflow.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
AUTO_CLOSE = timedelta(days=7)  # the default AutoClosePolicy

PG_TIMERS = 20_000  # the full proof on PostgreSQL: 4 worker processes
SQLITE_TIMERS = 20_000  # one SQLite file, 2 worker processes: one writer at a time
BATCH = 50
DRAIN_DEADLINE = 400.0  # seconds: a bound for a loaded machine; a quiet one needs far less


# -- helpers ------------------------------------------------------------------------------------
def resolved_tickets(desk: Desk, count: int, *, spread: timedelta = timedelta(0)) -> list[str]:
    """Open and resolve ``count`` tickets at the desk's (manual) clock; each gets one timer,
    its auto-close, due ``AUTO_CLOSE`` after it was resolved."""
    clock = desk.clock
    assert isinstance(clock, ManualClock)
    ids = []
    for n in range(count):
        ticket = desk.open_ticket(
            subject=f"Printer on floor {n % 9} jams",
            body="Paper jam every third page.",
            customer=Customer(id=f"c-{n}"),
            channel="email",
        )
        desk.resolve(ticket.id, by="agent_li", resolution="Replaced the roller")
        ids.append(ticket.id)
        if spread:
            clock.advance(seconds=spread.total_seconds())
    return ids


def manual_desk(store: Storage | None = None, start: datetime = T0) -> tuple[Desk, ManualClock]:
    clock = ManualClock(start)
    return make_desk(store if store is not None else MemoryStore(), clock), clock


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: it can import ``tests._worker_desks``."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """Kill and reap whatever is still running (the safety net of every test)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be refused
            process.wait(timeout=timeout)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _pg_url() -> str:
    url = os.environ.get("SUPPORTFLOW_PG_URL", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but SUPPORTFLOW_PG_URL is not set: .ci/run should start PostgreSQL"
            )
        pytest.skip("SUPPORTFLOW_PG_URL is not set (run .ci/run, or point it at a PostgreSQL)")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections use a private, freshly migrated schema (dropped afterwards)."""
    with private_schema(_pg_url(), "sf_workers") as url:
        yield url


# -- the loop -----------------------------------------------------------------------------------
def test_run_stops_after_max_passes_and_each_pass_takes_one_batch() -> None:
    desk, clock = manual_desk()
    ids = resolved_tickets(desk, 5)
    clock.advance(days=8)
    worker = Worker(desk, batch_size=2, max_sleep=timedelta(milliseconds=10))

    assert worker.run(handle_signals=False, max_passes=2) == 2
    closed = [i for i in ids if desk.get_ticket(i).status == "closed"]
    assert len(closed) == 4
    assert desk.next_due() is not None

    assert worker.run(handle_signals=False, max_passes=4) == 4  # 1 timer, then 3 idle passes
    assert all(desk.get_ticket(i).status == "closed" for i in ids)
    assert desk.next_due() is None
    assert worker.passes == 6


def test_run_once_reports_what_it_did() -> None:
    desk, clock = manual_desk()
    (ticket_id,) = resolved_tickets(desk, 1)
    worker = Worker(desk, deliver=False)
    idle = worker.run_once()
    assert not idle.busy
    assert idle.delivery is None

    clock.advance(days=8)
    report = worker.run_once()
    assert report.busy
    assert [timer.key for timer in report.due.fired] == ["autoclose"]
    assert [e.type for e in report.due.events] == [EventType.STATUS_CHANGED]
    assert desk.get_ticket(ticket_id).status == "closed"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"batch_size": 0}, "batch_size"), ({"max_sleep": timedelta(0)}, "max_sleep")],
)
def test_worker_settings_are_checked(kwargs: dict[str, Any], field: str) -> None:
    from supportflow.errors import ValidationError

    with pytest.raises(ValidationError, match=field):
        Worker(Desk(), **kwargs)


# -- the sleep between idle passes --------------------------------------------------------------
def _idle_sleeps(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Run two passes and return the sleep the worker chose between them."""
    sleeps: list[float] = []
    monkeypatch.setattr(worker, "_sleep", sleeps.append)
    worker.run(handle_signals=False, max_passes=2)
    return sleeps


def test_idle_worker_sleeps_max_sleep_when_no_timer_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk, _ = manual_desk()
    worker = Worker(desk, max_sleep=timedelta(seconds=3))
    assert _idle_sleeps(worker, monkeypatch) == [3.0]


def test_idle_worker_sleeps_until_the_next_due_timer_bounded_by_max_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk, clock = manual_desk()
    resolved_tickets(desk, 1)  # auto-close due at T0 + 7 days
    due = T0 + AUTO_CLOSE
    assert desk.next_due() == due

    patient = Worker(desk, max_sleep=timedelta(days=30))
    assert _idle_sleeps(patient, monkeypatch) == [AUTO_CLOSE.total_seconds()]

    bounded = Worker(desk, max_sleep=timedelta(seconds=5))
    assert _idle_sleeps(bounded, monkeypatch) == [5.0]

    clock.set(due - timedelta(seconds=90))
    assert _idle_sleeps(Worker(desk, max_sleep=timedelta(minutes=10)), monkeypatch) == [90.0]

    clock.set(due - timedelta(milliseconds=250))
    assert _idle_sleeps(Worker(desk, max_sleep=timedelta(minutes=10)), monkeypatch) == [0.25]


def test_a_due_timer_leased_by_another_worker_does_not_make_the_worker_spin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk, clock = manual_desk()
    (ticket_id,) = resolved_tickets(desk, 1)
    clock.advance(days=8)
    with desk.store.transaction() as uow:
        (leased,) = uow.claim_due_timers(clock.now(), 10, "another-worker", timedelta(minutes=5))
    assert leased.ticket_id == ticket_id
    worker = Worker(desk, max_sleep=timedelta(seconds=2))
    # Due, but not claimable before the other lease ends: poll every max_sleep, not at once.
    assert _idle_sleeps(worker, monkeypatch) == [2.0]
    assert desk.get_ticket(ticket_id).status == "resolved"

    clock.advance(minutes=5)  # the other worker's lease has run out: ours to take over
    report = worker.run_once()
    assert [timer.key for timer in report.due.fired] == ["autoclose"]
    assert desk.get_ticket(ticket_id).status == "closed"


# -- stopping -----------------------------------------------------------------------------------
class _GatedDesk(Desk):
    """A desk whose ``run_due`` waits at a gate: a batch that is "in hand" until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def run_due(self, now: datetime | None = None, limit: int = 100, **options: Any) -> Any:
        self.entered.set()
        if not self.gate.wait(timeout=10):
            raise AssertionError("the gate was never opened")
        return super().run_due(now, limit, **options)


def test_stop_from_another_thread_ends_the_loop_after_the_batch_in_hand() -> None:
    clock = ManualClock(T0)
    desk = _GatedDesk(store=MemoryStore(), clock=clock, sla=[], triage=None)
    ids = resolved_tickets(desk, 3)
    clock.advance(days=8)
    worker = Worker(desk, batch_size=10, max_sleep=timedelta(minutes=1))
    passes: list[int] = []
    # handle_signals=True from a thread: handlers can only be installed by the main thread,
    # so the worker goes on without them.
    thread = threading.Thread(target=lambda: passes.append(worker.run()), daemon=True)
    thread.start()
    try:
        assert desk.entered.wait(timeout=10), "the worker never started a batch"
        worker.stop()
        time.sleep(0.1)
        assert thread.is_alive(), "stop() must let the batch in hand finish"
        desk.gate.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the worker did not stop after its batch"
    finally:
        desk.gate.set()
        worker.stop()
        thread.join(timeout=10)
    assert passes == [1]
    assert all(desk.get_ticket(i).status == "closed" for i in ids)  # the batch completed


def test_stop_wakes_an_idle_worker_at_once() -> None:
    desk, _ = manual_desk()
    worker = Worker(desk, max_sleep=timedelta(minutes=10))
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.passes >= 1, 10, "the first pass")
        started = time.monotonic()
        worker.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5  # woken, not after its 10-minute sleep
    finally:
        worker.stop()
        thread.join(timeout=10)


def test_a_stopped_worker_stays_stopped() -> None:
    desk, _ = manual_desk()
    worker = Worker(desk)
    worker.stop()
    assert worker.run(handle_signals=False) == 0


def test_cli_worker_runs_max_passes_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "desk.db"
    store = SqliteStore(path)
    desk, _ = manual_desk(store, start=datetime.now(timezone.utc) - timedelta(days=8))
    (ticket_id,) = resolved_tickets(desk, 1)
    store.close()
    code = cli_main(
        ["worker", "--store", str(path), "--desk", "_worker_desks:make_desk", "--max-passes", "1"]
    )
    assert code == 0
    assert "worker stopped after 1 pass(es)" in capsys.readouterr().out
    store = SqliteStore(path)
    try:
        assert make_desk(store).get_ticket(ticket_id).status == "closed"
    finally:
        store.close()


def test_cli_refuses_bad_settings_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["worker", "--store", str(tmp_path / "d.db"), "--batch-size", "0"])
    assert code == 2
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_here:make_desk", "PYTHONPATH"),
        ("_worker_desks:no_such_factory", "a callable named 'no_such_factory'"),
        ("_worker_desks", "'module:callable'"),
    ],
)
def test_cli_explains_a_desk_factory_it_cannot_find(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    code = cli_main(["worker", "--store", str(tmp_path / "d.db"), "--desk", spec])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d.db").exists()  # refused before the store was opened


# -- signals, in a real process -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_worker_stops_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    path = tmp_path / "desk.db"
    store = SqliteStore(path)
    # One timer already due: the worker's "fired" line shows its loop (and handlers) are up.
    desk, _ = manual_desk(store, start=datetime.now(timezone.utc) - timedelta(days=8))
    (ticket_id,) = resolved_tickets(desk, 1)
    store.close()
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "supportflow.cli", "worker", "--store", str(path),
             "--max-sleep", "0.2"],
            stdout=stdout, stderr=stderr, env=worker_env(), cwd=tmp_path,
        )  # fmt: skip
    try:
        wait_for(
            lambda: b"fired 1 timer(s)" in err.read_bytes() or process.poll() is not None,
            30,
            "the worker to fire the due timer",
        )
        assert process.poll() is None, err.read_text()
        time.sleep(0.3)  # now mostly asleep between passes: the signal must wake it
        process.send_signal(signum)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored {signum.name} for 15 s")
    finally:
        stop_processes([process])
    assert code == 0, err.read_text()
    assert "worker stopped after" in out.read_text()
    assert f"signal {int(signum)}: stopped after the batch in hand" in err.read_text()
    store = SqliteStore(path)
    try:
        assert make_desk(store).get_ticket(ticket_id).status == "closed"
    finally:
        store.close()


# -- the proof: many due timers, several worker processes, one of them killed -------------------
def _seed(store: Storage, count: int) -> list[str]:
    """``count`` resolved tickets whose auto-close fell due a day ago, written in bulk.

    They are made by a desk on a memory store with a manual clock eight days back, then copied
    into ``store``: through its units of work on SQLite, as bulk inserts into the same tables
    on PostgreSQL (a unit of work costs about 3 ms a ticket there; 20,000 would take a minute).
    """
    start = datetime.now(timezone.utc) - AUTO_CLOSE - timedelta(days=1)
    source, _ = manual_desk(MemoryStore(), start=start)
    ids = resolved_tickets(source, count, spread=timedelta(milliseconds=1))
    with source.store.transaction() as uow:
        rows = [(uow.get_ticket(i), uow.history(i), uow.timers(i)) for i in ids]
    if isinstance(store, SqliteStore):
        for begin in range(0, count, 2_000):
            with store.transaction() as uow:
                for ticket, events, timers in rows[begin : begin + 2_000]:
                    uow.insert_ticket(ticket)
                    uow.append_events(events)
                    uow.replace_timers(ticket.id, timers)
        return ids
    _bulk_insert_sql(store, rows)
    return ids


def _bulk_insert_sql(store: Storage, rows: list[tuple[Ticket, list[Event], list[Timer]]]) -> None:
    import sqlalchemy as sa

    from supportflow.storage import sql

    assert isinstance(store, sql.SqlStore)
    tickets = [sql._ticket_values(ticket) for ticket, _, _ in rows]
    events = [
        {"ticket_id": e.ticket_id, "sequence": e.sequence, "type": e.type, "at": e.at,
         "actor": e.actor, "data": dict(e.data)}
        for _, history, _ in rows for e in history
    ]  # fmt: skip
    timers = [
        {"ticket_id": t.ticket_id, "key": t.key, "due_at": t.due_at, "kind": t.kind}
        for _, _, ticket_timers in rows for t in ticket_timers
    ]  # fmt: skip
    with store.engine.begin() as connection:
        for table, values in ((sql.tickets, tickets), (sql.events, events), (sql.timers, timers)):
            for begin in range(0, len(values), 5_000):
                connection.execute(sa.insert(table), values[begin : begin + 5_000])
        connection.execute(sa.text("SELECT setval('ticket_number_seq', :n)"), {"n": len(rows)})
        connection.execute(sa.text("ANALYZE"))


def _check_every_timer_fired_once(store: Storage, ids: list[str]) -> None:
    """From the events: one auto-close per ticket by "system", no ticket lost or touched
    twice, sequences 1..n without gaps, and versions that count exactly three writes."""
    with store.transaction() as uow:
        assert uow.next_timer_due() is None, "timers left behind"
        tickets = {ticket.id: ticket for ticket in uow.find_tickets(TicketQuery())}
        events = list(uow.iter_events())
    assert sorted(tickets) == sorted(ids)
    sequences: dict[str, list[int]] = defaultdict(list)
    closes: Counter[str] = Counter()
    for event in events:
        sequences[event.ticket_id].append(event.sequence)
        if event.type == EventType.STATUS_CHANGED and event.data["to"] == "closed":
            assert event.actor == "system"
            assert event.data["trigger"] == "close"
            assert event.data["reason"].startswith("auto-close")
            closes[event.ticket_id] += 1
    assert closes == Counter(dict.fromkeys(ids, 1)), "an auto-close fired twice or never"
    gaps = {
        ticket_id: sorted(seqs)
        for ticket_id, seqs in sequences.items()
        if sorted(seqs) != list(range(1, tickets[ticket_id].sequence + 1))
    }
    assert gaps == {}
    # opened (1), resolved (2), auto-closed (3): no lost and no repeated write.
    assert Counter(t.version for t in tickets.values()) == Counter({3: len(ids)})
    assert Counter(t.status for t in tickets.values()) == Counter({"closed": len(ids)})


def _start_worker(
    location: str, log: Path, tmp_path: Path, name: str, **env: str
) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.out").open("wb") as out, (tmp_path / f"{name}.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "supportflow.cli", "worker", "--store", location,
             "--desk", "tests._worker_desks:make_recording_desk",
             "--batch-size", str(BATCH), "--max-sleep", "0.2"],
            stdout=out, stderr=err, cwd=tmp_path,
            env=worker_env(SF_WORKER_LOG=str(log), **env),
        )  # fmt: skip


def _drain(location: str, ids: list[str], workers: int, tmp_path: Path) -> None:
    """Run ``workers`` worker processes until no timer is left; worker 0 SIGKILLs itself in
    the middle of its third batch. Then check the effects and the takeover of its leases."""
    crash_at = 10  # the 10th timer of the batch: 9 handled and committed, 41 still leased
    logs = [tmp_path / f"worker-{n}.jsonl" for n in range(workers)]
    processes: list[subprocess.Popen[bytes]] = []
    watcher = open_store(location)
    try:
        for n in range(workers):
            crash = {"SF_CRASH_AFTER_CLAIMS": "3", "SF_CRASH_AT_RELEASE": str(crash_at)}
            processes.append(
                _start_worker(
                    location, logs[n], tmp_path, f"worker-{n}", **(crash if n == 0 else {})
                )
            )
        survivors = processes[1:]
        deadline = time.monotonic() + DRAIN_DEADLINE
        while True:
            with watcher.transaction() as uow:
                if uow.next_timer_due() is None:
                    break
            for n, process in enumerate(survivors, start=1):
                if process.poll() is not None:
                    stderr = (tmp_path / f"worker-{n}.err").read_text()[-2000:]
                    pytest.fail(f"worker {n} ended with {process.returncode}:\n{stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"{workers} workers did not drain {len(ids)} timers in time")
            time.sleep(0.25)
        drained_in = DRAIN_DEADLINE - (deadline - time.monotonic())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in processes]
        assert codes[0] == -signal.SIGKILL, "worker 0 should have killed itself mid-batch"
        assert codes[1:] == [0] * len(survivors), "SIGTERM should stop a worker cleanly"
    finally:
        stop_processes(processes)
        watcher.close()
    print(f"\n{len(ids)} timers drained by {workers} workers in {drained_in:.1f} s")

    store = open_store(location)
    try:
        _check_every_timer_fired_once(store, ids)
    finally:
        store.close()

    # The victim died mid-batch with leases held; the others took exactly those over, and only
    # once its lease had run out.
    victim_log = read_log(logs[0])
    victim_claims = [e for e in victim_log if e["what"] == "claim" and e["keys"]]
    assert len(victim_claims) == 3
    last = victim_claims[-1]
    claimed_at = datetime.fromisoformat(last["now"])
    lease_end = claimed_at + LEASE
    released_by_victim = {
        tuple(e["key"]): datetime.fromisoformat(e["committed_at"])
        for e in victim_log
        if e["what"] == "release"
    }
    orphaned = {tuple(key) for key in last["keys"]} - set(released_by_victim)
    assert len(orphaned) == len(last["keys"]) - (crash_at - 1) > 0
    claims: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    released_by_others: set[tuple[str, str]] = set()
    for log in logs[1:]:
        for entry in read_log(log):
            if entry["what"] == "claim":
                for key in entry["keys"]:
                    claims[tuple(key)].append(datetime.fromisoformat(entry["now"]))
            else:
                released_by_others.add(tuple(entry["key"]))
    assert orphaned <= released_by_others, "some of the dead worker's timers were never handled"
    assert orphaned <= set(claims)
    early = {key: at for key in orphaned for at in claims[key] if claimed_at < at < lease_end}
    assert early == {}, "a leased timer was handed out again before its lease ended"
    # (A survivor may have claimed one before the victim did, if its own lease ran out under
    # load; then the victim could claim it. What it released, though, was gone for good.)
    late = {
        key: at
        for key, released_at in released_by_victim.items()
        for at in claims.get(key, [])
        if at > released_at
    }
    assert late == {}, "a timer the victim had handled was claimed again"


@pytest.mark.slow
@pytest.mark.postgres
def test_four_workers_on_postgres_fire_each_due_timer_exactly_once(
    pg_url: str, tmp_path: Path
) -> None:
    from supportflow.storage.sql import SqlStore

    store = SqlStore(pg_url)
    try:
        ids = _seed(store, PG_TIMERS)
    finally:
        store.close()
    _drain(pg_url, ids, 4, tmp_path)


@pytest.mark.slow
def test_two_workers_on_one_sqlite_file_fire_each_due_timer_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "desk.db"
    store = SqliteStore(path)
    try:
        ids = _seed(store, SQLITE_TIMERS)
        with store.transaction():
            (mode,) = store._connection().execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
    finally:
        store.close()
    _drain(str(path), ids, 2, tmp_path)


# -- concurrent commands on one ticket from several processes -----------------------------------
def _concurrent_commands(location: str, tmp_path: Path) -> None:
    store = open_store(location)
    try:
        desk = make_desk(store)
        ticket = desk.open_ticket(
            subject="Everyone writes at once", body="...", customer=Customer(id="c-1"),
            channel="email",
        )  # fmt: skip
    finally:
        store.close()
    plan = [("p0", "reply"), ("p1", "add_note"), ("p2", "add_note")]
    count = 50
    go = tmp_path / "go"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in plan:
            argv = [
                sys.executable, "-m", "tests._worker_desks", "commands", location, ticket.id,
                "--command", command, "--count", str(count), "--by", name,
                "--go-file", str(go), "--ready-file", str(tmp_path / f"{name}.ready"),
            ]  # fmt: skip
            with (tmp_path / f"{name}.err").open("wb") as err:
                processes.append(
                    subprocess.Popen(
                        argv, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, env=worker_env()
                    )
                )
        wait_for(
            lambda: (
                all((tmp_path / f"{n}.ready").exists() for n, _ in plan)
                or any(p.poll() is not None for p in processes)
            ),
            60,
            "the writers to be ready",
        )
        go.touch()  # all at once
        codes = [p.wait(timeout=120) for p in processes]
        errors = [(tmp_path / f"{n}.err").read_text()[-2000:] for n, _ in plan]
        assert codes == [0, 0, 0], errors
    finally:
        stop_processes(processes)

    store = open_store(location)
    try:
        desk = make_desk(store)
        final = desk.get_ticket(ticket.id)
        history = desk.history(ticket.id)
    finally:
        store.close()
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))
    assert final.sequence == len(history)
    assert final.version == 1 + len(plan) * count  # every command wrote exactly once
    authored = Counter(
        (e.type, e.data["author"])
        for e in history
        if e.type in (EventType.MESSAGE_ADDED, EventType.NOTE_ADDED)
    )
    assert authored == {
        (EventType.MESSAGE_ADDED, "p0"): count,
        (EventType.NOTE_ADDED, "p1"): count,
        (EventType.NOTE_ADDED, "p2"): count,
    }
    bodies = sorted(message.body for message in final.messages)
    assert bodies == sorted(f"{name} #{n}" for name, _ in plan for n in range(count))
    # the first reply moved the ticket to work, once
    moves = [e for e in history if e.type == EventType.STATUS_CHANGED]
    assert [(e.data["from"], e.data["to"]) for e in moves] == [("new", "in_progress")]


@pytest.mark.slow
def test_three_processes_commanding_one_ticket_on_sqlite_lose_no_update(tmp_path: Path) -> None:
    _concurrent_commands(str(tmp_path / "desk.db"), tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_three_processes_commanding_one_ticket_on_postgres_lose_no_update(
    pg_url: str, tmp_path: Path
) -> None:
    _concurrent_commands(pg_url, tmp_path)


def test_a_ticket_whose_handling_fails_does_not_stop_the_others() -> None:
    from datetime import timezone

    from supportflow import Customer, ManualClock
    from supportflow.desk import Desk
    from supportflow.extensions import Change, DeskExtension
    from supportflow.model import Timer
    from supportflow.storage import MemoryStore
    from supportflow.worker import Worker

    class Exploding(DeskExtension):
        """A buggy extension: its deadline of one ticket always raises."""

        timer_prefix = "boom"

        def timers(self, change: Change) -> list[Timer]:
            if change.ticket.subject != "bad":
                return []
            due = change.ticket.created_at + timedelta(days=1)
            return [Timer(change.ticket.id, "boom:later", due, "boom")]

        def fire(self, change: Change, timer: Timer) -> None:
            raise RuntimeError("extension bug")

    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    desk = Desk(store=MemoryStore(), clock=clock, extensions=[Exploding()], sla=[])
    customer = Customer(id="c-1")
    good = desk.open_ticket(subject="good", body="", customer=customer, channel="web")
    desk.resolve(good.id, by="agent_li")
    bad = desk.open_ticket(subject="bad", body="", customer=customer, channel="web")
    clock.advance(days=8)

    with pytest.raises(RuntimeError, match="extension bug"):
        desk.run_due()  # a direct call raises by default ...
    clock.advance(minutes=10)  # ... and the timers come back once their lease has expired
    report = Worker(desk).run_once().due  # the worker reports and goes on
    assert [timer.key for timer in report.fired] == ["autoclose"]
    assert [(timer.ticket_id, text) for timer, text in report.failed] == [
        (bad.id, "RuntimeError: extension bug")
    ]
    assert desk.get_ticket(good.id).status == "closed"
