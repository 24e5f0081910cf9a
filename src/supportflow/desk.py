"""The ``Desk``: one method per command of a support desk.

Every command runs the same path (DESIGN.md, "One command, end to end"): open a unit of work,
load the ticket, catch up on deadlines that fell due, apply the command through the workflow
and the engines, then save the ticket with its expected version, append the events, replace
the ticket's timers and enqueue notifications — all or nothing. A version conflict retries the
command on a fresh load a bounded number of times.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

import attrs

from supportflow._change import Change, DeskExtension, DeskRules
from supportflow.automation import AutoClosePolicy, CallbackPolicy, IdleChatPolicy
from supportflow.clock import Clock, SystemClock, ensure_aware, to_utc
from supportflow.errors import ConcurrencyConflict, ValidationError
from supportflow.escalation import EscalationPolicy
from supportflow.events import Event
from supportflow.extensions.triage import Triage
from supportflow.model import (
    Channel,
    Customer,
    Priority,
    RecipientRole,
    Role,
    StatusCategory,
    Ticket,
    Timer,
    VerificationMethod,
    check_duration,
    check_text,
    coerce_enum,
    plain_json,
    whole_number,
)
from supportflow.notify import Dispatcher, DispatchReport, LogNotifier, Notifier
from supportflow.notify.guard import ReplyGuard, ReplyPolicy
from supportflow.sla import ClockReading, SlaEngine, SlaPolicy, default_sla_policies
from supportflow.storage import MemoryStore, OutboxEntry, Storage, TicketQuery, UnitOfWork
from supportflow.workflow import Workflow, default_workflow

__all__ = ["Desk", "DueReport"]

log = logging.getLogger("supportflow.desk")

# Sensitive-word early warning is on by default; mass-incident detection is opt-in.
_DEFAULT_TRIAGE = Triage()


@attrs.frozen(slots=True)
class DueReport:
    """What :meth:`Desk.run_due` did: the deadlines handled (in order per ticket, each with its
    own due time; a ticket's deadlines that fell due together are all handled, even those the
    store held no timer for, such as an SLA clock's later warnings), the claimed timers dropped
    as stale, the events recorded, and (with ``errors="continue"``) the timers whose handling
    failed with the error's text — they stay leased and are tried again once the lease
    expires."""

    fired: tuple[Timer, ...] = ()
    dropped: tuple[Timer, ...] = ()
    events: tuple[Event, ...] = ()
    failed: tuple[tuple[Timer, str], ...] = ()


class Desk:
    """A support desk: tickets, their workflow, SLA clocks and deadlines, on a store.

    Defaults match a real support centre: the default workflow, SLA policies from the field
    (:func:`~supportflow.sla.default_sla_policies`), idle-chat and auto-close rules, and
    :class:`~supportflow.extensions.Triage` with the built-in sensitive words (pass
    ``triage=Triage(classifier, IncidentPolicy())`` for rules and mass incidents, or
    ``triage=None`` to turn it off). ``sla=[]`` turns SLA clocks off.

    Notifications go to the outbox with each change; :meth:`deliver_pending` sends them
    through ``notifiers`` (by recipient role; logged when none are given), with
    ``dispatcher_options`` passed to :class:`~supportflow.notify.Dispatcher` (``max_attempts``,
    ``base_delay``, ``max_delay``, ``jitter``, ``random``, ``fallback``, ...).

    >>> desk = Desk()                                   # memory store, system clock
    >>> ticket = desk.open_ticket(subject="VPN down", body="Since 9:00",
    ...                           customer=Customer(id="c-1"), channel="email")
    >>> desk.reply(ticket.id, "Looking into it", by="agent_li").status
    'in_progress'
    """

    def __init__(
        self,
        store: Storage | None = None,
        clock: Clock | None = None,
        workflow: Workflow | None = None,
        *,
        sla: Sequence[SlaPolicy] | None = None,
        escalation: Sequence[EscalationPolicy] = (),
        verify_channels: Iterable[Channel | str] = (),
        idle_chat: IdleChatPolicy | None = None,
        auto_close: AutoClosePolicy | None = None,
        callbacks: CallbackPolicy | None = None,
        team_lead: str = "team_lead",
        manager: str = "manager",
        notify_customers: bool = True,
        triage: Triage | None = _DEFAULT_TRIAGE,
        extensions: Sequence[DeskExtension] = (),
        notifiers: Mapping[RecipientRole | str, Notifier] | None = None,
        dispatcher_options: Mapping[str, Any] | None = None,
        reply_policy: ReplyPolicy | None = None,
        max_attempts: int = 5,
        id_factory: Callable[[], str] | None = None,
        worker_id: str | None = None,
        timer_lease: timedelta = timedelta(minutes=5),
    ) -> None:
        for field, value, kind in (
            ("store", store, Storage),
            ("clock", clock, Clock),
            ("workflow", workflow, Workflow),
            ("idle_chat", idle_chat, IdleChatPolicy),
            ("auto_close", auto_close, AutoClosePolicy),
            ("callbacks", callbacks, CallbackPolicy),
            ("triage", triage, Triage),
            ("reply_policy", reply_policy, ReplyPolicy),
        ):  # checked once, so that a mistake shows here and not in the first command
            if value is not None and not isinstance(value, kind):
                raise ValidationError(field, value, f"a {kind.__name__}, or None")
        if id_factory is not None and not callable(id_factory):
            raise ValidationError("id_factory", id_factory, "a callable returning a new id")
        check_duration("timer_lease", timer_lease)
        if not isinstance(notify_customers, bool):
            raise ValidationError("notify_customers", notify_customers, "True or False")
        if notifiers is not None and (
            not isinstance(notifiers, Mapping)
            or not all(isinstance(notifier, Notifier) for notifier in notifiers.values())
        ):
            raise ValidationError("notifiers", notifiers, "a mapping of recipient role to Notifier")
        if dispatcher_options is not None and not isinstance(dispatcher_options, Mapping):
            raise ValidationError("dispatcher_options", dispatcher_options, "a mapping")
        if sla is not None:
            sla = _all_of("sla", sla, SlaPolicy)
        escalation = _all_of("escalation", escalation, EscalationPolicy)
        extensions = _all_of("extensions", extensions, DeskExtension)
        if isinstance(verify_channels, (str, Channel)):
            verify_channels = (verify_channels,)  # one channel, not a set of characters
        if not isinstance(verify_channels, Iterable):
            raise ValidationError("verify_channels", verify_channels, "channels (an iterable)")
        max_attempts = whole_number("max_attempts", max_attempts, 1)
        check_text("team_lead", team_lead)
        check_text("manager", manager)
        _maybe_text("worker_id", worker_id)
        self.store: Storage = store if store is not None else MemoryStore()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.workflow = workflow if workflow is not None else default_workflow()
        self.rules = DeskRules(
            workflow=self.workflow,
            sla=SlaEngine(default_sla_policies() if sla is None else sla),
            escalation=tuple(escalation),
            verify_channels=frozenset(
                coerce_enum(Channel, c, "verify_channels") for c in verify_channels
            ),
            idle_chat=idle_chat if idle_chat is not None else IdleChatPolicy(),
            auto_close=auto_close if auto_close is not None else AutoClosePolicy(),
            callbacks=callbacks if callbacks is not None else CallbackPolicy(),
            team_lead=team_lead,
            manager=manager,
            notify_customers=notify_customers,
            extensions=(*((triage,) if triage is not None else ()), *extensions),
            reply_guard=ReplyGuard(reply_policy) if reply_policy is not None else None,
        )
        self.max_attempts = max_attempts
        # 128 random bits as 32 hex digits, like ``uuid4().hex`` without building a UUID.
        self._new_id = id_factory or _random_id
        self.worker_id = worker_id or f"desk-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.timer_lease = timer_lease
        try:
            self.dispatcher = Dispatcher(
                self.store,
                notifiers if notifiers is not None else {},
                clock=self.clock,
                **{
                    "fallback": None if notifiers is not None else LogNotifier(),
                    "owner": self.worker_id,
                    **(dispatcher_options or {}),
                },
            )
        except TypeError as error:  # an option Dispatcher does not take
            raise ValidationError(
                "dispatcher_options", dispatcher_options, f"Dispatcher options ({error})"
            ) from None

    # -- reading ---------------------------------------------------------------------------
    def get_ticket(self, ticket_id: str) -> Ticket:
        """The ticket as stored now; ``TicketNotFound`` if there is none."""
        check_text("ticket_id", ticket_id, expected=_ID)
        with self.store.transaction() as uow:
            return uow.get_ticket(ticket_id)

    def history(self, ticket_id: str) -> list[Event]:
        """Every event of the ticket in order: its audit trail."""
        check_text("ticket_id", ticket_id, expected=_ID)
        with self.store.transaction() as uow:
            uow.get_ticket(ticket_id)
            return uow.history(ticket_id)

    def tickets(
        self,
        *,
        status: str | Sequence[str] | None = None,
        category: StatusCategory | str | None = None,
        assignee: str | None = None,
        group: str | None = None,
        customer_id: str | None = None,
        channel: Channel | str | None = None,
        priority: Priority | str | None = None,
        tag: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int | None = None,
    ) -> list[Ticket]:
        """Tickets matching every given filter, oldest first.

        ``category`` selects all statuses of that category (``"waiting"``, ...).
        """
        if limit is not None:
            limit = _limit(limit, 0)
        _optional_text(assignee=assignee, group=group, customer_id=customer_id, tag=tag)
        statuses: list[str] | None = None
        if status is not None:
            statuses = sorted(_names(status, "status"))
            for name in statuses:
                self.workflow.category(name)
        if category is not None:
            wanted = coerce_enum(StatusCategory, category, "category")
            in_category = [s for s, c in self.workflow.statuses.items() if c is wanted]
            statuses = (
                [s for s in statuses if s in in_category] if statuses is not None else in_category
            )
        query = TicketQuery(
            status=statuses,
            assignee=assignee,
            group=group,
            customer_id=customer_id,
            channel=coerce_enum(Channel, channel, "channel").value if channel is not None else None,
            priority=(
                coerce_enum(Priority, priority, "priority").value if priority is not None else None
            ),
            tag=tag,
            created_from=(
                to_utc(created_from, "created_from") if created_from is not None else None
            ),
            created_to=to_utc(created_to, "created_to") if created_to is not None else None,
            limit=limit,
        )
        with self.store.transaction() as uow:
            return uow.find_tickets(query)

    def sla(self, ticket_id: str, at: datetime | None = None) -> list[ClockReading]:
        """The ticket's SLA clocks read at ``at`` (default now): exact remaining business time.

        Readings project the clocks as they are forward: an ``at`` before the ticket's last
        change is refused (the clocks no longer say what they said then; its history does).
        """
        now = self._now(at, "at")
        ticket = self.get_ticket(ticket_id)
        if at is not None and now < ticket.updated_at:
            raise ValidationError(
                "at", at, f"an instant not before the ticket's last change ({ticket.updated_at})"
            )
        return self.rules.sla.read(ticket, now)

    # -- commands --------------------------------------------------------------------------
    def open_ticket(
        self,
        *,
        subject: str,
        body: str,
        customer: Customer,
        channel: Channel | str,
        priority: Priority | str | None = None,
        category: str | None = None,
        kind: str = "request",
        tags: str | Iterable[str] = (),
        fields: Mapping[str, Any] | None = None,
        impact: str | None = None,
        urgency: str | None = None,
        group: str | None = None,
        assignee: str | None = None,
        by: str | None = None,
    ) -> Ticket:
        """Record a new case. The customer's first message is the ticket's description.

        ``fields`` are custom fields: plain JSON values under string keys, kept as every store
        reads them back (a tuple becomes a list; NaN, sets and dates are refused by path, such
        as ``fields.order.placed``).
        """
        check_text("subject", subject)
        check_text("body", body, empty_ok=True)
        if not isinstance(customer, Customer):
            raise ValidationError("customer", customer, "a supportflow.Customer")
        if not isinstance(customer.id, str) or not customer.id.strip():
            raise ValidationError("customer", customer, "a customer with a non-empty id")
        channel = coerce_enum(Channel, channel, "channel")
        check_text("kind", kind)
        _optional_text(category=category, impact=impact, urgency=urgency, group=group,
                       assignee=assignee, by=by)  # fmt: skip
        if (  # who: never blank (text or None already; a call only when one is blank)
            (group is not None and not group.strip())
            or (assignee is not None and not assignee.strip())
            or (by is not None and not by.strip())
        ):
            _optional_names(group=group, assignee=assignee, by=by)
        names, custom = _names(tags), _fields(fields)
        explicit = priority is not None
        priority = coerce_enum(Priority, priority, "priority") if explicit else Priority.NORMAL
        ticket_id = self._new_id()

        def build(change: Change) -> None:
            change.open(
                ticket_id=ticket_id,
                subject=subject,
                body=body,
                customer=customer,
                channel=channel,
                priority=priority,
                priority_explicit=explicit,
                category=category,
                kind=kind,
                tags=names,
                fields=dict(custom),
                impact=impact,
                urgency=urgency,
                group=group,
                assignee=assignee,
                actor=by or customer.id,
            )

        return self._run(None, build, new=True)

    def reply(
        self,
        ticket_id: str,
        body: str,
        *,
        by: str,
        role: Role | str = Role.AGENT,
        override_role: str | None = None,
    ) -> Ticket:
        """Add a public message. An agent's reply answers the customer (and meets response
        clocks); a customer's reply may bring a waiting or resolved ticket back to work.

        With a ``reply_policy`` on the desk, an agent's reply is checked first and a violation
        raises :class:`ReplyBlocked` with nothing stored, unless ``by`` overrides it with an
        ``override_role`` the policy allows (recorded as ``ReplyGuardOverridden``).

        A customer writing on a closed ticket opens a new ticket linked to it (``follows``),
        which is returned.
        """
        check_text("body", body)
        _actor(by)
        who = coerce_enum(Role, role, "role")
        _maybe_text("override_role", override_role)
        return self._run(
            ticket_id,
            lambda change: change.message(body, by, who, public=True, override_role=override_role),
        )

    def add_note(self, ticket_id: str, body: str, *, by: str) -> Ticket:
        """Add an internal note: never shown to the customer, never meets an SLA clock."""
        check_text("body", body)
        _actor(by)
        return self._run(ticket_id, lambda c: c.message(body, by, Role.AGENT, public=False))

    def assign(
        self,
        ticket_id: str,
        assignee: str | None = None,
        *,
        group: str | None = None,
        by: str,
    ) -> Ticket:
        """Give the ticket to an agent and/or a group (team or tier)."""
        _actor(by)
        _optional_text(assignee=assignee, group=group)
        if (assignee is not None and not assignee.strip()) or (
            group is not None and not group.strip()
        ):
            _optional_names(assignee=assignee, group=group)  # never blank
        if assignee is None and group is None:
            raise ValidationError("assignee", None, "an assignee, a group, or both")
        return self._run(ticket_id, lambda c: c.assign(assignee, group, by))

    def fire(self, ticket_id: str, trigger: str, *, by: str, **data: Any) -> Ticket:
        """Fire any workflow trigger; ``InvalidTransition`` names the triggers allowed now.

        ``data`` goes into the ``StatusChanged`` event, as plain JSON like custom fields.
        """
        check_text("trigger", trigger)
        _actor(by)
        if data and not _STATUS_CHANGED_KEYS.isdisjoint(data):
            # The event's own keys are the move itself: never overwritten.
            key = next(key for key in data if key in _STATUS_CHANGED_KEYS)
            named = ", ".join(sorted(_STATUS_CHANGED_KEYS))
            raise ValidationError(key, data[key], f"a detail named other than {named}")
        # Recorded with the StatusChanged event: plain JSON, as every store keeps it.
        details = {key: plain_json(value, key) for key, value in data.items()}
        return self._run(ticket_id, lambda c: c._fire(trigger, by, details))

    def resolve(self, ticket_id: str, *, by: str, resolution: str | None = None) -> Ticket:
        """Mark the case solved; it closes by itself if the customer stays silent."""
        _actor(by)
        _maybe_text("resolution", resolution)
        return self._run(ticket_id, lambda c: c._fire("resolve", by, {"resolution": resolution}))

    def reopen(self, ticket_id: str, *, by: str, reason: str | None = None) -> Ticket:
        """Take a resolved ticket back into work; its resolution clock resumes."""
        _actor(by)
        _maybe_text("reason", reason)
        return self._run(ticket_id, lambda c: c._fire("reopen", by, {"reason": reason}))

    def close(self, ticket_id: str, *, by: str, reason: str | None = None) -> Ticket:
        """Close a resolved ticket (the customer confirmed, or the agent closes it)."""
        _actor(by)
        _maybe_text("reason", reason)
        return self._run(ticket_id, lambda c: c._fire("close", by, {"reason": reason}))

    def cancel(self, ticket_id: str, *, by: str, reason: str) -> Ticket:
        """Cancel a ticket that is no case (spam, duplicate, sent by mistake)."""
        _actor(by)
        check_text("reason", reason)
        return self._run(ticket_id, lambda c: c._fire("cancel", by, {"reason": reason}))

    def verify_customer(
        self, ticket_id: str, *, by: str, method: VerificationMethod | str
    ) -> Ticket:
        """Record that ``by`` verified the customer's identity, and how."""
        _actor(by)
        method = coerce_enum(VerificationMethod, method, "method")
        return self._run(ticket_id, lambda c: c.verify(by, method))

    def set_priority(
        self, ticket_id: str, priority: Priority | str, *, by: str, reason: str | None = None
    ) -> Ticket:
        """Set the priority explicitly; rules no longer lower it. SLA targets follow."""
        _actor(by)
        _maybe_text("reason", reason)
        priority = coerce_enum(Priority, priority, "priority")
        return self._run(ticket_id, lambda c: c.set_priority(priority, by, reason, explicit=True))

    def update(
        self,
        ticket_id: str,
        *,
        by: str,
        category: str | None = None,
        kind: str | None = None,
        add_tags: str | Iterable[str] = (),
        remove_tags: str | Iterable[str] = (),
        fields: Mapping[str, Any] | None = None,
        impact: str | None = None,
        urgency: str | None = None,
    ) -> Ticket:
        """Change classification fields; the SLA policy is chosen again if they matter to it."""
        _actor(by)
        _optional_text(category=category, kind=kind, impact=impact, urgency=urgency)
        custom = _fields(fields)
        changes: dict[str, Any] = {}
        if category is not None:
            changes["category"] = category
        if kind is not None:
            changes["kind"] = kind
        if impact is not None:
            changes["impact"] = impact
        if urgency is not None:
            changes["urgency"] = urgency
        add, remove = _names(add_tags, "add_tags"), _names(remove_tags, "remove_tags")
        return self._run(ticket_id, lambda c: c.update(by, changes, add, remove, dict(custom)))

    def link(self, ticket_id: str, other_id: str, *, kind: str = "related", by: str) -> Ticket:
        """Link two tickets (both sides record it)."""
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("other_id", other_id, expected=_ID)
        check_text("kind", kind)
        _actor(by)
        if other_id == ticket_id:
            raise ValidationError("other_id", other_id, "a different ticket")
        self.get_ticket(other_id)
        reverse = _REVERSE.get(kind, kind)

        def both_sides(change: Change) -> None:
            change.link(kind, other_id, by)

            def other_side(uow: UnitOfWork) -> None:  # same unit of work: both or neither
                other = Change(self.rules, uow.get_ticket(other_id), change.now, "system",
                               self._new_id)  # fmt: skip
                other.uow = uow
                other.catch_up()
                other.link(reverse, ticket_id, by)
                other.commit(uow, insert=False)
                for follow_up in other.follow_ups:
                    follow_up(uow)

            change.follow_ups.append(other_side)

        return self._run(ticket_id, both_sides)

    def acknowledge(self, ticket_id: str, *, by: str) -> Ticket:
        """Acknowledge the current escalation level: its repeats stop."""
        _actor(by)
        return self._run(ticket_id, lambda c: c.acknowledge(by))

    def contact_dropped(self, ticket_id: str, *, by: str = "system") -> Ticket:
        """A call or chat was cut off: a call-back task is due at once."""
        _actor(by)
        return self._run(ticket_id, lambda c: c.contact_dropped(by))

    def callback_done(self, ticket_id: str, *, by: str, outcome: str = "reached") -> Ticket:
        """Record that the call-back after a dropped contact was made."""
        _actor(by)
        check_text("outcome", outcome)
        return self._run(ticket_id, lambda c: c.callback_done(by, outcome))

    def execute(self, ticket_id: str, action: Callable[[Change], None]) -> Ticket:
        """Run a custom command on a ticket through the full command path.

        For extensions and services: ``action`` receives the :class:`~supportflow.extensions.Change`
        (record events, notify, fire triggers, queue store writes in ``change.follow_ups``); it
        all commits in one unit of work, or nothing does.
        """
        if not callable(action):
            raise ValidationError("action", action, "a callable taking the change")
        return self._run(ticket_id, action)

    # -- due work --------------------------------------------------------------------------
    def run_due(
        self,
        now: datetime | None = None,
        limit: int = 100,
        *,
        errors: Literal["raise", "continue"] = "raise",
    ) -> DueReport:
        """Claim due timers (earliest first, at most ``limit``) and handle each ticket's.

        Handling goes through the normal command path, so it is idempotent: a second run at
        the same instant finds nothing due, and a timer whose ticket moved on is dropped.
        With ``errors="continue"`` (what the worker uses) a ticket whose handling raises is
        logged and reported in ``failed`` while the others go on; its timers stay leased and
        are tried again when the lease expires.
        """
        limit = _limit(limit, 1)
        if errors not in ("raise", "continue"):
            raise ValidationError("errors", errors, "'raise' or 'continue'")
        instant = self._now(now, "now")
        if instant > _LATEST - self.timer_lease:  # the claimed timers' lease must end
            raise ValidationError(
                "now", now if now is not None else instant,
                f"an instant at least the timer lease ({self.timer_lease}) before the year 10000",
            )  # fmt: skip
        with self.store.transaction() as uow:
            claimed = uow.claim_due_timers(instant, limit, self.worker_id, self.timer_lease)
        by_ticket: dict[str, list[Timer]] = {}
        for timer in claimed:
            by_ticket.setdefault(timer.ticket_id, []).append(timer)
        fired: list[Timer] = []
        dropped: list[Timer] = []
        events: list[Event] = []
        failed: list[tuple[Timer, str]] = []
        for ticket_id, timers in by_ticket.items():
            try:
                done, recorded = self._handle_due(ticket_id, timers, instant)
            except Exception as error:
                if errors == "raise":
                    raise
                log.exception("handling due timers of ticket %s failed", ticket_id)
                failed.extend((timer, f"{type(error).__name__}: {error}") for timer in timers)
                continue
            fired.extend(done)
            handled = {timer.key for timer in done}
            dropped.extend(t for t in timers if t.key not in handled)
            events.extend(recorded)
        return DueReport(tuple(fired), tuple(dropped), tuple(events), tuple(failed))

    # -- notifications ---------------------------------------------------------------------
    def deliver_pending(self, limit: int = 100) -> DispatchReport:
        """Deliver due outbox rows through the desk's notifiers (with retries and backoff).

        Without ``notifiers`` the desk logs each notification through ``LogNotifier``.
        """
        return self.dispatcher.deliver_pending(_limit(limit, 1))

    def dead_letters(self, limit: int = 100) -> list[OutboxEntry]:
        """Notifications that kept failing and were parked."""
        return self.dispatcher.dead_letters(_limit(limit, 0))

    def requeue(self, key: str) -> OutboxEntry:
        """Send a dead letter again (its attempts start over)."""
        return self.dispatcher.requeue(key)

    def next_due(self) -> datetime | None:
        """When the earliest timer of any ticket falls due."""
        with self.store.transaction() as uow:
            return uow.next_timer_due()

    def retrying(self, work: Callable[[UnitOfWork], R]) -> R:
        """``work(uow)`` in one unit of work on the desk's store, run again in a new one when
        it raises ``ConcurrencyConflict`` (another writer got there first), at most
        ``max_attempts`` times in all; what ``work`` returns.

        For writes beside the commands (records, the outbox) that read before they write:
        ``work`` must read what it depends on inside the unit of work it is given.

        >>> desk.retrying(lambda uow: uow.get_record("survey", "s-1"))  # doctest: +SKIP
        """
        for attempt in itertools.count(1):
            try:
                with self.store.transaction() as uow:
                    return work(uow)
            except ConcurrencyConflict:
                if attempt >= self.max_attempts:
                    raise
        raise AssertionError("unreachable")

    def _handle_due(
        self, ticket_id: str, timers: list[Timer], now: datetime
    ) -> tuple[list[Timer], list[Event]]:
        def handle(uow: UnitOfWork) -> tuple[list[Timer], list[Event]]:
            try:
                ticket = uow.get_ticket(ticket_id)
            except LookupError:
                for timer in timers:
                    uow.release_timer(timer, self.worker_id)
                return [], []
            change = Change(self.rules, ticket, now, "system", self._new_id)
            change.uow = uow
            change.catch_up()
            # Saved when handling changed anything, an event or not (a deadline may only set
            # state and notify, as ``Change.commit`` allows).
            if change.events or change.notifications or change.ticket != ticket:
                change.commit(uow, insert=False)
            else:
                uow.replace_timers(ticket_id, change.timers())
            for follow_up in change.follow_ups:
                follow_up(uow)
            for timer in timers:
                uow.release_timer(timer, self.worker_id)
            return change.fired, change.stored_events

        return self.retrying(handle)

    # -- the command path ------------------------------------------------------------------
    def _run(
        self, ticket_id: str | None, action: Callable[[Change], None], *, new: bool = False
    ) -> Ticket:
        """Run ``action`` on the ticket, or on a new one with ``new``."""
        if not new and (type(ticket_id) is not str or not ticket_id.strip()):
            check_text(
                "ticket_id", ticket_id, expected=_ID
            )  # raises, naming it (``None`` opens nothing)
        # ``retrying``'s loop, written out: through a closure it costs every command about 1%.
        for attempt in itertools.count(1):
            now = to_utc(self.clock.now(), "clock.now()")
            try:
                with self.store.transaction() as uow:
                    if ticket_id is None:
                        change = Change.new(self.rules, now, self._new_id, uow.next_ticket_number())
                        change.uow = uow
                        action(change)
                        change.commit(uow, insert=True)
                    else:
                        change = Change(
                            self.rules, uow.get_ticket(ticket_id), now, "system", self._new_id
                        )
                        change.uow = uow
                        change.catch_up(before_command=True)
                        action(change)
                        change.commit(uow, insert=False)
                    for follow_up in change.follow_ups:
                        follow_up(uow)
                    return change.result or change.ticket
            except ConcurrencyConflict:
                if attempt >= self.max_attempts:
                    raise
        raise AssertionError("unreachable")

    def _now(self, value: datetime | None, field: str) -> datetime:
        if value is None:
            return to_utc(self.clock.now(), "clock.now()")
        return to_utc(ensure_aware(value, field), field)


# What a StatusChanged event records of the move itself (``fire``'s details cannot replace it).
_STATUS_CHANGED_KEYS = frozenset(
    ("trigger", "from", "to", "from_category", "to_category", "automatic")
)

_REVERSE = {
    "parent": "child",
    "child": "parent",
    "follows": "followed_by",
    "followed_by": "follows",
}


def _random_id() -> str:
    return os.urandom(16).hex()


T = TypeVar("T")
R = TypeVar("R")


def _all_of(field: str, items: Iterable[T], kind: type[T]) -> tuple[T, ...]:
    """``items`` as a tuple, each a ``kind``."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValidationError(field, items, f"{kind.__name__} objects (an iterable)")
    found = tuple(items)
    for item in found:
        if not isinstance(item, kind):
            raise ValidationError(field, item, f"{kind.__name__} objects")
    return found


_ID = "an id: a non-empty string"
_LATEST = datetime.max.replace(tzinfo=timezone.utc)

# A limit past what the databases' integers hold (SQLite and PostgreSQL refuse to bind it)
# means as many as there are: no table reaches it.
_MAX_LIMIT = 2**63 - 1


def _limit(value: object, least: int) -> int:
    """``limit`` as a whole number of at least ``least``, at most ``_MAX_LIMIT``."""
    return min(whole_number("limit", value, least), _MAX_LIMIT)


def _maybe_text(field: str, value: object) -> None:
    if value is not None and type(value) is not str:  # the usual cases, without a call
        check_text(field, value, empty_ok=True, optional=True)


def _optional_text(**values: object) -> None:
    """Each value (by field name) is a string or ``None``."""
    for field, value in values.items():
        _maybe_text(field, value)


def _optional_names(**values: object) -> None:
    """Each value (by field name) names someone (an agent, a group): a non-blank string, or
    ``None``."""
    for field, value in values.items():
        check_text(field, value, optional=True)


def _fields(value: object) -> dict[str, Any]:
    """Custom fields: a mapping with string keys (``None`` for none), of plain JSON values,
    as every store keeps them (see :func:`~supportflow.model.plain_json`)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("fields", value, "a mapping with string keys, or None")
    fields: dict[str, Any] = plain_json(value, "fields")
    return fields


def _names(value: str | Iterable[str], field: str = "tags") -> frozenset[str]:
    """Tags given as one string are one tag, not a set of characters."""
    if isinstance(value, str):
        return frozenset((value,))
    try:
        names = frozenset(value)
    except TypeError:  # not an iterable, or unhashable items: no tags
        names = None
    if names is None or (names and not all(isinstance(name, str) for name in names)):
        raise ValidationError(field, value, "a string or an iterable of strings")
    return names


def _actor(by: object) -> None:
    if not isinstance(by, str) or not by.strip():
        raise ValidationError("by", by, "the id of who acts, a non-empty string")
