"""Notifications through the Desk: what each command writes to the outbox, how the desk
delivers it, and the reply guard and reply scripts an agent's reply goes through.

Every story drives a desk with a manual clock (Monday 2 March 2026, 09:00 UTC). The stories
about what is stored run on both the memory store and the embedded SQLite store.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from supportflow import (
    Customer,
    Desk,
    EscalationLevel,
    EscalationPolicy,
    EventType,
    ManualClock,
    Recipient,
    RecipientRole,
    ReplyBlocked,
    Role,
    Ticket,
    ValidationError,
)
from supportflow.extensions import Change
from supportflow.notify import (
    MemoryNotifier,
    MissingTemplateField,
    ReplyPolicy,
    ReplyScripts,
    SmtpNotifier,
    WebhookNotifier,
    verify_signature,
)
from supportflow.storage import MemoryStore, OutboxEntry, OutboxStatus, Storage
from supportflow.storage.sqlite import SqliteStore
from supportflow.testing import DEFAULT_START

WANG = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})
LEAD = "lead_zhao"
POLICY = ReplyPolicy(allowed_domains=["help.example.com"], forbidden_terms=["Project Falcon"])
NOTE = "Root cause is the mail relay mx3 dropping resets; fix ships with the 4.2 release."
SECRET = "whsec-desk-tests"


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    chosen: Storage = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "d.db")
    yield chosen
    chosen.close()


class Inboxes:
    """One MemoryNotifier per recipient role, so each test sees who got what."""

    def __init__(self, clock: ManualClock) -> None:
        self.customers = MemoryNotifier(clock)
        self.agents = MemoryNotifier(clock)
        self.leads = MemoryNotifier(clock)
        self.groups = MemoryNotifier(clock)

    def routes(self) -> dict[str, MemoryNotifier]:
        return {
            "customer": self.customers,
            "agent": self.agents,
            "team_lead": self.leads,
            "group": self.groups,
        }


def make_desk(store: Storage | None = None, **options: Any) -> tuple[Desk, ManualClock, Inboxes]:
    """A desk on ``store`` with a manual clock, routing each role to its own inbox unless
    ``notifiers`` is given."""
    clock = ManualClock(DEFAULT_START)
    inboxes = Inboxes(clock)
    options.setdefault("notifiers", inboxes.routes())
    desk = Desk(store=store or MemoryStore(), clock=clock, team_lead=LEAD, **options)
    return desk, clock, inboxes


@pytest.fixture
def world(store: Storage) -> tuple[Desk, ManualClock, Inboxes]:
    return make_desk(store)


@pytest.fixture
def guarded(store: Storage) -> tuple[Desk, ManualClock, Inboxes]:
    return make_desk(store, reply_policy=POLICY)


def open_case(desk: Desk, subject: str = "Password reset mail never arrives", **kw: Any) -> Ticket:
    kw.setdefault("body", "I asked for a reset link three times and got nothing.")
    kw.setdefault("customer", WANG)
    kw.setdefault("channel", "email")
    kw.setdefault("assignee", "agent_li")
    return desk.open_ticket(subject=subject, **kw)


def outbox(desk: Desk, status: OutboxStatus | None = None) -> list[OutboxEntry]:
    statuses = [status] if status is not None else list(OutboxStatus)
    with desk.store.transaction() as uow:
        return [entry for s in statuses for entry in uow.list_outbox(s, 1000)]


def entry(desk: Desk, key: str) -> OutboxEntry:
    with desk.store.transaction() as uow:
        found = uow.outbox_entry(key)
    assert found is not None, key
    return found


def snapshot(desk: Desk, ticket_id: str) -> tuple[Any, ...]:
    """Everything a command could have stored about a ticket."""
    ticket = desk.get_ticket(ticket_id)
    rows = sorted((e.key, e.status.value, e.attempts) for e in outbox(desk))
    return ticket.version, ticket.messages, ticket.sequence, desk.history(ticket_id), rows


# -- what commands write to the outbox -----------------------------------------------------
class TestOutbox:
    def test_agent_reply_enqueues_one_reply_to_the_customer_email(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, clock, _ = world
        ticket = open_case(desk)
        assert outbox(desk) == []  # an ordinary new ticket tells nobody
        clock.advance(minutes=12)
        replied = desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")

        [row] = outbox(desk)
        note = row.notification
        assert row.status is OutboxStatus.PENDING
        assert row.attempts == 0
        assert note.kind == "reply"
        assert note.recipients == (
            Recipient(RecipientRole.CUSTOMER, "wang.fang@example.com", "Wang Fang"),
        )
        assert note.subject == f"Re: [#{ticket.number}] Password reset mail never arrives"
        assert note.body == "Could you look in your spam folder?"
        assert note.ticket_id == ticket.id
        assert note.created_at == clock.now()
        assert note.data["message_id"] == replied.messages[-1].id
        # The same unit of work: the reply command made exactly one new version of the ticket.
        assert replied.version == ticket.version + 1
        assert note.idempotency_key.startswith(f"{ticket.id}:")

    def test_customer_reply_and_internal_note_notify_nobody(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = world
        ticket = open_case(desk)
        desk.add_note(ticket.id, "Customer is on the old mail relay", by="agent_li")
        desk.reply(ticket.id, "Any news?", by=WANG.id, role="customer")
        assert outbox(desk) == []
        history = [event.type for event in desk.history(ticket.id)]
        assert EventType.NOTE_ADDED in history

    def test_customer_without_email_is_reached_at_another_contact(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = world
        caller = Customer(id="c-90", name="Li Na", contacts={"phone": "+86 138 0000 0000"})
        ticket = open_case(desk, customer=caller, channel="phone")
        desk.reply(ticket.id, "We called you back.", by="agent_li")
        [row] = outbox(desk)
        assert row.notification.recipients == (
            Recipient(RecipientRole.CUSTOMER, "+86 138 0000 0000", "Li Na"),
        )

    def test_desk_that_does_not_notify_customers_enqueues_no_reply(self) -> None:
        desk, _, _ = make_desk(notify_customers=False)
        ticket = open_case(desk)
        desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")
        assert outbox(desk) == []

    def test_a_command_that_fails_leaves_no_outbox_row(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = world
        ticket = open_case(desk)
        before = snapshot(desk, ticket.id)

        def reply_then_fail(change: Change) -> None:
            change.message("Look in your spam folder.", "agent_li", Role.AGENT, public=True)
            assert change.notifications  # the reply notification was gathered ...

            def boom(uow: Any) -> None:  # ... and enqueued in the unit of work, then this fails
                raise RuntimeError("disk full")

            change.follow_ups.append(boom)

        with pytest.raises(RuntimeError, match="disk full"):
            desk.execute(ticket.id, reply_then_fail)
        assert snapshot(desk, ticket.id) == before
        assert outbox(desk) == []
        assert desk.deliver_pending().idle

    def test_each_notification_of_a_command_has_its_own_key(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, clock, _ = world
        ticket = open_case(desk)
        clock.advance(hours=5)  # first response (4 business hours) warned at 75%, 90%, breached
        desk.run_due()
        desk.reply(ticket.id, "Sorry for the wait.", by="agent_li")
        rows = outbox(desk)
        kinds = [row.notification.kind for row in rows]
        assert kinds == ["sla", "sla", "sla", "reply"]
        assert len({row.key for row in rows}) == len(rows)


class TestWhoIsTold:
    """The other commands and deadlines that write notifications, and to whom."""

    @staticmethod
    def told(desk: Desk) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
        return [
            (
                row.notification.kind,
                tuple((r.role.value, r.address) for r in row.notification.recipients),
            )
            for row in outbox(desk)
        ]

    def test_escalation_tells_its_targets(self) -> None:
        level = EscalationLevel(
            "unanswered", after=timedelta(hours=2), notify=("team_lead", "group"),
            reassign_group="tier-2",
        )  # fmt: skip
        desk, clock, _ = make_desk(escalation=[EscalationPolicy("stale", [level])], sla=[])
        ticket = open_case(desk)
        clock.advance(hours=2)
        desk.run_due()
        assert self.told(desk) == [
            ("escalation", (("team_lead", LEAD), ("group", "tier-2"))),
        ]
        [row] = outbox(desk)
        assert row.notification.subject.startswith(f"[#{ticket.number}] Escalated (unanswered)")
        assert row.notification.created_at == DEFAULT_START + timedelta(hours=2)

    def test_idle_chat_reminds_then_closes_with_the_customer_told(self) -> None:
        desk, clock, _ = make_desk(sla=[])
        ticket = open_case(desk, channel="chat")
        desk.reply(ticket.id, "Hi, how can I help?", by="agent_li")
        clock.advance(minutes=3)
        desk.run_due()
        clock.advance(minutes=2)
        desk.run_due()
        email = "wang.fang@example.com"
        assert self.told(desk) == [
            ("reply", (("customer", email),)),
            ("idle_chat", (("customer", email),)),
            ("idle_chat_closed", (("customer", email),)),
        ]
        assert desk.get_ticket(ticket.id).status == "closed"

    def test_dropped_call_tells_the_assignee_at_once_and_the_lead_when_overdue(self) -> None:
        desk, clock, _ = make_desk(sla=[])
        ticket = open_case(desk, channel="phone")
        desk.contact_dropped(ticket.id)
        assert self.told(desk) == [("callback", (("agent", "agent_li"),))]
        clock.advance(minutes=31)
        desk.run_due()
        assert self.told(desk)[1:] == [("escalation", (("team_lead", LEAD),))]


# -- delivery through the desk -------------------------------------------------------------
class TestDelivery:
    def test_each_role_goes_through_its_notifier_and_is_marked_delivered(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, clock, inboxes = world
        ticket = open_case(desk)
        clock.advance(hours=5)
        desk.run_due()  # SLA warnings to the assignee; the breach also to the team lead
        desk.reply(ticket.id, "Sorry for the wait, here is a new link.", by="agent_li")

        report = desk.deliver_pending()
        assert report.retried == report.dead == []
        assert sorted(report.delivered) == sorted(row.key for row in outbox(desk))
        for row in outbox(desk):
            assert row.status is OutboxStatus.DELIVERED
            assert row.delivered_at == clock.now()

        def seen(inbox: MemoryNotifier) -> list[tuple[str, tuple[Recipient, ...]]]:
            return [(d.notification.kind, d.recipients) for d in inbox.deliveries]

        customer = Recipient(RecipientRole.CUSTOMER, "wang.fang@example.com", "Wang Fang")
        agent = Recipient(RecipientRole.AGENT, "agent_li")
        lead = Recipient(RecipientRole.TEAM_LEAD, LEAD)
        assert seen(inboxes.customers) == [("reply", (customer,))]
        assert seen(inboxes.agents) == [("sla", (agent,))] * 3
        assert seen(inboxes.leads) == [("sla", (lead,))]  # only the breach
        breach = inboxes.leads.deliveries[0].notification
        assert breach.recipients == (agent, lead)
        assert "SLA breached: first_response" in breach.subject
        assert desk.deliver_pending().idle  # nothing is delivered twice

    def test_failing_notifier_backs_off_then_dead_letter_then_requeue(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, clock, inboxes = world
        ticket = open_case(desk)
        desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")
        [row] = outbox(desk)
        key = row.key
        max_attempts = desk.dispatcher.max_attempts
        assert max_attempts == 6  # the documented default: dead after the 6th failure
        inboxes.customers.fail_next(max_attempts, response="451 mailbox busy")

        for attempt in range(1, max_attempts):
            report = desk.deliver_pending()
            assert report.retried == [key], attempt
            pending = entry(desk, key)
            assert pending.status is OutboxStatus.PENDING
            assert pending.attempts == attempt
            assert pending.next_attempt_at is not None
            delay = pending.next_attempt_at - clock.now()
            backoff = timedelta(seconds=30) * 2 ** (attempt - 1)  # 30 s, 1, 2, 4, 8 min
            assert backoff * 0.8 <= delay <= backoff * 1.2  # ± 20 % jitter
            assert pending.last_error is not None
            assert "451 mailbox busy" in pending.last_error
            clock.set(pending.next_attempt_at - timedelta(seconds=1))
            assert desk.deliver_pending().idle, "retried before its backoff ran out"
            clock.set(pending.next_attempt_at)

        report = desk.deliver_pending()
        assert report.dead == [key]
        [dead] = desk.dead_letters()
        assert dead.key == key
        assert dead.status is OutboxStatus.DEAD
        assert dead.attempts == max_attempts
        assert dead.last_error is not None
        assert dead.last_error.startswith(
            f"gave up after {max_attempts} attempts: customer via MemoryNotifier"
        )
        clock.advance(days=1)
        assert desk.deliver_pending().idle  # dead letters are not retried by themselves

        requeued = desk.requeue(key)
        assert requeued.status is OutboxStatus.PENDING
        assert requeued.attempts == 0
        assert requeued.next_attempt_at == clock.now()
        assert desk.deliver_pending().delivered == [key]
        assert desk.dead_letters() == []
        assert entry(desk, key).status is OutboxStatus.DELIVERED

        attempts = inboxes.customers.failures + inboxes.customers.deliveries
        assert len(attempts) == max_attempts + 1
        assert {a.notification.idempotency_key for a in attempts} == {key}
        assert all(a.notification == attempts[0].notification for a in attempts)
        with pytest.raises(ValidationError, match="dead letter"):
            desk.requeue(key)  # delivered now

    def test_permanent_failure_is_a_dead_letter_at_once(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, inboxes = world
        ticket = open_case(desk)
        desk.reply(ticket.id, "Done.", by="agent_li")
        inboxes.customers.fail_next(1, permanent=True, response="550 no such user")
        report = desk.deliver_pending()
        [dead] = desk.dead_letters()
        assert report.dead == [dead.key]
        assert dead.attempts == 1
        assert dead.last_error is not None
        assert "permanent failure on attempt 1" in dead.last_error
        assert "550 no such user" in dead.last_error

    def test_one_failing_role_retries_the_notification_with_the_same_key(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, clock, inboxes = world
        open_case(desk)
        clock.advance(hours=5)
        desk.run_due()
        inboxes.leads.fail_next(1)
        report = desk.deliver_pending()
        [breach_key] = report.retried  # the breach: the only one for the team lead too
        [failed] = inboxes.leads.failures
        assert failed.notification.idempotency_key == breach_key
        clock.advance(minutes=1)
        assert desk.deliver_pending().delivered == [breach_key]
        to_agent = [
            d.notification.idempotency_key
            for d in inboxes.agents.deliveries
            if d.notification.idempotency_key == breach_key
        ]
        assert to_agent == [breach_key, breach_key]  # the agent got it again, same key
        assert inboxes.leads.keys() == [breach_key]

    def test_roles_sharing_a_notifier_get_one_delivery_per_key(self) -> None:
        # A receiver drops repeated keys (at least once); two deliveries of one key to the same
        # notifier, one per role, would make it drop the team lead's as a repeat.
        staff = MemoryNotifier()
        desk, clock, _ = make_desk(notifiers={"agent": staff, "team_lead": staff})
        open_case(desk)
        clock.advance(hours=5)
        desk.run_due()
        report = desk.deliver_pending()
        assert report.retried == report.dead == []
        assert len(staff.keys()) == len(set(staff.keys())) == 3
        [breach] = [d for d in staff.deliveries if "breached" in d.notification.subject]
        assert breach.recipients == (
            Recipient(RecipientRole.AGENT, "agent_li"),
            Recipient(RecipientRole.TEAM_LEAD, LEAD),
        )

    def test_role_without_notifier_is_a_dead_letter_and_nothing_is_sent(self) -> None:
        customers = MemoryNotifier()
        desk, clock, _ = make_desk(notifiers={"customer": customers})
        open_case(desk)
        clock.advance(hours=5)
        desk.run_due()
        report = desk.deliver_pending()
        assert report.delivered == []
        assert len(report.dead) == 3
        for dead in desk.dead_letters():
            assert dead.last_error is not None
            assert "no notifier registered for role 'agent'" in dead.last_error
        assert customers.deliveries == []


# -- real channels: e-mail to the customer, webhook to the team lead ------------------------
class Mailbox:
    """An aiosmtpd handler that answers the first DATA commands from a script and keeps every
    message it was offered, accepted or not."""

    def __init__(self) -> None:
        self.offered: list[EmailMessage] = []
        self.accepted: list[EmailMessage] = []
        self.answers: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.offered.append(message)
            if self.answers:
                return self.answers.pop(0)
            self.accepted.append(message)
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=5)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


class Hook:
    """A webhook endpoint that checks signatures and answers 503 to the first ``fail`` posts."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(fail=2)

    class Handler(BaseHTTPRequestHandler):
        timeout = 5

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            valid = verify_signature(
                SECRET,
                self.headers.get("X-Supportflow-Timestamp", ""),
                raw,
                self.headers.get("X-Supportflow-Signature", ""),
                now=time.time(),
            )
            with state.lock:
                status = 401 if not valid else 503 if state.fail > 0 else 200
                if valid and state.fail > 0:
                    state.fail -= 1
                state.requests.append(
                    {
                        "key": self.headers.get("Idempotency-Key"),
                        "valid": valid,
                        "status": status,
                        "json": json.loads(raw),
                    }
                )
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/desk"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class TestChannels:
    def test_reply_reaches_the_customer_by_mail_with_its_key_on_every_attempt(
        self, mailbox: tuple[Mailbox, int]
    ) -> None:
        handler, port = mailbox
        smtp = SmtpNotifier(
            "127.0.0.1", port, sender="Help Desk <help@example.com>", timeout=5,
            domain="desk.example.com",
        )  # fmt: skip
        desk, clock, _ = make_desk(notifiers={"customer": smtp})
        ticket = open_case(desk)
        desk.reply(ticket.id, "您好，请查看垃圾邮件文件夹。", by="agent_li")
        [row] = outbox(desk)
        handler.answers = ["451 4.3.0 Try again later"]

        assert desk.deliver_pending().retried == [row.key]
        clock.advance(minutes=1)
        assert desk.deliver_pending().delivered == [row.key]

        first, second = handler.offered
        [mail] = handler.accepted
        assert mail["To"].addresses[0].addr_spec == "wang.fang@example.com"
        assert mail["Subject"] == f"Re: [#{ticket.number}] Password reset mail never arrives"
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        assert body.get_content().strip() == "您好，请查看垃圾邮件文件夹。"
        # One message to the receiving side: same Message-ID, same key, one thread per ticket.
        assert first["Message-ID"] == second["Message-ID"]
        assert first["References"] == f"<ticket-{ticket.id}@desk.example.com>"
        # (A key too long for one header line is folded; the parser keeps the fold's space.)
        for message in handler.offered:
            assert str(message["X-Supportflow-Idempotency-Key"]).strip() == row.key

    def test_early_warning_reaches_the_team_lead_webhook_with_one_key(self, hook: Hook) -> None:
        notifier = WebhookNotifier(hook.url, SECRET, timeout=5)
        desk, clock, _ = make_desk(notifiers={"team_lead": notifier})
        ticket = open_case(desk, subject="电视台记者问我退款的事")
        [row] = outbox(desk)

        for _ in range(3):
            desk.deliver_pending()
            pending = entry(desk, row.key)
            if pending.status is OutboxStatus.DELIVERED:
                break
            assert pending.next_attempt_at is not None
            clock.set(pending.next_attempt_at)

        assert entry(desk, row.key).status is OutboxStatus.DELIVERED
        assert [r["status"] for r in hook.requests] == [503, 503, 200]
        assert {r["key"] for r in hook.requests} == {row.key}
        assert all(r["valid"] for r in hook.requests)
        payload = hook.requests[-1]["json"]
        assert payload["kind"] == "early_warning"
        assert payload["ticket_id"] == ticket.id
        assert payload["recipients"] == [{"role": "team_lead", "address": LEAD, "name": ""}]
        assert sorted(payload["data"]["words"]) == ["电视台", "记者"]


# -- the reply guard through the desk ------------------------------------------------------
def _case_with_note(desk: Desk) -> Ticket:
    ticket = open_case(desk)
    desk.add_note(ticket.id, NOTE, by="agent_li")
    return desk.get_ticket(ticket.id)


BLOCKED = {
    "internal link": (
        "Please follow https://wiki.corp.local/mail/reset-howto to reset it.",
        "link",
        "https://wiki.corp.local/mail/reset-howto",
    ),
    "pasted note": (
        "Thanks for waiting. The mail relay mx3 dropping resets; fix ships with the 4.2 release.",
        "internal_note",
        "The mail relay mx3 dropping resets; fix ships with the 4.2 release.",
    ),
    "forbidden term": (
        "This will be solved by project falcon next week.",
        "forbidden_term",
        "project falcon",
    ),
}


class TestReplyGuard:
    @pytest.mark.parametrize(("body", "kind", "text"), BLOCKED.values(), ids=list(BLOCKED))
    def test_blocked_reply_lists_the_finding_and_stores_nothing(
        self, guarded: tuple[Desk, ManualClock, Inboxes], body: str, kind: str, text: str
    ) -> None:
        desk, _, _ = guarded
        ticket = _case_with_note(desk)
        before = snapshot(desk, ticket.id)

        with pytest.raises(ReplyBlocked) as blocked:
            desk.reply(ticket.id, body, by="agent_li")

        [finding] = blocked.value.findings
        assert blocked.value.ticket_id == ticket.id
        assert finding.kind == kind
        assert finding.text == text
        assert body[finding.start : finding.end] == text
        assert finding.start == body.index(text)
        assert f"at {finding.start}-{finding.end}" in str(blocked.value)
        assert snapshot(desk, ticket.id) == before
        assert desk.deliver_pending().idle

    def test_every_finding_is_listed_in_body_order(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = guarded
        ticket = _case_with_note(desk)
        body = (
            "Project Falcon will help. See https://wiki.corp.local/x and our help at "
            "https://help.example.com/reset. Root cause is the mail relay mx3 dropping resets."
        )
        with pytest.raises(ReplyBlocked) as blocked:
            desk.reply(ticket.id, body, by="agent_li")
        findings = blocked.value.findings
        assert [f.kind for f in findings] == ["forbidden_term", "link", "internal_note"]
        assert [f.start for f in findings] == sorted(f.start for f in findings)
        for finding in findings:
            assert body[finding.start : finding.end] == finding.text
            assert str(finding) in str(blocked.value)

    def test_allowed_domain_and_plain_text_pass(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = guarded
        ticket = _case_with_note(desk)
        body = "Please follow https://help.example.com/mail/reset (or docs.help.example.com)."
        replied = desk.reply(ticket.id, body, by="agent_li")
        assert replied.messages[-1].body == body
        types = [event.type for event in desk.history(ticket.id)]
        assert EventType.REPLY_GUARD_OVERRIDDEN not in types
        assert [row.notification.body for row in outbox(desk)] == [body]

    def test_team_lead_override_is_stored_and_recorded(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, inboxes = guarded
        ticket = _case_with_note(desk)
        body = "Our engineers track it at https://wiki.corp.local/mail/reset-howto."
        replied = desk.reply(ticket.id, body, by=LEAD, override_role="team_lead")

        assert replied.version == ticket.version + 1
        message = replied.messages[-1]
        assert (message.body, message.author, message.public) == (body, LEAD, True)
        history = desk.history(ticket.id)
        [override] = [e for e in history if e.type == EventType.REPLY_GUARD_OVERRIDDEN]
        assert override.actor == LEAD
        assert override.data["by"] == LEAD
        assert override.data["role"] == "team_lead"
        [finding] = override.data["findings"]
        start = body.index("https://wiki.corp.local")
        assert finding.startswith(f"link 'https://wiki.corp.local/mail/reset-howto' at {start}-")
        added = next(e for e in history if e.data.get("message_id") == message.id)
        assert override.sequence < added.sequence  # recorded before the message it let through
        # The overridden reply goes to the customer like any other.
        desk.deliver_pending()
        assert [d.notification.body for d in inboxes.customers.deliveries] == [body]

    @pytest.mark.parametrize("role", ["agent", "customer", "supervisor"])
    def test_override_by_a_role_not_allowed_is_blocked(
        self, guarded: tuple[Desk, ManualClock, Inboxes], role: str
    ) -> None:
        desk, _, _ = guarded
        ticket = _case_with_note(desk)
        before = snapshot(desk, ticket.id)
        with pytest.raises(ReplyBlocked) as blocked:
            desk.reply(
                ticket.id, "See https://wiki.corp.local/x", by="agent_li", override_role=role
            )
        assert [f.kind for f in blocked.value.findings] == ["link"]
        assert snapshot(desk, ticket.id) == before

    def test_an_empty_override_role_is_no_override(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = guarded
        ticket = _case_with_note(desk)
        replied = desk.reply(ticket.id, "Fixed, thanks.", by="agent_li", override_role="")
        assert replied.messages[-1].body == "Fixed, thanks."
        with pytest.raises(ReplyBlocked):
            desk.reply(ticket.id, "See https://wiki.corp.local/x", by="agent_li", override_role="")

    def test_customer_messages_are_never_blocked(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = guarded
        ticket = _case_with_note(desk)
        body = f"Is this Project Falcon? https://wiki.corp.local/leak says: {NOTE}"
        replied = desk.reply(ticket.id, body, by=WANG.id, role="customer")
        assert replied.messages[-1].body == body
        types = [event.type for event in desk.history(ticket.id)]
        assert EventType.REPLY_GUARD_OVERRIDDEN not in types

    def test_internal_notes_are_not_checked(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = guarded
        ticket = open_case(desk)
        note = "Project Falcon runbook: https://wiki.corp.local/falcon"
        noted = desk.add_note(ticket.id, note, by="agent_li")
        assert noted.messages[-1].body == note
        assert outbox(desk) == []


# -- reply scripts -------------------------------------------------------------------------
class TestReplyScripts:
    def test_chinese_customer_gets_a_chinese_reply(
        self, guarded: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, inboxes = guarded
        wang = Customer(
            id="c-88", name="王芳", contacts={"email": "wang@example.cn"}, language="zh"
        )
        ticket = open_case(desk, subject="退款没有到账", customer=wang)
        body = ReplyScripts().compose(
            desk.get_ticket(ticket.id), ["greeting", "holding", "closing"], agent_name="李雷"
        )
        assert body.startswith("王芳，您好！")
        assert f"工单 #{ticket.number}（退款没有到账）" in body
        assert body.endswith("祝好！\n李雷")

        desk.reply(ticket.id, body, by="agent_li")  # the guard lets standard wording through
        desk.deliver_pending()
        [delivery] = inboxes.customers.deliveries
        assert delivery.notification.body == body
        assert delivery.recipients == (
            Recipient(RecipientRole.CUSTOMER, "wang@example.cn", "王芳"),
        )

    def test_missing_field_is_a_validation_error_at_render_time(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, _, _ = world
        nameless = Customer(id="c-89", contacts={"email": "x@example.cn"}, language="zh")
        ticket = desk.get_ticket(open_case(desk, subject="退款", customer=nameless).id)
        scripts = ReplyScripts()

        with pytest.raises(MissingTemplateField) as missing:
            scripts.render("greeting", ticket)
        assert isinstance(missing.value, ValidationError)
        assert missing.value.field == "customer_name"
        assert (missing.value.template, missing.value.language) == ("greeting", "zh")
        with pytest.raises(ValidationError, match=r"\{agent_name\} in template 'closing'"):
            scripts.compose(ticket, ["holding", "closing"])
        assert scripts.render("holding", ticket).startswith("抱歉让您久等了")
        assert outbox(desk) == []


# -- early warning -------------------------------------------------------------------------
class TestEarlyWarning:
    @pytest.mark.parametrize(
        ("subject", "word"),
        [("记者明天来采访退款的事", "记者"), ("My lawyer will contact you", "lawyer")],
    )
    def test_sensitive_subject_warns_the_team_lead_at_once(
        self, world: tuple[Desk, ManualClock, Inboxes], subject: str, word: str
    ) -> None:
        desk, _, inboxes = world
        ticket = open_case(desk, subject=subject)

        [row] = outbox(desk)
        note = row.notification
        assert note.kind == "early_warning"
        assert note.recipients == (Recipient(RecipientRole.TEAM_LEAD, LEAD),)
        assert note.subject == f"[#{ticket.number}] Early warning: {word}"
        assert note.data == {"words": [word]}
        [warning] = [e for e in desk.history(ticket.id) if e.type == EventType.EARLY_WARNING]
        assert warning.data == {"words": [word]}

        assert desk.deliver_pending().delivered == [row.key]  # no clock advance needed
        assert inboxes.leads.keys() == [row.key]
        assert inboxes.customers.deliveries == inboxes.agents.deliveries == []

    def test_a_word_warns_once_and_a_customer_message_can_raise_it(
        self, world: tuple[Desk, ManualClock, Inboxes]
    ) -> None:
        desk, clock, _ = world
        ticket = open_case(desk, subject="Refund missing")
        assert outbox(desk) == []
        desk.reply(ticket.id, "No need for a lawyer, we will fix it.", by="agent_li")
        assert [row.notification.kind for row in outbox(desk)] == ["reply"]  # agents may say it
        clock.advance(minutes=5)
        desk.reply(ticket.id, "My lawyer disagrees.", by=WANG.id, role="customer")
        clock.advance(minutes=5)
        desk.reply(ticket.id, "Again: my lawyer disagrees.", by=WANG.id, role="customer")
        kinds = [row.notification.kind for row in outbox(desk)]
        assert kinds == ["reply", "early_warning"]
