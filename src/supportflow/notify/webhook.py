"""``WebhookNotifier``: signed JSON POSTs over HTTP(S), with the stdlib only.

Every request carries the notification as a JSON object and three headers:

* ``Idempotency-Key``: the notification's key; the same on every retry,
* ``X-Supportflow-Timestamp``: unix seconds when the request was signed,
* ``X-Supportflow-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``f"{timestamp}.{body}"``
  keyed with the shared secret.

Receivers check both with :func:`verify_signature`; the timestamp makes a captured request
useless once it is older than the tolerance (replay protection).
"""

from __future__ import annotations

import contextvars
import email.utils
import enum
import hashlib
import hmac
import http.client
import io
import json
import math
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import IO, Any

from supportflow.clock import Clock, SystemClock
from supportflow.errors import ValidationError
from supportflow.model import Notification, Recipient
from supportflow.notify.base import (
    LONGEST_RETRY_DELAY,
    DeliveryError,
    check_timeout,
    header_value,
    redacted,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookNotifier",
    "notification_payload",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Supportflow-Signature"
TIMESTAMP_HEADER = "X-Supportflow-Timestamp"
_EXCERPT = 500  # characters of a rejected response kept for the dead letter
# 4xx statuses that mean "later", not "never".
_TRANSIENT_4XX = frozenset({408, 425, 429})
_HEADER_NAME = re.compile(r"[^:\s][^:\r\n]*")  # what http.client sends, once ASCII
# Statuses whose Retry-After says when to come back.
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# When the current delivery attempt must be over (time.monotonic()), for the connection and
# the response classes below; unset outside WebhookNotifier.deliver.
_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("webhook_deadline")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def notification_payload(
    notification: Notification, recipients: Sequence[Recipient] | None = None
) -> dict[str, Any]:
    """The JSON object a webhook receives for ``notification``.

    ``recipients`` defaults to all of the notification's recipients.

    >>> from datetime import datetime, timezone
    >>> note = Notification("k-1", "ticket_created", (), "Hi", "Body",
    ...                     datetime(2026, 1, 5, tzinfo=timezone.utc), ticket_id="t-1")
    >>> notification_payload(note)["created_at"]
    '2026-01-05T00:00:00+00:00'
    """
    try:
        chosen = notification.recipients if recipients is None else recipients
        return {
            "idempotency_key": notification.idempotency_key,
            "kind": notification.kind,
            "ticket_id": notification.ticket_id,
            "subject": notification.subject,
            "body": notification.body,
            "recipients": [
                {"role": r.role.value, "address": r.address, "name": r.name} for r in chosen
            ],
            "data": dict(notification.data),
            "created_at": notification.created_at.isoformat(),
        }
    except (AttributeError, TypeError):
        # Only a wrong argument gets here; naming it costs nothing on the way that works.
        if not isinstance(notification, Notification):
            raise ValidationError("notification", notification, "a Notification") from None
        if not isinstance(recipients, Iterable) or not all(
            isinstance(recipient, Recipient) for recipient in recipients
        ):
            raise ValidationError("recipients", recipients, "Recipient objects, or None") from None
        raise


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _check_secret(secret: object) -> None:
    if not isinstance(secret, str | bytes | bytearray):
        raise ValidationError("secret", redacted(secret), "a shared secret: str or bytes")


def sign(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``.

    >>> sign("s3cret", 1767571200, b'{"a":1}')[:15]
    'sha256=456c6993'
    """
    try:
        message = f"{timestamp}.".encode("ascii") + _as_bytes(body)
        digest = hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()
    except (TypeError, UnicodeEncodeError):
        # Only a wrong argument gets here; naming it costs nothing on the way that works.
        _check_secret(secret)
        if not f"{timestamp}".isascii():
            raise ValidationError("timestamp", timestamp, "unix seconds: an int") from None
        raise ValidationError("body", body, "the request body: str or bytes") from None
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: int | str,
    body: str | bytes,
    signature: str,
    *,
    now: datetime | float,
    tolerance: float | timedelta = 300,
) -> bool:
    """True if ``signature`` signs ``body`` at ``timestamp`` and the timestamp is fresh.

    ``timestamp`` and ``signature`` are the ``X-Supportflow-Timestamp`` and
    ``X-Supportflow-Signature`` headers, ``body`` the raw request body (bytes as received,
    not re-encoded JSON). A timestamp further than ``tolerance`` seconds from ``now`` (either
    way) is rejected, so a captured request cannot be replayed later.

    >>> body = b'{"idempotency_key":"k-1"}'
    >>> header = sign("s3cret", 1767571200, body)
    >>> verify_signature("s3cret", "1767571200", body, header, now=1767571230)
    True
    >>> verify_signature("s3cret", "1767571200", body, header, now=1767571200 + 3600)
    False
    """
    if signature is None:
        return False  # no signature header: not signed, like a missing timestamp
    if not isinstance(signature, str):
        raise ValidationError("signature", signature, "the signature header, a str")
    try:
        now_seconds = now.timestamp() if isinstance(now, datetime) else float(now)
    except (TypeError, ValueError):
        raise ValidationError("now", now, "a datetime or unix seconds") from None
    try:
        window = tolerance.total_seconds() if isinstance(tolerance, timedelta) else float(tolerance)
    except (TypeError, ValueError):
        raise ValidationError("tolerance", tolerance, "seconds or a timedelta") from None
    if math.isnan(now_seconds) or math.isnan(window):
        # NaN compares false with everything: the replay check would pass any timestamp.
        field, value = ("now", now) if math.isnan(now_seconds) else ("tolerance", tolerance)
        raise ValidationError(field, value, "a number, not NaN")
    try:
        sent_at = int(str(timestamp).strip())
        if abs(now_seconds - sent_at) > window:
            return False
    except (ValueError, OverflowError):  # not a number, or too large to be a time
        return False
    expected = sign(secret, sent_at, body)
    # compare_digest: the time taken must not reveal how many leading characters matched.
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8"))


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a body-less GET and report success.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _remaining(fallback: float | None) -> float | None:
    """Seconds left in the current attempt (``fallback`` outside one); none left: timeout."""
    deadline = _DEADLINE.get(None)
    if deadline is None:
        return fallback
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


class _DeadlineReader(io.RawIOBase):
    """Reads a response through ``inner``, each read given only what is left of the attempt.

    The socket timeout applies to each read, so a receiver trickling its answer a byte at a
    time could stretch an attempt to one timeout per byte.
    """

    def __init__(self, inner: IO[bytes], sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._inner = inner
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)
        data = self._inner.read1(len(buffer))  # type: ignore[attr-defined]
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        deadline = _DEADLINE.get(None)
        if deadline is not None:
            self.fp = io.BufferedReader(_DeadlineReader(self.fp, sock, deadline))


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    response_class = _DeadlineResponse

    def connect(self) -> None:
        # Connecting takes at most what is left of the attempt (for each address the host
        # has); what follows (the TLS handshake, sending) what is left after that.
        self.timeout = _remaining(self.timeout)
        super().connect()
        self.sock.settimeout(_remaining(self.timeout))


class _DeadlineHTTPSConnection(http.client.HTTPSConnection, _DeadlineHTTPConnection):
    # HTTPSConnection.connect connects through _DeadlineHTTPConnection.connect, then shakes
    # hands on the socket that gives it only what is left.
    response_class = _DeadlineResponse

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(_remaining(self.timeout))


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPConnection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPSConnection, req)


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header as a wait from ``now``: delay-seconds or an HTTP-date. A value
    that is neither, or a date already past, is ignored (``None``)."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        if len(text) > 10:  # int() refuses very long digit strings; this is years anyway
            return LONGEST_RETRY_DELAY
        return min(timedelta(seconds=int(text)), LONGEST_RETRY_DELAY)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    wait = when - now
    return min(wait, LONGEST_RETRY_DELAY) if wait >= timedelta(0) else None


def _extra_headers(headers: object) -> dict[str, str]:
    """``headers`` as a dict, each name and value one that ``http.client`` can send."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError("headers", headers, "a mapping of header name to value, or None")
    extra = dict(headers)
    for name, value in extra.items():
        if not isinstance(name, str) or not isinstance(value, str):
            # The name only: a header value may be a credential.
            raise ValidationError("headers", name, "header names and values as strings")
        if any(c in f"{name}{value}" for c in "\r\n"):
            raise ValidationError("headers", name, "header names and values without newlines")
        # What http.client would refuse, or fail to encode, on every delivery.
        if not (name.isascii() and _HEADER_NAME.fullmatch(name)) or not _latin1(value):
            raise ValidationError(
                "headers", name, "an ASCII header name without ':', a Latin-1 value"
            )
    return extra


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class WebhookNotifier:
    """POSTs each notification as signed JSON to ``url``.

    Success is any 2xx answer. 5xx, 408, 425 and 429 answers, timeouts, network errors and
    untrusted TLS certificates raise a transient :class:`DeliveryError` (the dispatcher
    retries, after the ``Retry-After`` of a 429 or 503 if longer); other 4xx answers and
    redirects raise a permanent one carrying the status and an excerpt of the response.
    ``timeout`` bounds the whole attempt, not each read (name resolution aside).

    >>> notifier = WebhookNotifier("https://hooks.example.com/desk", "s3cret", timeout=5)
    >>> notifier.url
    'https://hooks.example.com/desk'
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout: float = 10.0,
        clock: Clock | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        expected_url = "an http:// or https:// URL with a host"
        if not isinstance(url, str):
            raise ValidationError("url", url, expected_url)
        try:
            parts = urllib.parse.urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # e.g. a broken IPv6 literal or port
            raise ValidationError("url", url, expected_url) from None
        if parts.scheme not in ("http", "https") or not hostname:
            raise ValidationError("url", url, expected_url)
        if parts.username is not None or parts.password is not None:
            # urllib sends no credentials from a URL (it looks the whole "user:pw@host" up as
            # a host name); the password must not reach the error either.
            shown = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            raise ValidationError(
                "url", shown, "a URL without user:password@ (send credentials with headers=)"
            )
        try:
            port = parts.port  # ValueError for a port that is not a number up to 65535
        except ValueError:
            port = 0
        if port == 0:
            raise ValidationError("url", url, f"{expected_url} and a port from 1 to 65535")
        if not url.isascii() or any(char.isspace() or not char.isprintable() for char in url):
            # http.client fails on these in every request (control characters, or an encode
            # error for a non-ASCII path or host): percent-encode the path, punycode the host.
            raise ValidationError(
                "url", url, f"{expected_url}, in ASCII, without spaces or control characters"
            )
        _check_secret(secret)
        if not secret:
            raise ValidationError("secret", "", "a non-empty shared secret")
        check_timeout(timeout)
        if clock is not None and not isinstance(clock, Clock):
            raise ValidationError("clock", clock, "a supportflow.Clock (with now()), or None")
        extra = _extra_headers(headers)
        self.url = url
        self.timeout = timeout
        self._secret = _as_bytes(secret) if isinstance(secret, str) else bytes(secret)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._headers = extra
        self._opener = urllib.request.build_opener(
            _RefuseRedirects(), _DeadlineHTTPHandler(), _DeadlineHTTPSHandler()
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"  # never show the secret

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        """POST the signed JSON; anything but a 2xx answer raises ``DeliveryError``."""
        try:
            body = json.dumps(
                notification_payload(notification, recipients),
                ensure_ascii=False,
                separators=(",", ":"),
                default=_plain,
                allow_nan=False,  # NaN and Infinity are not JSON: strict receivers reject them
            ).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise DeliveryError(
                f"notification {notification.idempotency_key!r} has data that is not JSON: {exc}",
                permanent=True,
            ) from exc
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "User-Agent": "supportflow-webhook",
            **self._headers,
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": header_value(notification.idempotency_key),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        # The whole attempt (connecting, sending, the answer's headers and an error answer's
        # excerpt) fits in one timeout: a receiver trickling its answer a byte at a time must
        # not hold this dispatcher (and its lease) past it.
        token = _DEADLINE.set(time.monotonic() + self.timeout)
        try:
            # The status is the answer. The body of a 2xx is not read: a receiver that streams
            # a huge or endless body must not hold the dispatcher either.
            self._opener.open(request, timeout=self.timeout).close()
        except urllib.error.HTTPError as exc:
            raise self._rejected(exc) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        finally:
            _DEADLINE.reset(token)

    def _unreachable(self, exc: Exception) -> DeliveryError:
        # URLError wraps refused connections and DNS failures; TimeoutError is an OSError.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLCertVerificationError):
            # Transient all the same: once the receiver's certificate is fixed, a retry works.
            detail = reason.verify_message or reason.reason or str(reason)
            return DeliveryError(
                f"webhook {self.url}: TLS certificate verification failed: {detail}",
                permanent=False,
            )
        if isinstance(reason, TimeoutError):
            return DeliveryError(
                f"webhook {self.url} timed out: no complete answer within {self.timeout} s",
                permanent=False,
            )
        return DeliveryError(
            f"webhook {self.url} unreachable: {reason or type(exc).__name__}", permanent=False
        )

    def _rejected(self, exc: urllib.error.HTTPError) -> DeliveryError:
        # At most _EXCERPT bytes, within what is left of the attempt's timeout.
        received = b""
        try:
            while len(received) < _EXCERPT:
                chunk = exc.read1(_EXCERPT - len(received))
                if not chunk:
                    break
                received += chunk
        except (OSError, http.client.HTTPException, AttributeError):
            pass  # keep what arrived; AttributeError: an error without a body to read
        finally:
            exc.close()
        excerpt = received.decode("utf-8", "replace")
        response = f"{exc.code} {exc.reason}: {excerpt}".rstrip(": ")
        if 300 <= exc.code < 400:
            location = exc.headers.get("Location", "?") if exc.headers else "?"
            return DeliveryError(
                f"webhook {self.url} redirected to {location}; configure the final URL",
                permanent=True,
                response=response,
            )
        permanent = 400 <= exc.code < 500 and exc.code not in _TRANSIENT_4XX
        wait = None
        if exc.code in _RETRY_AFTER_STATUSES and exc.headers:
            wait = _retry_after(exc.headers.get("Retry-After"), self._clock.now())
        message = f"webhook {self.url} answered HTTP {exc.code}"
        if wait is not None:
            message += f", asking to retry after {int(wait.total_seconds())} s"
        return DeliveryError(message, permanent=permanent, response=response, retry_after=wait)
