"""Desk factories and helper programs for the multi-process tests in ``test_workers.py``.

Child processes import this module as ``tests._worker_desks`` (the parent puts the checkout
root on their ``PYTHONPATH``):

* ``supportflow worker --desk tests._worker_desks:make_desk`` -- the desk every proof uses:
  no SLA clocks, no triage, a 2-second timer lease, patient conflict retries.
* ``--desk tests._worker_desks:make_recording_desk`` -- the same desk on a store wrapper that
  appends each *committed* timer claim and each committed handling to the JSON-lines file
  named by ``SF_WORKER_LOG``. With ``SF_CRASH_AFTER_CLAIMS=n`` and ``SF_CRASH_AT_RELEASE=k``
  the process SIGKILLs itself inside the transaction that handles the k-th timer of its n-th
  claimed batch: mid-batch, with an uncommitted handling and leases still held.
* ``python -m tests._worker_desks commands STORE TICKET_ID ...`` -- many commands on one
  ticket from one process (see :func:`run_commands`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from supportflow import Desk
from supportflow.clock import Clock
from supportflow.model import Timer
from supportflow.storage import Storage, UnitOfWork, open_store

LEASE = timedelta(seconds=2)
"""The timer lease of the proof's desks: short, so a dead worker's batch comes back soon."""

MAX_ATTEMPTS = 500
"""Retries on ConcurrencyConflict: several processes hammer one ticket in the proofs."""


def make_desk(store: Storage, clock: Clock | None = None) -> Desk:
    """The desk of the proofs: only auto-close deadlines, so the effect of each is exact."""
    return Desk(
        store=store,
        clock=clock,
        sla=[],
        triage=None,
        max_attempts=MAX_ATTEMPTS,
        timer_lease=LEASE,
    )


# -- a store that records committed claims -------------------------------------------------------
class RecordingStore:
    """Wraps a store; after each commit, appends what the unit of work claimed or released."""

    def __init__(
        self,
        inner: Storage,
        log_path: str,
        *,
        crash_after_claims: int | None = None,
        crash_at_release: int = 1,
    ) -> None:
        self.inner = inner
        self.log_path = log_path
        self.crash_after_claims = crash_after_claims
        self.crash_at_release = crash_at_release
        self.claims = 0
        self.releases_in_crash_batch = 0
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the store)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        with self.inner.transaction() as uow:
            recording = _RecordingUnitOfWork(self, uow)
            yield recording  # type: ignore[misc]
        # Committed: only now is the claim (or the handling) real for the other workers.
        committed_at = datetime.now(timezone.utc).isoformat()
        for entry in recording.entries:
            entry["committed_at"] = committed_at
            if entry["what"] == "claim" and entry["keys"]:
                self.claims += 1
            self._log.write(json.dumps(entry) + "\n")
        self._log.flush()

    def close(self) -> None:
        self._log.close()
        self.inner.close()

    def released(self) -> None:
        """Called for each timer released inside a handling transaction (before commit)."""
        if self.crash_after_claims is None or self.claims < self.crash_after_claims:
            return
        self.releases_in_crash_batch += 1
        if self.releases_in_crash_batch >= self.crash_at_release:
            os.kill(os.getpid(), signal.SIGKILL)


class _RecordingUnitOfWork:
    def __init__(self, store: RecordingStore, inner: UnitOfWork) -> None:
        self._store = store
        self._inner = inner
        self.entries: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def claim_due_timers(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[Timer]:
        claimed = self._inner.claim_due_timers(now, limit, owner, lease)
        self.entries.append(
            {
                "what": "claim",
                "pid": os.getpid(),
                "owner": owner,
                "now": now.isoformat(),
                "lease": lease.total_seconds(),
                "keys": [[timer.ticket_id, timer.key] for timer in claimed],
            }
        )
        return claimed

    def release_timer(self, timer: Timer, owner: str) -> None:
        self._inner.release_timer(timer, owner)
        self.entries.append(
            {"what": "release", "pid": os.getpid(), "key": [timer.ticket_id, timer.key]}
        )
        self._store.released()


def make_recording_desk(store: Storage) -> Desk:
    """:func:`make_desk` on a :class:`RecordingStore` configured from the environment."""
    crash_after = os.environ.get("SF_CRASH_AFTER_CLAIMS")
    recording = RecordingStore(
        store,
        os.environ["SF_WORKER_LOG"],
        crash_after_claims=int(crash_after) if crash_after else None,
        crash_at_release=int(os.environ.get("SF_CRASH_AT_RELEASE", "1")),
    )
    return make_desk(recording)  # type: ignore[arg-type]


def read_log(path: Path) -> list[dict[str, Any]]:
    """The entries a :class:`RecordingStore` wrote (none if the file does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# -- many commands on one ticket ----------------------------------------------------------------
def run_commands(
    store_location: str,
    ticket_id: str,
    *,
    command: str,
    count: int,
    by: str,
    go_file: str,
    ready_file: str,
    timeout: float = 60.0,
) -> None:
    """Signal readiness, wait for the go file, then run ``count`` commands on one ticket."""
    store = open_store(store_location)
    try:
        desk = make_desk(store)
        desk.get_ticket(ticket_id)  # connected, schema checked
        Path(ready_file).touch()
        deadline = time.monotonic() + timeout
        while not os.path.exists(go_file):
            if time.monotonic() > deadline:
                raise SystemExit(f"{by}: no go signal within {timeout} s")
            time.sleep(0.005)
        for n in range(count):
            body = f"{by} #{n}"
            if command == "reply":
                desk.reply(ticket_id, body, by=by)
            else:
                desk.add_note(ticket_id, body, by=by)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests._worker_desks")
    sub = parser.add_subparsers(dest="what", required=True)
    commands = sub.add_parser("commands", help="many commands on one ticket")
    commands.add_argument("store")
    commands.add_argument("ticket_id")
    commands.add_argument("--command", choices=("reply", "add_note"), default="add_note")
    commands.add_argument("--count", type=int, default=50)
    commands.add_argument("--by", required=True)
    commands.add_argument("--go-file", required=True)
    commands.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)
    run_commands(
        args.store,
        args.ticket_id,
        command=args.command,
        count=args.count,
        by=args.by,
        go_file=args.go_file,
        ready_file=args.ready_file,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
