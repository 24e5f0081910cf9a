"""Delivery channels against real servers on loopback: webhook (http.server) and SMTP (aiosmtpd)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import logging
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from supportflow.clock import ManualClock
from supportflow.errors import ValidationError
from supportflow.model import Notification, Recipient, RecipientRole
from supportflow.notify import (
    DeliveryError,
    Dispatcher,
    LogNotifier,
    MemoryNotifier,
    SmtpNotifier,
    WebhookNotifier,
    notification_payload,
    sign,
    verify_signature,
)
from supportflow.notify.smtp import message_id, thread_id
from supportflow.storage.memory import MemoryStore
from supportflow.testing.notifier_contract import NotifierContract

SECRET = "whsec-test-1"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
TEST_TIMEOUT = 30  # seconds; no server test may hang the suite


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"test took longer than {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _note(
    key: str = "n-1",
    *,
    ticket_id: str | None = "t-7",
    subject: str = "Ticket #7 updated",
    body: str = "We replied to your ticket.",
    recipients: Sequence[Recipient] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Notification:
    return Notification(
        idempotency_key=key,
        kind="ticket_updated",
        recipients=tuple(
            recipients
            if recipients is not None
            else (Recipient(RecipientRole.CUSTOMER, "wang@example.com", "王芳"),)
        ),
        subject=subject,
        body=body,
        created_at=T0,
        ticket_id=ticket_id,
        data=data or {"priority": "high"},
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- webhook receiver ----------------------------------------------------------------------
class Receiver:
    """A webhook endpoint: records requests, verifies signatures, answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, str]] = []  # answers before the default 200
        self.delay = 0.0
        self.now: Callable[[], float] = time.time
        self.lock = threading.Lock()
        self.url = ""

    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["json"] for r in self.requests if r["valid"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # socket timeout for a stuck client

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            valid = verify_signature(
                SECRET,
                self.headers.get("X-Supportflow-Timestamp", ""),
                raw,
                self.headers.get("X-Supportflow-Signature", ""),
                now=state.now(),
            )
            with state.lock:
                state.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "raw": raw,
                        "json": json.loads(raw.decode("utf-8")),
                        "valid": valid,
                    }
                )
                status, answer = state.script.pop(0) if state.script else (200, "ok")
            if state.delay:
                time.sleep(state.delay)
            if not valid:
                status, answer = 401, "bad signature"
            payload = answer.encode("utf-8")
            # A client that timed out has gone away; that is the point of the timeout test.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        def do_GET(self) -> None:  # a followed redirect would arrive here
            with state.lock:
                state.requests.append({"path": self.path, "method": "GET", "valid": False})
            self.send_response(200)
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


def _webhook(receiver: Receiver, **kwargs: Any) -> WebhookNotifier:
    kwargs.setdefault("timeout", 5.0)
    return WebhookNotifier(receiver.url, SECRET, **kwargs)


class TestWebhook:
    def test_posts_signed_json_with_headers(self, receiver: Receiver) -> None:
        notification = _note(subject="退款进度", body="您好 <b>王芳</b>")
        _webhook(receiver, headers={"X-Tenant": "acme"}).deliver(
            notification, notification.recipients
        )
        [request] = receiver.requests
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert request["valid"] is True
        assert request["path"] == "/hooks/desk"
        assert headers["content-type"].startswith("application/json")
        assert headers["idempotency-key"] == "n-1"
        assert headers["x-tenant"] == "acme"
        timestamp = headers["x-supportflow-timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        assert headers["x-supportflow-signature"] == sign(SECRET, timestamp, request["raw"])
        assert request["json"] == {
            "idempotency_key": "n-1",
            "kind": "ticket_updated",
            "ticket_id": "t-7",
            "subject": "退款进度",
            "body": "您好 <b>王芳</b>",
            "recipients": [{"role": "customer", "address": "wang@example.com", "name": "王芳"}],
            "data": {"priority": "high"},
            "created_at": "2026-01-05T09:00:00+00:00",
        }

    def test_signature_binds_body_timestamp_and_secret(self, receiver: Receiver) -> None:
        clock = ManualClock(T0)
        receiver.now = lambda: clock.now().timestamp()
        _webhook(receiver, clock=clock).deliver(_note(), ())
        [request] = receiver.requests
        stamp = request["headers"]["X-Supportflow-Timestamp"]
        signature = request["headers"]["X-Supportflow-Signature"]
        raw = request["raw"]
        assert stamp == str(int(T0.timestamp()))
        now = clock.now()
        assert verify_signature(SECRET, stamp, raw, signature, now=now)
        assert not verify_signature("other-secret", stamp, raw, signature, now=now)
        assert not verify_signature(SECRET, stamp, raw + b" ", signature, now=now)
        assert not verify_signature(SECRET, int(stamp) + 1, raw, signature, now=now)
        assert not verify_signature(SECRET, "not-a-number", raw, signature, now=now)
        assert not verify_signature(SECRET, stamp, raw, "sha256=" + "0" * 64, now=now)

    def test_stale_or_future_timestamps_are_replays(self) -> None:
        body = b'{"idempotency_key":"k"}'
        stamp = int(T0.timestamp())
        signature = sign(SECRET, stamp, body)
        assert verify_signature(SECRET, stamp, body, signature, now=T0 + timedelta(seconds=300))
        assert not verify_signature(SECRET, stamp, body, signature, now=stamp + 301)
        assert not verify_signature(SECRET, stamp, body, signature, now=stamp - 301)
        assert verify_signature(
            SECRET, stamp, body, signature, now=stamp + 3000, tolerance=timedelta(hours=1)
        )

    def test_receiver_rejects_a_request_signed_long_ago(self, receiver: Receiver) -> None:
        old = ManualClock(T0 - timedelta(hours=2))
        receiver.now = lambda: T0.timestamp()
        with pytest.raises(DeliveryError) as caught:
            _webhook(receiver, clock=old).deliver(_note(), ())
        assert caught.value.permanent is True
        assert caught.value.response is not None
        assert "401" in caught.value.response

    def test_400_is_permanent_with_the_response(self, receiver: Receiver) -> None:
        receiver.script = [(400, '{"error": "unknown ticket t-7"}')]
        with pytest.raises(DeliveryError) as caught:
            _webhook(receiver).deliver(_note(), ())
        assert caught.value.permanent is True
        assert caught.value.response == '400 Bad Request: {"error": "unknown ticket t-7"}'

    @pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
    def test_5xx_and_throttling_are_transient(self, receiver: Receiver, status: int) -> None:
        receiver.script = [(status, "busy")]
        with pytest.raises(DeliveryError) as caught:
            _webhook(receiver).deliver(_note(), ())
        assert caught.value.permanent is False
        assert caught.value.response is not None
        assert caught.value.response.startswith(str(status))

    def test_redirects_are_not_followed(self, receiver: Receiver) -> None:
        receiver.script = [(302, "moved")]
        with pytest.raises(DeliveryError) as caught:
            _webhook(receiver).deliver(_note(), ())
        assert caught.value.permanent is True
        assert "/elsewhere" in str(caught.value)
        assert [r.get("method", "POST") for r in receiver.requests] == ["POST"]

    def test_timeout_is_transient(self, receiver: Receiver) -> None:
        receiver.delay = 1.0
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            _webhook(receiver, timeout=0.2).deliver(_note(), ())
        assert caught.value.permanent is False
        assert time.monotonic() - started < 1.0

    def test_connection_refused_is_transient(self) -> None:
        notifier = WebhookNotifier(f"http://127.0.0.1:{_free_port()}/x", SECRET, timeout=2)
        with pytest.raises(DeliveryError) as caught:
            notifier.deliver(_note(), ())
        assert caught.value.permanent is False
        assert "unreachable" in str(caught.value)

    def test_unserialisable_data_is_permanent(self, receiver: Receiver) -> None:
        with pytest.raises(DeliveryError) as caught:
            _webhook(receiver).deliver(_note(data={"blob": object()}), ())
        assert caught.value.permanent is True
        assert receiver.requests == []

    def test_payload_serialises_datetimes_and_sets(self) -> None:
        payload = notification_payload(_note(data={"due": T0, "tags": frozenset({"vip"})}))
        body = json.dumps(payload, default=str)
        assert "2026-01-05" in body

    @pytest.mark.parametrize(
        "url", ["ftp://example.com/x", "file:///etc/passwd", "example.com/hook", "http:///x"]
    )
    def test_only_http_urls(self, url: str) -> None:
        with pytest.raises(ValidationError):
            WebhookNotifier(url, SECRET)

    def test_secret_is_required_and_never_shown(self, receiver: Receiver) -> None:
        with pytest.raises(ValidationError):
            WebhookNotifier(receiver.url, "")
        assert SECRET not in repr(_webhook(receiver))

    def test_dispatcher_retries_after_two_503s(self, receiver: Receiver) -> None:
        clock = ManualClock(T0)
        receiver.now = lambda: clock.now().timestamp()
        receiver.script = [(503, "warming up"), (503, "still warming up")]
        store = MemoryStore()
        with store.transaction() as uow:
            uow.enqueue([_note("n-503")])
        dispatcher = Dispatcher(
            store, {"customer": _webhook(receiver, clock=clock)}, clock=clock, jitter=0
        )

        assert dispatcher.deliver_pending().retried == ["n-503"]
        clock.advance(seconds=30)
        assert dispatcher.deliver_pending().retried == ["n-503"]
        clock.advance(seconds=59)
        assert dispatcher.deliver_pending().attempts == 0  # not due yet
        clock.advance(seconds=1)
        assert dispatcher.deliver_pending().delivered == ["n-503"]

        assert len(receiver.requests) == 3
        assert all(r["valid"] for r in receiver.requests)
        assert {r["headers"]["Idempotency-Key"] for r in receiver.requests} == {"n-503"}
        with store.transaction() as uow:
            entry = uow.outbox_entry("n-503")
        assert entry is not None
        assert entry.delivered_at == clock.now()

    def test_dispatcher_parks_a_400_as_dead_at_once(self, receiver: Receiver) -> None:
        receiver.script = [(400, "no such hook")]
        store, clock = MemoryStore(), ManualClock(T0)
        receiver.now = lambda: clock.now().timestamp()
        with store.transaction() as uow:
            uow.enqueue([_note("n-400")])
        dispatcher = Dispatcher(store, {"customer": _webhook(receiver, clock=clock)}, clock=clock)
        assert dispatcher.deliver_pending().dead == ["n-400"]
        [dead] = dispatcher.dead_letters()
        assert dead.last_error is not None
        assert "400 Bad Request: no such hook" in dead.last_error


# -- SMTP server -----------------------------------------------------------------------------
class Mailbox:
    """An aiosmtpd handler: keeps messages, can answer 451 or 5xx to the first DATA commands."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.data_answers: list[str] = []
        self.refuse_rcpt: dict[str, str] = {}
        self.data_attempts = 0
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_attempts += 1
            if self.data_answers:
                return self.data_answers.pop(0)
            # SMTP carries CRLF line ends; parse with the local convention.
            content = envelope.content.replace(b"\r\n", b"\n")
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted"

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            messages = list(zip(self.messages, self.envelopes, strict=True))
        result = []
        for message, (_, rcpt_tos) in messages:
            text = message.get_body(preferencelist=("plain",))
            assert text is not None
            result.append(
                {
                    "idempotency_key": str(message["X-Supportflow-Idempotency-Key"]),
                    "subject": str(message["Subject"]),
                    "body": text.get_content(),
                    "recipients": rcpt_tos,
                }
            )
        return result


@contextlib.contextmanager
def _smtp_server(mailbox: Mailbox, **kwargs: Any) -> Iterator[int]:
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=5, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_port(mailbox: Mailbox) -> Iterator[int]:
    with _smtp_server(mailbox) as port:
        yield port


def _smtp(port: int, **kwargs: Any) -> SmtpNotifier:
    kwargs.setdefault("sender", "Acme Support <support@acme.example>")
    kwargs.setdefault("domain", "desk.acme.example")
    kwargs.setdefault("timeout", 5.0)
    return SmtpNotifier("127.0.0.1", port, **kwargs)


class TestSmtp:
    def test_headers_parts_and_threading(self, mailbox: Mailbox, smtp_port: int) -> None:
        recipients = (
            Recipient("customer", "wang@example.com", "王芳"),
            Recipient("customer", "li@example.com"),
        )
        body = 'Hello <script>alert("x")</script> & welcome.\n\nSecond paragraph\nline two'
        _smtp(smtp_port).deliver(
            _note("t-7.reply.1", subject="工单 #7：已回复", body=body), recipients
        )
        [message] = mailbox.messages
        [(mail_from, rcpt_tos)] = mailbox.envelopes
        assert mail_from == "support@acme.example"
        assert rcpt_tos == ["wang@example.com", "li@example.com"]
        assert str(message["From"]) == "Acme Support <support@acme.example>"
        assert [a.addr_spec for a in message["To"].addresses] == rcpt_tos
        assert message["To"].addresses[0].display_name == "王芳"
        assert str(message["Subject"]) == "工单 #7：已回复"
        assert message["Message-ID"] == "<t-7.reply.1@desk.acme.example>"
        assert message["In-Reply-To"] == "<ticket-t-7@desk.acme.example>"
        assert message["References"] == "<ticket-t-7@desk.acme.example>"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["X-Supportflow-Idempotency-Key"] == "t-7.reply.1"
        assert message["Date"].datetime == T0

        assert message.get_content_type() == "multipart/alternative"
        plain = message.get_body(preferencelist=("plain",))
        rich = message.get_body(preferencelist=("html",))
        assert plain is not None
        assert rich is not None
        assert plain.get_content().rstrip("\n") == body
        html = rich.get_content()
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; welcome." in html
        assert "<script>" not in html
        assert "<p>Second paragraph<br>\nline two</p>" in html

    def test_all_mails_of_a_ticket_share_the_thread_root(
        self, mailbox: Mailbox, smtp_port: int
    ) -> None:
        notifier = _smtp(smtp_port)
        for key in ("t-7.created", "t-7.reply.1", "t-7.resolved"):
            notifier.deliver(_note(key), _note().recipients)
        notifier.deliver(_note("t-8.created", ticket_id="t-8"), _note().recipients)
        roots = [m["References"] for m in mailbox.messages]
        assert roots[:3] == ["<ticket-t-7@desk.acme.example>"] * 3
        assert roots[3] == "<ticket-t-8@desk.acme.example>"
        assert len({m["Message-ID"] for m in mailbox.messages}) == 4
        assert thread_id("t-7", "desk.acme.example") == roots[0]

    def test_message_id_is_stable_and_safe_for_any_key(self) -> None:
        odd = "t 7/reply:1 <x>"
        assert message_id(odd, "d.example") == message_id(odd, "d.example")
        assert message_id(odd, "d.example") != message_id("t 7/reply:1 <y>", "d.example")
        left = message_id(odd, "d.example")[1:].split("@")[0]
        assert " " not in left
        assert "<" not in left

    def test_no_ticket_no_threading_headers(self, mailbox: Mailbox, smtp_port: int) -> None:
        _smtp(smtp_port).deliver(_note("digest-1", ticket_id=None), _note().recipients)
        [message] = mailbox.messages
        assert message["In-Reply-To"] is None
        assert message["References"] is None

    def test_451_is_transient_and_dispatcher_retries(
        self, mailbox: Mailbox, smtp_port: int
    ) -> None:
        mailbox.data_answers = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
        store, clock = MemoryStore(), ManualClock(T0)
        with store.transaction() as uow:
            uow.enqueue([_note("t-7.mail")])
        dispatcher = Dispatcher(store, {"customer": _smtp(smtp_port)}, clock=clock, jitter=0)
        first = dispatcher.deliver_pending()
        assert first.retried == ["t-7.mail"]
        with store.transaction() as uow:
            entry = uow.outbox_entry("t-7.mail")
        assert entry is not None
        assert entry.last_error is not None
        assert "451" in entry.last_error
        clock.advance(seconds=30)
        assert dispatcher.deliver_pending().retried == ["t-7.mail"]
        clock.advance(seconds=60)
        assert dispatcher.deliver_pending().delivered == ["t-7.mail"]
        assert mailbox.data_attempts == 3
        [message] = mailbox.messages
        assert message["Message-ID"] == "<t-7.mail@desk.acme.example>"

    def test_5xx_on_data_is_permanent(self, mailbox: Mailbox, smtp_port: int) -> None:
        mailbox.data_answers = ["554 5.7.1 Message rejected as spam"]
        with pytest.raises(DeliveryError) as caught:
            _smtp(smtp_port).deliver(_note(), _note().recipients)
        assert caught.value.permanent is True
        assert caught.value.response == "554 5.7.1 Message rejected as spam"

    def test_refused_recipients(self, mailbox: Mailbox, smtp_port: int) -> None:
        mailbox.refuse_rcpt = {
            "gone@example.com": "550 5.1.1 No such user",
            "full@example.com": "452 4.2.2 Mailbox full",
        }
        notifier = _smtp(smtp_port)
        with pytest.raises(DeliveryError) as caught:
            notifier.deliver(_note(), [Recipient("customer", "gone@example.com")])
        assert caught.value.permanent is True
        assert "No such user" in (caught.value.response or "")

        mixed = [Recipient("customer", "ok@example.com"), Recipient("customer", "full@example.com")]
        with pytest.raises(DeliveryError) as caught:
            notifier.deliver(_note(), mixed)
        assert caught.value.permanent is False  # the 4xx one may succeed later
        assert [env[1] for env in mailbox.envelopes] == [["ok@example.com"]]

    def test_connection_refused_is_transient(self) -> None:
        with pytest.raises(DeliveryError) as caught:
            _smtp(_free_port(), timeout=2).deliver(_note(), _note().recipients)
        assert caught.value.permanent is False

    def test_starttls_missing_on_server_is_permanent(self, smtp_port: int) -> None:
        with pytest.raises(DeliveryError) as caught:
            _smtp(smtp_port, starttls=True).deliver(_note(), _note().recipients)
        assert caught.value.permanent is True
        assert "STARTTLS" in str(caught.value)

    def test_login(self, mailbox: Mailbox) -> None:
        seen: list[tuple[str, str]] = []

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            login = auth_data.login.decode()
            seen.append((mechanism, login))
            return AuthResult(success=auth_data.password == b"pw-1", handled=False)

        with _smtp_server(mailbox, authenticator=authenticator, auth_require_tls=False) as port:
            _smtp(port, username="desk", password="pw-1").deliver(_note(), _note().recipients)
            with pytest.raises(DeliveryError) as caught:
                _smtp(port, username="desk", password="wrong").deliver(_note(), _note().recipients)
        assert len(mailbox.messages) == 1
        assert seen[0][1] == "desk"
        assert caught.value.permanent is True  # 535: fix the credentials, do not retry

    def test_non_email_roles_and_bad_addresses_are_permanent(self, smtp_port: int) -> None:
        notifier = _smtp(smtp_port)
        with pytest.raises(DeliveryError, match="on_call") as caught:
            notifier.deliver(_note(), [Recipient("on_call", "+86 138 0000 0000")])
        assert caught.value.permanent is True
        with pytest.raises(DeliveryError) as caught:
            notifier.deliver(_note(), [Recipient("agent", "not an address")])
        assert caught.value.permanent is True
        with pytest.raises(DeliveryError):
            notifier.deliver(_note(), [Recipient("agent", "a@b.example\r\nBcc: x@evil.example")])

    def test_subject_newlines_cannot_inject_headers(self, mailbox: Mailbox, smtp_port: int) -> None:
        _smtp(smtp_port).deliver(_note(subject="Hi\r\nBcc: x@evil.example"), _note().recipients)
        [message] = mailbox.messages
        assert message["Bcc"] is None
        assert str(message["Subject"]) == "Hi Bcc: x@evil.example"

    def test_bad_configuration_fails_early(self) -> None:
        with pytest.raises(ValidationError):
            SmtpNotifier("127.0.0.1", 25, sender="not an address")
        with pytest.raises(ValidationError):
            SmtpNotifier("127.0.0.1", 25, sender="a@b.example", username="u")
        with pytest.raises(ValidationError):
            SmtpNotifier("127.0.0.1", 25, sender="a@b.example", domain="bad domain")


# -- log notifier ----------------------------------------------------------------------------
def test_log_notifier_writes_one_line_with_the_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="supportflow.notify"):
        LogNotifier().deliver(_note("n-log"), _note().recipients)
    [record] = caplog.records
    assert record.name == "supportflow.notify"
    assert "key=n-log" in record.getMessage()
    assert "customer:wang@example.com" in record.getMessage()


# -- the notifier contract against every channel ---------------------------------------------
class TestMemoryNotifierContract(NotifierContract):
    @pytest.fixture
    def notifier(self) -> MemoryNotifier:
        return MemoryNotifier()

    @pytest.fixture
    def received(self, notifier: MemoryNotifier) -> Callable[[], list[dict[str, Any]]]:
        return lambda: [
            {
                "idempotency_key": d.notification.idempotency_key,
                "subject": d.notification.subject,
                "body": d.notification.body,
                "recipients": [r.address for r in d.recipients],
            }
            for d in notifier.deliveries
        ]

    @pytest.fixture
    def failing_notifier(self) -> MemoryNotifier:
        failing = MemoryNotifier()
        failing.fail_next(1)
        return failing


class TestWebhookContract(NotifierContract):
    @pytest.fixture
    def notifier(self, receiver: Receiver) -> WebhookNotifier:
        return _webhook(receiver)

    @pytest.fixture
    def received(self, receiver: Receiver) -> Callable[[], list[dict[str, Any]]]:
        return receiver.payloads

    @pytest.fixture
    def failing_notifier(self, receiver: Receiver) -> WebhookNotifier:
        receiver.script = [(410, "gone")]
        return _webhook(receiver)


class TestSmtpContract(NotifierContract):
    @pytest.fixture
    def notifier(self, smtp_port: int) -> SmtpNotifier:
        return _smtp(smtp_port)

    @pytest.fixture
    def received(self, mailbox: Mailbox) -> Callable[[], list[dict[str, Any]]]:
        return mailbox.received

    @pytest.fixture
    def failing_notifier(self, mailbox: Mailbox, smtp_port: int) -> SmtpNotifier:
        mailbox.data_answers = ["451 4.3.0 Try again later"]
        return _smtp(smtp_port)


def test_webhook_url_with_query_keeps_it(receiver: Receiver) -> None:
    url = receiver.url + "?tenant=acme"
    WebhookNotifier(url, SECRET, timeout=5).deliver(_note(), ())
    [request] = receiver.requests
    assert urllib.parse.urlsplit(request["path"]).query == "tenant=acme"


# -- ill-typed configuration: a ValidationError naming the argument, before anything is sent --
SMTP_OK: dict[str, Any] = {"host": "127.0.0.1", "port": 25, "sender": "a@b.example"}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("host", 5),
        ("host", None),
        ("host", ""),
        ("port", None),
        ("port", "25"),
        ("port", 25.0),
        ("port", True),
        ("port", 0),
        ("port", 65536),
        ("sender", 5),
        ("sender", None),
        ("sender", ""),
        ("timeout", None),
        ("timeout", "10"),
        ("timeout", timedelta(seconds=10)),
        ("timeout", float("nan")),
        ("timeout", float("inf")),
        ("timeout", True),
        ("timeout", 0),
        ("domain", None),
        ("domain", 5),
        ("username", 5),
    ],
)
def test_smtp_refuses_ill_typed_configuration(option: str, value: Any) -> None:
    kwargs = {**SMTP_OK, option: value}
    if option == "username":
        kwargs["password"] = "p"
    with pytest.raises(ValidationError) as refused:
        SmtpNotifier(**kwargs)
    assert refused.value.field == option


def test_smtp_never_shows_a_refused_password() -> None:
    with pytest.raises(ValidationError) as refused:
        SmtpNotifier(**SMTP_OK, username="u", password=b"hunter2")  # type: ignore[arg-type]
    assert refused.value.field == "password"
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("port", [1, 25, 587, 65535])
def test_smtp_accepts_every_port(port: int) -> None:
    assert SmtpNotifier("mail.example", port, sender="a@b.example", timeout=3).port == port


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((5, SECRET), {}, "url"),
        ((None, SECRET), {}, "url"),
        (("http://[::1/hook", SECRET), {}, "url"),
        (("https://hooks.example/x", 5), {}, "secret"),
        (("https://hooks.example/x", None), {}, "secret"),
        (("https://hooks.example/x", SECRET), {"timeout": None}, "timeout"),
        (("https://hooks.example/x", SECRET), {"timeout": "5"}, "timeout"),
        (("https://hooks.example/x", SECRET), {"timeout": timedelta(seconds=5)}, "timeout"),
        (("https://hooks.example/x", SECRET), {"timeout": float("nan")}, "timeout"),
        (("https://hooks.example/x", SECRET), {"clock": 5}, "clock"),
        (("https://hooks.example/x", SECRET), {"headers": 5}, "headers"),
        (("https://hooks.example/x", SECRET), {"headers": [("X-Tenant", "acme")]}, "headers"),
        (("https://hooks.example/x", SECRET), {"headers": {"X-Tenant": 5}}, "headers"),
        (("https://hooks.example/x", SECRET), {"headers": {5: "acme"}}, "headers"),
        (("https://hooks.example/x", SECRET), {"headers": {"X:Tenant": "acme"}}, "headers"),
        (("https://hooks.example/x", SECRET), {"headers": {"X-租户": "acme"}}, "headers"),
        (("https://hooks.example/x", SECRET), {"headers": {"X-Tenant": "工单"}}, "headers"),
    ],
)
def test_webhook_refuses_ill_typed_configuration(
    args: tuple[Any, ...], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        WebhookNotifier(*args, **kwargs)
    assert refused.value.field == field


def test_webhook_never_shows_a_refused_secret() -> None:
    with pytest.raises(ValidationError) as refused:
        WebhookNotifier("https://hooks.example/x", ["whsec-in-a-list"])  # type: ignore[arg-type]
    assert "whsec-in-a-list" not in str(refused.value)


def test_webhook_keeps_accepting_bytes_secrets_and_latin1_headers(receiver: Receiver) -> None:
    notifier = WebhookNotifier(
        receiver.url, bytearray(SECRET, "ascii"), timeout=5, headers={"X-Tenant": "café"}
    )
    notifier.deliver(_note(), _note().recipients)
    [request] = receiver.requests
    assert request["valid"]
    assert request["headers"]["X-Tenant"] == "café"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((None, 1767571200, b"{}"), "secret"),
        ((5, 1767571200, b"{}"), "secret"),
        ((SECRET, 1767571200, None), "body"),
        ((SECRET, 1767571200, 5), "body"),
        ((SECRET, "١٧٦٧", b"{}"), "timestamp"),
    ],
)
def test_sign_refuses_ill_typed_arguments(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        sign(*args)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"secret": None}, "secret"),
        ({"body": None}, "body"),
        ({"signature": 5}, "signature"),
        ({"signature": b"sha256=00"}, "signature"),
        ({"now": None}, "now"),
        ({"now": float("nan")}, "now"),
        ({"tolerance": None}, "tolerance"),
        ({"tolerance": float("nan")}, "tolerance"),
    ],
)
def test_verify_signature_refuses_ill_typed_arguments(changes: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {
        "secret": SECRET,
        "timestamp": "1767571200",
        "body": b"{}",
        "signature": sign(SECRET, 1767571200, b"{}"),
        "now": 1767571200,
        "tolerance": 300,
    }
    arguments.update(changes)
    with pytest.raises(ValidationError) as refused:
        verify_signature(**arguments)
    assert refused.value.field == field


@pytest.mark.parametrize("timestamp", [None, "9" * 400, "soon"])
def test_verify_signature_rejects_absent_or_absurd_headers(timestamp: Any) -> None:
    header = sign(SECRET, 1767571200, b"{}")
    assert not verify_signature(SECRET, timestamp, b"{}", header, now=1767571200)
    assert not verify_signature(SECRET, "1767571200", b"{}", None, now=1767571200)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "field"),
    [((None,), "notification"), ((_note(), 5), "recipients"), ((_note(), [5]), "recipients")],
)
def test_notification_payload_names_a_wrong_argument(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        notification_payload(*args)
    assert refused.value.field == field
