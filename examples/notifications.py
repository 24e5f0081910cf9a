"""Notifications from a ticket's life: a signed webhook for the staff, a memory inbox for the
customer.

A webhook receiver runs on loopback (``http.server`` in a thread). It checks the signature of
every request with :func:`~supportflow.notify.verify_signature`, answers ``503`` to the first
two deliveries (as a receiver in the middle of a deploy would) and ``200`` after that, and
drops keys it has already processed. The team lead and the agents are reached through it; the
customer's mail goes to a :class:`~supportflow.notify.MemoryNotifier` standing in for SMTP.

The story, on a manual clock starting Monday 2 March 2026, 09:00 UTC:

1. a customer writes in; the subject mentions a lawyer, so the team lead is warned at once;
2. the desk delivers: the webhook fails twice, the clock moves past each backoff, the third
   attempt succeeds, with the same idempotency key every time;
3. an agent answers (a ``reply`` to the customer), the customer writes back, and nobody
   answers again: ``run_due`` finds the next-response target breached, which warns the agent,
   tells the team lead and escalates.

Run it with ``python examples/notifications.py``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from supportflow import Customer, Desk, EscalationLevel, EscalationPolicy, ManualClock
from supportflow.notify import MemoryNotifier, WebhookNotifier, verify_signature
from supportflow.storage import OutboxEntry, OutboxStatus

SECRET = "whsec-example-2026"  # shared with the receiver; in production, from a vault


# -- the receiving side --------------------------------------------------------------------
class Receiver:
    """What the webhook endpoint saw: every request, and the keys it processed."""

    def __init__(self, fail_first: int) -> None:
        self.fail_left = fail_first
        self.requests: list[dict[str, Any]] = []
        self.processed: set[str] = set()
        self.lock = threading.Lock()

    def handle(self, headers: Any, raw: bytes) -> int:
        signed = verify_signature(
            SECRET,
            headers.get("X-Supportflow-Timestamp", ""),
            raw,  # the raw bytes, before any parsing
            headers.get("X-Supportflow-Signature", ""),
            now=time.time(),
            tolerance=300,
        )
        key = headers.get("Idempotency-Key", "")
        with self.lock:
            if not signed:
                status = 401
            elif self.fail_left > 0:
                self.fail_left -= 1
                status = 503
            else:
                status = 200
                if key not in self.processed:  # at least once: drop repeats by key
                    self.processed.add(key)
            payload = json.loads(raw) if signed else {}
            self.requests.append(
                {
                    "key": key,
                    "kind": payload.get("kind"),
                    "to": [r["address"] for r in payload.get("recipients", [])],
                    "signed": signed,
                    "status": status,
                }
            )
        return status


@contextlib.contextmanager
def serve(receiver: Receiver) -> Iterator[str]:
    """Run the receiver on 127.0.0.1 (a free port) until the block ends; yield its URL."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a stuck client cannot hold a thread forever

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.handle(self.headers, raw)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the example prints its own view below

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/desk"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- the desk side -------------------------------------------------------------------------
def outbox(desk: Desk, status: OutboxStatus) -> list[OutboxEntry]:
    with desk.store.transaction() as uow:
        return uow.list_outbox(status, 1000)


def hhmmss(instant: datetime | None) -> str:
    return instant.strftime("%H:%M:%S") if instant else "-"


def deliver_all(desk: Desk, clock: ManualClock, tries: Counter[str]) -> None:
    """Deliver until nothing is pending, moving the clock past each backoff."""
    while True:
        report = desk.deliver_pending()
        with desk.store.transaction() as uow:
            for key in [*report.delivered, *report.retried, *report.dead]:
                tries[key] += 1
                entry = uow.outbox_entry(key)
                assert entry is not None
                note = entry.notification
                to = ", ".join(f"{r.role.value}:{r.address}" for r in note.recipients)
                if key in report.delivered:
                    outcome = "delivered"
                elif key in report.retried:
                    outcome = f"failed, retry at {hhmmss(entry.next_attempt_at)}"
                else:
                    outcome = f"dead: {entry.last_error}"
                print(
                    f"  {hhmmss(clock.now())}  attempt {tries[key]}  {note.kind:<13} to {to:<38} "
                    f"{outcome}\n            key={key}"
                )
        pending = outbox(desk, OutboxStatus.PENDING)
        if not pending:
            return
        due = min(entry.next_attempt_at or clock.now() for entry in pending)
        if due > clock.now():
            print(f"  ... clock moves past the backoff to {hhmmss(due)}")
            clock.set(due)


def main() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))  # a Monday morning
    receiver = Receiver(fail_first=2)
    customers = MemoryNotifier(clock)  # stands in for SmtpNotifier

    with serve(receiver) as url:
        # The webhook signs with the real time (the receiver checks it against its own clock);
        # the desk runs on the manual clock, so backoffs pass in an instant.
        hook = WebhookNotifier(url, SECRET, timeout=5)
        desk = Desk(
            clock=clock,
            team_lead="lead_zhao",
            notifiers={"customer": customers, "agent": hook, "team_lead": hook, "group": hook},
            escalation=[
                EscalationPolicy(
                    "unanswered",
                    [
                        EscalationLevel(
                            "next response overdue",
                            sla_clock="next_response",
                            fraction=1.0,
                            notify=("team_lead",),
                            add_tags={"escalated"},
                        )
                    ],
                )
            ],
        )
        customer = Customer(
            id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"}
        )
        tries: Counter[str] = Counter()

        print("09:00 a customer writes in; the subject mentions a lawyer")
        ticket = desk.open_ticket(
            subject="Refund missing for 3 weeks, my lawyer is asking",
            body="I returned the order on 9 February and still have no refund.",
            customer=customer,
            channel="email",
            assignee="agent_li",
        )
        opened = desk.get_ticket(ticket.id)
        tags = ", ".join(sorted(opened.tags))
        print(f"  ticket #{opened.number}: priority {opened.priority.value}, tags: {tags}")
        deliver_all(desk, clock, tries)

        clock.set(datetime(2026, 3, 2, 9, 20, tzinfo=timezone.utc))
        print("09:20 the agent answers the customer")
        desk.reply(ticket.id, "We are checking with our payment provider today.", by="agent_li")
        deliver_all(desk, clock, tries)

        clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))
        print("10:00 the customer writes back; nobody answers for two and a half hours")
        desk.reply(ticket.id, "My bank still shows nothing.", by="c-17", role="customer")

        clock.set(datetime(2026, 3, 2, 12, 30, tzinfo=timezone.utc))
        due = desk.run_due()
        print(f"12:30 run_due: {', '.join(event.type for event in due.events)}")
        deliver_all(desk, clock, tries)

        print("\nthe outbox:")
        delivered = outbox(desk, OutboxStatus.DELIVERED)
        for entry in delivered:
            print(
                f"  {entry.notification.kind:<13} attempts {tries[entry.key]} "
                f"(failed {entry.attempts})  delivered {hhmmss(entry.delivered_at)}  "
                f"key={entry.key}"
            )

        print("\nthe receiver's view (one line per request):")
        for number, request in enumerate(receiver.requests, start=1):
            print(
                f"  #{number} {request['kind']:<13} key={request['key']}  "
                f"signature {'ok' if request['signed'] else 'BAD'}  -> {request['status']}"
            )
        print("\nthe customer's inbox:")
        for delivery in customers.deliveries:
            note = delivery.notification
            address = delivery.recipients[0].address
            print(f"  to {address}: {note.subject!r}  key={note.idempotency_key}")

    # The story's promises.
    first = receiver.requests[:3]
    assert [r["status"] for r in first] == [503, 503, 200]
    assert len({r["key"] for r in first}) == 1, "every attempt carries the same key"
    assert first[0]["kind"] == "early_warning"
    assert all(r["signed"] for r in receiver.requests)
    assert {r["key"] for r in receiver.requests} == receiver.processed
    assert outbox(desk, OutboxStatus.PENDING) == []
    assert desk.dead_letters() == []
    kinds = Counter(entry.notification.kind for entry in delivered)
    assert kinds == Counter(early_warning=1, reply=1, escalation=1, sla=3)
    assert [d.notification.kind for d in customers.deliveries] == ["reply"]
    assert "escalated" in desk.get_ticket(ticket.id).tags
    assert max(tries.values()) == 3
    assert sum(tries.values()) == len(delivered) + 2


if __name__ == "__main__":
    main()
