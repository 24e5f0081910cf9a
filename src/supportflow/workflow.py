"""Ticket workflows: statuses, their categories, and the triggers that move between them.

A :class:`Workflow` is declared once and validated when built. It owns one shared
``transitions.Machine`` (built with ``model=None``) and drives a two-slot state holder through
it, so holding 100,000 tickets attaches no model and builds no machine per ticket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from transitions import Machine

from supportflow.errors import InvalidTransition, ValidationError
from supportflow.model import StatusCategory, Ticket, _is_name, coerce_enum

__all__ = ["Guard", "Transition", "Workflow", "default_workflow"]

ANY_STATUS = "*"
HAPPENINGS = ("assign", "agent_reply", "customer_reply")
"""What the desk reports to ``Workflow.automatic``: an assignment, and public replies."""


def _check_of_guard(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise ValidationError("check", value, "a callable taking the ticket")


@attrs.frozen(slots=True)
class Guard:
    """A named condition a transition needs: ``check(ticket)`` must be true.

    >>> has_serial = Guard("serial number recorded", lambda t: "serial" in t.fields)
    """

    description: str = attrs.field(validator=_is_name)
    check: Callable[[Ticket], bool] = attrs.field(validator=_check_of_guard)


def _sources(value: str | Iterable[str]) -> tuple[str, ...]:
    return _names(value, "sources")


def _names(value: str | Iterable[str], field: str) -> tuple[str, ...]:
    """A lone name is one name; otherwise each item must be a non-empty string."""
    if isinstance(value, str):
        value = (value,)
    names = tuple(value) if isinstance(value, Iterable) else None
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValidationError(field, value, "a name or a list of names (non-empty strings)")
    return names


def _guards(value: Iterable[Guard]) -> tuple[Guard, ...]:
    guards = tuple(value) if isinstance(value, Iterable) else None
    if guards is None or not all(isinstance(guard, Guard) for guard in guards):
        raise ValidationError("guards", value, "Guard objects")
    return guards


@attrs.frozen(slots=True)
class Transition:
    """``trigger`` moves a ticket from any of ``sources`` (or ``"*"``) to ``dest``."""

    trigger: str = attrs.field(validator=_is_name)
    sources: tuple[str, ...] = attrs.field(converter=_sources)
    dest: str = attrs.field(validator=_is_name)
    guards: tuple[Guard, ...] = attrs.field(default=(), converter=_guards)


class _Holder:
    """What the shared machine drives: the status, and the ticket for guards to read."""

    __slots__ = ("failed_guard", "state", "ticket")

    def __init__(self, state: str, ticket: Ticket | None) -> None:
        self.state = state
        self.ticket = ticket
        self.failed_guard: Guard | None = None


class Workflow:
    """A validated workflow shared by every ticket of a desk.

    ``statuses`` maps each status to its :class:`StatusCategory`. ``automatic`` maps what happens
    on a ticket (``"agent_reply"``, ``"customer_reply"``, ``"assign"``) to triggers the desk
    fires by itself when they are allowed — the first allowed one in the list wins.

    >>> wf = Workflow(
    ...     name="rma",
    ...     statuses={"received": "new", "testing": "active", "shipped": "resolved",
    ...               "done": "closed"},
    ...     transitions=[Transition("test", "received", "testing"),
    ...                  Transition("ship", "testing", "shipped"),
    ...                  Transition("close", "shipped", "done")],
    ...     initial="received")
    >>> wf.next_status("received", "test")
    'testing'
    """

    def __init__(
        self,
        *,
        statuses: Mapping[str, StatusCategory | str],
        transitions: Sequence[Transition],
        initial: str,
        name: str = "workflow",
        automatic: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError("name", name, "a non-empty string")
        if not isinstance(statuses, Mapping):
            raise ValidationError("statuses", statuses, "a mapping of status to category")
        if isinstance(transitions, (str, bytes)) or not isinstance(transitions, Iterable):
            raise ValidationError("transitions", transitions, "Transition objects")
        if automatic is not None and not isinstance(automatic, Mapping):
            raise ValidationError("automatic", automatic, "a mapping of happening to triggers")
        self.name = name
        self.statuses: dict[str, StatusCategory] = {}
        for status, category in statuses.items():
            if not isinstance(status, str) or not status.strip() or status == ANY_STATUS:
                raise ValidationError("statuses", status, "status names (non-empty strings)")
            if category is None:
                raise ValidationError(f"statuses[{status!r}]", None, "a StatusCategory")
            self.statuses[status] = coerce_enum(StatusCategory, category, f"statuses[{status!r}]")
        if not isinstance(initial, str) or initial not in self.statuses:
            raise ValidationError(
                "initial", initial, f"one of the statuses {sorted(self.statuses)}"
            )
        self.initial = initial
        self.transitions = tuple(transitions)
        for index, transition in enumerate(self.transitions):
            if not isinstance(transition, Transition):
                raise ValidationError(f"transitions[{index}]", transition, "a Transition")
        self._check_transitions()
        self._check_reachable()
        self.automatic: dict[str, tuple[str, ...]] = {}
        for happening, listed in (automatic or {}).items():
            # A typo here would silently switch the automation off: only known happenings.
            if happening not in HAPPENINGS:
                raise ValidationError("automatic", happening, f"one of {', '.join(HAPPENINGS)}")
            self.automatic[happening] = _names(listed, f"automatic[{happening!r}]")
        for happening, triggers in self.automatic.items():
            for trigger in triggers:
                if trigger not in self.triggers:
                    raise ValidationError(
                        f"automatic[{happening!r}]", trigger, f"one of {sorted(self.triggers)}"
                    )
        self._machine = Machine(
            model=None,
            states=list(self.statuses),
            initial=initial,
            transitions=[self._machine_transition(t) for t in self.transitions],
            auto_transitions=False,
            send_event=True,
        )
        # Unguarded moves are read straight from the machine's transition table.
        self._unguarded: dict[tuple[str, str], str] = {}
        for trigger, event in self._machine.events.items():
            for source, moves in event.transitions.items():
                dest = moves[0].dest if moves else None
                if dest is not None and not moves[0].conditions:
                    self._unguarded[(source, trigger)] = dest
        self._allowed: dict[str, tuple[str, ...]] = {
            status: tuple(sorted({t.trigger for t in self.transitions if self._leaves(t, status)}))
            for status in self.statuses
        }

    # -- questions -------------------------------------------------------------------------
    @property
    def triggers(self) -> frozenset[str]:
        """Every trigger name the workflow's transitions use."""
        return frozenset(t.trigger for t in self.transitions)

    @property
    def reopens_closed(self) -> bool:
        """Whether some trigger takes a ticket out of the ``closed`` category again (a custom
        workflow may allow it; the default one does not)."""
        closed = [s for s, category in self.statuses.items() if category is StatusCategory.CLOSED]
        return any(
            self.statuses[t.dest] is not StatusCategory.CLOSED
            and any(self._leaves(t, status) for status in closed)
            for t in self.transitions
        )

    def category(self, status: str) -> StatusCategory:
        """The category of ``status``; ``ValidationError`` for an unknown one."""
        try:
            return self.statuses[status]
        except (KeyError, TypeError):  # TypeError: unhashable, so no status either
            raise ValidationError("status", status, f"one of {sorted(self.statuses)}") from None

    def allowed(self, status: str) -> tuple[str, ...]:
        """Triggers that have a transition out of ``status`` (guards not yet checked)."""
        try:
            return self._allowed.get(status, ())
        except TypeError:  # unhashable: no status
            return ()

    def destination(self, status: str, trigger: str) -> str | None:
        """Where ``trigger`` would take a ticket in ``status``, ignoring guards."""
        for transition in self.transitions:
            if transition.trigger == trigger and self._leaves(transition, status):
                return transition.dest
        return None

    def destinations(self, status: str, trigger: str) -> tuple[str, ...]:
        """Every status ``trigger`` may take a ticket in ``status`` to, in the order its
        transitions are declared (guards choose among them); empty when it has none."""
        return tuple(
            dict.fromkeys(
                t.dest for t in self.transitions if t.trigger == trigger and self._leaves(t, status)
            )
        )

    def unguarded_next(self, status: str, trigger: str) -> str | None:
        """Where ``trigger`` leads from ``status`` when no guard has a say; ``None`` when a
        guard decides or there is no such transition (then use :meth:`next_status`)."""
        try:
            return self._unguarded.get((status, trigger))
        except TypeError:  # unhashable: no such status or trigger
            return None

    def next_status(self, status: str, trigger: str, ticket: Ticket | None = None) -> str:
        """Fire ``trigger`` from ``status`` on the shared machine and return the new status.

        Raises :class:`InvalidTransition` naming the allowed triggers when the trigger has no
        transition from ``status`` or a guard refuses it.
        """
        dest = self.unguarded_next(status, trigger)
        if dest is not None:
            return dest
        ticket_id = ticket.id if ticket is not None else "?"
        event = self._machine.events.get(trigger) if isinstance(trigger, str) else None
        if event is None or trigger not in self.allowed(status):
            raise InvalidTransition(ticket_id, status, trigger, self.allowed(status))
        holder = _Holder(status, ticket)
        if not event.trigger(holder):
            reason = holder.failed_guard.description if holder.failed_guard else None
            raise InvalidTransition(
                ticket_id, status, trigger, self.allowed(status), f"needs {reason}"
            )
        return holder.state

    # -- building --------------------------------------------------------------------------
    @staticmethod
    def _leaves(transition: Transition, status: str) -> bool:
        return ANY_STATUS in transition.sources or status in transition.sources

    def _machine_transition(self, transition: Transition) -> dict[str, Any]:
        def passes(event_data: Any) -> bool:
            holder: _Holder = event_data.model
            for guard in transition.guards:
                if holder.ticket is None or not guard.check(holder.ticket):
                    holder.failed_guard = guard
                    return False
            return True

        sources: str | list[str] = (
            "*" if ANY_STATUS in transition.sources else list(transition.sources)
        )
        spec: dict[str, Any] = {
            "trigger": transition.trigger,
            "source": sources,
            "dest": transition.dest,
        }
        if transition.guards:
            spec["conditions"] = [passes]
        return spec

    def _check_transitions(self) -> None:
        for index, transition in enumerate(self.transitions):
            for source in transition.sources:
                if source != ANY_STATUS and source not in self.statuses:
                    raise ValidationError(
                        f"transitions[{index}].sources", source, f"one of {sorted(self.statuses)}"
                    )
            if transition.dest not in self.statuses:
                raise ValidationError(
                    f"transitions[{index}].dest", transition.dest, f"one of {sorted(self.statuses)}"
                )

    def _check_reachable(self) -> None:
        reached = {self.initial}
        frontier = [self.initial]
        while frontier:
            status = frontier.pop()
            for transition in self.transitions:
                if self._leaves(transition, status) and transition.dest not in reached:
                    reached.add(transition.dest)
                    frontier.append(transition.dest)
        unreachable = sorted(set(self.statuses) - reached)
        if unreachable:
            raise ValidationError(
                "statuses", unreachable, f"statuses reachable from the initial {self.initial!r}"
            )


def default_workflow() -> Workflow:
    """The support centre's workflow.

    ``new`` → ``open`` (triaged or assigned) → ``in_progress``; ``waiting_on_customer`` and
    ``on_hold`` (third party, another team) pause the resolution clock; ``resolved`` →
    ``closed``; ``reopen`` from resolved; ``cancel`` (spam, duplicate) from new or open. A
    customer reply to a ticket waiting on them brings it back to ``in_progress``.
    """
    working = ("open", "in_progress", "waiting_on_customer", "on_hold")
    return Workflow(
        name="support",
        statuses={
            "new": StatusCategory.NEW,
            "open": StatusCategory.ACTIVE,
            "in_progress": StatusCategory.ACTIVE,
            "waiting_on_customer": StatusCategory.WAITING,
            "on_hold": StatusCategory.WAITING,
            "resolved": StatusCategory.RESOLVED,
            "closed": StatusCategory.CLOSED,
            "cancelled": StatusCategory.CLOSED,
        },
        transitions=[
            Transition("triage", "new", "open"),
            Transition("start", ("new", "open"), "in_progress"),
            Transition("wait_on_customer", ("open", "in_progress"), "waiting_on_customer"),
            Transition("hold", ("open", "in_progress"), "on_hold"),
            Transition("resume", ("waiting_on_customer", "on_hold"), "in_progress"),
            Transition("customer_replied", "waiting_on_customer", "in_progress"),
            Transition("resolve", ("new", *working), "resolved"),
            Transition("reopen", "resolved", "in_progress"),
            Transition("close", "resolved", "closed"),
            Transition("cancel", ("new", "open"), "cancelled"),
        ],
        initial="new",
        automatic={
            "assign": ("triage",),
            "agent_reply": ("start",),
            "customer_reply": ("customer_replied", "reopen"),
        },
    )
