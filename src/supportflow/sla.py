"""SLA policies and the clocks they run on each ticket.

Three clocks, each counted in business time on the policy's calendar:

- ``first_response``: from creation until the first public agent reply;
- ``next_response``: from a customer message that follows an agent reply until the next
  public agent reply (a new cycle each time);
- ``resolution``: from creation until resolved; paused while the ticket's status is in the
  ``waiting`` category; a reopen resumes it where it stopped.

The engine is pure: it takes a ticket, the policies and an instant, and returns the next
:class:`~supportflow.model.SlaState` with the events to record. Deadlines (warnings at a
percentage of the target, and the breach) are kept on the clock so that the desk can turn
them into timers without recomputing business time.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from supportflow.calendar import TWENTY_FOUR_SEVEN, BusinessCalendar, _is_calendar
from supportflow.errors import ValidationError
from supportflow.events import EventDraft, EventType
from supportflow.model import (
    Channel,
    Priority,
    Role,
    SlaClock,
    SlaClockState,
    SlaState,
    StatusCategory,
    Ticket,
    Timer,
    _maker,
    _replacer,
    coerce_enum,
    duration_validator,
    tier_key,
)

__all__ = [
    "CLOCKS",
    "TICKET_INPUTS",
    "ClockReading",
    "SlaCondition",
    "SlaEngine",
    "SlaPolicy",
    "SlaTarget",
    "default_sla_policies",
]

FIRST_RESPONSE = "first_response"
NEXT_RESPONSE = "next_response"
RESOLUTION = "resolution"
CLOCKS = (FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION)


def _unknown_clock(name: object) -> ValidationError:
    """The error for a clock name other than ``first_response``, ``next_response`` and
    ``resolution`` (callers test ``name in CLOCKS`` themselves: it runs on every command)."""
    return ValidationError("clock", name, f"one of {', '.join(CLOCKS)}")


_target = duration_validator(optional=True)


@attrs.frozen(slots=True)
class SlaTarget:
    """How long each clock may run before it is breached; ``None`` means no promise.

    >>> SlaTarget(first_response=timedelta(minutes=30), resolution=timedelta(hours=4))
    SlaTarget(first_response=datetime.timedelta(seconds=1800), next_response=None, ...)
    """

    first_response: timedelta | None = attrs.field(default=None, validator=_target)
    next_response: timedelta | None = attrs.field(default=None, validator=_target)
    resolution: timedelta | None = attrs.field(default=None, validator=_target)

    def for_clock(self, name: str) -> timedelta | None:
        """The target of the clock called ``name`` (``first_response``, ``next_response`` or
        ``resolution``); ``None`` means no promise."""
        if name not in CLOCKS:
            raise _unknown_clock(name)
        target: timedelta | None = getattr(self, name)
        return target


def _items(values: Iterable[object] | str, field: str) -> Iterable[object]:
    # A lone value (``"vip"``, ``Channel.CHAT``) is one value, not a sequence of characters.
    if isinstance(values, (str, enum.Enum)):
        return (values,)
    if not isinstance(values, Iterable):
        raise ValidationError(field, values, "a value or an iterable of values")
    return values


def _names(values: Iterable[object] | str, field: str = "tags") -> frozenset[str]:
    names = []
    for value in _items(values, field):
        if isinstance(value, enum.Enum):
            value = value.value
        if not isinstance(value, str):  # None or b"vip" is no name ("None", "b'vip'")
            raise ValidationError(field, value, "names (strings)")
        names.append(value)
    return frozenset(names)


def _categories(values: Iterable[object] | str) -> frozenset[str]:
    return _names(values, "categories")


def _priorities(values: Iterable[Priority | str] | Priority | str) -> frozenset[str]:
    return frozenset(
        coerce_enum(Priority, v, "priorities").value for v in _items(values, "priorities")
    )


def _channels(values: Iterable[Channel | str] | Channel | str) -> frozenset[str]:
    return frozenset(coerce_enum(Channel, v, "channels").value for v in _items(values, "channels"))


def _tiers(values: Iterable[str] | str) -> frozenset[str]:
    return frozenset(tier_key(name) for name in _names(values, "tiers"))


@attrs.frozen(slots=True)
class SlaCondition:
    """Which tickets a policy is for. Empty sets mean "any"; all given sets must match.

    Priorities and channels are checked when the condition is built (a typo raises
    :class:`~supportflow.errors.ValidationError`); tiers match without regard to case; a
    lone value (``tags="vip"``) is one value.

    >>> SlaCondition(channels=["chat"]).explain(ticket)          # doctest: +SKIP
    'channel chat'
    """

    priorities: frozenset[str] = attrs.field(default=frozenset(), converter=_priorities)
    channels: frozenset[str] = attrs.field(default=frozenset(), converter=_channels)
    tiers: frozenset[str] = attrs.field(default=frozenset(), converter=_tiers)
    categories: frozenset[str] = attrs.field(default=frozenset(), converter=_categories)
    tags: frozenset[str] = attrs.field(default=frozenset(), converter=_names)

    def explain(self, ticket: Ticket) -> str | None:
        """Why the ticket matches (``"channel chat, tier vip"``), or ``None`` if it does not."""
        reasons: list[str] = []
        checks = (
            ("priority", self.priorities, {ticket.priority.value}),
            ("channel", self.channels, {ticket.channel.value}),
            ("tier", self.tiers, {tier_key(ticket.customer.tier)}),
            ("category", self.categories, {ticket.category} if ticket.category else set()),
            ("tag", self.tags, set(ticket.tags)),
        )
        for label, wanted, actual in checks:
            if not wanted:
                continue
            hit = sorted(wanted & actual)
            if not hit:
                return None
            reasons.append(f"{label} {', '.join(hit)}")
        return ", ".join(reasons) if reasons else "applies to every ticket"


def _targets(value: Mapping[Priority | str, SlaTarget]) -> Mapping[Priority, SlaTarget]:
    if not isinstance(value, Mapping):
        raise ValidationError("targets", value, "a mapping of priority to SlaTarget")
    for target in value.values():
        if not isinstance(target, SlaTarget):
            raise ValidationError("targets", target, "SlaTarget values")
    return {coerce_enum(Priority, key, "targets"): target for key, target in value.items()}


def _warnings(value: Iterable[int]) -> tuple[int, ...]:
    given = tuple(value) if isinstance(value, Iterable) else None
    # ``type(...) is int``: a bool is no percentage.
    if given is None or not all(type(percent) is int for percent in given):
        raise ValidationError("warnings", value, "whole percentages between 1 and 99")
    thresholds = tuple(sorted(set(given)))
    for percent in thresholds:
        if not 0 < percent < 100:
            raise ValidationError("warnings", percent, "percentages between 1 and 99")
    return thresholds


@attrs.frozen(slots=True)
class SlaPolicy:
    """A promise: targets per priority, counted on a calendar, for the tickets it selects.

    >>> SlaPolicy("standard", calendar=office, targets={
    ...     Priority.NORMAL: SlaTarget(first_response=timedelta(minutes=30))})  # doctest: +SKIP
    """

    name: str
    targets: Mapping[Priority, SlaTarget] = attrs.field(converter=_targets)
    calendar: BusinessCalendar = attrs.field(default=TWENTY_FOUR_SEVEN, validator=_is_calendar)
    condition: SlaCondition = attrs.field(factory=SlaCondition)
    warnings: tuple[int, ...] = attrs.field(default=(75, 90), converter=_warnings)

    def __attrs_post_init__(self) -> None:
        for priority, target in self.targets.items():
            for clock in CLOCKS:
                duration = getattr(target, clock)
                if duration is not None:
                    self.calendar.check_span(f"targets[{priority.value}].{clock}", duration)

    def target(self, priority: Priority, clock: str) -> timedelta | None:
        """The target of ``clock`` for tickets of ``priority``; ``None`` when the policy promises
        nothing there (no target for that priority, or none for that clock). An unknown
        clock name is a ``ValidationError``."""
        if clock not in CLOCKS:
            raise _unknown_clock(clock)
        target = self.targets.get(priority)
        return getattr(target, clock) if target is not None else None


@attrs.frozen(slots=True)
class ClockReading:
    """An SLA clock read at an instant: exact remaining business time (negative once late)."""

    name: str
    state: SlaClockState
    target: timedelta | None
    elapsed: timedelta
    remaining: timedelta | None
    due_at: datetime | None
    met_at: datetime | None
    breached_at: datetime | None


def default_sla_policies(business: BusinessCalendar | None = None) -> list[SlaPolicy]:
    """Targets from the field, as data to copy and change.

    Chat is answered within 3 minutes around the clock; e-mail, web and the rest are
    answered in business hours (Monday to Friday, 09:00–18:00 in ``business``'s zone, UTC
    when not given), and a normal case is resolved within 3 business days.
    """
    office = business or BusinessCalendar(
        "UTC", {day: [("09:00", "18:00")] for day in range(5)}, name="office hours"
    )
    minutes, hours = timedelta(minutes=1), timedelta(hours=1)
    day = 9 * hours  # one business day of the default calendar
    chat = SlaTarget(first_response=3 * minutes, next_response=3 * minutes, resolution=1 * day)
    return [
        SlaPolicy(
            "chat",
            targets=dict.fromkeys(Priority, chat),
            calendar=TWENTY_FOUR_SEVEN,
            condition=SlaCondition(channels=[Channel.CHAT]),
        ),
        SlaPolicy(
            "standard",
            calendar=office,
            targets={
                Priority.URGENT: SlaTarget(30 * minutes, 1 * hours, 4 * hours),
                Priority.HIGH: SlaTarget(1 * hours, 2 * hours, 1 * day),
                Priority.NORMAL: SlaTarget(4 * hours, 8 * hours, 3 * day),
                Priority.LOW: SlaTarget(8 * hours, 1 * day, 5 * day),
            },
        ),
    ]


#: The ticket fields :meth:`SlaEngine.update` (and the policy selection it runs) reads: a
#: caller whose change touched none of them may pass the ticket as it was.
TICKET_INPUTS = frozenset(
    {"sla", "priority", "channel", "customer", "category", "tags", "messages"}
)

_Result = tuple[SlaState | None, list[EventDraft]]
_Selection = tuple[SlaPolicy, str] | None

# The engine evolves clocks several times per command: a generated replace skips the
# converters and validators of ``attrs.evolve`` (every value here is built by the engine).
_evolve = _replacer(SlaClock)
_timer = _maker(Timer)
_draft = _maker(EventDraft)  # (type, at, data, actor): the engine builds each data dict itself
_SELECTIONS_KEPT = 4096  # distinct (priority, channel, tier, category, tags) remembered


class SlaEngine:
    """Runs the SLA clocks of tickets against a list of policies (first match applies)."""

    def __init__(self, policies: Sequence[SlaPolicy]) -> None:
        self.policies = tuple(policies)
        names = [policy.name for policy in self.policies]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValidationError("sla", duplicates, "policies with distinct names")
        self._by_name = {policy.name: policy for policy in self.policies}
        # Every command asks which policy applies; the answer depends on these five values
        # only (see ``SlaCondition.explain``), and few combinations occur, so it is remembered.
        self._selections: dict[tuple[object, ...], _Selection] = {}

    def select(self, ticket: Ticket) -> tuple[SlaPolicy, str] | None:
        """The first policy whose condition matches, with the reason."""
        key = (ticket.priority, ticket.channel, ticket.customer.tier, ticket.category, ticket.tags)
        try:
            return self._selections[key]
        except KeyError:
            pass
        chosen: _Selection = None
        for policy in self.policies:
            reason = policy.condition.explain(ticket)
            if reason is not None:
                chosen = policy, reason
                break
        if len(self._selections) >= _SELECTIONS_KEPT:
            self._selections.clear()  # unusual data (many tag sets): start over, stay bounded
        self._selections[key] = chosen
        return chosen

    def policy(self, name: str) -> SlaPolicy | None:
        return self._by_name.get(name)

    # -- commands --------------------------------------------------------------------------
    def open(self, ticket: Ticket, now: datetime) -> _Result:
        """Start the clocks of a new ticket."""
        chosen = self.select(ticket)
        if chosen is None:
            return None, []
        policy, reason = chosen
        priority = ticket.priority
        clocks = []
        for name in CLOCKS:
            target = policy.target(priority, name)
            if target is not None and name != NEXT_RESPONSE:
                clocks.append(_started(name, target, now, policy))
            else:
                clocks.append(_idle_clock(name, target))
        events = [_applied(policy, reason, priority, now)]
        return _sla_state(policy.name, reason, tuple(clocks)), events

    def update(
        self,
        before: Ticket,
        after: Ticket,
        now: datetime,
        *,
        category_before: StatusCategory,
        category_after: StatusCategory,
        agent_replied: bool = False,
        customer_wrote: bool = False,
    ) -> _Result:
        """The SLA after a command changed ``before`` into ``after`` at ``now``."""
        # The decisions are remembered by these values: each as its one type ("resolved"
        # equals StatusCategory.RESOLVED as a key, and 1 equals True).
        if category_after.__class__ is not StatusCategory:
            category_after = coerce_enum(StatusCategory, category_after, "category_after")
        if agent_replied.__class__ is not bool or customer_wrote.__class__ is not bool:
            agent_replied, customer_wrote = bool(agent_replied), bool(customer_wrote)
        state = after.sla
        events: list[EventDraft] = []
        chosen = self.select(after)
        finished = category_after in (StatusCategory.RESOLVED, StatusCategory.CLOSED)
        if state is None:
            # A ticket no policy matched until now starts its clocks from this instant, unless
            # it is done: a resolved or closed ticket has nothing left to promise.
            if chosen is None or finished:
                return None, events
            return self.open(after, now)
        current = self.policy(state.policy)
        if chosen is None:
            if current is None:
                return state, events
            policy = current  # promises made are kept when no policy matches any more
        else:
            policy, reason = chosen
            if policy is not current or before.priority is not after.priority:
                # Keep the business time already counted, under the new targets and calendar.
                state = self._retarget(state, current, policy, reason, after.priority, now)
                events.append(_applied(policy, reason, after.priority, now))
            elif reason != state.reason:
                state = attrs.evolve(state, reason=reason)  # same policy, matched for a new reason
        clocks: list[SlaClock] = []
        changed = False
        decisions = _DECISIONS
        # Clocks are kept in ``CLOCKS`` order, so events come out in that order too.
        for clock in state.clocks:
            key = (clock.name, clock.state, not clock.cycle, clock.target is None, category_after,
                   agent_replied, customer_wrote)  # fmt: skip
            step = decisions.get(key, _UNDECIDED)
            if step is _UNDECIDED:
                step = decisions[key] = _decide(*key)
            if step is None:
                clocks.append(clock)
                continue
            was = clock
            if step is _START:
                # A clock that had no promise until now (no target when the ticket opened)
                # starts from this instant, as the clocks of a ticket no policy matched do;
                # a first response already given is not waited for.
                if clock.name == FIRST_RESPONSE and _answered(after):
                    clocks.append(clock)
                    continue
                started = {"state": _RUNNING, "since": now, "cycle": 1}
                clock = _running(clock, policy, started, fresh=False)
                step = _decide(clock.name, _RUNNING, False, False, category_after,
                               agent_replied, customer_wrote)  # fmt: skip
            if step is _MET:
                clock = _met(clock, policy, now, events)
            elif step is _STOP:
                clock = _stop(clock, policy, now)
            elif step is _PAUSE:
                clock = _pause(clock, policy.calendar, now)
            elif step is _RESUME:
                clock = _resume(clock, policy, now)
            elif step is _RESTART and _answered(before):  # the customer writes after a reply
                clock = _restart(clock, policy, now)
            changed = changed or clock is not was
            clocks.append(clock)
        if not changed:
            return state, events  # the same object: the desk then leaves the ticket's SLA be
        return _sla_state(state.policy, state.reason, tuple(clocks)), events

    def _retarget(
        self,
        state: SlaState,
        old: SlaPolicy | None,
        new: SlaPolicy,
        reason: str,
        priority: Priority,
        now: datetime,
    ) -> SlaState:
        """The clocks under ``new``'s targets for ``priority``, business time counted so far
        kept. A running clock left without a target keeps counting, without a due time, so
        that a later change back finds its elapsed time; a breach stays a breach."""
        clocks = []
        for clock in state.clocks:
            if old is not None:
                clock = _settle(clock, old.calendar, now)
            target = new.target(priority, clock.name)
            clock = _evolve(clock, {"target": target, "pending_warnings": (), "due_at": None})
            clocks.append(_schedule(clock, new))
        return SlaState(new.name, reason, tuple(clocks))

    # -- timers ----------------------------------------------------------------------------
    def timers(self, ticket: Ticket) -> list[Timer]:
        """The ticket's next SLA deadline per running clock: its earliest pending warning, else
        its breach.

        One timer per clock is enough to wake the desk: handling a deadline works out the
        clock's next one, and a desk that comes late handles every deadline that fell due in
        between, each at its own time. (All of a clock's deadlines are on the clock itself:
        ``due_at`` and ``pending_warnings``.)
        """
        return self.timers_for(ticket.id, ticket.sla)

    def timers_for(self, ticket_id: str, sla: SlaState | None) -> list[Timer]:
        """:meth:`timers` for a ticket given by its id and SLA state."""
        if sla is None:
            return []
        timers: list[Timer] = []
        for clock in sla.clocks:
            if clock.state is not _RUNNING and clock.state is not _BREACHED:  # not running
                continue
            if clock.pending_warnings:  # in time order: the warnings come before the breach
                percent, at = clock.pending_warnings[0]
                key = _timer_key(clock.name, percent)
                timers.append(_timer(ticket_id, key, at, "sla_warning"))
            elif clock.due_at is not None and clock.breached_at is None:
                key = _timer_key(clock.name, None)
                timers.append(_timer(ticket_id, key, clock.due_at, "sla_breach"))
        return timers

    def fire(self, ticket: Ticket, timer: Timer) -> _Result:
        """Apply a due SLA deadline: record the warning or the breach at its due time.

        Warnings not recorded by the time of the breach are dropped: the breach says more.
        """
        state = ticket.sla
        if state is None:
            return state, []
        policy = self.policy(state.policy)
        calendar = policy.calendar if policy is not None else TWENTY_FOUR_SEVEN
        _, name, what, *rest = timer.key.split(":")
        clocks = []
        events: list[EventDraft] = []
        for clock in state.clocks:
            if clock.name == name and clock.running and clock.target is not None:
                if what == "warning":
                    clock = _warn(clock, state.policy, calendar, int(rest[0]), timer.due_at, events)
                elif what == "breach" and not clock.breached:
                    clock = _evolve(
                        clock,
                        {
                            "state": SlaClockState.BREACHED,
                            "breached_at": timer.due_at,
                            "due_at": None,
                            "pending_warnings": (),
                        },
                    )
                    events.append(
                        _draft(
                            EventType.SLA_BREACHED,
                            timer.due_at,
                            {
                                "clock": name,
                                "policy": state.policy,
                                "target_seconds": _seconds(clock.target),
                                "due_at": timer.due_at.isoformat(),
                                "cycle": clock.cycle,
                            },
                            "system",
                        )
                    )
            clocks.append(clock)
        return SlaState(state.policy, state.reason, tuple(clocks)), events

    # -- reading ---------------------------------------------------------------------------
    def read(self, ticket: Ticket, now: datetime) -> list[ClockReading]:
        """Each clock of the ticket as it stands at ``now`` (exact remaining business time).

        A reading is a projection of the clock as stored: a clock whose due time has come by
        ``now`` (``due_at <= now``) reads as breached at its due time, as ``Desk.run_due``
        at ``now`` would record it, whether or not it is recorded yet. An answer at exactly
        ``due_at`` still meets the target: a command handles its own instant's deadlines
        after it has run.
        """
        if ticket.sla is None:
            return []
        policy = self.policy(ticket.sla.policy)
        calendar = policy.calendar if policy is not None else TWENTY_FOUR_SEVEN
        readings = []
        for clock in ticket.sla.clocks:
            elapsed = clock.elapsed
            if clock.running and clock.since is not None:
                elapsed += calendar.between(clock.since, now)
            remaining = clock.target - elapsed if clock.target is not None else None
            state, due_at, breached_at = clock.state, clock.due_at, clock.breached_at
            if clock.running and due_at is not None and breached_at is None and due_at <= now:
                state, due_at, breached_at = SlaClockState.BREACHED, None, due_at
            readings.append(
                ClockReading(
                    clock.name,
                    state,
                    clock.target,
                    elapsed,
                    remaining,
                    due_at,
                    clock.met_at,
                    breached_at,
                )
            )
        return readings


_RUNNING, _BREACHED = SlaClockState.RUNNING, SlaClockState.BREACHED
# What a command does to one clock depends on a few values only (see ``_decide``): each
# combination is worked out once. Steps are compared by identity.
_START, _MET, _STOP, _PAUSE, _RESUME, _RESTART = (
    "start", "met", "stop", "pause", "resume", "restart"
)  # fmt: skip
_UNDECIDED = object()
_DECISIONS: dict[tuple[Any, ...], str | None] = {}
_FINISHED = (StatusCategory.RESOLVED, StatusCategory.CLOSED)


def _decide(
    name: str,
    state: SlaClockState,
    unstarted: bool,
    no_target: bool,
    category_after: StatusCategory,
    agent_replied: bool,
    customer_wrote: bool,
) -> str | None:
    """The step a command takes on a clock: ``None`` (it stays as it is) or one of ``_START``
    (then decided again as running), ``_MET``, ``_STOP``, ``_PAUSE``, ``_RESUME`` and
    ``_RESTART`` (if an agent had replied before the customer wrote)."""
    finished = category_after in _FINISHED
    if not finished and name != NEXT_RESPONSE and unstarted and not no_target:
        return _START
    running = state is _RUNNING or state is _BREACHED
    if name in (FIRST_RESPONSE, NEXT_RESPONSE):
        if running and agent_replied:
            return _MET
        if running and finished:
            return _STOP
        if name == NEXT_RESPONSE and customer_wrote and not running and not no_target:
            return None if finished else _RESTART
    elif name == RESOLUTION:
        waiting = state is SlaClockState.PAUSED
        if category_after is StatusCategory.RESOLVED and (running or waiting):
            return _MET  # resolved while waiting: with the business time counted before
        if category_after is StatusCategory.CLOSED and (running or waiting):
            return _STOP
        if category_after is StatusCategory.WAITING and running:
            return _PAUSE
        if category_after in (StatusCategory.ACTIVE, StatusCategory.NEW) and (
            waiting
            or state is SlaClockState.MET
            or (state is SlaClockState.STOPPED and not unstarted)  # reopened
        ):
            return _RESUME
    return None


_MICROSECOND = timedelta(microseconds=1)
_ZERO = timedelta(0)  # shared: most clocks are met at once, and each stores its elapsed time
_TIMER_KEYS: dict[tuple[str, int | None], str] = {}


def _timer_key(clock: str, percent: int | None) -> str:
    """``sla:<clock>:warning:<percent>``, or ``sla:<clock>:breach`` for ``None``: built once
    and shared by every timer (tickets keep timers for weeks; one string serves them all)."""
    try:
        return _TIMER_KEYS[clock, percent]
    except KeyError:
        key = f"sla:{clock}:breach" if percent is None else f"sla:{clock}:warning:{percent}"
        if len(_TIMER_KEYS) < 10_000:  # clock names and percentages are few; stay bounded
            _TIMER_KEYS[clock, percent] = key = sys.intern(key)
        return key


# -- clock arithmetic (pure) ------------------------------------------------------------------
def _settle(clock: SlaClock, calendar: BusinessCalendar, now: datetime) -> SlaClock:
    """Count the business time since ``clock.since`` into ``elapsed``."""
    if not clock.running or clock.since is None or now <= clock.since:
        return clock
    elapsed = clock.elapsed + calendar.between(clock.since, now)
    return _evolve(clock, {"elapsed": elapsed or _ZERO, "since": now})


def _schedule(clock: SlaClock, policy: SlaPolicy) -> SlaClock:
    """Work out the due instants of a running clock (breach and pending warnings)."""
    if not clock.running or clock.target is None or clock.since is None:
        if clock.due_at is None and not clock.pending_warnings:
            return clock  # nothing due already
        return _evolve(clock, {"due_at": None, "pending_warnings": ()})
    due_at, pending = _deadlines(
        policy, clock.target, clock.since, clock.elapsed, clock.breached, clock.warnings_fired
    )
    return _evolve(clock, {"due_at": due_at, "pending_warnings": pending})


def _running(
    clock: SlaClock, policy: SlaPolicy, changes: dict[str, Any], *, fresh: bool
) -> SlaClock:
    """``clock`` with ``changes`` that set it running from ``changes["since"]``, its due
    instants worked out too: one new clock (``_schedule`` after ``_evolve`` makes two).
    ``fresh``: it starts from zero, with no breach and no warning fired."""
    target = clock.target
    if target is None:
        changes["due_at"], changes["pending_warnings"] = None, ()
    elif fresh:
        changes["due_at"], changes["pending_warnings"] = _deadlines(
            policy, target, changes["since"], _ZERO, False, ()
        )
    else:
        changes["due_at"], changes["pending_warnings"] = _deadlines(
            policy, target, changes["since"], clock.elapsed, clock.breached,
            clock.warnings_fired,
        )  # fmt: skip
    return _evolve(clock, changes)


def _deadlines(
    policy: SlaPolicy,
    target: timedelta,
    since: datetime,
    elapsed: timedelta,
    breached: bool,
    fired: tuple[int, ...],
) -> tuple[datetime | None, tuple[tuple[int, datetime], ...]]:
    """A running clock's breach instant (``None`` once breached) and pending warnings."""
    if not elapsed and not breached and not fired:
        # A clock starting afresh (a new ticket, a new cycle): its warnings and breach lie
        # at the same business offsets every time, kept as integers.
        offsets = _fresh_offsets(policy.warnings, target)
        if offsets is not None:
            *warned, breach = policy.calendar.add_offsets_utc(since, offsets)
            return breach, tuple(zip(policy.warnings, warned, strict=True))
    # Business time left to each pending warning, then to the breach (``None``: none due), in
    # whole microseconds: each offset from the start is exact, and so is what is left of it.
    *at_warnings, at_breach = _offsets(policy.warnings, target)
    done = elapsed // _MICROSECOND
    lefts: list[tuple[int | None, int]] = []
    if not breached and done < at_breach:  # past its target it is due for its breach only
        lefts = [
            (percent, offset - done)
            for percent, offset in zip(policy.warnings, at_warnings, strict=True)
            if percent not in fired
        ]
    if not breached:
        lefts.append((None, at_breach - done))
    # One calendar lookup for all of them: they share the start.
    ahead = [left for _, left in lefts if left > 0]
    instants = iter(policy.calendar.add_offsets_utc(since, ahead) if ahead else ())
    pending = []
    due_at = None
    for percent, left in lefts:
        at = next(instants) if left > 0 else since
        if percent is None:
            due_at = at
        else:
            pending.append((percent, at))
    return due_at, tuple(pending)


def _halted(
    clock: SlaClock, calendar: BusinessCalendar, now: datetime, state: SlaClockState
) -> SlaClock:
    """The clock stopped counting at ``now`` in ``state``, with nothing due any more (one
    new clock rather than one per step: this runs on most commands)."""
    changes: dict[str, Any] = {"state": state, "due_at": None, "pending_warnings": ()}
    if clock.running and clock.since is not None and now > clock.since:
        changes["elapsed"] = clock.elapsed + calendar.between(clock.since, now) or _ZERO
        changes["since"] = now
    if state is SlaClockState.MET:
        changes["met_at"] = now
    return _evolve(clock, changes)


_OFFSETS: dict[tuple[tuple[int, ...], timedelta], tuple[int, ...]] = {}


def _offsets(warnings: tuple[int, ...], target: timedelta) -> tuple[int, ...]:
    """Microseconds of business time from a clock's start to each warning and then the breach
    (``target * percent / 100``, rounded as ``timedelta`` rounds it), remembered: policies and
    targets are few."""
    try:
        return _OFFSETS[warnings, target]
    except KeyError:
        lefts = [target * percent / 100 for percent in warnings] + [target]
        offsets = tuple(left // _MICROSECOND for left in lefts)
        if len(_OFFSETS) < 10_000:  # stay bounded
            _OFFSETS[warnings, target] = offsets
        return offsets


def _fresh_offsets(warnings: tuple[int, ...], target: timedelta) -> tuple[int, ...] | None:
    """:func:`_offsets` for a clock starting afresh; ``None`` when one is zero (it is due at
    the start, which the general path of ``_deadlines`` handles)."""
    offsets = _offsets(warnings, target)
    return offsets if min(offsets) > 0 else None


def _met(clock: SlaClock, policy: SlaPolicy, now: datetime, events: list[EventDraft]) -> SlaClock:
    """The clock done at ``now``; ``SlaMet`` is recorded when a promise was kept or broken."""
    met = _halted(clock, policy.calendar, now, SlaClockState.MET)
    if met.target is not None:  # counting without a promise has nothing to report
        events.append(
            _draft(
                EventType.SLA_MET,
                now,
                {
                    "clock": clock.name,
                    "policy": policy.name,
                    "elapsed_seconds": _seconds(met.elapsed),
                    "target_seconds": _seconds(met.target),
                    "late": met.breached,
                    "cycle": met.cycle,
                },
                "system",
            )
        )
    return met


def _stop(clock: SlaClock, policy: SlaPolicy, now: datetime) -> SlaClock:
    return _halted(clock, policy.calendar, now, SlaClockState.STOPPED)


def _pause(clock: SlaClock, calendar: BusinessCalendar, now: datetime) -> SlaClock:
    return _halted(clock, calendar, now, SlaClockState.PAUSED)


def _resume(clock: SlaClock, policy: SlaPolicy, now: datetime) -> SlaClock:
    state = SlaClockState.BREACHED if clock.breached else SlaClockState.RUNNING
    return _running(clock, policy, {"state": state, "since": now, "met_at": None}, fresh=False)


def _restart(clock: SlaClock, policy: SlaPolicy, now: datetime) -> SlaClock:
    """A new cycle of the clock, running from ``now``."""
    changes = {
        "state": SlaClockState.RUNNING,
        "elapsed": _ZERO,
        "since": now,
        "met_at": None,
        "breached_at": None,
        "warnings_fired": (),
        "cycle": clock.cycle + 1,
    }
    return _running(clock, policy, changes, fresh=True)


def _warn(
    clock: SlaClock,
    policy: str,
    calendar: BusinessCalendar,
    percent: int,
    at: datetime,
    events: list[EventDraft],
) -> SlaClock:
    if percent in clock.warnings_fired:
        return clock
    pending = tuple(item for item in clock.pending_warnings if item[0] != percent)
    elapsed = _settle(clock, calendar, at).elapsed
    remaining = (clock.target or timedelta(0)) - elapsed
    events.append(
        _draft(
            EventType.SLA_WARNING,
            at,
            {
                "clock": clock.name,
                "policy": policy,
                "threshold": percent,
                "due_at": clock.due_at.isoformat() if clock.due_at else None,
                "remaining_seconds": _seconds(remaining),
                "cycle": clock.cycle,
            },
            "system",
        )
    )
    return _evolve(
        clock, {"warnings_fired": (*clock.warnings_fired, percent), "pending_warnings": pending}
    )


def _answered(ticket: Ticket) -> bool:
    """Whether an agent has publicly replied on the ticket."""
    return any(m.role is Role.AGENT and m.public for m in reversed(ticket.messages))


_TARGETS: dict[tuple[int, Priority], tuple[SlaPolicy, dict[str, float | None]]] = {}


def _applied(policy: SlaPolicy, reason: str, priority: Priority, now: datetime) -> EventDraft:
    # One targets dict per policy and priority, shared by the events of every ticket (event
    # data is read-only); keyed by identity, holding the policy so the key stays valid.
    known = _TARGETS.get((id(policy), priority))
    if known is None or known[0] is not policy:
        targets = {name: _seconds(policy.target(priority, name)) for name in CLOCKS}
        if len(_TARGETS) >= 10_000:
            _TARGETS.clear()  # policies are few; stay bounded when desks come and go
        known = _TARGETS[id(policy), priority] = (policy, targets)
    targets = known[1]
    return _draft(
        EventType.SLA_POLICY_APPLIED,
        now,
        {"policy": policy.name, "reason": reason, "priority": priority.value, "targets": targets},
        "system",
    )


_new_clock = _maker(SlaClock)
_sla_state = _maker(SlaState)
_IDLE: dict[tuple[str, timedelta | None], SlaClock] = {}


def _started(name: str, target: timedelta, now: datetime, policy: SlaPolicy) -> SlaClock:
    """A clock of a new ticket, running from ``now``, with its due instants."""
    due_at, pending = _deadlines(policy, target, now, _ZERO, False, ())
    return _new_clock(name, target, _RUNNING, _ZERO, now, due_at, None, None, (), pending, 1)


def _idle_clock(name: str, target: timedelta | None) -> SlaClock:
    """A clock that has not started, shared by every ticket with the same target: such a
    clock is the same value everywhere, and each ticket keeps one or two for its whole life."""
    try:
        return _IDLE[name, target]
    except KeyError:
        clock = SlaClock(name, target)
        if len(_IDLE) < 10_000:  # clock names and targets are few; stay bounded
            _IDLE[name, target] = clock
        return clock


_SECONDS: dict[timedelta, float] = {}


def _seconds(value: timedelta | None) -> float | None:
    """``value.total_seconds()``, one shared float per duration: events of every ticket store
    the same few targets (and mostly zero elapsed), 24 bytes each otherwise."""
    if value is None:
        return None
    try:
        return _SECONDS[value]
    except KeyError:
        seconds = value.total_seconds()
        if len(_SECONDS) < 10_000:  # targets are few; elapsed times vary: stay bounded
            _SECONDS[value] = seconds
        return seconds
