"""A desk under random work: hypothesis drives agents, customers and time against one desk.

Agents reply, write notes, assign, fire any trigger of the workflow, resolve, reopen, close
and cancel; customers write back (also on closed tickets, which opens follow-ups); the manual
clock jumps ahead and due deadlines run. After every step the audit trail must still explain
every ticket, and a refused command must have left no trace at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supportflow import Customer, Event, SupportflowError, Ticket, Timer
from supportflow.testing import scenario_desk

AGENTS = ("agent_li", "agent_wu", "lead_zhao")
CHANNELS = ("email", "chat", "phone", "web")
PRIORITIES = ("low", "normal", "high", "urgent")
WORDS = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=12).filter(str.strip)
MINUTES = st.one_of(
    st.integers(0, 10),  # idle-chat reminders and SLA warnings of chats
    st.integers(0, 600),  # business hours
    st.integers(0, 14 * 24 * 60),  # resolution targets and the week before auto-close
)

Snapshot = dict[str, tuple[Ticket, list[Event], list[Timer]]]


class DeskUnderRandomWork(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.desk, self.clock = scenario_desk()
        self.workflow = self.desk.workflow
        self.triggers = sorted(self.workflow.triggers)
        self.ids: list[str] = []
        self.seen: dict[str, tuple[int, int]] = {}  # ticket id -> (version, history length)
        self.refused = 0

    # -- helpers ----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self.desk.store.transaction() as uow:
            return {
                ticket_id: (
                    uow.get_ticket(ticket_id),
                    uow.history(ticket_id),
                    uow.timers(ticket_id),
                )
                for ticket_id in self.ids
            }

    def attempt(self, command: Callable[[], Ticket]) -> Ticket | None:
        """Run a command; if supportflow refuses it, prove that nothing at all changed."""
        before = self.snapshot()
        try:
            result = command()
        except SupportflowError:
            self.refused += 1
            assert self.snapshot() == before
            return None
        if result.id not in self.ids:  # a customer wrote on a closed ticket: a follow-up
            self.ids.append(result.id)
            follows = result.linked("follows")
            assert len(follows) == 1
            assert self.desk.get_ticket(follows[0]).linked("followed_by")[-1] == result.id
        return result

    def pick(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.ids), label="ticket")

    # -- commands ---------------------------------------------------------------------------
    @initialize(channel=st.sampled_from(CHANNELS), priority=st.sampled_from(PRIORITIES))
    def first_case(self, channel: str, priority: str) -> None:
        self.open_case(channel, priority)

    @precondition(lambda self: len(self.ids) < 6)
    @rule(channel=st.sampled_from(CHANNELS), priority=st.sampled_from(PRIORITIES))
    def open_case(self, channel: str, priority: str) -> None:
        ticket = self.desk.open_ticket(
            subject=f"Case {len(self.ids) + 1}",
            body="Something is wrong",
            customer=Customer(id="c-17"),
            channel=channel,
            priority=priority,
        )
        assert ticket.status == self.workflow.initial
        assert ticket.version == 1
        self.ids.append(ticket.id)

    @rule(data=st.data(), body=WORDS, agent=st.sampled_from(AGENTS))
    def agent_replies(self, data: st.DataObject, body: str, agent: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.reply(ticket_id, body, by=agent))

    @rule(data=st.data(), body=WORDS)
    def customer_replies(self, data: st.DataObject, body: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.reply(ticket_id, body, by="c-17", role="customer"))

    @rule(data=st.data(), body=WORDS, agent=st.sampled_from(AGENTS))
    def agent_notes(self, data: st.DataObject, body: str, agent: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.add_note(ticket_id, body, by=agent))

    @rule(
        data=st.data(),
        agent=st.sampled_from(AGENTS),
        group=st.sampled_from([None, "tier1", "tier2"]),
    )
    def assign(self, data: st.DataObject, agent: str, group: str | None) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.assign(ticket_id, agent, group=group, by="lead_zhao"))

    @rule(data=st.data(), agent=st.sampled_from(AGENTS))
    def fire_any_trigger(self, data: st.DataObject, agent: str) -> None:
        ticket_id = self.pick(data)
        trigger = data.draw(st.sampled_from(self.triggers), label="trigger")
        self.attempt(lambda: self.desk.fire(ticket_id, trigger, by=agent))

    @rule(data=st.data(), agent=st.sampled_from(AGENTS))
    def resolve(self, data: st.DataObject, agent: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.resolve(ticket_id, by=agent, resolution="fixed"))

    @rule(data=st.data(), agent=st.sampled_from(AGENTS))
    def reopen(self, data: st.DataObject, agent: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.reopen(ticket_id, by=agent, reason="not fixed"))

    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.close(ticket_id, by="c-17", reason="confirmed"))

    @rule(data=st.data(), agent=st.sampled_from(AGENTS))
    def cancel(self, data: st.DataObject, agent: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.cancel(ticket_id, by=agent, reason="duplicate"))

    @rule(data=st.data(), priority=st.sampled_from(PRIORITIES))
    def set_priority(self, data: st.DataObject, priority: str) -> None:
        ticket_id = self.pick(data)
        self.attempt(lambda: self.desk.set_priority(ticket_id, priority, by="lead_zhao"))

    @rule(minutes=MINUTES)
    def time_passes(self, minutes: int) -> None:
        before = self.clock.now()
        assert self.clock.advance(minutes=minutes) == before + timedelta(minutes=minutes)

    @rule()
    def run_due(self) -> None:
        report = self.desk.run_due(limit=1000)
        now = self.clock.now()
        assert all(timer.due_at <= now for timer in report.fired)
        assert self.desk.run_due(limit=1000).fired == ()  # nothing is due twice

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def every_ticket_is_explained_by_its_history(self) -> None:
        for ticket_id, (ticket, history, _) in self.snapshot().items():
            assert ticket.status in self.workflow.statuses
            assert [event.sequence for event in history] == list(range(1, len(history) + 1))
            assert ticket.sequence == len(history)
            assert all(event.ticket_id == ticket_id for event in history)
            assert [e.at for e in history] == sorted(e.at for e in history)
            status = self.workflow.initial
            for event in history:
                if event.type == "StatusChanged":
                    assert event.data["from"] == status
                    assert (
                        self.workflow.destination(status, event.data["trigger"])
                        == (event.data["to"])
                    )
                    status = event.data["to"]
            assert status == ticket.status

    @invariant()
    def versions_grow_exactly_when_something_was_recorded(self) -> None:
        for ticket_id, (ticket, history, _) in self.snapshot().items():
            version, length = self.seen.get(ticket_id, (0, 0))
            assert ticket.version >= version
            assert (ticket.version > version) == (len(history) > length)
            self.seen[ticket_id] = (ticket.version, len(history))

    @invariant()
    def finished_tickets_keep_no_sla_deadline(self) -> None:
        for ticket, _, timers in self.snapshot().values():
            if self.workflow.category(ticket.status).value == "closed":
                assert not [t for t in timers if t.key.startswith("sla:")], timers


DeskUnderRandomWork.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
test_desk_under_random_work = DeskUnderRandomWork.TestCase


def test_the_machine_sees_both_successes_and_refusals() -> None:
    """The checks above are only worth something if a refusal is noticed as one."""
    machine = DeskUnderRandomWork()
    machine.first_case("email", "normal")
    ticket_id = machine.ids[0]
    assert machine.attempt(lambda: machine.desk.reply(ticket_id, "On it", by="agent_li"))
    assert machine.refused == 0
    assert machine.attempt(lambda: machine.desk.reopen(ticket_id, by="agent_li")) is None
    assert machine.refused == 1
    machine.every_ticket_is_explained_by_its_history()
    machine.versions_grow_exactly_when_something_was_recorded()
