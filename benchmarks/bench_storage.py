"""Benchmark: the durable stores under the Desk, beside raw database writes, and timer claims.

Run with ``python benchmarks/bench_storage.py`` (from the repository root); with
``SUPPORTFLOW_PG_URL`` set (``.ci/run python benchmarks/bench_storage.py``) the PostgreSQL
figures are printed too. ``--profile`` adds a cProfile of the Desk on SQLite; ``--quick``
uses smaller sizes. Prints figures only; makes no assertions.

1. **Commands per second.** ``desk.add_note`` and ``desk.reply`` on existing tickets (default
   desk: SLA policies, triage), each one unit of work, on ``SqliteStore`` (a file, WAL) and on
   ``SqlStore`` (PostgreSQL). Beside them, in the same run and on the same schema, the raw
   driver (``sqlite3``; ``psycopg``) doing per command what the brief of this benchmark calls
   the floor: in its own transaction, one ticket row update with a version check, one event
   insert, and one timer replace (delete + insert) -- with pre-serialised JSON, no reads and
   no domain logic; the documents written are the ones that command writes halfway through
   its run, and for ``reply`` the raw run also writes the outbox row a reply writes (the
   notification to the customer): the same writes as the Desk's command. Target: the Desk at
   >= 40 % of raw. Best of three alternating rounds (Desk, then raw, per command) on fresh
   tickets: the machine this runs on is shared.
2. **Claiming due timers.** The unit of work a worker opens to claim 100 due timers out of
   1,000,000 (50,000 of them due), median and 90th percentile over repeats; between
   repeats the claimed timers are deleted, as handling them would. Also with 1,000 due timers
   ahead of them leased to a dead worker (the scan walks past those). Target: under 5 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from supportflow import Customer, Desk
from supportflow.storage import OutboxStatus, Storage
from supportflow.storage.sqlite import SqliteStore
from supportflow.testing.postgres import private_schema

CUSTOMER = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})
LEASE = timedelta(minutes=5)


# -- commands -----------------------------------------------------------------------------------
def open_tickets(desk: Desk, count: int) -> list[str]:
    return [
        desk.open_ticket(
            subject=f"Password reset mail #{n} never arrives",
            body=f"I asked for a reset link three times (request {n}) and got nothing.",
            customer=CUSTOMER,
            channel="email",
        ).id
        for n in range(count)
    ]


def desk_rate(desk: Desk, ids: list[str], commands: int, command: str) -> float:
    """Commands per second, round-robin over the tickets (so each doc grows slowly)."""
    if command == "reply":

        def run(ticket_id: str, n: int) -> None:
            desk.reply(ticket_id, f"Could you look in your spam folder? ({n})", by="agent_li")
    else:

        def run(ticket_id: str, n: int) -> None:
            desk.add_note(ticket_id, f"Customer called again ({n})", by="agent_li")

    began = time.perf_counter()
    for n in range(commands):
        run(ids[n % len(ids)], n)
    return commands / (time.perf_counter() - began)


def sample_writes(desk: Desk, ticket_id: str) -> tuple[str, str, str]:
    """The raw run's payloads, as JSON: the ticket document as it stands halfway through the
    timed run (half its messages), the data of its last event, and the document of its last
    notification ("" when the command sends none: a note)."""
    import attrs

    from supportflow.storage._codec import dump_json, notification_to_doc, ticket_to_doc

    ticket = desk.get_ticket(ticket_id)
    halfway = attrs.evolve(ticket, messages=ticket.messages[: len(ticket.messages) // 2])
    event = desk.history(ticket_id)[-1]
    with desk.store.transaction() as uow:
        pending = uow.list_outbox(OutboxStatus.PENDING, limit=1_000_000)
    sent = [entry.notification for entry in pending if entry.notification.ticket_id == ticket_id]
    notification = dump_json(notification_to_doc(sent[-1])) if sent else ""
    return dump_json(ticket_to_doc(halfway)), dump_json(dict(event.data)), notification


HOT_SPOTS: tuple[tuple[str, Callable[[tuple[str, int, str]], bool]], ...] = (
    ("uow.get_ticket", lambda k: k[2] == "get_ticket" and "storage" in k[0]),
    ("  codec: ticket_from_doc", lambda k: k[2] == "ticket_from_doc"),
    ("uow.update_ticket", lambda k: k[2] == "update_ticket" and "storage" in k[0]),
    ("  codec: ticket_to_doc", lambda k: k[2] == "ticket_to_doc"),
    ("  json: dump_json (all)", lambda k: k[2] == "dump_json"),
    ("uow.append_events", lambda k: k[2] == "append_events" and "storage" in k[0]),
    ("uow.replace_timers", lambda k: k[2] == "replace_timers" and "storage" in k[0]),
    ("uow.enqueue", lambda k: k[2] == "enqueue" and "storage" in k[0]),
    ("store.transaction (BEGIN/COMMIT)", lambda k: k[2] == "transaction" and "storage" in k[0]),
    ("driver: sqlite3 execute (C)", lambda k: "execute' of 'sqlite3" in k[2]),
    ("rules: Change.message", lambda k: k[2] == "message" and "_change" in k[0]),
    ("rules: Change.catch_up", lambda k: k[2] == "catch_up" and "_change" in k[0]),
    ("rules: Change.timers", lambda k: k[2] == "timers" and "_change" in k[0]),
)


def print_hot_spots(profiler: cProfile.Profile, commands: int, elapsed: float) -> None:
    """Cumulative time per command of the parts of the command path (they overlap)."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    print(f"  profile of Desk.add_note ({elapsed / commands * 1000:.3f} ms a command, profiled):")
    for name, wanted in HOT_SPOTS:
        spent = sum(row[3] for key, row in stats.items() if wanted(key))
        print(f"    {name:<34} {spent / commands * 1000:7.3f} ms  {spent / elapsed:4.0%}")
    report = io.StringIO()
    pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(12)
    print("\n".join("    " + line for line in report.getvalue().splitlines()[6:] if line))


def raw_sqlite_rate(
    path: Path, ids: list[str], commands: int, doc: str, data: str, notification: str
) -> float:
    """The floor: the same writes per command with ``sqlite3``, each in its own transaction
    (with an outbox row when the command sends a ``notification``)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    versions = {
        ticket_id: (version, sequence)
        for ticket_id, version, sequence in connection.execute(
            "SELECT id, version, (SELECT MAX(sequence) FROM events e WHERE e.ticket_id = t.id)"
            " FROM tickets t"
        )
    }
    now = time.time_ns() // 1000
    execute = connection.execute
    began = time.perf_counter()
    for n in range(commands):
        ticket_id = ids[n % len(ids)]
        version, sequence = versions[ticket_id]
        execute("BEGIN IMMEDIATE")
        cursor = execute(
            "UPDATE tickets SET version = ?, doc = ? WHERE id = ? AND version = ?",
            (version + 1, doc, ticket_id, version),
        )
        if cursor.rowcount != 1:
            raise SystemExit("raw sqlite3: version check failed")
        execute(
            "INSERT INTO events (ticket_id, sequence, type, at, actor, data)"
            " VALUES (?, ?, 'NoteAdded', ?, 'agent_li', ?)",
            (ticket_id, sequence + 1, now + n, data),
        )
        execute("DELETE FROM timers WHERE ticket_id = ?", (ticket_id,))
        execute(
            "INSERT INTO timers (ticket_id, key, due_at, kind) VALUES (?, 'sla:resolution', ?, ?)",
            (ticket_id, now + 3_600_000_000 + n, "sla"),
        )
        if notification:
            execute(
                "INSERT INTO outbox (key, status, next_attempt_at, attempts, doc, created_at)"
                " VALUES (?, 'pending', ?, 0, ?, ?)",
                (f"{ticket_id}:{sequence + 1}:raw:{n}", now + n, notification, now + n),
            )
        execute("COMMIT")
        versions[ticket_id] = (version + 1, sequence + 1)
    elapsed = time.perf_counter() - began
    connection.close()
    return commands / elapsed


def raw_psycopg_rate(
    url: str, ids: list[str], commands: int, doc: str, data: str, notification: str
) -> float:
    """The floor on PostgreSQL: the same writes per command with ``psycopg``."""
    import psycopg

    with psycopg.connect(_libpq_url(url)) as connection:
        rows = connection.execute(
            "SELECT id, version, (SELECT MAX(sequence) FROM events e WHERE e.ticket_id = t.id)"
            " FROM tickets t"
        ).fetchall()
        connection.commit()
        versions = {ticket_id: (version, sequence) for ticket_id, version, sequence in rows}
        now = datetime.now(timezone.utc)
        cursor = connection.cursor()
        began = time.perf_counter()
        for n in range(commands):
            ticket_id = ids[n % len(ids)]
            version, sequence = versions[ticket_id]
            cursor.execute(
                "UPDATE tickets SET version = %s, doc = %s::jsonb WHERE id = %s AND version = %s",
                (version + 1, doc, ticket_id, version),
            )
            if cursor.rowcount != 1:
                raise SystemExit("raw psycopg: version check failed")
            cursor.execute(
                "INSERT INTO events (ticket_id, sequence, type, at, actor, data)"
                " VALUES (%s, %s, 'NoteAdded', %s, 'agent_li', %s::jsonb)",
                (ticket_id, sequence + 1, now + timedelta(microseconds=n), data),
            )
            cursor.execute("DELETE FROM timers WHERE ticket_id = %s", (ticket_id,))
            cursor.execute(
                "INSERT INTO timers (ticket_id, key, due_at, kind)"
                " VALUES (%s, 'sla:resolution', %s, 'sla')",
                (ticket_id, now + timedelta(hours=1, microseconds=n)),
            )
            if notification:
                at = now + timedelta(microseconds=n)
                cursor.execute(
                    "INSERT INTO outbox (key, status, next_attempt_at, attempts, doc, created_at)"
                    " VALUES (%s, 'pending', %s, 0, %s::jsonb, %s)",
                    (f"{ticket_id}:{sequence + 1}:raw:{n}", at, notification, at),
                )
            connection.commit()
            versions[ticket_id] = (version + 1, sequence + 1)
        return commands / (time.perf_counter() - began)


def command_figures(
    label: str,
    make_store: Callable[[], Storage],
    raw: Callable[[list[str], int, str, str, str], float],
    tickets: int,
    commands: int,
    profile: bool,
    rounds: int = 3,
) -> None:
    """Best of ``rounds`` alternating rounds of add_note, reply and the raw floor (the machine
    is shared: alternating keeps a slow spell from landing on one side only). Each Desk round
    starts on fresh tickets, so ticket documents grow alike in each."""
    store = make_store()
    rates: dict[str, list[float]] = {"add_note": [], "reply": []}
    floors: dict[str, list[float]] = {"add_note": [], "reply": []}
    samples: dict[str, tuple[str, str]] = {}
    try:
        desk = Desk(store=store)
        desk_rate(desk, open_tickets(desk, 20), 200, "add_note")  # warm caches and plans
        ids = open_tickets(desk, tickets)  # the raw runs' tickets
        for round_ in range(rounds):
            for command in ("add_note", "reply"):
                fresh = (
                    ids if round_ == 0 and command == "add_note" else open_tickets(desk, tickets)
                )
                rates[command].append(desk_rate(desk, fresh, commands, command))
                if command not in samples:  # what this command writes, halfway through
                    samples[command] = sample_writes(desk, fresh[0])
                floors[command].append(raw(ids, commands, *samples[command]))
        if profile:
            profiled = open_tickets(desk, tickets)
            profiler = cProfile.Profile()
            began = time.perf_counter()
            profiler.enable()
            desk_rate(desk, profiled, commands, "add_note")
            profiler.disable()
            elapsed = time.perf_counter() - began
    finally:
        store.close()
    print(
        f"{label}: {commands:,} commands over {tickets} tickets each, best of {rounds}"
        " alternating rounds"
    )
    for name, command in (("Desk.add_note", "add_note"), ("Desk.reply", "reply")):
        floor, value = max(floors[command]), max(rates[command])
        doc = samples[command][0]
        writes = "5 writes (+ outbox row)" if samples[command][2] else "4 writes"
        print(f"  raw driver, {writes:<25}: {floor:>9,.0f} /s  ({len(doc):,} B ticket doc)")
        also = ""
        if command == "reply":  # beside the floor without the outbox row, for comparison
            also = f"; {value / max(floors['add_note']):.0%} of the 4-write floor"
        print(f"  {name:<37}: {value:>9,.0f} /s  ({value / floor:.0%} of raw{also})")
    if profile:
        print_hot_spots(profiler, commands, elapsed)


# -- claims -------------------------------------------------------------------------------------
def timer_rows(count: int, now_us: int, seed: int = 7) -> Iterator[tuple[str, str, int, str]]:
    """``count`` timers: 5 % due (up to a day ago), the rest up to 19 days ahead."""
    rng = random.Random(seed)
    day = 86_400_000_000
    for n in range(count):
        offset = rng.randrange(-day, 19 * day)
        yield (f"t-{n:07d}", "sla:resolution:breach", now_us + offset, "sla")


def claim_timings(
    store: Storage, repeats: int, now: datetime, leased_ahead: int
) -> tuple[float, float]:
    """Median and 90th percentile (ms) of a unit of work claiming 100 due timers."""
    if leased_ahead:
        with store.transaction() as uow:
            uow.claim_due_timers(now, leased_ahead, "dead-worker", timedelta(days=1))
    samples = []
    for n in range(repeats):
        began = time.perf_counter()
        with store.transaction() as uow:
            claimed = uow.claim_due_timers(now, 100, f"worker-{n}", LEASE)
        samples.append((time.perf_counter() - began) * 1000)
        if len(claimed) != 100:
            raise SystemExit(f"claimed {len(claimed)} timers, expected 100")
        with store.transaction() as uow:  # handled: gone, as after run_due
            for timer in claimed:
                uow.release_timer(timer, f"worker-{n}")
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def print_claims(label: str, count: int, store: Storage, repeats: int, now: datetime) -> None:
    median, p90 = claim_timings(store, repeats, now, 0)
    print(f"{label}: claim 100 due of {count:,} timers: median {median:.2f} ms, p90 {p90:.2f} ms")
    median, p90 = claim_timings(store, repeats, now, 1_000)
    print(
        f"{label}:   ... behind 1,000 due timers leased to a dead worker:"
        f" median {median:.2f} ms, p90 {p90:.2f} ms"
    )


def sqlite_claims(directory: Path, count: int, repeats: int) -> None:
    path = directory / "claims.db"
    SqliteStore(path).close()  # the schema
    now = datetime.now(timezone.utc)
    now_us = time.time_ns() // 1000
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO timers (ticket_id, key, due_at, kind) VALUES (?, ?, ?, ?)",
        timer_rows(count, now_us),
    )
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    # Fold the bulk load into the database file first: otherwise the first claims pay for
    # checkpointing a write-ahead log of a million rows, which no steady desk has.
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    store = SqliteStore(path)
    try:
        print_claims("SQLite    ", count, store, repeats, now)
    finally:
        store.close()


def postgres_claims(url: str, count: int, repeats: int) -> None:
    import psycopg

    from supportflow.storage.sql import SqlStore

    now = datetime.now(timezone.utc)
    now_us = time.time_ns() // 1000
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    with psycopg.connect(_libpq_url(url)) as connection:
        with connection.cursor().copy(
            "COPY timers (ticket_id, key, due_at, kind) FROM STDIN"
        ) as copy:
            for ticket_id, key, due_us, kind in timer_rows(count, now_us):
                copy.write_row((ticket_id, key, epoch + timedelta(microseconds=due_us), kind))
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE timers")
    store = SqlStore(url)
    try:
        print_claims("PostgreSQL", count, store, repeats, now)
    finally:
        store.close()


# -- PostgreSQL plumbing ------------------------------------------------------------------------
def _libpq_url(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="cProfile the Desk on SQLite")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    tickets, commands = (50, 500) if args.quick else (200, 3_000)
    timers, repeats = (100_000, 15) if args.quick else (1_000_000, 41)
    pg = os.environ.get("SUPPORTFLOW_PG_URL", "")

    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        directory = Path(tmp)
        raw_path = directory / "raw.db"
        SqliteStore(raw_path).close()

        copied: list[str] = []

        def raw_sqlite(ids: list[str], n: int, doc: str, data: str, sent: str) -> float:
            # The raw runs get their own file with the same schema and the same tickets.
            if not copied:
                source = sqlite3.connect(directory / "desk.db")
                target = sqlite3.connect(raw_path)
                with target:
                    for table in ("tickets", "events"):
                        rows = source.execute(f"SELECT * FROM {table}").fetchall()
                        marks = ", ".join("?" * len(rows[0]))
                        target.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
                source.close()
                target.close()
                copied.append("sqlite")
            return raw_sqlite_rate(raw_path, ids, n, doc, data, sent)

        command_figures(
            "SQLite (file, WAL)",
            lambda: SqliteStore(directory / "desk.db"),
            raw_sqlite,
            tickets,
            commands,
            args.profile,
        )
        if pg:
            from supportflow.storage.sql import SqlStore

            with (
                private_schema(pg, "sf_bench") as desk_url,
                private_schema(pg, "sf_bench") as raw_url,
            ):

                def raw_pg(ids: list[str], n: int, doc: str, data: str, sent: str) -> float:
                    if "pg" not in copied:
                        _copy_pg(desk_url, raw_url)
                        copied.append("pg")
                    return raw_psycopg_rate(raw_url, ids, n, doc, data, sent)

                command_figures(
                    "PostgreSQL (SqlStore)",
                    lambda: SqlStore(desk_url),
                    raw_pg,
                    tickets,
                    commands,
                    False,
                )
        else:
            print("PostgreSQL: SUPPORTFLOW_PG_URL is not set; skipped")

        sqlite_claims(directory, timers, repeats)
    if pg:
        with private_schema(pg, "sf_bench") as claims_url:
            postgres_claims(claims_url, timers, repeats)


def _copy_pg(source_url: str, target_url: str) -> None:
    """Copy tickets and events between two private schemas (the raw run's starting point)."""
    import psycopg

    with (
        psycopg.connect(_libpq_url(source_url)) as source,
        psycopg.connect(_libpq_url(target_url)) as target,
    ):
        for table in ("tickets", "events"):
            described = source.execute(f"SELECT * FROM {table} LIMIT 0").description or []
            columns = [d.name for d in described if d.name != "position"]  # identity: new ones
            names = ", ".join(f'"{column}"' for column in columns)
            rows = source.execute(f"SELECT {names} FROM {table}").fetchall()
            with target.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(
                        [json.dumps(v) if isinstance(v, (dict, list)) else v for v in row]
                    )
        target.commit()


if __name__ == "__main__":
    main()
