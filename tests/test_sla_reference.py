"""SLA clocks through a Desk against an independent model on the reference calendar.

A ticket is worked on at random under two policies on two calendars (drawn as in
``test_calendar_reference``: zones that change their clocks both ways, by 30 minutes, at
midnight or skip a day, openings around the change hours, holidays near the changes) — a tag
switches between them — while the manual clock jumps by minutes or days around a clock change.
The model knows only the rules:

- a clock counts business time on the calendar of the policy in force, from when it starts
  (with a target) until it is met or stopped; resolution pauses while the ticket waits and
  resumes where it stopped; each customer message after an answer starts a next-response
  cycle; a change of priority or policy keeps the time counted;
- a warning (a percentage of the target in force) or the breach is due at the first instant
  the clock, running after that instant's command, has counted that much; a breach comes
  before no warning of its cycle, and none of them comes twice.

After every command the readings must equal the model's; at the end, after ``run_due``,
every ``SlaWarning``, ``SlaBreached`` and ``SlaMet`` event too, with its figures.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportflow import (
    AutoClosePolicy,
    ClockReading,
    Customer,
    Desk,
    Event,
    ManualClock,
    Priority,
    SlaCondition,
    SlaPolicy,
    SlaTarget,
    StatusCategory,
)
from supportflow.errors import SupportflowError
from supportflow.storage import MemoryStore
from test_calendar_reference import (
    CHANGES,
    DAY_US,
    Reference,
    calendars,
    from_us,
    to_us,
)

US = timedelta(microseconds=1)
CLOCKS = ("first_response", "next_response", "resolution")
WORKING = (StatusCategory.NEW, StatusCategory.ACTIVE)
FINISHED = (StatusCategory.RESOLVED, StatusCategory.CLOSED)
CUSTOMER = Customer(id="c-anna", name="Anna Schmidt")
Targets = dict[Priority, dict[str, int | None]]


class Clock:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "idle"  # idle, running, paused, met, stopped
        self.cycle = 0
        self.counted = 0  # business time up to ``since``
        self.since = 0
        self.fired: set[int] = set()
        self.breached_at: int | None = None
        self.met_at: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


class Policy:
    def __init__(self, reference: Reference, targets: Targets, warnings: tuple[int, ...]) -> None:
        self.reference = reference
        self.targets = targets
        self.warnings = warnings


class Model:
    """One ticket's clocks, by the rules, in UTC microseconds."""

    def __init__(self, policy: Policy, priority: Priority, now: int) -> None:
        self.policy = policy
        self.priority = priority
        self.clocks = {name: Clock(name) for name in CLOCKS}
        self.events: list[tuple[Any, ...]] = []
        self.answered = False
        for name in ("first_response", "resolution"):
            if self.target(name) is not None:
                self.start(name, now)
        self.reached(now)

    def target(self, name: str) -> int | None:
        return self.policy.targets[self.priority][name]

    def start(self, name: str, now: int) -> None:
        clock = self.clocks[name]
        clock.state, clock.cycle, clock.counted, clock.since = "running", clock.cycle + 1, 0, now
        clock.fired, clock.breached_at, clock.met_at = set(), None, None

    def elapsed(self, clock: Clock, at: int) -> int:
        if clock.running and at > clock.since:
            return clock.counted + self.policy.reference.between(clock.since, at)
        return clock.counted

    def due(self, clock: Clock, target: int) -> int:
        if target <= clock.counted:
            return clock.since
        return self.policy.reference.add(clock.since, target - clock.counted)

    def marks(self, clock: Clock) -> list[tuple[int | None, int]]:
        """(percent or None for the breach, business time) still to come, in order."""
        target = self.target(clock.name)
        if target is None or clock.breached_at is not None:
            return []
        marks: list[tuple[int | None, int]] = [
            (percent, round(Fraction(target * percent, 100)))
            for percent in self.policy.warnings
            if percent not in clock.fired
        ]
        return [*marks, (None, target)]

    def record(self, clock: Clock, percent: int | None, at: int) -> None:
        target = self.target(clock.name)
        assert target is not None
        if percent is None:
            clock.breached_at = at
            self.events.append(("SlaBreached", clock.name, clock.cycle, None, at, target, at))
        else:
            clock.fired.add(percent)
            left = target - self.elapsed(clock, at)
            due = self.due(clock, target)
            self.events.append(("SlaWarning", clock.name, clock.cycle, percent, at, left, due))

    def catch_up(self, until: int, *, inclusive: bool) -> None:
        """Record the marks reached before ``until`` (or at it, when ``inclusive``)."""
        for clock in self.clocks.values():
            if not clock.running:
                continue
            for percent, mark in self.marks(clock):
                at = self.due(clock, mark)
                if at > until or (at == until and not inclusive):
                    break
                self.record(clock, percent, at)
                if percent is None:
                    break

    def reached(self, now: int) -> None:
        """After a command at ``now``: a clock already past its target breaches now, else
        gets the warnings it is past."""
        for clock in self.clocks.values():
            marks = self.marks(clock)
            if not clock.running or not marks:
                continue
            elapsed = self.elapsed(clock, now)
            if elapsed >= marks[-1][1]:
                self.record(clock, None, now)
                continue
            for percent, mark in marks[:-1]:
                if elapsed >= mark:
                    self.record(clock, percent, now)

    def met(self, clock: Clock, now: int) -> None:
        clock.state, clock.met_at = "met", now
        target = self.target(clock.name)
        if target is not None:
            late = clock.breached_at is not None
            self.events.append(("SlaMet", clock.name, clock.cycle, None, now, clock.counted, late))

    def command(
        self,
        now: int,
        category: StatusCategory,
        *,
        priority: Priority,
        policy: Policy,
        agent: bool = False,
        customer: bool = False,
    ) -> None:
        self.catch_up(now, inclusive=False)
        for clock in self.clocks.values():  # counted on the calendar in force until now
            clock.counted, clock.since = self.elapsed(clock, now), now
        answered_before = self.answered
        self.answered = self.answered or agent
        self.priority, self.policy = priority, policy
        finished = category in FINISHED
        for name, clock in self.clocks.items():
            target = self.target(name)
            unstarted = clock.cycle == 0 and name != "next_response" and target is not None
            if unstarted and not finished and not (name == "first_response" and self.answered):
                self.start(name, now)
            if name != "resolution":
                if clock.running and agent:
                    self.met(clock, now)
                elif clock.running and finished:
                    clock.state = "stopped"
                elif (
                    name == "next_response"
                    and customer
                    and answered_before
                    and not clock.running
                    and target is not None
                    and not finished
                ):
                    self.start(name, now)
            elif category is StatusCategory.RESOLVED and clock.state in ("running", "paused"):
                self.met(clock, now)
            elif category is StatusCategory.CLOSED and clock.state in ("running", "paused"):
                clock.state = "stopped"
            elif category is StatusCategory.WAITING and clock.running:
                clock.state = "paused"
            elif (
                category in WORKING and clock.state in ("paused", "met", "stopped") and clock.cycle
            ):
                clock.state, clock.met_at = "running", None
        self.reached(now)

    def reading(self, name: str, at: int) -> tuple[Any, ...]:
        clock = self.clocks[name]
        target = self.target(name)
        elapsed = self.elapsed(clock, at)
        state = {"idle": "stopped"}.get(clock.state, clock.state)
        if clock.running and clock.breached_at is not None:
            state = "breached"
        due, breached_at = None, clock.breached_at
        if clock.running and target is not None and breached_at is None:
            due = self.due(clock, target)
            if due <= at:
                state, due, breached_at = "breached", None, due
        return (
            state,
            None if target is None else target * US,
            elapsed * US,
            None if target is None else (target - elapsed) * US,
            due,
            clock.met_at,
            breached_at,
        )


def read(reading: ClockReading) -> tuple[Any, ...]:
    def us(moment: datetime | None) -> int | None:
        return None if moment is None else to_us(moment)

    return (
        reading.state.value,
        reading.target,
        reading.elapsed,
        reading.remaining,
        us(reading.due_at),
        us(reading.met_at),
        us(reading.breached_at),
    )


def recorded(event: Event) -> tuple[Any, ...]:
    data = event.data
    what = (event.type, data["clock"], data["cycle"], data.get("threshold"), to_us(event.at))
    if event.type == "SlaMet":
        return (*what, round(data["elapsed_seconds"] * 1e6), data["late"])
    due = to_us(datetime.fromisoformat(data["due_at"]))
    if event.type == "SlaBreached":
        return (*what, round(data["target_seconds"] * 1e6), due)
    return (*what, round(data["remaining_seconds"] * 1e6), due)


targets_us = st.one_of(
    st.none(),
    st.integers(1, 3 * 24 * 60).map(lambda minutes: minutes * 60_000_000),
    st.integers(1, 50 * 3_600_000_000),
)
ACTIONS = ["agent", "customer", "wait", "resume", "resolve", "reopen", "close", "priority"]
ACTIONS += ["tag", "tag", "run_due"]


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, Policy, SlaPolicy]:
    zone, reference, calendar = draw(calendars())
    targets = {p: {name: draw(targets_us) for name in CLOCKS} for p in Priority}
    warnings = tuple(sorted(draw(st.sets(st.integers(1, 99), max_size=3))))
    promised = {
        p: SlaTarget(**{n: None if us is None else us * US for n, us in spec.items()})
        for p, spec in targets.items()
    }
    policy = SlaPolicy("p", calendar=calendar, targets=promised, warnings=warnings)
    return zone, Policy(reference, targets, warnings), policy


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sla_clocks_agree_with_the_model(data: st.DataObject) -> None:
    zone, standard, standard_policy = data.draw(policies())
    _, vip, vip_policy = data.draw(policies())
    sla = [
        SlaPolicy("vip", vip_policy.targets, vip_policy.calendar, SlaCondition(tags="vip"),
                  vip_policy.warnings),
        SlaPolicy("standard", standard_policy.targets, standard_policy.calendar,
                  warnings=standard_policy.warnings),
    ]  # fmt: skip
    now = data.draw(st.sampled_from(CHANGES[zone])) + data.draw(st.integers(-4 * DAY_US, DAY_US))
    clock = ManualClock(from_us(now))
    desk = Desk(
        store=MemoryStore(),
        clock=clock,
        sla=sla,
        auto_close=AutoClosePolicy(enabled=False),
        notify_customers=False,
        triage=None,
    )
    priority = data.draw(st.sampled_from(list(Priority)))
    tagged = data.draw(st.booleans())
    ticket = desk.open_ticket(
        subject="Invoice shows the wrong VAT rate",
        body="19% instead of 7%",
        customer=CUSTOMER,
        channel="email",
        priority=priority,
        tags=["vip"] if tagged else [],
    )
    model = Model(vip if tagged else standard, priority, now)
    steps = st.tuples(
        st.one_of(
            st.just(0),
            st.integers(1, 600).map(lambda minutes: minutes * 60_000_000),
            st.integers(1, 3 * DAY_US),
        ),
        st.sampled_from(ACTIONS),
        st.sampled_from(list(Priority)),
    )
    for later, action, new_priority in data.draw(st.lists(steps, min_size=4, max_size=20)):
        now += later
        clock.set(from_us(now))
        policy, agent, customer = model.policy, False, False
        try:
            if action == "agent":
                desk.reply(ticket.id, "Here is what we found.", by="agent_li")
                agent = True
            elif action == "customer":
                desk.reply(ticket.id, "Any news?", by=CUSTOMER.id, role="customer")
                customer = True
            elif action in ("wait", "resume"):
                desk.fire(ticket.id, "wait_on_customer" if action == "wait" else action, by="li")
            elif action == "resolve":
                desk.resolve(ticket.id, by="agent_li")
            elif action == "reopen":
                desk.reopen(ticket.id, by="agent_li")
            elif action == "close":
                desk.close(ticket.id, by="agent_li")
            elif action == "priority":
                desk.set_priority(ticket.id, new_priority, by="lead_wu")
                priority = new_priority
            elif action == "tag":
                tagged = not tagged
                if tagged:
                    desk.update(ticket.id, by="lead_wu", add_tags="vip")
                else:
                    desk.update(ticket.id, by="lead_wu", remove_tags="vip")
                policy = vip if tagged else standard
            else:
                desk.run_due()
                continue
        except SupportflowError:  # a move the workflow does not allow from here
            continue
        category = desk.workflow.category(desk.get_ticket(ticket.id).status)
        model.command(
            now, category, priority=priority, policy=policy, agent=agent, customer=customer
        )
        for reading in desk.sla(ticket.id):
            assert read(reading) == model.reading(reading.name, now), (reading.name, now)
    desk.run_due()
    model.catch_up(now, inclusive=True)
    kinds = ("SlaWarning", "SlaBreached", "SlaMet")
    found = sorted((recorded(e) for e in desk.history(ticket.id) if e.type in kinds), key=repr)
    assert found == sorted(model.events, key=repr)
    # Read ahead, and just before and at each due time: at it, the clock reads as breached.
    moments = [now + data.draw(st.integers(0, 10 * DAY_US))]
    for reading in desk.sla(ticket.id):
        if reading.due_at is not None:
            moments += [max(now, to_us(reading.due_at) - 1), to_us(reading.due_at)]
    for ahead in moments:
        for reading in desk.sla(ticket.id, at=from_us(ahead)):
            assert read(reading) == model.reading(reading.name, ahead), reading.name
