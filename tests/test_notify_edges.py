"""Notifier adapters, dispatcher, guard, scripts and worker at the edges of what they accept.

Style follows tests/test_notify_channels.py: real servers on loopback, ManualClock, MemoryStore
and SqliteStore. Each guards against a fault found by review."""

from __future__ import annotations

import email
import email.policy
import email.utils
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from supportflow.clock import ManualClock
from supportflow.errors import ValidationError
from supportflow.model import Customer, Notification, Recipient, Ticket
from supportflow.notify import (
    DeliveryError,
    Dispatcher,
    LogNotifier,
    MemoryNotifier,
    ReplyGuard,
    ReplyPolicy,
    ReplyScripts,
    SmtpNotifier,
    WebhookNotifier,
)
from supportflow.storage._port import OutboxStatus
from supportflow.storage.memory import MemoryStore
from supportflow.storage.sqlite import SqliteStore

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def _note(key: str = "n-1", *, roles: tuple[str, ...] = ("agent",), **kw: Any) -> Notification:
    return Notification(
        key,
        "ticket_updated",
        tuple(Recipient(r, f"{r}@example.com") for r in roles),
        kw.get("subject", "Hi"),
        kw.get("body", "Body"),
        T0,
        ticket_id="t-7",
        data=kw.get("data") or {},
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = MemoryStore() if request.param == "memory" else SqliteStore(str(tmp_path / "d.db"))
    yield s
    if hasattr(s, "close"):
        s.close()


# -- backoff overflow -----------------------------------------------------------------
def test_many_attempts_with_minutes_of_base_delay_never_overflow(store: Any) -> None:
    clock = ManualClock(T0)
    inbox = MemoryNotifier(clock)
    inbox.fail_next(1000)
    with store.transaction() as uow:
        uow.enqueue([_note()])
    dispatcher = Dispatcher(
        store,
        {"agent": inbox},
        clock=clock,
        max_attempts=100,
        base_delay=timedelta(minutes=5),
        max_delay=timedelta(hours=1),
        jitter=0,
    )
    for _ in range(60):
        report = dispatcher.deliver_pending()  # OverflowError at the 40th failure before
        assert report.retried == ["n-1"]
        clock.advance(hours=2)
    with store.transaction() as uow:
        entry = uow.outbox_entry("n-1")
    assert entry.attempts == 60
    assert entry.status is OutboxStatus.PENDING
    assert dispatcher.backoff(10**6) == timedelta(hours=1)


# -- webhook server helper -------------------------------------------------------------------
@pytest.fixture
def http_server() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[BaseHTTPRequestHandler], None]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.server.seen.append(dict(self.headers.items()))  # type: ignore[attr-defined]
                answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.seen = []  # type: ignore[attr-defined]
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/hook"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _trickle(status: int) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(100000):
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    return answer


# -- a trickling body must not outlast the timeout -------------------------------------
@pytest.mark.parametrize("status", [200, 503])
def test_webhook_attempt_is_bounded_by_timeout_when_the_body_trickles(
    http_server: Any, status: int
) -> None:
    notifier = WebhookNotifier(http_server(_trickle(status)), "s3cret", timeout=1.0)
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            notifier.deliver(_note(roles=("webhook",)), ())
            outcome.append("delivered")
        except DeliveryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(6)
    assert not worker.is_alive(), "delivery still running long after its 1 s timeout"
    assert time.monotonic() - started < 6
    if status == 200:
        assert outcome == ["delivered"]
    else:
        assert isinstance(outcome[0], DeliveryError)
        assert not outcome[0].permanent


def _trickled_headers(handler: BaseHTTPRequestHandler) -> None:
    # A complete, valid 200 answer whose header lines arrive a byte every 20 ms (about 3 s in
    # all): each read is well within the socket timeout, the whole is not.
    answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 150 + b"\r\nContent-Length: 0\r\n\r\n"
    for byte in answer:
        try:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.02)


def test_webhook_attempt_is_bounded_by_timeout_when_the_headers_trickle(
    http_server: Any,
) -> None:
    notifier = WebhookNotifier(http_server(_trickled_headers), "s3cret", timeout=0.5)
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            notifier.deliver(_note(roles=("webhook",)), ())
            outcome.append("delivered")
        except DeliveryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    # Delivered would mean the attempt ran for the whole trickle, six timeouts long.
    [error] = outcome
    assert isinstance(error, DeliveryError)
    assert not error.permanent
    assert "timed out" in str(error)


# -- Retry-After -------------------------------------------------------------------------------
def _busy(status: int, retry_after: str | None) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        if retry_after is not None:
            handler.send_header("Retry-After", retry_after)
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        handler.wfile.write(b"busy")

    return answer


def _http_date(at: datetime) -> str:
    return email.utils.format_datetime(at, usegmt=True)


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        (_http_date(T0 + timedelta(seconds=90)), timedelta(seconds=90)),
        ("Mon, 05 Jan 2026 09:10:00 -0000", timedelta(minutes=10)),
        ("99999999999999999999999", timedelta(days=365)),
        (None, None),
        ("", None),
        ("-5", None),  # negative
        ("1.5", None),  # delay-seconds are whole
        ("soon", None),
        (_http_date(T0 - timedelta(seconds=90)), None),  # already past
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_webhook_reads_retry_after_on_429_and_503(
    http_server: Any, status: int, header: str | None, wait: timedelta | None
) -> None:
    url = http_server(_busy(status, header))
    notifier = WebhookNotifier(url, "s3cret", timeout=5, clock=ManualClock(T0))
    with pytest.raises(DeliveryError) as caught:
        notifier.deliver(_note(roles=("webhook",)), ())
    assert caught.value.permanent is False
    assert caught.value.retry_after == wait
    assert (caught.value.retry_after is not None) == ("retry after" in str(caught.value))


@pytest.mark.parametrize("status", [500, 400])
def test_webhook_ignores_retry_after_on_other_statuses(http_server: Any, status: int) -> None:
    notifier = WebhookNotifier(http_server(_busy(status, "120")), "s3cret", timeout=5)
    with pytest.raises(DeliveryError) as caught:
        notifier.deliver(_note(roles=("webhook",)), ())
    assert caught.value.retry_after is None


def test_dispatcher_waits_as_long_as_the_webhook_asks(http_server: Any) -> None:
    answers = [_busy(429, "600"), _busy(503, "7200")]

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if answers:
            answers.pop(0)(handler)
        else:
            handler.send_response(204)
            handler.end_headers()

    url = http_server(answer)
    store, clock = MemoryStore(), ManualClock(T0)
    with store.transaction() as uow:
        uow.enqueue([_note("n-1", roles=("webhook",))])
    notifier = WebhookNotifier(url, "s3cret", timeout=5, clock=clock)
    dispatcher = Dispatcher(store, {"webhook": notifier}, clock=clock, jitter=0)

    assert dispatcher.deliver_pending().retried == ["n-1"]  # 10 minutes asked, 30 s backoff
    clock.advance(seconds=599)
    assert dispatcher.deliver_pending().attempts == 0
    clock.advance(seconds=1)
    assert dispatcher.deliver_pending().retried == ["n-1"]  # two hours asked, max_delay 1 h
    clock.advance(seconds=3599)
    assert dispatcher.deliver_pending().attempts == 0
    clock.advance(seconds=1)
    assert dispatcher.deliver_pending().delivered == ["n-1"]


# -- TLS ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_url(self_signed: tuple[Path, Path]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_says_plainly_that_a_certificate_was_refused(https_url: str) -> None:
    notifier = WebhookNotifier(https_url, "s3cret", timeout=5)
    with pytest.raises(DeliveryError) as caught:
        notifier.deliver(_note(roles=("webhook",)), ())
    # Transient: once the receiver's certificate is fixed, the next retry gets through.
    assert caught.value.permanent is False
    message = str(caught.value)
    assert "TLS certificate verification failed" in message
    assert "self-signed" in message or "self signed" in message
    assert "unreachable" not in message


def test_webhook_attempt_over_https_is_bounded_by_timeout_when_the_headers_trickle(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed[0]))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 150 + b"\r\nContent-Length: 0\r\n\r\n"
            for byte in answer:
                try:
                    tls.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.02)

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/hook"
    try:
        with pytest.raises(DeliveryError) as caught:
            WebhookNotifier(url, "s3cret", timeout=0.5).deliver(_note(roles=("webhook",)), ())
    finally:
        listener.close()
    assert not caught.value.permanent
    assert "timed out" in str(caught.value)


def test_webhook_delivers_over_https_to_a_trusted_certificate(
    https_url: str, self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed[0]))  # trust the test certificate
    WebhookNotifier(https_url, "s3cret", timeout=5).deliver(_note(roles=("webhook",)), ())


# -- guard link bypasses -----------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "host"),
    [
        ("See https://evil.io\\@example.com/refund", "evil.io"),
        ("See https://evil.io\\.example.com/", "evil.io"),
    ],
)
def test_guard_reads_backslash_as_a_browser_does(body: str, host: str) -> None:
    findings = ReplyGuard(ReplyPolicy(allowed_domains=["example.com"])).scan(body)
    assert [f.kind for f in findings] == ["link"]
    assert host in findings[0].detail


@pytest.mark.parametrize(
    "body", ["请访问 https://例子.com/退款", "https://点击领取.cn，谢谢", "见 https://坏.测试/a"]
)
def test_guard_flags_cjk_international_hosts(body: str) -> None:
    findings = ReplyGuard(ReplyPolicy(allowed_domains=["example.com"])).scan(body)
    assert [f.kind for f in findings] == ["link"]


def test_guard_still_allows_allowed_cjk_hosts_and_stops_at_cjk_text() -> None:
    guard = ReplyGuard(ReplyPolicy(allowed_domains=["例子.测试", "x.cn"]))
    assert guard.scan("见 https://例子.测试/a，谢谢") == []
    assert guard.scan("请访问 https://x.cn谢谢") == []


# -- distinct keys, distinct Idempotency-Key headers -----------------------------------
def test_idempotency_key_header_is_distinct_for_distinct_keys(http_server: Any) -> None:
    def ok(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    url = http_server(ok)
    notifier = WebhookNotifier(url, "s3cret", timeout=5)
    keys = ["工单-1", "%E5%B7%A5%E5%8D%95-1", "k-1", "k-1 "]
    for key in keys:
        notifier.deliver(_note(key, roles=("webhook",)), ())
    seen = [h["Idempotency-Key"] for h in _seen(url)]
    assert len(set(seen)) == len(keys), seen


def _seen(url: str) -> list[dict[str, str]]:
    import gc

    for obj in gc.get_objects():
        if isinstance(obj, ThreadingHTTPServer) and url.startswith(
            f"http://127.0.0.1:{obj.server_address[1]}/"
        ):
            return obj.seen  # type: ignore[attr-defined,no-any-return]
    raise AssertionError("server not found")


# -- URLs that can never be delivered are refused at construction ----------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999/hook",
        "http://127.0.0.1:abc/hook",
        "http://127.0.0.1:0/hook",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/a\x01b",
        "http://user:pw@127.0.0.1/hook",
        "http://127.0.0.1/退款",
        "http://例子.test/hook",
    ],
)
def test_webhook_refuses_undeliverable_urls(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        WebhookNotifier(url, "s3cret")
    assert refused.value.field == "url"
    assert "pw" not in str(refused.value)


# -- worker settings ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [["--max-passes", "0"], ["--max-passes", "-1"], ["--max-sleep", "nan"], ["--max-sleep", "inf"]],
)
def test_worker_command_refuses_bad_settings(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from supportflow.cli import main

    assert main(["worker", "--store", str(tmp_path / "d.db"), *argv]) == 2
    assert "is invalid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": "5"}, {"batch_size": 1.5}, {"max_sleep": 5}, {"deliver": "no"}]
)
def test_worker_refuses_ill_typed_settings(kwargs: dict[str, Any]) -> None:
    from supportflow.desk import Desk
    from supportflow.worker import Worker

    with pytest.raises(ValidationError) as refused:
        Worker(Desk(), **kwargs)
    assert refused.value.field == next(iter(kwargs))


def _ticket(**changes: Any) -> Ticket:
    return Ticket(
        id="t-1",
        number=7,
        subject="Login",
        description="...",
        customer=Customer("c-1", name="Ann"),
        channel="email",
        status="open",
        created_at=T0,
        updated_at=T0,
        **changes,
    )


# -- agent_name only from the caller ----------------------------------------------------
def test_closing_never_takes_agent_name_from_custom_fields() -> None:
    ticket = _ticket(fields={"agent_name": "Mallory"})
    with pytest.raises(ValidationError) as refused:
        ReplyScripts().render("closing", ticket)
    assert refused.value.field == "agent_name"
    assert ReplyScripts().render("closing", ticket, agent_name="Li").endswith("\nLi")


# -- configuration values refused at construction ---------------------------------------
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: LogNotifier(level="INFO"), "level"),
        (lambda: LogNotifier(logger="supportflow.notify"), "logger"),
        (lambda: MemoryNotifier(clock="now"), "clock"),
        (lambda: MemoryNotifier().fail_next("2"), "count"),
        (lambda: SmtpNotifier("h", 25, sender="a@example.com", starttls="no"), "starttls"),
        (
            lambda: ReplyPolicy(allowed_domains=[], check_internal_notes="no"),
            "check_internal_notes",
        ),
        (lambda: ReplyPolicy(allowed_domains=[], min_note_overlap=True), "min_note_overlap"),
    ],
)
def test_bad_configuration_is_a_validation_error(build: Callable[[], Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert refused.value.field == field


def test_blank_overrider_is_refused() -> None:
    ticket = _ticket()
    guard = ReplyGuard(ReplyPolicy(allowed_domains=["example.com"]))
    with pytest.raises(ValidationError):
        guard.enforce(ticket, "see https://evil.io", override_by="  ", override_role="manager")


# -- SMTP server helper ------------------------------------------------------------------------
class _Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# -- unusable notifications are permanent failures -------------------------------------
@pytest.mark.parametrize(
    "notification",
    [
        Notification("n-1", "k", (Recipient("customer", "<wang@example.com>"),), "Hi", "B", T0),
        Notification(
            "n-2", "k", (Recipient("customer", "wang@example.com"),), "Hi \ud800", "B", T0
        ),
        Notification(
            "n-3", "k", (Recipient("customer", "wang@example.com"),), "Hi", "B \udc80", T0
        ),
    ],
)
def test_smtp_unusable_notification_is_a_permanent_delivery_error(
    smtp_server: tuple[_Inbox, int], notification: Notification
) -> None:
    _, port = smtp_server
    with pytest.raises(DeliveryError) as failed:
        SmtpNotifier("127.0.0.1", port, sender="help@example.com", timeout=5).deliver(
            notification, notification.recipients
        )
    assert failed.value.permanent


# -- no 8bit body without BODY=8BITMIME -------------------------------------------------
def test_smtp_non_ascii_body_travels_in_a_7bit_encoding(smtp_server: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_server
    notification = Notification(
        "n-1", "k", (Recipient("customer", "wang@example.com"),), "退款", "您好\n\n退款已处理。", T0
    )
    SmtpNotifier("127.0.0.1", port, sender="help@example.com", timeout=5).deliver(
        notification, notification.recipients
    )
    [envelope] = inbox.envelopes
    raw: bytes = envelope.original_content
    assert raw.isascii() or "BODY=8BITMIME" in envelope.mail_options
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_body(("plain",)).get_content().strip() == "您好\n\n退款已处理。"


# -- data that is not JSON is a permanent failure, not invalid JSON on the wire -------
@pytest.mark.parametrize("data", [{"ratio": float("nan")}, {"deep": "nested"}])
def test_webhook_refuses_data_json_cannot_carry(http_server: Any, data: dict[str, Any]) -> None:
    if "deep" in data:
        nested: list[Any] = []
        for _ in range(5000):
            nested = [nested]
        data = {"deep": nested}

    def ok(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    url = http_server(ok)
    with pytest.raises(DeliveryError) as failed:
        WebhookNotifier(url, "s3cret", timeout=5).deliver(_note(roles=("webhook",), data=data), ())
    assert failed.value.permanent
    assert _seen(url) == []
