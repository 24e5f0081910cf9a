"""Time-based house rules of a support desk: idle chats, auto-close and call-backs.

Each policy is a value. The functions here are pure: given a ticket they say when its next
deadline falls; the desk stores that instant on the ticket (``ticket.state``), turns it into
a timer, and acts when it comes due.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from supportflow.calendar import TWENTY_FOUR_SEVEN, BusinessCalendar, _is_calendar
from supportflow.clock import to_utc
from supportflow.errors import ValidationError
from supportflow.model import Channel, Ticket, _is_flag, _is_text, coerce_enum, duration_validator

__all__ = ["AutoClosePolicy", "CallbackPolicy", "IdleChatPolicy", "state_time"]


_positive = duration_validator()


def _channels(values: Iterable[Channel | str] | Channel | str) -> frozenset[Channel]:
    # A lone channel (``"chat"``) is one channel, not a sequence of characters.
    if isinstance(values, str):
        items: Iterable[Channel | str] = (values,)
    elif isinstance(values, Iterable):
        items = values
    else:
        raise ValidationError("channels", values, "a channel or an iterable of channels")
    return frozenset(coerce_enum(Channel, value, "channels") for value in items)


@attrs.frozen(slots=True)
class IdleChatPolicy:
    """A chat the customer has gone quiet on: remind after ``remind_after``, close after
    ``close_after`` (both counted from the agent's last public reply).

    Defaults from the field: a reminder at 3 minutes, closed at 5.
    """

    remind_after: timedelta = attrs.field(default=timedelta(minutes=3), validator=_positive)
    close_after: timedelta = attrs.field(default=timedelta(minutes=5), validator=_positive)
    channels: frozenset[Channel] = attrs.field(
        default=frozenset({Channel.CHAT}),
        converter=_channels,
    )
    reminder: str = attrs.field(
        default="Are you still there? This chat will close soon if we don't hear from you.",
        validator=_is_text,
    )
    closing: str = attrs.field(
        default="We're closing this chat for now. Reply any time and we'll pick it up again.",
        validator=_is_text,
    )
    enabled: bool = attrs.field(default=True, validator=_is_flag)

    def __attrs_post_init__(self) -> None:
        if self.close_after <= self.remind_after:
            raise ValidationError("close_after", self.close_after, "longer than remind_after")

    def applies(self, ticket: Ticket) -> bool:
        return self.enabled and ticket.channel in self.channels


@attrs.frozen(slots=True)
class AutoClosePolicy:
    """A resolved ticket the customer does not answer within ``after`` closes by itself.

    ``calendar`` decides whether ``after`` counts calendar time (the default, 24x7) or
    business time (pass a :class:`BusinessCalendar`).
    """

    after: timedelta = attrs.field(default=timedelta(days=7), validator=_positive)
    calendar: BusinessCalendar = attrs.field(default=TWENTY_FOUR_SEVEN, validator=_is_calendar)
    enabled: bool = attrs.field(default=True, validator=_is_flag)

    def __attrs_post_init__(self) -> None:
        self.calendar.check_span("after", self.after)

    def due(self, resolved_at: datetime) -> datetime:
        """When a ticket resolved at ``resolved_at`` closes by itself (UTC)."""
        if self.calendar is TWENTY_FOUR_SEVEN:  # elapsed time: nothing to look up
            try:
                return to_utc(resolved_at, "resolved_at") + self.after
            except OverflowError:
                raise ValidationError(
                    "resolved_at", resolved_at, "an instant whose auto-close is before 9999"
                ) from None
        return self.calendar.add_many_utc(resolved_at, (self.after,))[0]


@attrs.frozen(slots=True)
class CallbackPolicy:
    """A dropped call or chat gets a call-back task due at once; if nobody has done it
    within ``escalate_after`` it is escalated to the team lead."""

    escalate_after: timedelta = attrs.field(default=timedelta(minutes=30), validator=_positive)


def state_time(ticket: Ticket, key: str) -> datetime | None:
    """Read an instant the desk stored on the ticket (ISO 8601 in ``ticket.state``)."""
    value = ticket.state.get(key)
    return datetime.fromisoformat(value) if isinstance(value, str) else None
