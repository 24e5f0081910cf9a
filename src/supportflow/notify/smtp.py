"""``SmtpNotifier``: e-mail through any SMTP server, with the stdlib only.

Each notification becomes one message with a plain-text part and an HTML alternative (the text,
escaped). Headers make the mail safe to retry and easy to read in a mail client:

* ``Message-ID`` is derived from the idempotency key, so a retried delivery is the same
  message to the receiving server and clients that de-duplicate by id;
* ``In-Reply-To`` and ``References`` name a stable per-ticket root id
  ``<ticket-{ticket_id}@{domain}>``, so every mail about a ticket lands in one thread;
* ``Auto-Submitted: auto-generated`` keeps vacation responders from answering.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
import re
import smtplib
import ssl
from collections.abc import Sequence
from email.errors import HeaderDefect, MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from numbers import Integral

from supportflow.errors import ValidationError
from supportflow.model import Notification, Recipient, RecipientRole, check_text
from supportflow.notify.base import DeliveryError, check_timeout, header_value, redacted

__all__ = ["EMAIL_ROLES", "SmtpNotifier", "message_id", "thread_id"]

_POLICY = email.policy.default.clone(cte_type="7bit")

EMAIL_ROLES = frozenset(
    {
        RecipientRole.CUSTOMER,
        RecipientRole.AGENT,
        RecipientRole.TEAM_LEAD,
        RecipientRole.MANAGER,
        RecipientRole.GROUP,
    }
)
_ID_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


def _id_part(value: str) -> str:
    """``value`` as the left part of a Message-ID (a dot-atom).

    Keys that are not dot-atoms keep a readable prefix plus a hash of the whole key, so that
    distinct keys never share an id.

    >>> _id_part("t-1.created"), _id_part("t-1:created")
    ('t-1.created', 't-1-created.9616b5c37859e3c6')
    """
    if len(value) <= 64 and _ID_ATOM.fullmatch(value):
        return value
    prefix = _ID_UNSAFE.sub("-", value)[:40].strip("-") or "id"
    return f"{prefix}.{hashlib.sha256(value.encode('utf-8')).hexdigest()[:16]}"


def message_id(idempotency_key: str, domain: str) -> str:
    """The ``Message-ID`` of the mail for a notification.

    >>> message_id("t-1.created.3", "desk.example.com")
    '<t-1.created.3@desk.example.com>'
    """
    return f"<{_id_part(idempotency_key)}@{domain}>"


def thread_id(ticket_id: str, domain: str) -> str:
    """The root id every mail about ``ticket_id`` refers to.

    >>> thread_id("t-42", "desk.example.com")
    '<ticket-t-42@desk.example.com>'
    """
    return f"<{_id_part(f'ticket-{ticket_id}')}@{domain}>"


def _html(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    rendered = "\n".join(
        "<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs
    )
    head = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>'
    return f"{head}\n{rendered}\n</body></html>\n"


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not 1 <= int(value) <= 65535:
        raise ValidationError("port", value, "a whole number from 1 to 65535")
    return int(value)


def _smtp_text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class SmtpNotifier:
    """Sends each notification as one e-mail to all the recipients it is given.

    Recipients of role customer, agent, team_lead, manager and group are addressed by their
    ``address``; other roles are refused (permanently: route them to another notifier). SMTP
    4xx answers and connection problems raise a transient :class:`DeliveryError`, 5xx answers
    a permanent one.

    >>> notifier = SmtpNotifier("smtp.example.com", 587, sender="Help Desk <help@example.com>",
    ...                         starttls=True, username="help", password="...")
    >>> notifier.domain
    'supportflow.local'
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        domain: str = "supportflow.local",
    ) -> None:
        check_text("host", host, expected="the SMTP server's host name, a non-empty string")
        check_text("sender", sender, expected="an e-mail address such as help@example.com")
        if username is not None and not isinstance(username, str):
            raise ValidationError("username", username, "a string or None")
        if password is not None and not isinstance(password, str):
            # The type, never the value: a password must not reach a log line.
            raise ValidationError("password", redacted(password), "a string or None")
        check_timeout(timeout)
        if not isinstance(starttls, bool):
            raise ValidationError("starttls", starttls, "True or False")
        if (username is None) != (password is None):
            raise ValidationError("username", username, "username and password given together")
        if not isinstance(domain, str) or not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            raise ValidationError("domain", domain, "a host name such as desk.example.com")
        name, addr = parseaddr(sender)
        self.sender = self._address(name, addr, "sender")
        self.host = host
        self.port = _port(port)
        self.starttls = starttls
        self.timeout = timeout
        self.domain = domain
        self._username = username
        self._password = password

    def __repr__(self) -> str:
        return f"SmtpNotifier({self.host!r}, {self.port!r}, sender={str(self.sender)!r})"

    @staticmethod
    def _address(name: str, addr: str, what: str) -> Address:
        try:
            address = Address(display_name=name, addr_spec=addr)
        except (ValueError, HeaderDefect, IndexError, MessageError) as exc:  # "<a@b.c>" too
            raise ValidationError(what, addr, f"an e-mail address ({exc})") from None
        if not address.domain:
            raise ValidationError(what, addr, "an e-mail address with a domain")
        return address

    def build_message(
        self, notification: Notification, recipients: Sequence[Recipient]
    ) -> EmailMessage:
        """The e-mail :meth:`deliver` sends; raises ``DeliveryError`` for unusable recipients."""
        to: list[Address] = []
        for recipient in recipients:
            if recipient.role not in EMAIL_ROLES:
                raise DeliveryError(
                    f"SmtpNotifier cannot deliver to role {recipient.role.value!r} "
                    f"({recipient.address!r}); register another notifier for it",
                    permanent=True,
                )
            try:
                to.append(self._address(recipient.name, recipient.address, "recipient"))
            except ValidationError as exc:
                raise DeliveryError(str(exc), permanent=True) from exc
        if not to:
            raise DeliveryError("no e-mail recipients", permanent=True)

        # 7-bit transfer encodings (quoted-printable or base64 for non-ASCII text): smtplib
        # never announces BODY=8BITMIME, and an 8bit body without it may be mangled by a relay.
        message = EmailMessage(policy=_POLICY)
        message["From"] = self.sender
        message["To"] = to
        # Newlines in a subject would be a header-injection attempt or a template slip.
        message["Subject"] = " ".join(notification.subject.split())
        message["Date"] = format_datetime(notification.created_at)
        message["Message-ID"] = message_id(notification.idempotency_key, self.domain)
        if notification.ticket_id is not None:
            root = thread_id(notification.ticket_id, self.domain)
            message["In-Reply-To"] = root
            message["References"] = root
            message["X-Supportflow-Ticket"] = header_value(notification.ticket_id)
        message["Auto-Submitted"] = "auto-generated"
        # The key itself, so a receiver can match the mail to the outbox row; Message-ID above
        # needs a dot-atom and carries a derived form.
        message["X-Supportflow-Idempotency-Key"] = header_value(notification.idempotency_key)
        message["X-Supportflow-Kind"] = header_value(notification.kind)
        message.set_content(notification.body, charset="utf-8")
        message.add_alternative(_html(notification.body), subtype="html", charset="utf-8")
        return message

    def deliver(self, notification: Notification, recipients: Sequence[Recipient]) -> None:
        """Send :meth:`build_message` by SMTP; ``DeliveryError`` if it fails (permanent for 5xx)."""
        try:
            message = self.build_message(notification, recipients)
        except UnicodeError as exc:  # e.g. a lone surrogate: no retry makes it encodable
            raise DeliveryError(
                f"notification {notification.idempotency_key!r} cannot be encoded as mail: {exc}",
                permanent=True,
            ) from exc
        to_addrs = [address.addr_spec for address in message["To"].addresses]
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                refused = smtp.send_message(
                    message, from_addr=self.sender.addr_spec, to_addrs=to_addrs
                )
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused(exc.recipients) from exc
        except smtplib.SMTPResponseException as exc:
            text = f"{exc.smtp_code} {_smtp_text(exc.smtp_error)}"
            raise DeliveryError(
                f"SMTP {self.host}:{self.port} answered {exc.smtp_code}",
                permanent=exc.smtp_code >= 500,
                response=text,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            # STARTTLS or SMTPUTF8 missing on the server: configuration, not luck.
            raise DeliveryError(
                f"SMTP {self.host}:{self.port}: {exc}", permanent=True, response=str(exc)
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"SMTP {self.host}:{self.port} unreachable: {exc or type(exc).__name__}",
                permanent=False,
            ) from exc
        if refused:
            # Some recipients got it; the rest decide whether a retry is worth it.
            raise self._refused(refused)

    def _refused(self, refused: dict[str, tuple[int, bytes]]) -> DeliveryError:
        response = "; ".join(
            f"{addr}: {code} {_smtp_text(text)}" for addr, (code, text) in sorted(refused.items())
        )
        permanent = all(code >= 500 for code, _ in refused.values())
        return DeliveryError(
            f"SMTP {self.host}:{self.port} refused {len(refused)} recipient(s)",
            permanent=permanent,
            response=response,
        )
