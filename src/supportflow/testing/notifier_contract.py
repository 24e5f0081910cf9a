"""``NotifierContract``: the promises every notifier keeps, as a pytest class to subclass.

Subclass it in your tests and provide two fixtures: ``notifier``, a notifier that delivers to
a receiver you control, and ``received``, a callable returning what that receiver got so far
as a list of dicts, each with at least ``idempotency_key`` (and ``subject`` / ``body`` if the
channel carries them, for the unicode check). Provide ``failing_notifier`` (a notifier whose
receiver refuses or is unreachable) to check failures; without it that check is skipped.
Override ``recipients`` if your notifier needs other addresses.

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
    def recipients(self) -> Sequence[Recipient]:
        return (Recipient(RecipientRole.CUSTOMER, "customer@example.com", "Wang Fang"),)

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
            matching = [item for item in received() if item.get("idempotency_key") == key]
            if len(matching) >= count or time.monotonic() >= deadline:
                return matching
            time.sleep(0.01)

    # -- the contract ----------------------------------------------------------------------
    def test_is_a_notifier(self, notifier: Notifier) -> None:
        assert isinstance(notifier, Notifier)

    def test_delivery_arrives_once_with_its_key(
        self, notifier: Notifier, received: Received, recipients: Sequence[Recipient]
    ) -> None:
        notification = self.make_notification(recipients)
        notifier.deliver(notification, recipients)
        matching = self.arrived(received, notification.idempotency_key, 1)
        assert len(matching) == 1, f"expected one delivery, receiver got {len(matching)}"

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
        with pytest.raises(DeliveryError):
            failing_notifier.deliver(notification, recipients)
