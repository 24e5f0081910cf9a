"""Escalation policies: who hears about a ticket, and who takes it over, as time passes.

A policy has ordered levels, reached one after another. A level is reached by time (business
time since the ticket opened, since its last public update, or a fraction of an SLA clock
such as 80% of resolution) or by a condition (urgent priority, an early-warning tag, a VIP
customer). Reaching a level notifies its targets and may reassign the ticket, raise its
priority or tag it. A level can repeat every ``repeat_every`` until acknowledged (repeats
missed while nobody ran the due work come as one, not one per missed period); a resolved or
closed ticket does not escalate.

Two shapes a support centre uses, both plain data::

    functional = EscalationPolicy("tiers", levels=[
        EscalationLevel("engineer", after=timedelta(hours=2), reassign_group="tier2"),
        EscalationLevel("hardware", sla_clock="resolution", fraction=0.8,
                        reassign_group="hardware", notify=["team_lead"])])
    hierarchical = EscalationPolicy("managers", levels=[
        EscalationLevel("lead", when=EscalationCondition(priorities=["urgent"]),
                        notify=["team_lead"], repeat_every=timedelta(minutes=30)),
        EscalationLevel("manager", after=timedelta(hours=4), notify=["manager"])])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from supportflow.calendar import TWENTY_FOUR_SEVEN, BusinessCalendar, _is_calendar
from supportflow.clock import to_utc
from supportflow.errors import ValidationError
from supportflow.model import (
    Priority,
    Role,
    StatusCategory,
    Ticket,
    Timer,
    _is_optional_text,
    _is_text,
    coerce_enum,
    duration_validator,
)
from supportflow.sla import CLOCKS, SlaCondition, SlaEngine

__all__ = [
    "EscalationCondition",
    "EscalationEngine",
    "EscalationLevel",
    "EscalationPolicy",
    "EscalationStep",
]

EscalationCondition = SlaCondition
"""Which tickets a level (or a policy) is for: priorities, channels, tiers, categories, tags."""

_SINCE = ("opened", "updated")
_TARGET_NAMES = ("assignee", "group", "team_lead", "manager")
_TARGET_PREFIXES = ("on_call:", "agent:")


def _one_or_many(values: Iterable[str] | str, field: str) -> tuple[str, ...]:
    """A lone string is one item, not a sequence of characters."""
    if isinstance(values, str):
        return (values,)
    if not isinstance(values, Iterable):
        raise ValidationError(field, values, "a string or an iterable of strings")
    return tuple(values)


def _targets(values: Iterable[str] | str) -> tuple[str, ...]:
    targets = _one_or_many(values, "notify")
    for target in targets:
        if not isinstance(target, str) or not (
            target in _TARGET_NAMES
            or any(
                target.startswith(prefix) and target[len(prefix) :].strip()
                for prefix in _TARGET_PREFIXES
            )
        ):
            raise ValidationError(
                "notify",
                target,
                "assignee, group, team_lead, manager, 'on_call:<rota>' or 'agent:<id>'",
            )
    return targets


def _tags(values: Iterable[str] | str) -> frozenset[str]:
    tags = _one_or_many(values, "add_tags")
    for tag in tags:
        if not isinstance(tag, str):
            raise ValidationError("add_tags", tag, "tag names (strings)")
    return frozenset(tags)


def _priority_or_none(value: Priority | str | None) -> Priority | None:
    return None if value is None else coerce_enum(Priority, value, "raise_priority")


def _fraction(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    # The range (and "given with sla_clock") is checked once all fields are set.
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValidationError("fraction", value, "a number in (0, 1]")


def _condition_or_none(
    instance: object, attribute: attrs.Attribute[SlaCondition | None], value: SlaCondition | None
) -> None:
    if value is not None and not isinstance(value, SlaCondition):
        raise ValidationError(attribute.name, value, "an EscalationCondition or None")


@attrs.frozen(slots=True)
class EscalationLevel:
    """One step of a policy. Give exactly one trigger: ``after`` (with ``since``),
    ``sla_clock`` with ``fraction``, or ``when``."""

    name: str = attrs.field(validator=_is_text)
    after: timedelta | None = attrs.field(
        default=None, validator=duration_validator(least=timedelta(0), optional=True)
    )
    since: str = "opened"
    sla_clock: str | None = None
    fraction: float | None = attrs.field(default=None, validator=_fraction)
    when: SlaCondition | None = attrs.field(default=None, validator=_condition_or_none)
    notify: tuple[str, ...] = attrs.field(default=(), converter=_targets)
    reassign_group: str | None = attrs.field(default=None, validator=_is_optional_text)
    reassign_to: str | None = attrs.field(default=None, validator=_is_optional_text)
    raise_priority: Priority | None = attrs.field(default=None, converter=_priority_or_none)
    add_tags: frozenset[str] = attrs.field(default=frozenset(), converter=_tags)
    repeat_every: timedelta | None = attrs.field(
        default=None, validator=duration_validator(optional=True)
    )

    def __attrs_post_init__(self) -> None:
        triggers = {"after": self.after, "sla_clock": self.sla_clock, "when": self.when}
        given = [name for name, value in triggers.items() if value is not None]
        if len(given) != 1:
            raise ValidationError(
                f"levels[{self.name!r}]", given, "exactly one trigger of after, sla_clock, when"
            )
        if self.since not in _SINCE:
            raise ValidationError("since", self.since, f"one of {', '.join(_SINCE)}")
        if self.sla_clock is not None:
            if self.sla_clock not in CLOCKS:
                raise ValidationError("sla_clock", self.sla_clock, f"one of {', '.join(CLOCKS)}")
            if self.fraction is None or not 0 < self.fraction <= 1:
                raise ValidationError("fraction", self.fraction, "a number in (0, 1]")
        elif self.fraction is not None:
            raise ValidationError("fraction", self.fraction, "None unless sla_clock is given")


def _levels(values: Iterable[EscalationLevel]) -> tuple[EscalationLevel, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValidationError("levels", values, "EscalationLevel objects (an iterable)")
    levels = tuple(values)
    if not levels:
        raise ValidationError("levels", levels, "at least one EscalationLevel")
    for index, level in enumerate(levels):
        if not isinstance(level, EscalationLevel):
            raise ValidationError(f"levels[{index}]", level, "an EscalationLevel")
    return levels


def _condition(
    instance: object, attribute: attrs.Attribute[SlaCondition], value: SlaCondition
) -> None:
    if not isinstance(value, SlaCondition):
        raise ValidationError("condition", value, "an EscalationCondition")


@attrs.frozen(slots=True)
class EscalationPolicy:
    """Ordered levels for the tickets ``condition`` selects, timed on ``calendar``."""

    name: str = attrs.field()
    levels: tuple[EscalationLevel, ...] = attrs.field(converter=_levels)
    calendar: BusinessCalendar = attrs.field(default=TWENTY_FOUR_SEVEN, validator=_is_calendar)
    condition: SlaCondition = attrs.field(factory=SlaCondition, validator=_condition)

    @name.validator
    def _check_name(self, attribute: attrs.Attribute[str], value: str) -> None:
        # The name is part of timer keys (``escalation:<name>:level:<n>``).
        if not isinstance(value, str) or not value.strip() or ":" in value:
            raise ValidationError("name", value, "a non-empty policy name without ':'")

    def __attrs_post_init__(self) -> None:
        for level in self.levels:
            for field in ("after", "repeat_every"):
                duration = getattr(level, field)
                if duration is not None:
                    self.calendar.check_span(f"levels[{level.name!r}].{field}", duration)


@attrs.frozen(slots=True)
class EscalationStep:
    """A level reached (or repeated): what the desk must do and record."""

    policy: str
    index: int
    level: EscalationLevel
    reason: str
    repeat: int
    at: datetime


class EscalationEngine:
    """Works out escalation deadlines from a ticket, and the step each one brings."""

    def __init__(self, policies: Iterable[EscalationPolicy], sla: SlaEngine) -> None:
        self.policies = tuple(policies)
        self.sla = sla
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValidationError("escalation", names, "policies with distinct names")
        self._by_name = {p.name: p for p in self.policies}

    @staticmethod
    def progress(ticket: Ticket, policy: str) -> Mapping[str, Any]:
        """The ticket's progress through ``policy``: level reached (-1: none), acked, ..."""
        value = ticket.state.get(f"escalation:{policy}")
        return value if isinstance(value, Mapping) else {"level": -1, "acked": False}

    def timers(
        self, ticket: Ticket, category: StatusCategory, now: datetime, at: datetime | None = None
    ) -> list[Timer]:
        """The next escalation deadline of each policy (none once resolved or closed).

        ``at`` is the instant the ticket stands as it is (default ``now``): when the desk
        catches up on deadlines, the time of the step it handled last. A condition level that
        holds is due then, not when the worker came.
        """
        at = now if at is None else at
        if not self.policies or category in (StatusCategory.RESOLVED, StatusCategory.CLOSED):
            return []
        timers = []
        for policy in self.policies:
            if policy.condition.explain(ticket) is None:
                continue
            progress = self.progress(ticket, policy.name)
            reached = int(progress["level"])
            last = _last_at(progress)
            due_at = None
            if reached + 1 < len(policy.levels):
                due_at = self._due(ticket, policy, policy.levels[reached + 1], at)
                if due_at is not None and last is not None:
                    # Levels come one after another: never before the step already taken
                    # (80% of an SLA may have been used long before the level ahead of it).
                    due_at = max(due_at, last)
            if 0 <= reached < len(policy.levels) and last is not None:
                current = policy.levels[reached]
                if current.repeat_every is not None and not progress.get("acked"):
                    # Missed repeats come as one, before the next level if that is overdue too.
                    before = due_at if due_at is not None and due_at < now else None
                    due = _next_repeat(policy.calendar, last, current.repeat_every, now, before)
                    timers.append(
                        Timer(ticket.id, f"escalation:{policy.name}:repeat", due, "escalation")
                    )
            if due_at is not None:
                key = f"escalation:{policy.name}:level:{reached + 1}"
                timers.append(Timer(ticket.id, key, due_at, "escalation"))
        return timers

    def step(
        self, ticket: Ticket, timer: Timer, at: datetime | None = None
    ) -> EscalationStep | None:
        """The step a due escalation timer brings, or ``None`` if it no longer applies.

        ``at`` is when the step is taken (default: when the timer fell due); repeats count
        from it.
        """
        when = timer.due_at if at is None else max(at, timer.due_at)
        _, name, what, *rest = timer.key.split(":")
        policy = self._by_name.get(name)
        if policy is None:
            return None
        progress = self.progress(ticket, name)
        reached = int(progress["level"])
        if what == "repeat":
            if not 0 <= reached < len(policy.levels):
                return None
            level = policy.levels[reached]
            repeat = int(progress.get("repeats", 0)) + 1
            reason = f"not acknowledged; repeat {repeat} every {level.repeat_every}"
            return EscalationStep(name, reached, level, reason, repeat, when)
        index = int(rest[0])
        if index != reached + 1 or index >= len(policy.levels):
            return None
        level = policy.levels[index]
        return EscalationStep(name, index, level, self._reason(ticket, level), 0, when)

    @staticmethod
    def record(ticket_state: Mapping[str, Any], step: EscalationStep) -> dict[str, Any]:
        """The ticket's ``state`` after ``step``."""
        state = dict(ticket_state)
        state[f"escalation:{step.policy}"] = {
            "level": step.index,
            "acked": False,
            "repeats": step.repeat,
            "last_at": step.at.isoformat(),
        }
        return state

    def acknowledge(self, ticket: Ticket) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        """Stop repeats of each policy's current level; returns the new state and what was
        acknowledged as (policy, level) pairs."""
        state = dict(ticket.state)
        acked = []
        for policy in self.policies:
            progress = self.progress(ticket, policy.name)
            if int(progress["level"]) >= 0 and not progress.get("acked"):
                state[f"escalation:{policy.name}"] = {**progress, "acked": True}
                acked.append((policy.name, int(progress["level"])))
        return state, acked

    # -- internals -------------------------------------------------------------------------
    def _due(
        self, ticket: Ticket, policy: EscalationPolicy, level: EscalationLevel, now: datetime
    ) -> datetime | None:
        if level.when is not None:
            return now if level.when.explain(ticket) is not None else None
        if level.after is not None:
            start = ticket.created_at
            if level.since == "updated":
                start = _last_public_update(ticket) or start
            return to_utc(policy.calendar.add(start, level.after))
        clock = ticket.sla.clock(level.sla_clock or "") if ticket.sla else None
        sla_policy = self.sla.policy(ticket.sla.policy) if ticket.sla else None
        if clock is None or sla_policy is None or not clock.running or clock.target is None:
            return None
        if clock.since is None:
            return None
        left = clock.target * (level.fraction or 1) - clock.elapsed
        if left <= timedelta(0):
            return clock.since
        return to_utc(sla_policy.calendar.add(clock.since, left))

    @staticmethod
    def _reason(ticket: Ticket, level: EscalationLevel) -> str:
        if level.when is not None:
            return f"condition met: {level.when.explain(ticket)}"
        if level.after is not None:
            since = "opened" if level.since == "opened" else "last public update"
            return f"{level.after} of business time since {since}"
        return f"{(level.fraction or 0) * 100:.0f}% of the {level.sla_clock} SLA used"


def _last_at(progress: Mapping[str, Any]) -> datetime | None:
    """When the policy's last step (level reached, or repeat) was taken."""
    value = progress.get("last_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _next_repeat(
    calendar: BusinessCalendar,
    last: datetime,
    every: timedelta,
    now: datetime,
    before: datetime | None = None,
) -> datetime:
    """When a level reached (or last repeated) at ``last`` repeats next.

    Missed repeats (the worker was down, or the ticket was resolved and is back in work) are
    not sent one per missed period: the latest one due by ``now`` stands for all of them. When
    the next level fell due at ``before`` (before ``now``), the latest one due before it does.
    """
    due = to_utc(calendar.add(last, every))
    if before is not None:
        if due >= before:
            return due  # the next level comes first, and ends these repeats
        periods = (calendar.between(last, before) - timedelta.resolution) // every
        return to_utc(calendar.add(last, every * periods)) if periods > 1 else due
    if due >= now:
        return due
    periods = calendar.between(last, now) // every
    return to_utc(calendar.add(last, every * periods)) if periods > 1 else due


def _last_public_update(ticket: Ticket) -> datetime | None:
    """When an agent or the customer last wrote publicly on the ticket (system messages such
    as idle-chat reminders are no update)."""
    for message in reversed(ticket.messages):
        if message.public and message.role is not Role.SYSTEM:
            return message.at
    return None
