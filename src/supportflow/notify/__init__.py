"""Notifications: the outbox dispatcher, delivery channels, reply scripts and the reply guard.

Everything here uses the standard library only, so ``supportflow.notify`` imports without any
optional package.

* :class:`Dispatcher` drains the outbox through the :class:`Notifier` registered for each
  recipient role, with retries, backoff and dead letters;
* channels: :class:`WebhookNotifier` (signed JSON POST), :class:`SmtpNotifier` (e-mail),
  :class:`LogNotifier` and :class:`MemoryNotifier` (tests);
* :class:`ReplyScripts` fills greeting, holding, resolution and closing templates per language;
* :class:`ReplyGuard` blocks replies with foreign links, copied internal notes or forbidden
  terms.
"""

from __future__ import annotations

from supportflow.notify.base import DeliveryError, Notifier
from supportflow.notify.dispatcher import Dispatcher, DispatchReport
from supportflow.notify.guard import Finding, FindingKind, ReplyGuard, ReplyPolicy
from supportflow.notify.log import LogNotifier
from supportflow.notify.memory import Delivery, MemoryNotifier
from supportflow.notify.scripts import (
    BUILTIN_TEMPLATES,
    DEFAULT_PARTS,
    MissingTemplateField,
    ReplyScripts,
)
from supportflow.notify.smtp import SmtpNotifier
from supportflow.notify.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    notification_payload,
    sign,
    verify_signature,
)

__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_PARTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Delivery",
    "DeliveryError",
    "DispatchReport",
    "Dispatcher",
    "Finding",
    "FindingKind",
    "LogNotifier",
    "MemoryNotifier",
    "MissingTemplateField",
    "Notifier",
    "ReplyGuard",
    "ReplyPolicy",
    "ReplyScripts",
    "SmtpNotifier",
    "WebhookNotifier",
    "notification_payload",
    "sign",
    "verify_signature",
]
