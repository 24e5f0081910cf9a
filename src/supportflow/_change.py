"""One command's change to one ticket: the engines applied, the events and notifications
gathered, and the deadlines that fell due handled in order. Used only by the Desk."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs

from supportflow.automation import AutoClosePolicy, CallbackPolicy, IdleChatPolicy
from supportflow.errors import InvalidTransition, ValidationError
from supportflow.escalation import EscalationEngine, EscalationPolicy, EscalationStep
from supportflow.events import Event, EventDraft, EventType
from supportflow.model import (
    _EMPTY,  # the shared empty mapping of tickets without state
    _NO_TAGS,
    Channel,
    Customer,
    Link,
    Message,
    Notification,
    Priority,
    Recipient,
    RecipientRole,
    Role,
    SlaState,
    StatusCategory,
    Ticket,
    Timer,
    Verification,
    VerificationMethod,
    _maker,
    _replacer,
    _slot_setter,
    check_text,
    plain_json,
)
from supportflow.notify.guard import ReplyGuard
from supportflow.sla import TICKET_INPUTS, SlaEngine
from supportflow.storage import UnitOfWork
from supportflow.workflow import Workflow

_MAX_DUE_STEPS = 10_000  # a ticket never has this many deadlines due at once


class _Unverified(InvalidTransition):
    """Refused because the customer's identity is not verified (an ``InvalidTransition``)."""


class DeskExtension:
    """A feature taking part in every command of a desk (surveys, classification, ...).

    Each hook receives the :class:`Change` being built and may record events, notify, change
    the ticket through the change's commands, or queue writes with ``change.follow_ups``.
    Hooks left as they are here do nothing. Timers whose key starts with ``timer_prefix``
    followed by ``":"`` are handed to :meth:`fire`.
    """

    timer_prefix: str = ""

    def opened(self, change: Change) -> None:
        """A ticket was opened (one opened as a follow-up is linked ``follows`` already)."""

    def message_added(self, change: Change, message: Message) -> None:
        """A public message or an internal note was added."""

    def status_changed(
        self, change: Change, before: StatusCategory, after: StatusCategory, trigger: str
    ) -> None:
        """The workflow moved the ticket (``before``/``after`` are categories)."""

    def fields_changed(self, change: Change, changed: frozenset[str]) -> None:
        """Classification fields changed (``category``, ``tags``, ``fields.<name>``, ...)."""

    def timers(self, change: Change) -> list[Timer]:
        """The extension's deadlines for the ticket as it stands."""
        return []

    def fire(self, change: Change, timer: Timer) -> None:
        """One of the extension's deadlines came due."""


@attrs.frozen
class DeskRules:
    """Everything a desk is configured with, handed to each change."""

    workflow: Workflow
    sla: SlaEngine
    escalation: tuple[EscalationPolicy, ...]
    verify_channels: frozenset[Channel]
    idle_chat: IdleChatPolicy
    auto_close: AutoClosePolicy
    callbacks: CallbackPolicy
    team_lead: str
    notify_customers: bool
    manager: str = "manager"
    extensions: tuple[DeskExtension, ...] = ()
    reply_guard: ReplyGuard | None = None
    escalations: EscalationEngine = attrs.field(init=False)
    # The extensions with deadlines of their own (the others' ``timers`` is the no-op above).
    timer_extensions: tuple[DeskExtension, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "escalations", EscalationEngine(self.escalation, self.sla))
        timed = tuple(e for e in self.extensions if type(e).timers is not DeskExtension.timers)
        object.__setattr__(self, "timer_extensions", timed)


class Change:
    """The next version of a ticket, built up by one command."""

    # Defaults read from the class until a change sets its own (a command makes one change,
    # and most leave these as they are).
    result: Ticket | None = None
    number = 0
    uow: UnitOfWork | None = None  # the unit of work the command runs in
    # ``_edits`` counts every change to the ticket so that the timers computed for it can be
    # reused (``_timers`` holds them for ``_timers_edits`` and ``_timers_at``).
    _edits = 0
    _own_state: dict[str, Any] | None = None  # the state dict ``_state`` made
    _own_state_pending = False  # ... and it is in ``_pending``, seen by nobody else
    _timers: list[Timer]
    _timers_edits = -1
    _timers_at: datetime | None = None
    _timers_step: datetime | None = None  # ``self.at`` when they were worked out
    # Set while a move the rules make themselves runs (``fire(..., system=True)``: auto-close,
    # an idle chat closing, an incident resolving its tickets), for the extensions' hooks.
    system_move = False

    def __init__(
        self,
        rules: DeskRules,
        ticket: Ticket | None,
        now: datetime,
        actor: str,
        new_id: Callable[[], str],
    ) -> None:
        self.rules = rules
        self.original = ticket
        self._ticket = ticket
        self.now = now
        self.at = now  # the instant events are stamped with: a due deadline's own time
        self.actor = actor
        self.new_id = new_id
        # The events recorded so far, numbered as they will be stored.
        self.recorded: list[Event] = []
        self.notifications: list[Notification] = []
        self.fired: list[Timer] = []  # every deadline handled, in the order handled
        self.stored_events: list[Event] = []
        self.follow_ups: list[Callable[[UnitOfWork], None]] = []
        self.active_hooks: set[str] = set()  # extensions mid-change, against re-entry
        self._pending: dict[str, Any] = {}  # field changes not yet applied to ``_ticket``

    @classmethod
    def new(cls, rules: DeskRules, now: datetime, new_id: Callable[[], str], number: int) -> Change:
        """A change with no ticket yet, for the ticket numbered ``number``; :meth:`open` builds
        the ticket."""
        change = cls(rules, None, now, "system", new_id)
        change.number = number
        return change

    def store(self) -> UnitOfWork:
        """The unit of work this command runs in (for extensions that read or write records)."""
        if self.uow is None:
            raise RuntimeError("this change is not running inside a unit of work")
        return self.uow

    @property
    def ticket(self) -> Ticket:
        """The ticket as the command has changed it so far."""
        if self._pending:
            assert self._ticket is not None
            self._ticket = _replace(self._ticket, self._pending)
            self._pending = {}
            self._own_state_pending = False
        assert self._ticket is not None, "the change has no ticket yet"
        return self._ticket

    @property
    def events(self) -> list[Event]:
        """The events this change has recorded so far, in order (stored when it commits)."""
        return self.recorded

    def _field(self, name: str) -> Any:
        """One field of the ticket as changed so far, without applying the pending changes
        (applying them builds a whole new ticket; most reads need one field)."""
        pending = self._pending
        if name in pending:
            return pending[name]
        assert self._ticket is not None, "the change has no ticket yet"
        return getattr(self._ticket, name)

    def category(self, ticket: Ticket | None = None) -> StatusCategory:
        """The status category of ``ticket``, or of this change's ticket as changed so far."""
        if ticket is None:  # the status as changed so far (asked for on most steps)
            pending: str | None = self._pending.get("status")
            if pending is not None:
                return self.rules.workflow.category(pending)
            ticket = self._ticket
            assert ticket is not None, "the change has no ticket yet"
        return self.rules.workflow.category(ticket.status)

    # -- recording -------------------------------------------------------------------------
    def record(self, kind: str, data: Mapping[str, Any], actor: str | None = None) -> None:
        """Record a ``kind`` event with a copy of ``data``, by ``actor`` (default: whoever runs
        the command); it is stored when the change commits."""
        # Checked as the desk's own commands check what they record (an extension's event is
        # stored as every store keeps it, or refused naming the value), and a copy of ``data``:
        # the caller may go on changing its dict.
        check_text("kind", kind)
        check_text("actor", actor, optional=True)
        if not isinstance(data, Mapping):
            raise ValidationError("data", data, "a mapping with string keys")
        self._record(kind, plain_json(data, "data"), actor)

    def _record(
        self,
        kind: str,
        data: Mapping[str, Any],
        actor: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """:meth:`record` for a dict the change (or an engine) has just built, taken as it is."""
        ticket, recorded = self._ticket, self.recorded
        assert ticket is not None, "the change has no ticket yet"
        # Identity and bookkeeping fields change only when the change commits: read as stored.
        sequence = ticket.sequence + len(recorded) + 1
        recorded.append(_event(ticket.id, sequence, kind, at or self.at, actor or self.actor, data))

    def _adopt(self, drafts: list[EventDraft]) -> None:
        """Record the events an engine drafted, each at its own time."""
        for draft in drafts:
            self._record(draft.type, draft.data, draft.actor, draft.at)

    def notify(
        self, kind: str, recipients: list[Recipient], subject: str, body: str, **data: Any
    ) -> None:
        """Queue a ``kind`` notification for ``recipients`` (none: nothing is queued), with
        ``data`` kept on it; it goes to the outbox when the change commits."""
        check_text("kind", kind)
        if not recipients:
            return
        if not _STR_ONLY.issuperset(map(type, data.values())):  # not only text: checked
            data = plain_json(data, "data")
        ticket_id: str = self._field("id")
        sequence = self._field("sequence") + len(self.recorded)
        key = f"{ticket_id}:{sequence}:{kind}:{len(self.notifications)}"
        shared = _shared_recipients(recipients)
        self.notifications.append(
            _notification(key, kind, shared, subject, body, self.at, ticket_id, _shared_data(data))
        )

    def _set(self, **changes: Any) -> None:
        # Gathered and applied on the next read: a command sets several fields in a row.
        self._pending.update(changes)
        self._edits += 1
        if "state" in changes:
            self._own_state_pending = False  # until ``_state`` says it put its own copy there

    def set_state(self, **changes: Any) -> None:
        """Write the rules engines' bookkeeping in ``ticket.state`` (``None`` removes a key).

        Values must be plain JSON (strings, numbers, booleans, lists, dicts); others are a
        ``ValidationError`` naming the key (``state.<key>``).
        """
        self._state(**{key: plain_json(value, f"state.{key}") for key, value in changes.items()})

    def _unset(self, *keys: str) -> None:
        """Remove ``keys`` from ``ticket.state``; nothing to do when none is there (most
        tickets have no state at all)."""
        current = self._pending.get("state")
        base = current if current is not None else self._field("state")
        if base and not base.keys().isdisjoint(keys):
            self._state(**dict.fromkeys(keys))

    def _state(self, **changes: Any) -> None:
        current = self._pending.get("state")
        base = current if current is not None else self._field("state")
        if all(value is None and key not in base for key, value in changes.items()):
            return  # removing keys that are not there: the ticket's state stays as it is
        state = self._own_state
        if state is None or not self._own_state_pending:
            # Copied once; then edited in place while only ``_pending`` holds the copy.
            state = self._own_state = dict(base)
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        if not state:  # one shared empty mapping, as new tickets have
            self._own_state = None
            self._set(state=_EMPTY)
            return
        self._set(state=state)
        self._own_state_pending = True

    # -- commands --------------------------------------------------------------------------
    def open(
        self,
        *,
        ticket_id: str,
        subject: str,
        body: str,
        customer: Customer,
        channel: Channel,
        priority: Priority,
        priority_explicit: bool,
        category: str | None,
        kind: str,
        tags: frozenset[str],
        fields: dict[str, Any],
        impact: str | None,
        urgency: str | None,
        group: str | None,
        assignee: str | None,
        actor: str,
        follows: str | None = None,
    ) -> None:
        """Create the ticket in the workflow's initial status from values the desk has checked,
        record ``TicketOpened`` and start its SLA clocks; an assignee or group also fires the
        automatic ``assign`` move, and ``follows`` links the ticket to the one it follows. The
        extensions' ``opened`` hooks run last, so they see the link."""
        self.actor = actor
        workflow = self.rules.workflow
        # Every value is checked or built by the desk already: no converters on the way in.
        self._ticket = _new_ticket(
            id=ticket_id,
            number=self.number,
            subject=subject,
            description=body,
            customer=customer,
            channel=channel,
            status=workflow.initial,
            created_at=self.now,
            updated_at=self.now,
            priority=priority,
            category=category,
            kind=kind,
            assignee=assignee,
            group=group,
            tags=tags or _NO_TAGS,
            fields=fields or _EMPTY,
            messages=(),
            links=(),
            verification=None,
            sla=None,
            sequence=0,
            impact=impact,
            urgency=urgency,
            priority_explicit=priority_explicit,
            resolution=None,
            state=_EMPTY,
            next_deadline=None,
            version=1,
        )
        self._record(
            EventType.TICKET_OPENED,
            {
                "subject": subject,
                "number": self.number,
                "channel": channel._value_,
                "priority": priority._value_,
                "category": category,
                "kind": kind,
                "status": workflow.initial,
                "customer_id": customer.id,
                "customer_tier": customer.tier,
                "group": group,
                "assignee": assignee,
            },
        )
        ticket = self._ticket
        sla, events = self.rules.sla.open(ticket, self.now)
        if sla is not None:
            # Still being built, and read so far only by the (pure) engine: the clocks go into
            # the new ticket itself rather than into a copy of all its fields.
            _set_sla(ticket, sla)
            self._edits += 1
        self._adopt(events)
        if assignee is not None or group is not None:
            self._automatic("assign")
        if follows is not None:
            self.link("follows", follows, actor)
        for extension in self.rules.extensions:
            extension.opened(self)

    def message(
        self, body: str, by: str, role: Role, *, public: bool, override_role: str | None = None
    ) -> None:
        """Add a public message, or an internal note (``public=False``). An agent's public reply
        is checked by the reply guard first and, if the desk notifies customers, sent to them; a
        customer writing on a closed ticket opens a follow-up ticket instead."""
        self.actor = by
        ticket = self.ticket
        guard = self.rules.reply_guard
        if guard is not None and public and role is Role.AGENT:
            # Checked before anything is stored: a blocked reply leaves no trace.
            findings = guard.enforce(
                ticket,
                body,
                override_by=by if override_role is not None else None,
                override_role=override_role,
            )
            if findings:
                self._record(
                    EventType.REPLY_GUARD_OVERRIDDEN,
                    {"by": by, "role": override_role, "findings": [str(f) for f in findings]},
                )
        if role is Role.CUSTOMER and self.category() is StatusCategory.CLOSED:
            self._follow_up_ticket(body, by)
            return
        message = _message(message_id(len(ticket.messages) + 1), by, role, body, self.at, public)
        before, category = ticket, self.category()
        self._set(messages=(*ticket.messages, message))
        if not public:
            self._record(EventType.NOTE_ADDED, {"message_id": message.id, "author": by})
            for extension in self.rules.extensions:
                extension.message_added(self, message)
            return
        self._record(
            EventType.MESSAGE_ADDED,
            {"message_id": message.id, "role": role._value_, "public": True, "author": by},
        )
        agent = role is Role.AGENT
        if agent:
            self._automatic("agent_reply")
            idle = self.rules.idle_chat
            if (
                idle.enabled
                and self._field("channel") in idle.channels
                and self.category()
                in (
                    StatusCategory.ACTIVE,
                    StatusCategory.NEW,
                )
            ):
                self._state(
                    idle_remind_at=(self.at + idle.remind_after).isoformat(),
                    idle_close_at=(self.at + idle.close_after).isoformat(),
                    idle_reminded=None,
                )
            if self.rules.notify_customers:
                self.notify(
                    "reply",
                    [customer_recipient(ticket.customer)],
                    f"Re: [#{ticket.number}] {ticket.subject}",
                    body,
                    message_id=message.id,
                )
        elif role is Role.CUSTOMER:
            self._unset("idle_remind_at", "idle_close_at", "idle_reminded")
            self._automatic("customer_reply")
        self._after(before, category, agent_replied=agent, customer_wrote=role is Role.CUSTOMER)
        for extension in self.rules.extensions:
            extension.message_added(self, message)

    def assign(
        self, assignee: str | None, group: str | None, by: str, *, release: bool = False
    ) -> None:
        """Give the ticket to ``assignee`` and/or ``group`` (``None`` keeps what it has);
        ``release`` takes it off its agent too, into the group's queue."""
        self.actor = by
        ticket = self.ticket
        new_assignee = assignee if assignee is not None or release else ticket.assignee
        new_group = group if group is not None else ticket.group
        if (new_assignee, new_group) == (ticket.assignee, ticket.group):
            return
        self._set(assignee=new_assignee, group=new_group)
        self._record(
            EventType.ASSIGNED,
            {
                "assignee": new_assignee,
                "group": new_group,
                "previous_assignee": ticket.assignee,
                "previous_group": ticket.group,
            },
        )
        before, category = ticket, self.category()
        self._automatic("assign")
        self._after(before, category)

    def fire(self, trigger: str, by: str, data: dict[str, Any], *, system: bool = False) -> None:
        """Move the ticket with workflow ``trigger`` and record ``StatusChanged`` with the
        values of ``data`` that are not ``None``; raises ``InvalidTransition`` when not allowed.
        ``system=True`` skips the check that the customer's identity was verified."""
        if (
            type(trigger) is not str
            or not _STR_ONLY.issuperset(map(type, data))
            or not _PLAIN_VALUES.issuperset(map(type, data.values()))
        ):
            check_text("trigger", trigger)  # an extension's call: checked as the desk's are
            data = plain_json(data, "data")
        self._fire(trigger, by, data, system=system)

    def _fire(self, trigger: str, by: str, data: dict[str, Any], *, system: bool = False) -> None:
        """:meth:`fire` for the desk's own callers, whose ``data`` is checked already."""
        self.actor = by
        before, category = self.ticket, self.category()
        if system:
            self.system_move = True
            try:
                self._transition(trigger, data, system=system)
            finally:
                self.system_move = False
        else:
            self._transition(trigger, data, system=system)
        self._after(before, category)

    def verify(self, by: str, method: VerificationMethod) -> None:
        """Mark the customer as verified by ``by`` with ``method``; records ``CustomerVerified``."""
        self.actor = by
        ticket = self.ticket
        self._set(
            verification=Verification(by, method, self.at),
            customer=attrs.evolve(ticket.customer, verified=True),
        )
        self._record(EventType.CUSTOMER_VERIFIED, {"method": method.value, "by": by})

    def set_priority(
        self, priority: Priority, by: str, reason: str | None, *, explicit: bool
    ) -> None:
        """Set the priority and record ``PriorityChanged``; SLA targets follow. ``explicit``
        marks it as a person's choice, which stays marked; the same priority again is recorded
        only to make it explicit."""
        self.actor = by
        ticket = self.ticket
        if priority is ticket.priority and (ticket.priority_explicit or not explicit):
            return
        before, category = ticket, self.category()
        self._set(priority=priority, priority_explicit=ticket.priority_explicit or explicit)
        self._record(
            EventType.PRIORITY_CHANGED,
            {"from": ticket.priority.value, "to": priority.value, "reason": reason,
             "explicit": explicit},
        )  # fmt: skip
        self._after(before, category)

    def update(
        self,
        by: str,
        changes: dict[str, Any],
        add_tags: frozenset[str],
        remove_tags: frozenset[str],
        fields: dict[str, Any],
        *,
        drop_fields: Iterable[str] = (),
    ) -> None:
        """Set ticket attributes (``changes``), add and remove tags, merge custom ``fields``
        and remove the custom fields named in ``drop_fields``; one ``TicketUpdated`` lists each
        difference as ``[before, after]`` (a removed field's after is ``None``). Nothing is
        recorded when nothing differs; otherwise the extensions' ``fields_changed`` hooks run."""
        self.actor = by
        ticket = self.ticket
        changes = dict(changes)  # the caller's dict is reused if the command is retried
        diff: dict[str, list[Any]] = {}
        for name, value in changes.items():
            if getattr(ticket, name) != value:
                diff[name] = [getattr(ticket, name), value]
        tags = (ticket.tags | add_tags) - remove_tags
        if tags != ticket.tags:
            diff["tags"] = [sorted(ticket.tags), sorted(tags)]
            changes["tags"] = tags
        if fields or drop_fields:
            merged = {**ticket.fields, **fields}
            for name, value in fields.items():
                if ticket.fields.get(name) != value:
                    diff[f"fields.{name}"] = [ticket.fields.get(name), value]
            for name in drop_fields:
                if name not in merged:
                    continue
                del merged[name]
                if name in ticket.fields:
                    diff[f"fields.{name}"] = [ticket.fields[name], None]
                else:  # given in ``fields`` and dropped again: no change
                    diff.pop(f"fields.{name}", None)
            changes["fields"] = merged
        if not diff:
            return
        before, category = ticket, self.category()
        self._set(**changes)
        self._record(EventType.TICKET_UPDATED, {"changes": diff})
        self._after(before, category)
        for extension in self.rules.extensions:
            extension.fields_changed(self, frozenset(diff))

    def link(self, kind: str, other_id: str, by: str) -> None:
        """Link this ticket to ``other_id`` as ``kind`` (recording ``TicketLinked``) unless it is
        linked so already. This side only: the other ticket records its side in its own change."""
        self.actor = by
        link = Link(kind, other_id)
        if link in self.ticket.links:
            return
        self._set(links=(*self.ticket.links, link))
        self._record(EventType.LINKED, {"kind": kind, "ticket_id": other_id})

    def acknowledge(self, by: str) -> None:
        """Stop the repeats of each escalation policy's current level, recording one
        ``Acknowledged`` per level acknowledged."""
        self.actor = by
        state, acked = self.rules.escalations.acknowledge(self.ticket)
        if not acked:
            return  # no policy's level waits for it (a call-back escalation does not repeat)
        self._set(state=state)
        for policy, level in acked:
            self._record(EventType.ACKNOWLEDGED, {"policy": policy, "level": level + 1})

    def contact_dropped(self, by: str) -> None:
        """Schedule a call-back due at once, escalated to the team lead if not done within the
        call-back policy's ``escalate_after``; records ``CallbackScheduled`` (a new drop starts
        the call-back over)."""
        self.actor = by
        escalate_at = self.at + self.rules.callbacks.escalate_after
        self._state(
            callback_due_at=self.at.isoformat(),
            callback_escalate_at=escalate_at.isoformat(),
            callback_notified=None,
            callback_escalated=None,
        )
        self._record(
            EventType.CALLBACK_SCHEDULED,
            {"reason": "contact_dropped", "due_at": self.at.isoformat(),
             "escalate_at": escalate_at.isoformat()},
        )  # fmt: skip

    def callback_done(self, by: str, outcome: str) -> None:
        """Record that the call-back was made (``CallbackDone`` with ``outcome``) and drop its
        deadlines; nothing happens when no call-back is pending."""
        self.actor = by
        if self.ticket.state.get("callback_due_at") is None:
            return
        self._unset(
            "callback_due_at", "callback_escalate_at", "callback_notified", "callback_escalated"
        )
        self._record(EventType.CALLBACK_DONE, {"outcome": outcome})

    # -- the workflow ----------------------------------------------------------------------
    def _verification_missing(self, trigger: str, dest: str | None = None) -> str | None:
        """Why ``trigger`` may not move the unverified customer's ticket, or ``None``. With
        ``dest`` (where the trigger takes it, guards checked) for that move; without, only when
        every destination the trigger may have from the status needs verification."""
        verify_channels = self.rules.verify_channels
        if not verify_channels:
            return None  # no channel asks for it (most desks)
        channel: Channel = self._field("channel")
        if channel not in verify_channels or self._field("customer").verified:
            return None
        workflow = self.rules.workflow
        status = self._field("status")
        if workflow.category(status) is not StatusCategory.NEW:
            return None
        # A trigger may have several transitions from one status, guards choosing among them.
        dests = workflow.destinations(status, trigger) if dest is None else (dest,)
        if not dests or any(
            workflow.category(d) in (StatusCategory.NEW, StatusCategory.CLOSED) for d in dests
        ):
            return None
        return (
            f"customer identity verification is missing (required on the "
            f"{channel.value} channel; use verify_customer)"
        )

    def _transition(self, trigger: str, data: dict[str, Any], *, system: bool = False) -> None:
        workflow = self.rules.workflow
        previous: str = self._field("status")
        # Identity checks only on desks that ask for them (most do not): before the guards run,
        # then against the destination they chose.
        checked = not system and bool(self.rules.verify_channels)
        if checked:
            self._refuse_unverified(trigger, None)
        # Guards read the whole ticket; most transitions have none and need only the status.
        status = workflow.unguarded_next(previous, trigger) or workflow.next_status(
            previous, trigger, self.ticket
        )
        if checked:
            self._refuse_unverified(trigger, status)
        before_category = workflow.category(previous)
        category = workflow.category(status)
        self._set(status=status)
        recorded = {
            "trigger": trigger,
            "from": previous,
            "to": status,
            "from_category": before_category._value_,
            "to_category": category._value_,
        }
        for key, value in data.items():
            if value is not None and key not in recorded:  # the move's own keys stand
                recorded[key] = value
        self._record(EventType.STATUS_CHANGED, recorded)
        if category is StatusCategory.RESOLVED:
            resolution = data.get("resolution")
            if resolution is not None:
                self._set(resolution=resolution)
            policy = self.rules.auto_close
            due = policy.due(self.at).isoformat() if policy.enabled else None
            self._state(resolved_at=self.at.isoformat(), autoclose_at=due)
        elif before_category is StatusCategory.RESOLVED:
            self._unset("resolved_at", "autoclose_at")
        if category in (StatusCategory.RESOLVED, StatusCategory.CLOSED, StatusCategory.WAITING):
            self._unset("idle_remind_at", "idle_close_at", "idle_reminded")
        for extension in self.rules.extensions:
            extension.status_changed(self, before_category, category, trigger)

    def _refuse_unverified(self, trigger: str, dest: str | None) -> None:
        """``InvalidTransition`` when verification is missing for ``trigger`` (to ``dest``)."""
        missing = self._verification_missing(trigger, dest)
        if missing is None:
            return
        previous: str = self._field("status")
        allowed = [
            other
            for other in self.rules.workflow.allowed(previous)
            if self._verification_missing(other) is None
        ]
        raise _Unverified(self._field("id"), previous, trigger, allowed, missing)

    def _automatic(self, happening: str) -> None:
        """Fire the first allowed automatic trigger for ``happening``, if any."""
        workflow = self.rules.workflow
        for trigger in workflow.automatic.get(happening, ()):
            if trigger not in workflow.allowed(self._field("status")):
                continue
            if self._verification_missing(trigger) is not None:
                return  # the agent can still talk to an unverified customer; the ticket waits
            try:
                self._transition(trigger, {"automatic": happening})
            except _Unverified:
                return  # a guard chose a destination that needs verification: it waits
            except InvalidTransition:
                continue
            return

    def _after(
        self,
        before: Ticket,
        category_before: StatusCategory,
        *,
        agent_replied: bool = False,
        customer_wrote: bool = False,
    ) -> None:
        """Bring the SLA clocks in line with what the command changed."""
        engine = self.rules.sla
        if not engine.policies and self._field("sla") is None:
            return  # no SLA on this desk
        # A new ticket costs a copy of every field: the engine gets the ticket as it was when
        # the command changed nothing it reads (a status change, an assignment).
        pending = self._pending
        after = self._ticket if pending.keys().isdisjoint(TICKET_INPUTS) else self.ticket
        assert after is not None
        sla, events = engine.update(
            before,
            after,
            self.at,
            category_before=category_before,
            category_after=self.category(),
            agent_replied=agent_replied,
            customer_wrote=customer_wrote,
        )
        if sla is not after.sla:
            self._set(sla=sla)
        self._adopt(events)

    def _follow_up_ticket(self, body: str, by: str) -> None:
        """A customer writing on a closed ticket opens a new one that follows it."""
        self.open_follow_up(body, by, fields=dict(self.ticket.fields), returned=True)

    def open_follow_up(
        self, body: str, by: str, *, fields: dict[str, Any], returned: bool = False
    ) -> str:
        """Open a new ticket that follows this one, in the same unit of work; its id.

        The new ticket copies subject, customer, channel, priority, category and routing, and
        gets ``fields``; both tickets record the link, the new one before the extensions'
        ``opened`` hooks run (so they can tell a follow-up). With ``returned`` the command
        returns the new ticket instead of this one.
        """
        old = self.ticket
        rules, new_id, now = self.rules, self.new_id, self.now
        follow_id = new_id()
        self.link("followed_by", follow_id, by)

        def open_ticket(uow: UnitOfWork) -> None:
            change = Change.new(rules, now, new_id, uow.next_ticket_number())
            change.uow = uow
            change.open(
                ticket_id=follow_id,
                subject=old.subject,
                body=body,
                customer=old.customer,
                channel=old.channel,
                priority=old.priority,
                priority_explicit=False,
                category=old.category,
                kind=old.kind,
                tags=frozenset(),
                fields=fields,
                impact=old.impact,
                urgency=old.urgency,
                group=old.group,
                assignee=old.assignee,
                actor=by,
                follows=old.id,
            )
            change.commit(uow, insert=True)
            for follow_up in change.follow_ups:  # the extensions' writes for the new ticket
                follow_up(uow)
            if returned:
                self.result = change.result or change.ticket

        self.follow_ups.append(open_ticket)
        return follow_id

    # -- deadlines -------------------------------------------------------------------------
    def timers(self) -> list[Timer]:
        """Every future deadline of the ticket, from every engine."""
        if (
            self._timers_edits == self._edits
            and self._timers_at == self.now
            and self._timers_step == self.at
        ):
            return self._timers  # the ticket has not changed since they were worked out
        self._timers = self._compute_timers()
        self._timers_edits, self._timers_at, self._timers_step = self._edits, self.now, self.at
        return self._timers

    def _compute_timers(self) -> list[Timer]:
        # Reads the few fields it needs one by one: building the whole ticket costs more.
        rules, field = self.rules, self._field
        ticket_id: str = field("id")
        category = self.category()
        sla: SlaState | None = field("sla")
        timers = rules.sla.timers_for(ticket_id, sla) if sla is not None else []
        if rules.escalation:
            # A condition level falls due at the step caught up on last (``self.at``).
            timers.extend(rules.escalations.timers(self.ticket, category, self.now, self.at))
        state: Mapping[str, Any] = field("state")
        if state:  # most tickets have no engine state: then none of these deadlines
            self._state_timers(ticket_id, category, state, timers)
        for extension in rules.timer_extensions:
            timers.extend(extension.timers(self))
        return timers

    @staticmethod
    def _state_timers(
        ticket_id: str, category: StatusCategory, state: Mapping[str, Any], timers: list[Timer]
    ) -> None:
        """The deadlines kept in ``ticket.state``: auto-close, idle chat and call-backs."""
        if category is StatusCategory.RESOLVED and (due := _instant(state, "autoclose_at")):
            timers.append(_timer(ticket_id, "autoclose", due, "autoclose"))
        if (due := _instant(state, "idle_remind_at")) and not state.get("idle_reminded"):
            timers.append(_timer(ticket_id, "idle:remind", due, "idle_chat"))
        if due := _instant(state, "idle_close_at"):
            timers.append(_timer(ticket_id, "idle:close", due, "idle_chat"))
        if (due := _instant(state, "callback_due_at")) and not state.get("callback_notified"):
            timers.append(_timer(ticket_id, "callback:due", due, "callback"))
        due = _instant(state, "callback_escalate_at")
        if due and not state.get("callback_escalated"):
            timers.append(_timer(ticket_id, "callback:escalate", due, "callback"))

    def _timers_kept(self) -> bool:
        """Whether the stored timers are still the ticket's: nothing they are worked out from
        changed since it was loaded (then the store need not compare them)."""
        original, rules = self.original, self.rules
        if original is None or rules.escalation or rules.timer_extensions:
            return False  # escalations and extensions may also depend on time or on more
        ticket, pending = self._ticket, self._pending
        assert ticket is not None
        sla = pending.get("sla", ticket.sla)
        state = pending.get("state", ticket.state)
        if sla is not original.sla or state is not original.state:
            return False
        status = pending.get("status") or ticket.status
        if status == original.status:
            return True
        category, resolved = rules.workflow.category, StatusCategory.RESOLVED
        return (category(status) is resolved) == (category(original.status) is resolved)

    def catch_up(self, *, before_command: bool = False, kept: bool | None = None) -> None:
        """Handle every deadline due by ``now``, earliest first, each at its own time.

        Before a command, a deadline falling exactly at ``now`` is left to after it: an answer
        given at the due instant meets the target. ``kept``: what ``_timers_kept()`` says now,
        when the caller has asked already.
        """
        original = self.original
        if (
            original is not None
            and (original.next_deadline is None or original.next_deadline > self.now)
            and (
                (self._ticket is original and not self._pending)
                or (self._timers_kept() if kept is None else kept)
            )
        ):
            return  # its deadlines are the stored ones, and the earliest is still ahead
        now = self.now
        for _ in range(_MAX_DUE_STEPS):
            timers = self.timers()
            if before_command:
                due = [timer for timer in timers if timer.due_at < now]
            else:
                due = [timer for timer in timers if timer.due_at <= now]
            if not due:
                self.at = self.now
                return
            # Ties: an SLA deadline is recorded before the escalation it may cause.
            timer = min(due, key=lambda t: (t.due_at, not t.key.startswith("sla:"), t.key))
            # Never before what this change already recorded: a deadline the command itself
            # made due (a reopen brings back an overdue escalation) happens after it, now.
            updated_at = self._field("updated_at")
            recorded = self.recorded[-1].at if self.recorded else updated_at
            self.at = max(timer.due_at, updated_at, recorded)
            actor = self.actor
            self.actor = "system"
            self._fire_timer(timer)
            self.actor = actor
            self.fired.append(timer)
        raise RuntimeError(f"ticket {self.ticket.id} keeps producing due deadlines")

    def _fire_timer(self, timer: Timer) -> None:
        ticket = self.ticket
        kind = timer.key.split(":", 1)[0]
        for extension in self.rules.extensions:
            if extension.timer_prefix and kind == extension.timer_prefix:
                extension.fire(self, timer)
                return
        if kind == "sla":
            sla, events = self.rules.sla.fire(ticket, timer)
            self._set(sla=sla)
            self._adopt(events)
            for event in events:
                self._notify_sla(event)
        elif kind == "escalation":
            step = self.rules.escalations.step(ticket, timer, self.at)
            # A step that no longer applies is still recorded as handled so it cannot loop.
            self._set(state=self.rules.escalations.record(ticket.state, step)) if step else None
            if step is None:
                self._unset(timer.key.replace(":", "_"))
                return
            self._escalate(step)
        elif timer.key == "autoclose":
            self._unset("autoclose_at")
            if "close" in self.rules.workflow.allowed(ticket.status):
                self._fire("close", "system", {"reason": "auto-close: no reply from customer"},
                          system=True)  # fmt: skip
        elif timer.key == "idle:remind":
            self._state(idle_reminded=True)
            self._system_message(self.rules.idle_chat.reminder, "idle_chat")
        elif timer.key == "idle:close":
            self._unset("idle_remind_at", "idle_close_at", "idle_reminded")
            self._system_message(self.rules.idle_chat.closing, "idle_chat_closed")
            for trigger in ("resolve", "close"):
                if trigger in self.rules.workflow.allowed(self.ticket.status):
                    self._fire(trigger, "system", {"reason": "idle chat closed"}, system=True)
        elif timer.key == "callback:due":
            self._state(callback_notified=True)
            self.notify(
                "callback",
                self._targets(("assignee",)) or self._targets(("team_lead",)),
                f"[#{ticket.number}] Call the customer back",
                f"The contact with {ticket.customer.name or ticket.customer.id} dropped; "
                "call them back now.",
            )
        elif timer.key == "callback:escalate":
            self._state(callback_escalated=True)
            targets = ("team_lead",)
            self._record(
                EventType.ESCALATED,
                {"policy": "callback", "level": 1, "name": "call-back overdue",
                 "reason": "call-back not done in time", "targets": list(targets),
                 "actions": [], "repeat": 0},
            )  # fmt: skip
            self.notify(
                "escalation",
                self._targets(targets),
                f"[#{ticket.number}] Call-back overdue",
                f"Nobody has called back {ticket.customer.name or ticket.customer.id}.",
            )

    def _system_message(self, body: str, reason: str) -> None:
        ticket = self.ticket
        message = _message(
            message_id(len(ticket.messages) + 1), "system", Role.SYSTEM, body, self.at, True
        )
        self._set(messages=(*ticket.messages, message))
        self._record(
            EventType.MESSAGE_ADDED,
            {"message_id": message.id, "role": "system", "public": True, "author": "system"},
        )
        self._record(EventType.REMINDER_SENT, {"reason": reason, "message_id": message.id})
        self.notify(
            reason, [customer_recipient(ticket.customer)], f"[#{ticket.number}] {ticket.subject}",
            body,
        )  # fmt: skip

    def _notify_sla(self, event: EventDraft) -> None:
        ticket = self.ticket
        clock = event.data.get("clock")
        if event.type == EventType.SLA_BREACHED:
            targets: tuple[str, ...] = ("assignee", "team_lead")
            subject = f"[#{ticket.number}] SLA breached: {clock}"
        else:
            targets = ("assignee",)
            subject = f"[#{ticket.number}] SLA {event.data.get('threshold')}% used: {clock}"
        self.notify("sla", self._targets(targets), subject, ticket.subject, clock=clock)

    def _escalate(self, step: EscalationStep) -> None:
        level = step.level
        ticket = self.ticket
        actions: list[str] = []
        if step.repeat == 0:
            if level.reassign_group is not None or level.reassign_to is not None:
                # Handed to another group without a named agent: its queue picks it up.
                release = level.reassign_to is None and level.reassign_group != self.ticket.group
                self.assign(level.reassign_to, level.reassign_group, "system", release=release)
                actions.append(f"reassigned to {level.reassign_to or level.reassign_group}")
            if level.raise_priority is not None and level.raise_priority > self.ticket.priority:
                self.set_priority(level.raise_priority, "system", f"escalation {level.name}",
                                  explicit=False)  # fmt: skip
                actions.append(f"priority raised to {level.raise_priority.value}")
            if level.add_tags - self.ticket.tags:
                self.update("system", {}, frozenset(level.add_tags), frozenset(), {})
                actions.append(f"tagged {', '.join(sorted(level.add_tags))}")
        self.actor = "system"
        self._record(
            EventType.ESCALATED,
            {
                "policy": step.policy,
                "level": step.index + 1,
                "name": level.name,
                "reason": step.reason,
                "targets": list(level.notify),
                "actions": actions,
                "repeat": step.repeat,
            },
        )
        self.notify(
            "escalation",
            self._targets(level.notify),
            f"[#{ticket.number}] Escalated ({level.name}): {ticket.subject}",
            f"{step.reason}. {'; '.join(actions)}".strip(),
            level=level.name,
        )

    def _targets(self, names: tuple[str, ...]) -> list[Recipient]:
        ticket = self.ticket
        recipients: list[Recipient] = []
        for name in names:
            if name == "assignee":
                if ticket.assignee:
                    recipients.append(shared_recipient(RecipientRole.AGENT, ticket.assignee))
                elif ticket.group:
                    recipients.append(shared_recipient(RecipientRole.GROUP, ticket.group))
            elif name == "group" and ticket.group:
                recipients.append(shared_recipient(RecipientRole.GROUP, ticket.group))
            elif name == "team_lead":
                recipients.append(shared_recipient(RecipientRole.TEAM_LEAD, self.rules.team_lead))
            elif name == "manager":
                recipients.append(shared_recipient(RecipientRole.MANAGER, self.rules.manager))
            elif name.startswith("on_call:"):
                recipients.append(shared_recipient(RecipientRole.ON_CALL, name.split(":", 1)[1]))
            elif name.startswith("agent:"):
                recipients.append(shared_recipient(RecipientRole.AGENT, name.split(":", 1)[1]))
        return recipients

    # -- saving ----------------------------------------------------------------------------
    def commit(self, uow: UnitOfWork, *, insert: bool) -> None:
        """Write the ticket, its events, timers and notifications in ``uow``."""
        # Whether the stored timers stand is asked once, before and after catching up, unless
        # catching up handled a deadline (which changes the ticket).
        kept = not insert and self._timers_kept()
        handled = len(self.fired)
        self.catch_up(kept=kept)  # what this command made due at once (urgent escalation, ...)
        # A change without an event is stored all the same if it changed the ticket (its
        # ``state``) or notifies; otherwise there is nothing to store (the same assignee again).
        quiet = not self.recorded and not insert and not self.notifications
        if quiet and self.ticket == self.original:
            return
        if len(self.fired) != handled:
            kept = self._timers_kept()
        stored = self._ticket
        assert stored is not None
        # Bookkeeping fields change only here, so they are read as stored; the events were
        # numbered from the stored sequence as they were recorded.
        sequence = stored.sequence
        events = self.recorded
        if kept:  # nothing they are worked out from changed: the stored rows stand
            timers, next_deadline = None, stored.next_deadline
        else:
            timers = self.timers()
            next_deadline = _earliest(timers)
        # One new ticket from the last stored one: the command's pending changes and the
        # bookkeeping of the save together.
        saved = _replace(
            stored,
            {
                **self._pending,
                "sequence": sequence + len(events),
                "version": 1 if insert else stored.version + 1,
                "updated_at": max(self.now, stored.updated_at),
                "next_deadline": next_deadline,
            },
        )
        self._pending = {}
        self._own_state_pending = False
        if insert:
            uow.insert_ticket(saved)
        else:
            assert self.original is not None
            uow.update_ticket(saved, self.original.version)
        uow.append_events(events)
        self._ticket = saved
        self._edits += 1
        if timers is not None:
            uow.replace_timers(saved.id, timers)
        if self.notifications:
            uow.enqueue(self.notifications)
        self.stored_events = events


# ``attrs.evolve`` and ``__init__`` without converters and validators: a change only sets
# values it built itself (already converted), and a command evolves its ticket several times,
# so skipping the checks matters on the hot path.
_replace = _replacer(Ticket)
_new_ticket = _maker(Ticket)
_set_sla = _slot_setter(Ticket, "sla")
_message = _maker(Message)
_event = _maker(Event)
_notification = _maker(Notification)
_timer = _maker(Timer)


def _earliest(timers: list[Timer]) -> datetime | None:
    """The earliest due time of ``timers`` (``None`` without any); most tickets have one."""
    if len(timers) == 1:
        return timers[0].due_at
    return min([timer.due_at for timer in timers]) if timers else None


def _instant(state: Mapping[str, Any], key: str) -> datetime | None:
    """An instant stored in ``ticket.state`` (ISO 8601), as ``automation.state_time`` reads
    it from a ticket."""
    value = state.get(key)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


_MESSAGE_IDS = tuple(sys.intern(f"m{n}") for n in range(1, 257))


def message_id(number: int) -> str:
    """The id of a ticket's ``number``-th message: ``m1``, ``m2``, ... (unique within its
    ticket; the first few are shared strings, as every ticket has them)."""
    return _MESSAGE_IDS[number - 1] if number <= len(_MESSAGE_IDS) else f"m{number}"


_K = TypeVar("_K")
_V = TypeVar("_V")
_SHARED_LIMIT = 10_000  # entries of each table of shared values below, before it starts over
_DATA: dict[tuple[tuple[str, Any], ...], Mapping[str, Any]] = {}
_RECIPIENT_TUPLES: dict[tuple[int, ...], tuple[Recipient, ...]] = {}
_STR_ONLY = frozenset({str})
_PLAIN_VALUES = frozenset({str, type(None)})  # what the desk's own triggers record


def _remember(table: dict[_K, _V], key: _K, value: _V) -> _V:
    """Keep ``value`` under ``key`` in one of the tables of shared values below, which start
    over when full (a desk has many customers and texts: they stay bounded)."""
    if len(table) >= _SHARED_LIMIT:
        table.clear()
    table[key] = value
    return value


def _shared_data(data: dict[str, Any]) -> Mapping[str, Any]:
    """``data`` for a stored notification: a fresh copy, or one read-only dict shared by every
    notification with the same strings (``{"message_id": "m1"}``: outboxes hold many)."""
    if not data:
        return _EMPTY
    if not _STR_ONLY.issuperset(map(type, data.values())):
        return dict(data)
    key = tuple(data.items())
    shared = _DATA.get(key)
    return shared if shared is not None else _remember(_DATA, key, dict(data))


def _shared_recipients(recipients: list[Recipient]) -> tuple[Recipient, ...]:
    """The recipients as a tuple, one shared tuple per list of (immutable) recipients.

    Keyed by the recipients' identities (a ``Recipient`` hashes in Python; most are the
    shared ones of ``customer_recipient``): the tuple stored keeps them alive, so an id in a
    key cannot be reused while the entry stands.
    """
    key = tuple(map(id, recipients))
    shared = _RECIPIENT_TUPLES.get(key)
    return shared if shared is not None else _remember(_RECIPIENT_TUPLES, key, tuple(recipients))


_RECIPIENTS: dict[tuple[str, str, str], Recipient] = {}


def shared_recipient(role: RecipientRole, address: str, name: str = "") -> Recipient:
    """One shared (immutable) ``Recipient`` per role, address and name: every stored
    notification to them holds one, and ``_shared_recipients`` keys tuples by identity."""
    key = (role._value_, address, name)
    recipient = _RECIPIENTS.get(key)
    if recipient is None:
        recipient = _remember(_RECIPIENTS, key, Recipient(role, address, name))
    return recipient


def customer_recipient(customer: Customer) -> Recipient:
    """The customer as a recipient: e-mail, else phone, else the customer id."""
    address = customer.contacts.get("email") or customer.contacts.get("phone") or customer.id
    return shared_recipient(RecipientRole.CUSTOMER, address, customer.name)
