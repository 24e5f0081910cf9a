"""Domain events: the audit trail of every ticket, and the source of its metrics.

Every change to a ticket appends one or more :class:`Event` rows in the same unit of work as
the change. ``sequence`` counts from 1 per ticket without gaps. ``data`` holds plain JSON
values only (strings, numbers, booleans, lists, dicts, ``None``); datetimes are ISO 8601
strings and durations are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import attrs

__all__ = ["Event", "EventDraft", "EventType"]


def _plain(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value) if value else {}


@attrs.frozen(slots=True, weakref_slot=False)
class Event:
    """Something that happened to a ticket.

    >>> event.type, event.actor        # doctest: +SKIP
    ('StatusChanged', 'agent_li')
    """

    ticket_id: str
    sequence: int
    type: str
    at: datetime
    actor: str
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_plain)


class EventType:
    """The event types the desk writes, with the keys of their ``data``."""

    TICKET_OPENED: Final = "TicketOpened"
    """subject, channel, priority, category, kind, status, customer_id, customer_tier, group."""
    MESSAGE_ADDED: Final = "MessageAdded"
    """message_id, role (agent/customer/system), public (bool), author."""
    NOTE_ADDED: Final = "NoteAdded"
    """message_id, author: an internal note (never shown to the customer)."""
    STATUS_CHANGED: Final = "StatusChanged"
    """trigger, from, to, from_category, to_category, and the trigger's extra data."""
    ASSIGNED: Final = "Assigned"
    """assignee, group, previous_assignee, previous_group."""
    CUSTOMER_VERIFIED: Final = "CustomerVerified"
    """method, by."""
    PRIORITY_CHANGED: Final = "PriorityChanged"
    """from, to, reason, explicit (bool: set by a person rather than a rule)."""
    TICKET_UPDATED: Final = "TicketUpdated"
    """changes: {field: [old, new]} for category, tags, kind, custom fields, impact, urgency."""
    LINKED: Final = "TicketLinked"
    """kind, ticket_id."""
    SLA_POLICY_APPLIED: Final = "SlaPolicyApplied"
    """policy, reason, priority, targets: {clock: seconds or None}."""
    SLA_WARNING: Final = "SlaWarning"
    """clock, policy, threshold (percent), due_at, remaining_seconds (business time), cycle."""
    SLA_BREACHED: Final = "SlaBreached"
    """clock, policy, target_seconds, due_at, cycle."""
    SLA_MET: Final = "SlaMet"
    """clock, policy, elapsed_seconds (business time), target_seconds, late (bool), cycle."""
    CLASSIFIED: Final = "Classified"
    """reasons: [{rule, action, detail}], and the resulting fields."""
    EARLY_WARNING: Final = "EarlyWarning"
    """words: the sensitive words that matched."""
    INCIDENT_DETECTED: Final = "IncidentDetected"
    """fingerprint, count, window_seconds, examples (up to five ticket ids), incident_id."""
    ESCALATED: Final = "Escalated"
    """policy, level, reason, targets, actions, repeat (int)."""
    ACKNOWLEDGED: Final = "Acknowledged"
    """level."""
    REMINDER_SENT: Final = "ReminderSent"
    """reason (idle_chat, ...)."""
    CALLBACK_SCHEDULED: Final = "CallbackScheduled"
    """reason, due_at."""
    CALLBACK_DONE: Final = "CallbackDone"
    """outcome."""
    REPLY_GUARD_OVERRIDDEN: Final = "ReplyGuardOverridden"
    """by, role, findings."""
    SURVEY_SCHEDULED: Final = "SurveyScheduled"
    """survey_id, due_at: a satisfaction survey will be sent at due_at."""
    SURVEY_SENT: Final = "SurveySent"
    """survey_id, expires_at: the customer was sent a signed survey link."""
    SURVEY_CANCELLED: Final = "SurveyCancelled"
    """survey_id, reason (reopened, cancelled, merged): a scheduled survey will not be sent."""
    FEEDBACK_RECORDED: Final = "FeedbackRecorded"
    """survey_id, csat (1-5), nps (0-10), ces (1-7), comment (each may be None), and the
    ticket's channel, category, priority, group and agent when the customer answered."""
    FOLLOW_UP_SCHEDULED: Final = "FollowUpScheduled"
    """follow_up_id, reasons (complaint, low_csat, vip, manual), due_at, assignee."""
    FOLLOW_UP_ATTEMPTED: Final = "FollowUpAttempted"
    """follow_up_id, attempt, outcome (not_reachable), next_due_at, note."""
    FOLLOW_UP_COMPLETED: Final = "FollowUpCompleted"
    """follow_up_id, outcome (reached_satisfied, reached_not_satisfied), attempts, note,
    and the ticket's channel, category, priority, group and agent."""
    FOLLOW_UP_FAILED: Final = "FollowUpFailed"
    """follow_up_id, attempts: the customer could not be reached; with the ticket's channel,
    category, priority, group and agent."""
    COMPLAINT_CLOSED_INCOMPLETE: Final = "ComplaintClosedIncomplete"
    """missing: what a complaint lacked when the system closed it (auto-close, idle chat)."""
    VOICE_CAPTURED: Final = "VoiceCaptured"
    """record_id, kind (suggestion, bug), route (product, rnd), summary."""
    VOICE_ATTACHED: Final = "VoiceAttached"
    """record_id: the ticket's customer asked for an already captured suggestion or bug."""
    ARTICLE_CITED: Final = "ArticleCited"
    """article_id: a knowledge-base article was used to answer the ticket."""


@attrs.frozen(slots=True, weakref_slot=False)
class EventDraft:
    """An event an engine wants recorded; the desk numbers it and adds the ticket id."""

    type: str
    at: datetime
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_plain)
    actor: str = "system"
