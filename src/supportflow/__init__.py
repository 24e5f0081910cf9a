"""supportflow: the rules of a customer-support desk, as a library.

Tickets as state machines, SLA clocks on business calendars, escalation, follow-ups and
metrics, behind pluggable storage and notification ports. Start with :class:`Desk`.
"""

from __future__ import annotations

from supportflow.automation import AutoClosePolicy, CallbackPolicy, IdleChatPolicy
from supportflow.calendar import TWENTY_FOUR_SEVEN, BusinessCalendar
from supportflow.clock import Clock, ManualClock, SystemClock
from supportflow.desk import Desk, DueReport
from supportflow.errors import (
    ConcurrencyConflict,
    InvalidTransition,
    ReplyBlocked,
    SupportflowError,
    TicketNotFound,
    ValidationError,
)
from supportflow.escalation import (
    EscalationCondition,
    EscalationLevel,
    EscalationPolicy,
)
from supportflow.events import Event, EventType
from supportflow.model import (
    Channel,
    Customer,
    Link,
    Message,
    Notification,
    Priority,
    Recipient,
    RecipientRole,
    Role,
    SlaClock,
    SlaClockState,
    StatusCategory,
    Ticket,
    Timer,
    VerificationMethod,
)
from supportflow.sla import ClockReading, SlaCondition, SlaPolicy, SlaTarget, default_sla_policies
from supportflow.workflow import Guard, Transition, Workflow, default_workflow

__all__ = [
    "TWENTY_FOUR_SEVEN",
    "AutoClosePolicy",
    "BusinessCalendar",
    "CallbackPolicy",
    "Channel",
    "Clock",
    "ClockReading",
    "ConcurrencyConflict",
    "Customer",
    "Desk",
    "DueReport",
    "EscalationCondition",
    "EscalationLevel",
    "EscalationPolicy",
    "Event",
    "EventType",
    "Guard",
    "IdleChatPolicy",
    "InvalidTransition",
    "Link",
    "ManualClock",
    "Message",
    "Notification",
    "Priority",
    "Recipient",
    "RecipientRole",
    "ReplyBlocked",
    "Role",
    "SlaClock",
    "SlaClockState",
    "SlaCondition",
    "SlaPolicy",
    "SlaTarget",
    "StatusCategory",
    "SupportflowError",
    "SystemClock",
    "Ticket",
    "TicketNotFound",
    "Timer",
    "Transition",
    "ValidationError",
    "VerificationMethod",
    "Workflow",
    "default_sla_policies",
    "default_workflow",
]

__version__ = "0.1.0"
