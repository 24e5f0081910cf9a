"""The errors supportflow raises. Every one is a :class:`SupportflowError`.

Messages name the thing, the value, and what would have been valid, so a log line is
enough to understand what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "ConcurrencyConflict",
    "InvalidTransition",
    "ReplyBlocked",
    "SupportflowError",
    "TicketNotFound",
    "ValidationError",
]


class SupportflowError(Exception):
    """Base class of every error raised by supportflow."""


class ValidationError(SupportflowError, ValueError):
    """A value given to supportflow is not acceptable.

    ``field`` names the argument or document path, ``value`` is what was given.

    >>> ValidationError("priority", "asap", "one of urgent, high, normal, low")
    ValidationError("priority='asap' is invalid: expected one of urgent, high, normal, low")
    """

    def __init__(self, field: str, value: Any, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}={value!r} is invalid: expected {expected}")

    def __repr__(self) -> str:
        return f"ValidationError({str(self)!r})"


class TicketNotFound(SupportflowError, LookupError):
    """No ticket has the given id."""

    def __init__(self, ticket_id: str) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"ticket {ticket_id!r} does not exist")


class ConcurrencyConflict(SupportflowError):
    """Another writer changed the ticket since it was loaded."""

    def __init__(self, ticket_id: str, expected_version: int, actual_version: int | None) -> None:
        self.ticket_id = ticket_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"ticket {ticket_id!r} was changed by another writer: expected version "
            f"{expected_version}, found {actual_version}"
        )


class InvalidTransition(SupportflowError):
    """A trigger cannot be fired on a ticket in its current status."""

    def __init__(
        self,
        ticket_id: str,
        status: str,
        trigger: str,
        allowed: Iterable[str],
        reason: str | None = None,
    ) -> None:
        self.ticket_id = ticket_id
        self.status = status
        self.trigger = trigger
        self.allowed = tuple(sorted(allowed))
        self.reason = reason
        allowed_text = ", ".join(self.allowed) or "none"
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"cannot {trigger!r} ticket {ticket_id!r} in status {status!r}{because}; "
            f"triggers allowed now: {allowed_text}"
        )


class ReplyBlocked(SupportflowError):
    """A public reply broke the desk's reply policy; nothing was stored or sent."""

    def __init__(self, ticket_id: str, findings: Sequence[Any]) -> None:
        self.ticket_id = ticket_id
        self.findings = tuple(findings)
        listed = "; ".join(str(finding) for finding in self.findings)
        super().__init__(f"reply on ticket {ticket_id!r} blocked: {listed}")
