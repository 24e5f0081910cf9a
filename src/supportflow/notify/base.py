"""The notifier port: one call that delivers a notification to a group of recipients.

A notifier either returns (the receiver accepted the notification) or raises. It raises
:class:`DeliveryError` to say whether retrying could help; any other exception is treated by the
:class:`~supportflow.notify.Dispatcher` as a transient failure.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Sequence
from datetime import timedelta
from numbers import Integral
from typing import Protocol, runtime_checkable

from supportflow.errors import SupportflowError, ValidationError
from supportflow.model import Notification, Recipient

__all__ = ["DeliveryError", "Notifier"]

# The longest wait before a retry: a dispatcher's max_delay, and what a receiver's Retry-After
# may ask (a retry time must stay a date: now + delay).
LONGEST_RETRY_DELAY = timedelta(days=365)


@runtime_checkable
class Notifier(Protocol):
    """Anything that can deliver a notification to the recipients routed to it.

    The dispatcher calls a notifier once per attempt with every recipient whose role it is
    registered for (one role, or several when they share the notifier); each
    :class:`~supportflow.model.Recipient` carries its role.

    ``deliver`` returns once the receiver has accepted the notification and raises otherwise,
    preferably :class:`DeliveryError`. Delivery is at least once: the same notification (same
    ``idempotency_key``) may be delivered again after a crash or a lost acknowledgement, so
    receivers should drop keys they have already seen.

    >>> class Printer:
    ...     def deliver(self, notification, recipients):
    ...         print(notification.idempotency_key, [r.address for r in recipients])
    >>> isinstance(Printer(), Notifier)
    True
    """

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        """Deliver ``notification`` to ``recipients``; raise on failure."""
        ...


class DeliveryError(SupportflowError):
    """A notifier could not deliver a notification.

    ``permanent=True`` means retrying cannot help (the receiver rejected the request, e.g.
    HTTP 4xx or SMTP 5xx): the dispatcher parks the notification as a dead letter at once.
    ``response`` keeps what the receiver answered, for the dead letter's error text.
    ``retry_after`` is how long the receiver asked to be left alone (HTTP ``Retry-After``):
    the dispatcher waits at least that long, up to its ``max_delay``, before the next attempt.

    >>> error = DeliveryError("HTTP 404", permanent=True, response="404 Not Found")
    >>> error.permanent, str(error)
    (True, 'HTTP 404')
    >>> DeliveryError("HTTP 429", retry_after=timedelta(seconds=120)).retry_after
    datetime.timedelta(seconds=120)
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        response: str | None = None,
        retry_after: timedelta | None = None,
    ):
        if retry_after is not None and (
            not isinstance(retry_after, timedelta) or retry_after < timedelta(0)
        ):
            raise ValidationError("retry_after", retry_after, "a duration of 0 or more, or None")
        self.permanent = permanent
        self.response = response
        self.retry_after = retry_after
        super().__init__(message)

    def __repr__(self) -> str:
        wait = "" if self.retry_after is None else f", retry_after={self.retry_after!r}"
        return (
            f"DeliveryError({str(self)!r}, permanent={self.permanent!r}, "
            f"response={self.response!r}{wait})"
        )


def header_value(value: str) -> str:
    """``value`` as a mail or HTTP header value (``Idempotency-Key``, ``X-Supportflow-*``):
    itself when it is printable ASCII without ``%`` and without spaces at its ends (parsers
    strip those), else percent-encoded in full. Distinct values stay distinct (an encoded one
    always holds ``%``), and no value can inject a header.

    >>> header_value("t-1:5:reply:0"), header_value("t-1\\r\\nBcc: x"), header_value("工单")
    ('t-1:5:reply:0', 't-1%0D%0ABcc%3A%20x', '%E5%B7%A5%E5%8D%95')
    >>> header_value("%E5%B7%A5%E5%8D%95")
    '%25E5%25B7%25A5%25E5%258D%2595'
    """
    if value.isascii() and value.isprintable() and "%" not in value and value == value.strip():
        return value
    return urllib.parse.quote(value, safe="")


def redacted(value: object) -> str:
    """What a refused secret or password is shown as in an error: its type, never its
    content (errors end up in logs)."""
    return f"<{type(value).__name__}>"


def check_timeout(value: object, field: str = "timeout") -> None:
    """Refuse what a socket timeout cannot take: ``value`` must be a finite, positive number of
    seconds (an ``int`` or ``float``; not a bool, not a ``timedelta``).

    >>> check_timeout(2.5)
    >>> check_timeout(None)
    Traceback (most recent call last):
    ...
    supportflow.errors.ValidationError: timeout=None is invalid: ...
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, float | Integral)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(field, value, "a positive number of seconds")
