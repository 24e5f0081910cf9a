"""``LogNotifier``: writes one log line per delivery, for development and audit trails."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from supportflow.errors import ValidationError
from supportflow.model import Notification, Recipient

__all__ = ["LOGGER_NAME", "LogNotifier"]

LOGGER_NAME = "supportflow.notify"


class LogNotifier:
    """Delivers by logging one line (with the idempotency key) to ``supportflow.notify``.

    >>> import sys
    >>> from datetime import datetime, timezone
    >>> logger = logging.getLogger("example.notify")
    >>> logger.addHandler(logging.StreamHandler(sys.stdout))
    >>> logger.setLevel(logging.INFO)
    >>> note = Notification("k-1", "ticket_created", (), "New ticket", "...",
    ...                     datetime(2026, 1, 5, tzinfo=timezone.utc), ticket_id="t-1")
    >>> LogNotifier(logger).deliver(note, [Recipient("agent", "li@example.com")])
    notification key=k-1 kind=ticket_created ticket=t-1 to=agent:li@example.com subject='New ticket'
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        # Any logger with the standard ``log(level, message, ...)`` (a logging.Logger, an
        # adapter, a structured-logging wrapper); a logger's name is no logger.
        if logger is not None and not callable(getattr(logger, "log", None)):
            raise ValidationError("logger", logger, "a logger with log(level, message), or None")
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValidationError("level", level, "a logging level such as logging.INFO")
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.level = level

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        """Log one line (key, kind, ticket, recipients, subject); logging errors are not raised."""
        to = ",".join(f"{recipient.role.value}:{recipient.address}" for recipient in recipients)
        # %-style arguments: nothing is formatted when the level is disabled.
        self.logger.log(
            self.level,
            "notification key=%s kind=%s ticket=%s to=%s subject=%r",
            notification.idempotency_key,
            notification.kind,
            notification.ticket_id or "-",
            to or "-",
            notification.subject,
            extra={"idempotency_key": notification.idempotency_key},
        )
