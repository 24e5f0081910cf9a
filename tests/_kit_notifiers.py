"""Notifiers for testing the notifier contract kit itself: one that keeps every promise of
the port, and others that each break one, as notifiers do by mistake.

Each keeps what its receiver accepted in ``inbox``, as ``received()`` reports it: one dict
per delivery, with the key, the subject, the body and the addresses it went to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from supportflow.model import Notification, Recipient
from supportflow.notify import DeliveryError


class InboxNotifier:
    """Delivers each call as one message to the recipients it is given."""

    def __init__(self) -> None:
        self.inbox: list[dict[str, Any]] = []

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        self.inbox.append(
            {
                "idempotency_key": notification.idempotency_key,
                "subject": notification.subject,
                "body": notification.body,
                "recipients": [recipient.address for recipient in recipients],
            }
        )


class RefusedNotifier(InboxNotifier):
    """Its receiver refuses everything, and it says so."""

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        raise DeliveryError("HTTP 410", permanent=True, response="410 Gone")


class OneByOneNotifier(InboxNotifier):
    """Sends each recipient a message of its own, all with the one key: a receiver that
    drops repeated keys keeps only the first recipient's."""

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        for recipient in recipients:
            super().deliver(notification, [recipient])


class EveryoneNotifier(InboxNotifier):
    """Sends to every recipient of the notification, those routed to other notifiers too."""

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        super().deliver(notification, notification.recipients)


class OSErrorNotifier(InboxNotifier):
    """Lets its client's error out as it is, so the dispatcher cannot tell whether a retry
    can help (the kit's failure message says what to do)."""

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        raise ConnectionRefusedError(111, "Connection refused")
