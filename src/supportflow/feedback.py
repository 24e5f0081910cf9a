"""Customer feedback rules: surveys, follow-up call-backs (回访), complaints and the voice of
the customer, as pure values and functions.

Nothing here touches storage or the clock. :class:`~supportflow.extensions.feedback.
FeedbackExtension` applies these rules inside desk commands, and
:class:`~supportflow.services.feedback.FeedbackService` offers them as a small API.

- A survey asks for CSAT (1–5), NPS (0–10) and CES (1–7), each optional, and a comment. The
  customer receives a signed, expiring token (HMAC-SHA256 over the survey id, the ticket id and
  the expiry) that :func:`read_survey_token` checks in constant time.
- A follow-up is a call to the customer after a complaint, a low CSAT or for a VIP; its
  outcome is one of :class:`FollowUpOutcome`.
- A complaint may only be closed once its root cause, responsibility, remedy and a completed
  follow-up are recorded (:func:`complaint_missing`).
- Suggestions go to product and bugs to R&D (:class:`VoiceKind`), with a status that moves
  as in :data:`VOICE_TRANSITIONS`.

>>> policy = FeedbackPolicy(secret=b"0123456789abcdef")
>>> expires = datetime(2026, 3, 20, tzinfo=timezone.utc)
>>> token = sign_survey_token(policy.secret, "s-1", "t-1", expires)
>>> claims = read_survey_token(policy.secret, token, datetime(2026, 3, 6, tzinfo=timezone.utc))
>>> claims.survey_id, claims.ticket_id
('s-1', 't-1')
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from supportflow.clock import ensure_aware
from supportflow.errors import SupportflowError, ValidationError
from supportflow.model import (
    Channel,
    Ticket,
    _is_flag,
    _is_name,
    _is_optional_name,
    coerce_enum,
    duration_validator,
)

__all__ = [
    "COMPLAINT_FIELDS",
    "VOICE_TRANSITIONS",
    "ComplaintIncomplete",
    "FeedbackPolicy",
    "FollowUpOutcome",
    "RejectReason",
    "SurveyClaims",
    "SurveyRejected",
    "SurveyScores",
    "VoiceKind",
    "VoiceStatus",
    "check_voice_transition",
    "complaint_missing",
    "follow_up_reasons",
    "is_merged",
    "read_survey_token",
    "sign_survey_token",
    "survey_wanted",
]

# Record kinds written beside tickets.
SURVEY = "survey"
FOLLOW_UP = "follow_up"
VOICE = "voice"
ARTICLE = "article"

TYPICAL_CASE_TAG = "typical_case"

# Custom fields of a complaint ticket, with the words an error message uses for them.
COMPLAINT_FIELDS: dict[str, str] = {
    "complaint_root_cause": "root cause",
    "complaint_responsibility": "responsibility",
    "complaint_remedy": "remedy offered",
}
COMPLETED_FOLLOW_UP = "a completed follow-up"


class StateKey:
    """Keys the feedback rules keep in ``ticket.state`` (ISO instants are strings)."""

    SURVEY_ID = "survey_id"
    SURVEY_DUE_AT = "survey_due_at"
    SURVEY_SENT_AT = "survey_sent_at"
    SURVEY_EXPIRES_AT = "survey_expires_at"
    SURVEY_ANSWERED_AT = "survey_answered_at"
    FOLLOW_UP_ID = "followup_id"
    FOLLOW_UP_DUE_AT = "followup_due_at"
    FOLLOW_UP_ATTEMPTS = "followup_attempts"
    FOLLOW_UP_REASONS = "followup_reasons"
    FOLLOW_UP_ASSIGNEE = "followup_assignee"
    FOLLOW_UP_NOTIFIED = "followup_notified"
    FOLLOW_UP_DONE_AT = "followup_done_at"


class RejectReason(str, enum.Enum):
    """Why a survey answer was refused."""

    MALFORMED = "malformed"  # not a survey token at all
    BAD_SIGNATURE = "bad_signature"  # forged, or changed after it was signed
    EXPIRED = "expired"
    ALREADY_ANSWERED = "already_answered"
    UNKNOWN_SURVEY = "unknown_survey"  # not the survey the ticket sent (or no such ticket)


class SurveyRejected(SupportflowError):
    """A survey answer was refused; ``reason`` says why and nothing was stored.

    >>> str(SurveyRejected(RejectReason.EXPIRED, "the survey expired at 2026-03-20T00:00:00Z"))
    'survey answer rejected (expired): the survey expired at 2026-03-20T00:00:00Z'
    """

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"survey answer rejected ({reason.value}): {detail}")


class ComplaintIncomplete(ValidationError):
    """A complaint was closed before everything a complaint needs was recorded.

    ``missing`` lists what is lacking, in the words of the message.
    """

    def __init__(self, ticket_id: str, missing: Iterable[str]) -> None:
        self.ticket_id = ticket_id
        self.missing = tuple(missing)
        super().__init__(
            "close",
            ticket_id,
            "a complaint with root cause, responsibility, remedy offered and a completed "
            f"follow-up; missing: {', '.join(self.missing)}",
        )


class FollowUpOutcome(str, enum.Enum):
    """How a follow-up call went."""

    REACHED_SATISFIED = "reached_satisfied"
    REACHED_NOT_SATISFIED = "reached_not_satisfied"
    NOT_REACHABLE = "not_reachable"


class VoiceKind(str, enum.Enum):
    """What a customer voiced: a suggestion (to product) or a bug (to R&D)."""

    SUGGESTION = "suggestion"
    BUG = "bug"

    @property
    def route(self) -> str:
        """The team that receives it: ``"product"`` or ``"rnd"``."""
        return "product" if self is VoiceKind.SUGGESTION else "rnd"


class VoiceStatus(str, enum.Enum):
    """Where a suggestion or bug stands with the team that received it."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    SHIPPED = "shipped"


VOICE_TRANSITIONS: dict[VoiceStatus, frozenset[VoiceStatus]] = {
    VoiceStatus.SUBMITTED: frozenset(
        {VoiceStatus.ACCEPTED, VoiceStatus.DECLINED, VoiceStatus.SHIPPED}
    ),
    VoiceStatus.ACCEPTED: frozenset({VoiceStatus.DECLINED, VoiceStatus.SHIPPED}),
    VoiceStatus.DECLINED: frozenset({VoiceStatus.ACCEPTED}),
    VoiceStatus.SHIPPED: frozenset(),
}
"""Which statuses a suggestion or bug may move to from each status."""


def check_voice_transition(current: str, wanted: VoiceStatus | str) -> VoiceStatus:
    """The new status, or ``ValidationError`` naming the statuses allowed from ``current``.

    >>> check_voice_transition("submitted", "accepted")
    <VoiceStatus.ACCEPTED: 'accepted'>
    """
    target = coerce_enum(VoiceStatus, wanted, "status")
    allowed = VOICE_TRANSITIONS[coerce_enum(VoiceStatus, current, "current status")]
    if target not in allowed:
        names = ", ".join(sorted(s.value for s in allowed)) or "none (it is final)"
        raise ValidationError("status", target.value, f"from {current!r} one of: {names}")
    return target


def _secret(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) < 16:
        raise ValidationError("secret", "<hidden>", "bytes, at least 16 of them")


def _channels(value: Iterable[Channel | str] | None) -> frozenset[Channel] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValidationError(
            "survey_channels", value, "an iterable of channels (Channel or its value), or None"
        )
    return frozenset(coerce_enum(Channel, item, "survey_channels") for item in value)


def _url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        value.format(token="token")
    except (AttributeError, KeyError, IndexError, ValueError):  # not a string, or bad fields
        raise ValidationError(
            attribute.name, value, "a string whose only replacement field is {token}"
        ) from None


def _choice(*allowed: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in allowed:
            raise ValidationError(attribute.name, value, f"one of {', '.join(allowed)}")

    return check


def _between(low: int, high: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValidationError(attribute.name, value, f"an integer from {low} to {high}")

    return check


@attrs.frozen(slots=True, repr=False)
class FeedbackPolicy:
    """How a desk asks for feedback and follows up.

    ``survey_channels`` limits surveys to tickets from those channels (``None``: every
    channel). ``survey_url`` is formatted with ``{token}`` for the link the customer gets.
    A follow-up is due ``follow_up_delay`` after its cause, goes to ``follow_up_assignee`` (or
    the ticket's assignee, or the team lead), and an unreachable customer is tried again
    ``follow_up_retries`` times, ``follow_up_retry_interval`` apart. ``not_satisfied`` says
    what a call that finds the customer unhappy does: ``"reopen"`` the ticket (a closed one
    cannot be: a linked ticket is opened instead) or open a ``"new_ticket"`` linked to it.

    >>> policy = FeedbackPolicy(secret=b"0123456789abcdef", survey_delay=timedelta(hours=2))
    >>> policy.survey_ttl, policy.not_satisfied
    (datetime.timedelta(days=14), 'reopen')
    """

    secret: bytes = attrs.field(validator=_secret)
    survey_delay: timedelta = attrs.field(
        default=timedelta(hours=1), validator=duration_validator(least=timedelta(0))
    )
    survey_ttl: timedelta = attrs.field(
        default=timedelta(days=14), validator=duration_validator(least=timedelta(seconds=1))
    )
    survey_channels: frozenset[Channel] | None = attrs.field(default=None, converter=_channels)
    survey_url: str = attrs.field(default="{token}", validator=_url)
    low_csat_threshold: int = attrs.field(default=2, validator=_between(1, 5))
    follow_up_delay: timedelta = attrs.field(
        default=timedelta(days=1), validator=duration_validator(least=timedelta(0))
    )
    follow_up_retries: int = attrs.field(default=3, validator=_between(0, 100))
    follow_up_retry_interval: timedelta = attrs.field(
        default=timedelta(hours=4), validator=duration_validator(least=timedelta(seconds=1))
    )
    follow_up_assignee: str | None = attrs.field(default=None, validator=_is_optional_name)
    follow_up_vip: bool = attrs.field(default=True, validator=_is_flag)
    not_satisfied: str = attrs.field(default="reopen", validator=_choice("reopen", "new_ticket"))
    complaint_kind: str = attrs.field(default="complaint", validator=_is_name)
    merged_tag: str = attrs.field(default="merged", validator=_is_name)
    merged_link: str = attrs.field(default="merged_into", validator=_is_name)

    def __repr__(self) -> str:  # the secret stays out of logs
        return (
            f"FeedbackPolicy(survey_delay={self.survey_delay}, survey_ttl={self.survey_ttl}, "
            f"low_csat_threshold={self.low_csat_threshold}, "
            f"not_satisfied={self.not_satisfied!r}, ...)"
        )


# -- surveys ----------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class SurveyScores:
    """A customer's answers; each score is optional but at least one answer is needed.

    >>> SurveyScores(csat=6)
    Traceback (most recent call last):
    ...
    supportflow.errors.ValidationError: csat=6 is invalid: expected an integer from 1 to 5
    """

    csat: int | None = attrs.field(default=None)
    nps: int | None = attrs.field(default=None)
    ces: int | None = attrs.field(default=None)
    comment: str | None = None

    @csat.validator
    def _check_csat(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        _score("csat", value, 1, 5)

    @nps.validator
    def _check_nps(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        _score("nps", value, 0, 10)

    @ces.validator
    def _check_ces(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        _score("ces", value, 1, 7)

    def __attrs_post_init__(self) -> None:
        if self.comment is not None and not isinstance(self.comment, str):
            raise ValidationError("comment", self.comment, "a string or None")
        if self.csat is None and self.nps is None and self.ces is None and not self.comment:
            raise ValidationError("csat", None, "at least one of csat, nps, ces or a comment")

    def as_data(self) -> dict[str, Any]:
        return {"csat": self.csat, "nps": self.nps, "ces": self.ces, "comment": self.comment}


def _score(field: str, value: object, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(field, value, f"an integer from {low} to {high}")


@attrs.frozen(slots=True)
class SurveyClaims:
    """What a valid survey token says: which survey, on which ticket, valid until when."""

    survey_id: str
    ticket_id: str
    expires_at: datetime


def _key(secret: object) -> None:
    if not isinstance(secret, (bytes, bytearray)):
        raise ValidationError("secret", "<hidden>", "bytes")


def _message(survey_id: str, ticket_id: str, expiry: int) -> bytes:
    return f"{survey_id}\n{ticket_id}\n{expiry}".encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def sign_survey_token(secret: bytes, survey_id: str, ticket_id: str, expires_at: datetime) -> str:
    """A URL-safe token naming the survey and ticket, valid before ``expires_at`` (to the
    second), signed with HMAC-SHA256 under ``secret``."""
    _key(secret)
    for field, value in (("survey_id", survey_id), ("ticket_id", ticket_id)):
        if not isinstance(value, str) or not value or "\n" in value:
            raise ValidationError(field, value, "a non-empty single-line string")
    if not isinstance(expires_at, datetime):
        raise ValidationError("expires_at", expires_at, "a datetime")
    expiry = int(expires_at.timestamp())
    payload = json.dumps({"s": survey_id, "t": ticket_id, "e": expiry}, separators=(",", ":"))
    signature = hmac.new(secret, _message(survey_id, ticket_id, expiry), hashlib.sha256).digest()
    return f"{_b64(payload.encode())}.{_b64(signature)}"


def read_survey_token(secret: bytes, token: str, now: datetime) -> SurveyClaims:
    """Check a token's signature and expiry; :class:`SurveyRejected` says why it fails."""
    _key(secret)
    ensure_aware(now, "now")
    try:
        payload_text, signature_text = token.split(".")
        payload = json.loads(_unb64(payload_text))
        signature = _unb64(signature_text)
        survey_id, ticket_id, expiry = payload["s"], payload["t"], payload["e"]
        if not (
            isinstance(survey_id, str) and isinstance(ticket_id, str) and isinstance(expiry, int)
        ):
            raise TypeError("bad field types")
    except (AttributeError, ValueError, TypeError, KeyError, binascii.Error):
        raise SurveyRejected(RejectReason.MALFORMED, "this is not a survey token") from None
    expected = hmac.new(secret, _message(survey_id, ticket_id, expiry), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise SurveyRejected(
            RejectReason.BAD_SIGNATURE, "the token's signature does not match (forged or altered)"
        )
    expires_at = datetime.fromtimestamp(expiry, tz=timezone.utc)
    if now >= expires_at:
        raise SurveyRejected(
            RejectReason.EXPIRED, f"survey {survey_id} expired at {expires_at.isoformat()}"
        )
    return SurveyClaims(survey_id, ticket_id, expires_at)


def _ticket(ticket: object) -> None:
    if not isinstance(ticket, Ticket):
        raise ValidationError("ticket", ticket, "a supportflow Ticket")


def _policy(policy: object) -> None:
    if not isinstance(policy, FeedbackPolicy):
        raise ValidationError("policy", policy, "a FeedbackPolicy")


def is_merged(ticket: Ticket, policy: FeedbackPolicy) -> bool:
    """Whether the ticket was merged into another (tagged, or linked ``merged_into``)."""
    _ticket(ticket)
    _policy(policy)
    return policy.merged_tag in ticket.tags or bool(ticket.linked(policy.merged_link))


def survey_wanted(ticket: Ticket, policy: FeedbackPolicy) -> bool:
    """Whether resolving ``ticket`` should schedule a survey: its channel is surveyed, it was
    not merged, and it has no survey scheduled or sent yet (one survey per ticket)."""
    _ticket(ticket)
    _policy(policy)
    if policy.survey_channels is not None and ticket.channel not in policy.survey_channels:
        return False
    if is_merged(ticket, policy):
        return False
    state = ticket.state
    return not (state.get(StateKey.SURVEY_DUE_AT) or state.get(StateKey.SURVEY_SENT_AT))


def csat_is_low(csat: int | None, policy: FeedbackPolicy) -> bool:
    """Whether a CSAT answer calls for a follow-up."""
    return csat is not None and csat <= policy.low_csat_threshold


# -- follow-ups and complaints -----------------------------------------------------------------
def is_complaint(ticket: Ticket, policy: FeedbackPolicy) -> bool:
    return ticket.kind == policy.complaint_kind


def follow_up_reasons(ticket: Ticket, policy: FeedbackPolicy) -> list[str]:
    """Why resolving ``ticket`` calls for a follow-up (``complaint``, ``vip``), if it does."""
    _ticket(ticket)
    _policy(policy)
    reasons = []
    if is_complaint(ticket, policy):
        reasons.append("complaint")
    if policy.follow_up_vip and ticket.customer.is_vip:
        reasons.append("vip")
    return reasons


def complaint_missing(ticket: Ticket) -> list[str]:
    """What a complaint still lacks before it may close, in words (empty: nothing).

    >>> complaint_missing(ticket)                                   # doctest: +SKIP
    ['root cause', 'a completed follow-up']
    """
    _ticket(ticket)
    missing = [
        label
        for field, label in COMPLAINT_FIELDS.items()
        if not str(ticket.fields.get(field) or "").strip()
    ]
    if not ticket.state.get(StateKey.FOLLOW_UP_DONE_AT):
        missing.append(COMPLETED_FOLLOW_UP)
    return missing


def ticket_dimensions(ticket: Ticket) -> dict[str, Any]:
    """The ticket's report dimensions, copied into feedback events so that metrics can group
    answers that arrive after the ticket closed."""
    return {
        "channel": ticket.channel.value,
        "category": ticket.category,
        "priority": ticket.priority.value,
        "group": ticket.group,
        "agent": ticket.assignee,
    }
