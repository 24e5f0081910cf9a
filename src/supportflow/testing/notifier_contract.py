"""``NotifierContract``: the promises every notifier keeps, as a pytest class to subclass.

Subclass it in your tests and provide two fixtures: ``notifier``, a notifier that delivers to
a receiver you control, and ``received``, a callable returning what that receiver got so far
as a list of dicts, one per delivery that arrived, each with at least ``idempotency_key``
(``subject`` / ``body`` if the channel carries them, for the unicode check; ``recipients``, the
addresses the delivery went to, as strings or as dicts with ``address``, for the routing
check). Provide ``failing_notifier`` (a notifier whose receiver refuses or is unreachable) to
check failures; without it that check is skipped. Override ``recipients`` if your notifier
needs other addresses: a group of two or more recipients it serves.

>>> class TestMyNotifier(NotifierContract):          # doctest: +SKIP
...     @pytest.fixture
...     def notifier(self, server):
...         return WebhookNotifier(server.url, "s3cret", timeout=5)
...
...     @pytest.fixture
...     def received(self, server):
...         return lambda: [json.loads(body) for body in server.bodies]
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from supportflow.model import Notification, Recipient, RecipientRole
from supportflow.notify.base import DeliveryError, Notifier

__all__ = ["NotifierContract", "Received"]

Received = Callable[[], Sequence[Mapping[str, Any]]]

UNICODE_SUBJECT = "工单 #42 已解决 — Ünïcödé ✓ 🎉"
UNICODE_BODY = (
    "王芳，您好！\n\n您的退款（¥1,280）已到账。\nCafé «crème» — naïve façade 😀\nΕλληνικά · русский"
)


def _clean(value: Any) -> str:
    return str(value).replace("\r\n", "\n").strip()


class NotifierContract:
    """Tests every :class:`~supportflow.notify.Notifier` must pass."""

    #: How long a delivery may take to show up in ``received()``, in seconds.
    receive_timeout: float = 5.0

    @pytest.fixture
    def notifier(self) -> Notifier:
        pytest.fail(
            "subclass NotifierContract and override the `notifier` fixture: return the notifier"
            " under test, delivering to a receiver that `received` can read"
        )

    @pytest.fixture
    def received(self) -> Received:
        pytest.fail(
            "subclass NotifierContract and override the `received` fixture: return a callable"
            " giving what the receiver got so far, a list of dicts with 'idempotency_key'"
        )

    @pytest.fixture
    def recipients(self) -> Sequence[Recipient]:
        """The group a notifier is called with: two recipients, as when a ticket's customer
        has a colleague in copy (override with a group your notifier serves)."""
        return (
            Recipient(RecipientRole.CUSTOMER, "customer@example.com", "Wang Fang"),
            Recipient(RecipientRole.CUSTOMER, "colleague@example.com", "Li Lei"),
        )

    @pytest.fixture
    def failing_notifier(self) -> Notifier:
        pytest.skip("provide a failing_notifier fixture to check that failures raise")

    # -- helpers ---------------------------------------------------------------------------
    def make_notification(
        self,
        recipients: Sequence[Recipient],
        *,
        subject: str = "Ticket #42 updated",
        body: str = "Your ticket was updated.",
    ) -> Notification:
        """A notification with a fresh idempotency key."""
        return Notification(
            idempotency_key=f"contract-{uuid.uuid4().hex}",
            kind="contract_check",
            recipients=tuple(recipients),
            subject=subject,
            body=body,
            created_at=datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc),
            ticket_id="t-contract",
            data={"check": True},
        )

    def arrived(self, received: Received, key: str, count: int) -> list[Mapping[str, Any]]:
        """Wait until ``count`` deliveries with ``key`` arrived (or the timeout); return them."""
        deadline = time.monotonic() + self.receive_timeout
        while True:
            items = received()
            for item in items:
                if not isinstance(item, Mapping) or "idempotency_key" not in item:
                    pytest.fail(
                        f"received() gave {item!r}: it must return a list of dicts, one per"
                        " delivery, each with the delivery's 'idempotency_key'"
                    )
            matching = [item for item in items if item["idempotency_key"] == key]
            if len(matching) >= count or time.monotonic() >= deadline:
                return matching
            time.sleep(0.01)

    # -- the contract ----------------------------------------------------------------------
    def test_is_a_notifier(self, notifier: Notifier) -> None:
        assert isinstance(notifier, Notifier)

    def test_delivery_arrives_once_with_its_key(
        self, notifier: Notifier, received: Received, recipients: Sequence[Recipient]
    ) -> None:
        # One call is one delivery for the whole group: a receiver that drops repeated keys
        # would drop every recipient's part after the first if each came on its own.
        notification = self.make_notification(recipients)
        notifier.deliver(notification, recipients)
        # deliver() returns once the receiver accepted: every copy it sent is in by then.
        matching = self.arrived(received, notification.idempotency_key, 1)
        assert len(matching) == 1, (
            f"expected one delivery for the group of {len(recipients)} recipients, the receiver"
            f" got {len(matching)} with the key"
        )

    def test_a_delivery_goes_to_the_recipients_given(
        self, notifier: Notifier, received: Received, recipients: Sequence[Recipient]
    ) -> None:
        # The dispatcher routes each recipient by role: a notifier serves the group it is
        # called with, never the notification's other recipients (another notifier's).
        elsewhere = Recipient(RecipientRole.WEBHOOK, "https://hooks.example.com/other", "ops")
        notification = self.make_notification([*recipients, elsewhere])
        notifier.deliver(notification, recipients)
        matching = self.arrived(received, notification.idempotency_key, 1)
        assert len(matching) == 1
        if "recipients" not in matching[0]:
            pytest.skip("received() does not report the addresses a delivery went to")
        got = {
            item["address"] if isinstance(item, Mapping) else item
            for item in matching[0]["recipients"]
        }
        assert got == {recipient.address for recipient in recipients}, (
            "a notifier must deliver to the recipients it is called with, not to every"
            " recipient of the notification"
        )

    def test_unicode_subject_and_body_survive(
        self, notifier: Notifier, received: Received, recipients: Sequence[Recipient]
    ) -> None:
        notification = self.make_notification(
            recipients, subject=UNICODE_SUBJECT, body=UNICODE_BODY
        )
        notifier.deliver(notification, recipients)
        matching = self.arrived(received, notification.idempotency_key, 1)
        assert len(matching) == 1
        got = matching[0]
        if "subject" not in got and "body" not in got:
            pytest.skip("received() reports neither subject nor body")
        if "subject" in got:
            assert _clean(got["subject"]) == UNICODE_SUBJECT
        if "body" in got:
            assert _clean(got["body"]) == UNICODE_BODY

    def test_repeated_delivery_carries_the_same_key(
        self, notifier: Notifier, received: Received, recipients: Sequence[Recipient]
    ) -> None:
        notification = self.make_notification(recipients)
        notifier.deliver(notification, recipients)
        notifier.deliver(notification, recipients)
        matching = self.arrived(received, notification.idempotency_key, 2)
        # The receiver may drop the repeat itself; what must hold is that every copy that
        # arrived carries the one key, so that it can.
        assert 1 <= len(matching) <= 2
        assert {item["idempotency_key"] for item in matching} == {notification.idempotency_key}

    def test_failure_raises(
        self, failing_notifier: Notifier, recipients: Sequence[Recipient]
    ) -> None:
        notification = self.make_notification(recipients)
        try:
            failing_notifier.deliver(notification, recipients)
        except DeliveryError:
            return
        except Exception as error:
            pytest.fail(
                f"failing_notifier raised {error!r}: catch what your client raises and raise"
                " DeliveryError(message, permanent=..., response=...) instead, so that the"
                " dispatcher knows whether retrying can help (it retries anything else as"
                " transient)"
            )
        pytest.fail(
            "failing_notifier.deliver returned although its receiver refused: a notifier must"
            " raise DeliveryError when a delivery was not accepted, else it is never retried"
        )
