"""Escalation policies: who hears about a ticket, and who takes it over, as its time runs down.

Stories of a support centre: a hardware fault climbs the tiers (first line, technical support
engineer, hardware team), an urgent case goes up the hierarchy (team lead at once, manager
after four hours), a level nags every 30 minutes until someone acknowledges it, and a resolved
ticket stops escalating. Expected instants are worked out from the rules (opening hours,
targets, fractions), not read off the implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from supportflow import (
    AutoClosePolicy,
    BusinessCalendar,
    Channel,
    Customer,
    Desk,
    EscalationCondition,
    EscalationLevel,
    EscalationPolicy,
    Event,
    EventType,
    ManualClock,
    Priority,
    Recipient,
    RecipientRole,
    SlaPolicy,
    SlaTarget,
    Ticket,
    ValidationError,
)
from supportflow.storage import OutboxEntry, OutboxStatus
from supportflow.testing import scenario_desk

UTC = timezone.utc
H = timedelta(hours=1)
M = timedelta(minutes=1)
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # 2 March 2026 is a Monday


def monday(hour: int, minute: int = 0, *, days: int = 0) -> datetime:
    """Monday 2 March 2026 (or ``days`` later) at ``hour:minute`` UTC."""
    return MONDAY + timedelta(days=days, hours=hour, minutes=minute)


OFFICE = BusinessCalendar("UTC", {day: [("09:00", "18:00")] for day in range(5)}, name="office")
URGENT_SLA = SlaPolicy(
    "hardware",
    calendar=OFFICE,
    targets={
        Priority.URGENT: SlaTarget(first_response=30 * M, resolution=4 * H),
        Priority.HIGH: SlaTarget(first_response=H, resolution=8 * H),
        Priority.NORMAL: SlaTarget(first_response=4 * H, resolution=27 * H),
    },
)
TIERS = EscalationPolicy(
    "tiers",
    calendar=OFFICE,
    levels=[
        EscalationLevel("engineer", after=2 * H, reassign_group="tier2", notify=["group"]),
        EscalationLevel(
            "hardware",
            sla_clock="resolution",
            fraction=0.8,
            reassign_group="hardware",
            notify=["team_lead", "group"],
        ),
    ],
)
MANAGERS = EscalationPolicy(
    "managers",
    levels=[
        EscalationLevel(
            "team lead", when=EscalationCondition(priorities=["urgent"]), notify=["team_lead"]
        ),
        EscalationLevel("manager", after=4 * H, notify=["manager"]),
    ],
)
WANG = Customer(id="c-17", name="Wang Fang", contacts={"email": "wang.fang@example.com"})


def desk_at(
    start: datetime, policies: Sequence[EscalationPolicy], **options: Any
) -> tuple[Desk, ManualClock]:
    options.setdefault("sla", [URGENT_SLA])
    options.setdefault("team_lead", "lead_zhang")
    return scenario_desk(start, escalation=list(policies), **options)


def fault(desk: Desk, **options: Any) -> Ticket:
    """A customer reports a server whose fans stopped."""
    options.setdefault("priority", Priority.URGENT)
    options.setdefault("group", "first_line")
    options.setdefault("assignee", "agent_li")
    return desk.open_ticket(
        subject="Server fans stopped, temperature alarm",
        body="Rack 4, unit 12 has been beeping since this morning.",
        customer=WANG,
        channel=Channel.PHONE,
        **options,
    )


def run_until(desk: Desk, clock: ManualClock, end: datetime, step: timedelta = 5 * M) -> None:
    """The worker: run the due work every ``step`` until ``end``."""
    while clock.now() < end:
        clock.set(min(clock.now() + step, end))
        desk.run_due()


def escalations(desk: Desk, ticket_id: str) -> list[Event]:
    return [e for e in desk.history(ticket_id) if e.type == EventType.ESCALATED]


def path(desk: Desk, ticket_id: str) -> list[tuple[datetime, int, str, int]]:
    """(when, level, name, repeat) of each escalation step."""
    return [
        (e.at, e.data["level"], e.data["name"], e.data["repeat"])
        for e in escalations(desk, ticket_id)
    ]


def outbox(desk: Desk, kind: str | None = None) -> list[OutboxEntry]:
    with desk.store.transaction() as uow:
        entries = uow.list_outbox(OutboxStatus.PENDING, limit=10_000)
    return [e for e in entries if kind is None or e.notification.kind == kind]


def timer_keys(desk: Desk, ticket_id: str) -> set[str]:
    with desk.store.transaction() as uow:
        return {timer.key for timer in uow.timers(ticket_id)}


# -- functional escalation: along the tiers ---------------------------------------------------
class TestFunctionalEscalation:
    def test_urgent_hardware_fault_climbs_from_first_line_to_engineer_to_hardware_team(
        self,
    ) -> None:
        desk, clock = desk_at(monday(9), [TIERS])
        ticket = fault(desk)
        run_until(desk, clock, monday(14))

        engineer, hardware = escalations(desk, ticket.id)
        # Two business hours after opening the first line hands over to technical support.
        assert engineer.at == monday(11)
        assert engineer.actor == "system"
        assert dict(engineer.data) == {
            "policy": "tiers",
            "level": 1,
            "name": "engineer",
            "reason": "2:00:00 of business time since opened",
            "targets": ["group"],
            "actions": ["reassigned to tier2"],
            "repeat": 0,
        }
        # 80% of the 4 h resolution target is 3 h 12 min: the hardware team takes over.
        assert hardware.at == monday(12, 12)
        assert dict(hardware.data) == {
            "policy": "tiers",
            "level": 2,
            "name": "hardware",
            "reason": "80% of the resolution SLA used",
            "targets": ["team_lead", "group"],
            "actions": ["reassigned to hardware"],
            "repeat": 0,
        }
        assert desk.get_ticket(ticket.id).group == "hardware"

    def test_each_hand_over_is_notified_to_the_new_group_and_the_team_lead_at_80_percent(
        self,
    ) -> None:
        desk, clock = desk_at(monday(9), [TIERS])
        ticket = fault(desk)
        run_until(desk, clock, monday(14))

        sent = [e.notification for e in outbox(desk, "escalation")]
        assert [(n.created_at, n.recipients) for n in sent] == [
            (monday(11), (Recipient(RecipientRole.GROUP, "tier2"),)),
            (
                monday(12, 12),
                (
                    Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),
                    Recipient(RecipientRole.GROUP, "hardware"),
                ),
            ),
        ]
        assert all(n.ticket_id == ticket.id for n in sent)
        assert sent[1].subject == f"[#{ticket.number}] Escalated (hardware): {ticket.subject}"
        assert sent[1].body.startswith("80% of the resolution SLA used")
        assert sent[1].data["level"] == "hardware"

    def test_the_history_shows_the_whole_path_in_order_with_the_hand_overs(self) -> None:
        desk, clock = desk_at(monday(9), [TIERS])
        ticket = fault(desk)
        run_until(desk, clock, monday(14))

        trail = [
            (e.at, e.type, e.data.get("group"), e.data.get("name"))
            for e in desk.history(ticket.id)
            if e.type in (EventType.ASSIGNED, EventType.ESCALATED)
        ]
        assert trail == [
            (monday(11), EventType.ASSIGNED, "tier2", None),
            (monday(11), EventType.ESCALATED, None, "engineer"),
            (monday(12, 12), EventType.ASSIGNED, "hardware", None),
            (monday(12, 12), EventType.ESCALATED, None, "hardware"),
        ]
        stamps = [e.at for e in desk.history(ticket.id)]
        assert stamps == sorted(stamps)

    def test_two_business_hours_from_friday_afternoon_end_on_monday_morning(self) -> None:
        friday_5pm = monday(17, days=-3)
        desk, clock = desk_at(friday_5pm, [TIERS])
        ticket = fault(desk, priority=Priority.NORMAL)

        run_until(desk, clock, monday(9, 55), step=30 * M)
        assert escalations(desk, ticket.id) == []  # one hour on Friday, nothing at the weekend
        run_until(desk, clock, monday(12))
        assert path(desk, ticket.id) == [(monday(10), 1, "engineer", 0)]

    def test_escalation_since_the_last_public_update_waits_while_the_conversation_goes_on(
        self,
    ) -> None:
        quiet = EscalationPolicy(
            "quiet",
            levels=[EscalationLevel("lead", after=H, since="updated", notify=["team_lead"])],
        )
        desk, clock = desk_at(monday(9), [quiet])
        ticket = fault(desk, priority=Priority.NORMAL)
        clock.set(monday(9, 40))
        desk.reply(ticket.id, "Can you read me the alarm code?", by="agent_li")
        clock.set(monday(10, 20))
        desk.reply(ticket.id, "E-204", by=WANG.id, role="customer")

        run_until(desk, clock, monday(11, 15))
        assert escalations(desk, ticket.id) == []  # an hour after 10:20 is 11:20
        run_until(desk, clock, monday(12))
        assert escalations(desk, ticket.id)[0].at == monday(11, 20)
        assert escalations(desk, ticket.id)[0].data["reason"] == (
            "1:00:00 of business time since last public update"
        )

    def test_a_fraction_level_waits_while_the_resolution_clock_is_paused(self) -> None:
        desk, clock = desk_at(monday(9), [TIERS])
        ticket = fault(desk)
        clock.set(monday(9, 10))
        desk.reply(ticket.id, "Please send a photo of the front panel.", by="agent_li")
        desk.fire(ticket.id, "wait_on_customer", by="agent_li")  # paused after 10 minutes
        clock.set(monday(10, 10))
        desk.reply(ticket.id, "Photo attached.", by=WANG.id, role="customer")

        run_until(desk, clock, monday(15))
        hardware = escalations(desk, ticket.id)[1]
        # 3 h 12 min of running clock: 10 minutes before the pause, 3 h 02 min after it.
        assert hardware.at == monday(13, 12)

    def test_a_fraction_used_up_before_the_level_ahead_of_it_comes_right_after_that_level(
        self,
    ) -> None:
        quick = SlaPolicy("quick", targets={Priority.URGENT: SlaTarget(resolution=H)})
        desk, clock = desk_at(monday(9), [TIERS], sla=[quick])
        ticket = fault(desk)  # 80% of a one-hour resolution is used at 09:48
        run_until(desk, clock, monday(11, 30))

        # Levels come in order: the hardware team is reached when the engineer level is.
        assert path(desk, ticket.id) == [
            (monday(11), 1, "engineer", 0),
            (monday(11), 2, "hardware", 0),
        ]
        stamps = [e.at for e in desk.history(ticket.id)]
        assert stamps == sorted(stamps)

    def test_handing_over_to_another_tier_takes_the_ticket_off_the_first_line_agent(
        self,
    ) -> None:
        desk, clock = desk_at(monday(9), [TIERS])
        ticket = fault(desk)
        run_until(desk, clock, monday(11))

        handed = desk.get_ticket(ticket.id)
        assert (handed.group, handed.assignee) == ("tier2", None)


# -- hierarchical escalation: up the management line ------------------------------------------
class TestHierarchicalEscalation:
    def test_urgent_case_reaches_the_team_lead_at_once_and_the_manager_after_four_hours(
        self,
    ) -> None:
        desk, clock = desk_at(monday(9), [MANAGERS])
        ticket = fault(desk)

        # In the command that opened it: no worker needed.
        lead = escalations(desk, ticket.id)
        assert [(e.at, e.data["level"], e.data["reason"]) for e in lead] == [
            (monday(9), 1, "condition met: priority urgent")
        ]
        run_until(desk, clock, monday(12, 55))
        assert len(escalations(desk, ticket.id)) == 1
        run_until(desk, clock, monday(14))
        assert path(desk, ticket.id) == [
            (monday(9), 1, "team lead", 0),
            (monday(13), 2, "manager", 0),
        ]
        recipients = [e.notification.recipients for e in outbox(desk, "escalation")]
        assert recipients == [
            (Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),),
            (Recipient(RecipientRole.MANAGER, "manager"),),
        ]

    def test_raising_a_case_to_urgent_tells_the_team_lead_in_the_same_command(self) -> None:
        desk, clock = desk_at(monday(9), [MANAGERS])
        ticket = fault(desk, priority=Priority.NORMAL)
        clock.set(monday(9, 30))
        assert escalations(desk, ticket.id) == []

        desk.set_priority(ticket.id, Priority.URGENT, by="agent_li", reason="whole rack at risk")

        (lead,) = escalations(desk, ticket.id)
        assert (lead.at, lead.data["name"]) == (monday(9, 30), "team lead")
        types = [e.type for e in desk.history(ticket.id)]
        assert types.index(EventType.PRIORITY_CHANGED) < types.index(EventType.ESCALATED)

    def test_a_policy_condition_selects_the_tickets_it_is_for(self) -> None:
        vip = EscalationPolicy(
            "vip",
            condition=EscalationCondition(tiers=["vip"]),
            levels=[EscalationLevel("account manager", after=H, notify=["agent:am_chen"])],
        )
        desk, clock = desk_at(monday(9), [vip])
        standard = fault(desk, priority=Priority.NORMAL)
        important = desk.open_ticket(
            subject="Invoice wrong",
            body="...",
            customer=Customer(id="c-99", name="Acme", tier="VIP"),
            channel="email",
        )
        run_until(desk, clock, monday(12))

        assert escalations(desk, standard.id) == []
        assert path(desk, important.id) == [(monday(10), 1, "account manager", 0)]
        (sent,) = outbox(desk, "escalation")
        assert sent.notification.recipients == (Recipient(RecipientRole.AGENT, "am_chen"),)


# -- repeats until acknowledged ---------------------------------------------------------------
NAGGING = EscalationPolicy(
    "nagging",
    levels=[
        EscalationLevel(
            "team lead",
            when=EscalationCondition(priorities=["urgent"]),
            notify=["team_lead"],
            repeat_every=30 * M,
        ),
        EscalationLevel("manager", after=4 * H, notify=["manager"]),
    ],
)


class TestRepeatsUntilAcknowledged:
    def test_a_level_repeats_every_30_minutes_until_acknowledged_then_the_next_still_comes(
        self,
    ) -> None:
        desk, clock = desk_at(monday(9), [NAGGING])
        ticket = fault(desk)
        run_until(desk, clock, monday(10, 40))
        assert path(desk, ticket.id) == [
            (monday(9), 1, "team lead", 0),
            (monday(9, 30), 1, "team lead", 1),
            (monday(10), 1, "team lead", 2),
            (monday(10, 30), 1, "team lead", 3),
        ]
        assert escalations(desk, ticket.id)[-1].data["reason"] == (
            "not acknowledged; repeat 3 every 0:30:00"
        )

        desk.acknowledge(ticket.id, by="lead_zhang")
        acknowledged = desk.history(ticket.id)[-1]
        assert (acknowledged.type, acknowledged.actor, dict(acknowledged.data)) == (
            EventType.ACKNOWLEDGED,
            "lead_zhang",
            {"policy": "nagging", "level": 1},
        )
        run_until(desk, clock, monday(14))
        assert path(desk, ticket.id)[4:] == [(monday(13), 2, "manager", 0)]

    def test_every_repeat_notifies_the_team_lead_again(self) -> None:
        desk, clock = desk_at(monday(9), [NAGGING])
        fault(desk)
        run_until(desk, clock, monday(10, 10))

        sent = outbox(desk, "escalation")
        assert [e.notification.created_at for e in sent] == [monday(9), monday(9, 30), monday(10)]
        assert {e.notification.recipients for e in sent} == {
            (Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),)
        }
        assert len({e.key for e in sent}) == 3  # three deliveries, not one deduplicated

    def test_repeats_missed_while_no_worker_ran_come_as_one(self) -> None:
        desk, clock = desk_at(monday(9), [NAGGING])
        ticket = fault(desk)
        clock.set(monday(11, 10))  # the worker was down for two hours

        desk.run_due()

        assert path(desk, ticket.id) == [
            (monday(9), 1, "team lead", 0),
            (monday(11), 1, "team lead", 1),
        ]

    def test_a_repeating_level_that_was_acknowledged_is_not_repeated_by_another_step(
        self,
    ) -> None:
        desk, clock = desk_at(monday(9), [NAGGING])
        ticket = fault(desk)
        desk.acknowledge(ticket.id, by="lead_zhang")
        run_until(desk, clock, monday(12, 55))
        assert path(desk, ticket.id) == [(monday(9), 1, "team lead", 0)]
        assert "escalation:nagging:repeat" not in timer_keys(desk, ticket.id)

    def test_acknowledging_when_nothing_escalated_records_nothing(self) -> None:
        desk, _ = desk_at(monday(9), [NAGGING])
        ticket = fault(desk, priority=Priority.NORMAL)
        before = desk.get_ticket(ticket.id)

        after = desk.acknowledge(ticket.id, by="lead_zhang")

        assert (after.version, after.sequence) == (before.version, before.sequence)


# -- resolving stops escalation ---------------------------------------------------------------
class TestResolvingStopsEscalation:
    def test_a_resolved_ticket_keeps_no_escalation_timer_and_never_escalates(self) -> None:
        desk, clock = desk_at(monday(9), [TIERS, NAGGING])
        ticket = fault(desk)
        assert {"escalation:tiers:level:0", "escalation:nagging:repeat"} <= timer_keys(
            desk, ticket.id
        )
        run_until(desk, clock, monday(10, 15))
        desk.resolve(ticket.id, by="agent_li", resolution="Replaced the fan tray")

        assert timer_keys(desk, ticket.id) == {"autoclose"}
        run_until(desk, clock, monday(18), step=15 * M)
        assert path(desk, ticket.id) == [
            (monday(9), 1, "team lead", 0),
            (monday(9, 30), 1, "team lead", 1),
            (monday(10), 1, "team lead", 2),
        ]

    def test_a_closed_ticket_never_escalates(self) -> None:
        desk, clock = desk_at(monday(9), [TIERS], auto_close=AutoClosePolicy(after=H))
        ticket = fault(desk, priority=Priority.NORMAL)
        clock.set(monday(9, 20))
        desk.resolve(ticket.id, by="agent_li")
        run_until(desk, clock, monday(17))

        assert desk.get_ticket(ticket.id).status == "closed"
        assert escalations(desk, ticket.id) == []
        assert timer_keys(desk, ticket.id) == set()

    def test_a_reopened_ticket_does_not_replay_every_repeat_missed_while_it_was_resolved(
        self,
    ) -> None:
        lead_only = EscalationPolicy("lead", levels=[NAGGING.levels[0]])
        desk, clock = desk_at(monday(9), [lead_only])
        ticket = fault(desk)
        clock.set(monday(9, 10))
        desk.resolve(ticket.id, by="agent_li")
        clock.set(monday(15, 10))

        desk.reopen(ticket.id, by="agent_li", reason="fans stopped again")

        # Twelve half-hours went by while it was resolved; the team lead hears once.
        assert [step[3] for step in path(desk, ticket.id)] == [0, 1]

    def test_escalation_after_a_reopen_is_recorded_when_it_happens(self) -> None:
        desk, clock = desk_at(monday(9), [MANAGERS])
        ticket = fault(desk)
        clock.set(monday(9, 10))
        desk.resolve(ticket.id, by="agent_li")
        clock.set(monday(15, 10))
        desk.reopen(ticket.id, by="agent_li", reason="fans stopped again")

        manager = escalations(desk, ticket.id)[-1]
        assert (manager.data["name"], manager.at) == ("manager", monday(15, 10))
        stamps = [e.at for e in desk.history(ticket.id)]
        assert stamps == sorted(stamps)

        # A repeating level taken up again on reopen repeats 30 minutes after the reopen.
        lead_only = EscalationPolicy("lead", levels=[NAGGING.levels[0]])
        desk, clock = desk_at(monday(9), [lead_only])
        ticket = fault(desk)
        clock.set(monday(9, 10))
        desk.resolve(ticket.id, by="agent_li")
        clock.set(monday(15, 10))
        desk.reopen(ticket.id, by="agent_li", reason="fans stopped again")
        assert path(desk, ticket.id)[-1] == (monday(15, 10), 1, "team lead", 1)
        with desk.store.transaction() as uow:
            (repeat,) = [t for t in uow.timers(ticket.id) if t.key == "escalation:lead:repeat"]
        assert repeat.due_at == monday(15, 40)


# -- what a level does: reassign, raise priority, tag -----------------------------------------
class TestActions:
    def test_a_level_reassigns_raises_the_priority_and_tags_and_says_so(self) -> None:
        overdue = EscalationPolicy(
            "overdue",
            levels=[
                EscalationLevel(
                    "senior",
                    after=H,
                    reassign_to="eng_wu",
                    reassign_group="tier2",
                    raise_priority="high",
                    add_tags=["escalated", "tier2"],
                    notify=["assignee", "team_lead"],
                )
            ],
        )
        desk, clock = desk_at(monday(9), [overdue])
        ticket = fault(desk, priority=None)  # normal, as nobody chose otherwise
        run_until(desk, clock, monday(10, 30))

        (step,) = escalations(desk, ticket.id)
        assert step.data["actions"] == [
            "reassigned to eng_wu",
            "priority raised to high",
            "tagged escalated, tier2",
        ]
        now = desk.get_ticket(ticket.id)
        assert (now.assignee, now.group, now.priority) == ("eng_wu", "tier2", Priority.HIGH)
        assert {"escalated", "tier2"} <= now.tags
        assert not now.priority_explicit  # a rule raised it, not a person
        (changed,) = [e for e in desk.history(ticket.id) if e.type == EventType.PRIORITY_CHANGED]
        assert dict(changed.data) == {
            "from": "normal",
            "to": "high",
            "reason": "escalation senior",
            "explicit": False,
        }
        # The SLA follows the new priority: the high target of 8 h now applies.
        applied = [e for e in desk.history(ticket.id) if e.type == EventType.SLA_POLICY_APPLIED]
        assert applied[-1].data["targets"]["resolution"] == 8 * 3600
        # The new assignee hears about it, not the agent who had it before.
        (sent,) = outbox(desk, "escalation")
        assert sent.notification.recipients == (
            Recipient(RecipientRole.AGENT, "eng_wu"),
            Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),
        )

    def test_a_level_never_lowers_the_priority_nor_repeats_what_is_already_so(self) -> None:
        soft = EscalationPolicy(
            "soft",
            levels=[
                EscalationLevel(
                    "lead",
                    after=H,
                    raise_priority=Priority.HIGH,
                    add_tags="escalated",
                    notify="team_lead",
                )
            ],
        )
        desk, clock = desk_at(monday(9), [soft])
        ticket = fault(desk, priority=Priority.URGENT, tags=["escalated"])
        run_until(desk, clock, monday(10, 30))

        (step,) = escalations(desk, ticket.id)
        assert step.data["actions"] == []
        assert desk.get_ticket(ticket.id).priority is Priority.URGENT
        assert desk.get_ticket(ticket.id).tags == {"escalated"}

    def test_repeats_notify_again_but_do_not_act_again(self) -> None:
        moving = EscalationPolicy(
            "moving",
            levels=[
                EscalationLevel(
                    "tier2", after=H, reassign_group="tier2", repeat_every=H, notify=["group"]
                )
            ],
        )
        desk, clock = desk_at(monday(9), [moving])
        ticket = fault(desk, priority=Priority.NORMAL)
        run_until(desk, clock, monday(10, 30))
        desk.assign(ticket.id, group="first_line", by="lead_zhang")  # taken back deliberately
        run_until(desk, clock, monday(11, 30))

        assert [e.data["actions"] for e in escalations(desk, ticket.id)] == [
            ["reassigned to tier2"],
            [],
        ]
        assert desk.get_ticket(ticket.id).group == "first_line"


# -- early warning: sensitive words tag the ticket; the tag escalates --------------------------
EARLY_WARNING = EscalationPolicy(
    "early-warning",
    levels=[
        EscalationLevel(
            "team lead",
            when=EscalationCondition(tags=["early-warning"]),
            notify=["team_lead", "assignee"],
            raise_priority="high",
        )
    ],
)


class TestEarlyWarning:
    def test_tagging_a_ticket_early_warning_tells_the_team_lead_at_once(self) -> None:
        desk, clock = desk_at(monday(9), [EARLY_WARNING])
        ticket = fault(desk, priority=Priority.NORMAL)
        clock.set(monday(9, 42))
        assert escalations(desk, ticket.id) == []

        desk.update(ticket.id, by="agent_li", add_tags=["early-warning"])

        (step,) = escalations(desk, ticket.id)
        assert (step.at, step.data["reason"], step.data["actions"]) == (
            monday(9, 42),
            "condition met: tag early-warning",
            ["priority raised to high"],
        )
        (sent,) = outbox(desk, "escalation")
        assert sent.notification.recipients == (
            Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),
            Recipient(RecipientRole.AGENT, "agent_li"),
        )

    def test_a_ticket_opened_with_the_tag_escalates_when_it_is_opened(self) -> None:
        desk, _ = desk_at(monday(9), [EARLY_WARNING])
        ticket = fault(desk, priority=Priority.NORMAL, tags=["early-warning", "media"])

        assert path(desk, ticket.id) == [(monday(9), 1, "team lead", 0)]

    def test_a_ticket_without_the_tag_never_escalates_on_this_policy(self) -> None:
        desk, clock = desk_at(monday(9), [EARLY_WARNING])
        ticket = fault(desk, priority=Priority.NORMAL, tags=["media"])
        run_until(desk, clock, monday(18), step=30 * M)

        assert escalations(desk, ticket.id) == []


# -- recipients by role -----------------------------------------------------------------------
class TestRecipients:
    def test_targets_name_roles_that_the_desk_turns_into_recipients(self) -> None:
        everyone = EscalationPolicy(
            "everyone",
            levels=[
                EscalationLevel(
                    "all hands",
                    after=H,
                    notify=[
                        "assignee",
                        "group",
                        "team_lead",
                        "manager",
                        "on_call:hardware",
                        "agent:eng_wu",
                    ],
                )
            ],
        )
        desk, clock = desk_at(monday(9), [everyone])
        fault(desk)
        run_until(desk, clock, monday(10))

        (sent,) = outbox(desk, "escalation")
        assert sent.notification.recipients == (
            Recipient(RecipientRole.AGENT, "agent_li"),
            Recipient(RecipientRole.GROUP, "first_line"),
            Recipient(RecipientRole.TEAM_LEAD, "lead_zhang"),
            Recipient(RecipientRole.MANAGER, "manager"),
            Recipient(RecipientRole.ON_CALL, "hardware"),
            Recipient(RecipientRole.AGENT, "eng_wu"),
        )

    def test_an_unassigned_ticket_reaches_its_group_as_the_assignee(self) -> None:
        policy = EscalationPolicy("p", levels=[EscalationLevel("x", after=H, notify="assignee")])
        desk, clock = desk_at(monday(9), [policy])
        fault(desk, assignee=None)
        run_until(desk, clock, monday(10))

        (sent,) = outbox(desk, "escalation")
        assert sent.notification.recipients == (Recipient(RecipientRole.GROUP, "first_line"),)

    def test_a_step_with_nobody_to_tell_is_still_recorded(self) -> None:
        policy = EscalationPolicy("p", levels=[EscalationLevel("x", after=H, notify="assignee")])
        desk, clock = desk_at(monday(9), [policy])
        ticket = fault(desk, assignee=None, group=None)
        run_until(desk, clock, monday(10))

        assert path(desk, ticket.id) == [(monday(10), 1, "x", 0)]
        assert outbox(desk, "escalation") == []


# -- validation -------------------------------------------------------------------------------
def _field(error: pytest.ExceptionInfo[ValidationError]) -> str:
    return error.value.field


class TestValidation:
    @pytest.mark.parametrize(
        ("triggers", "given"),
        [
            ({}, []),
            ({"after": H, "when": EscalationCondition()}, ["after", "when"]),
            (
                {"after": H, "sla_clock": "resolution", "fraction": 0.5},
                ["after", "sla_clock"],
            ),
        ],
    )
    def test_a_level_needs_exactly_one_trigger(
        self, triggers: dict[str, Any], given: list[str]
    ) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationLevel("engineer", **triggers)
        assert _field(error) == "levels['engineer']"
        assert error.value.value == given
        assert "exactly one trigger of after, sla_clock, when" in str(error.value)

    @pytest.mark.parametrize("fraction", [None, 0, -0.2, 1.01, float("nan")])
    def test_an_sla_fraction_lies_in_zero_to_one(self, fraction: float | None) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationLevel("hardware", sla_clock="resolution", fraction=fraction)
        assert _field(error) == "fraction"

    def test_a_whole_sla_is_a_valid_fraction(self) -> None:
        assert EscalationLevel("breach", sla_clock="resolution", fraction=1).fraction == 1

    def test_a_fraction_without_an_sla_clock_is_refused_rather_than_ignored(self) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationLevel("engineer", after=2 * H, fraction=0.8)
        assert _field(error) == "fraction"

    @pytest.mark.parametrize(
        "target", ["boss", "on_call:", "agent:", "agent:  ", "Team_Lead", "", 42]
    )
    def test_a_notify_target_must_be_a_known_role(self, target: Any) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationLevel("lead", after=H, notify=["team_lead", target])
        assert _field(error) == "notify"
        assert error.value.value == target

    def test_a_single_notify_target_or_tag_may_be_given_as_a_string(self) -> None:
        level = EscalationLevel("lead", after=H, notify="team_lead", add_tags="escalated")
        assert (level.notify, level.add_tags) == (("team_lead",), frozenset({"escalated"}))

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"after": -M}, "after"),
            ({"after": H, "since": "closed"}, "since"),
            ({"sla_clock": "answer", "fraction": 0.5}, "sla_clock"),
            ({"after": H, "repeat_every": timedelta(0)}, "repeat_every"),
            ({"after": H, "raise_priority": "asap"}, "raise_priority"),
        ],
    )
    def test_other_bad_level_settings_name_their_field(
        self, options: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationLevel("lead", **options)
        assert _field(error) == field

    def test_a_policy_needs_levels(self) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationPolicy("empty", levels=[])
        assert _field(error) == "levels"

    @pytest.mark.parametrize("name", ["", "  ", "tier:2"])
    def test_a_policy_name_is_not_empty_and_has_no_colon(self, name: str) -> None:
        with pytest.raises(ValidationError) as error:
            EscalationPolicy(name, levels=[EscalationLevel("lead", after=H)])
        assert _field(error) == "name"

    def test_a_desk_refuses_two_policies_of_one_name(self) -> None:
        with pytest.raises(ValidationError) as error:
            Desk(escalation=[TIERS, TIERS])
        assert _field(error) == "escalation"

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"after": 5}, "after"),
            ({"after": "2h"}, "after"),
            ({"sla_clock": "resolution", "fraction": "x"}, "fraction"),
            ({"sla_clock": "resolution", "fraction": True}, "fraction"),
            ({"after": H, "repeat_every": 5}, "repeat_every"),
            ({"after": H, "notify": None}, "notify"),
            ({"after": H, "notify": 5}, "notify"),
            ({"after": H, "add_tags": None}, "add_tags"),
            ({"after": H, "add_tags": 5}, "add_tags"),
            ({"after": H, "add_tags": ["escalated", 5]}, "add_tags"),
            ({"when": "urgent"}, "when"),
            ({"when": {"priorities": ["urgent"]}}, "when"),
            ({"after": H, "reassign_group": 5}, "reassign_group"),
            ({"after": H, "reassign_to": ["eng_wu"]}, "reassign_to"),
        ],
    )
    def test_ill_typed_level_settings_are_refused_naming_their_field(
        self, options: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValidationError) as refused:
            EscalationLevel("lead", **options)
        assert refused.value.field == field

    @pytest.mark.parametrize("name", [None, 5, b"lead"])
    def test_a_level_name_is_a_string(self, name: Any) -> None:
        with pytest.raises(ValidationError) as refused:
            EscalationLevel(name, after=H)
        assert refused.value.field == "name"

    @pytest.mark.parametrize(
        ("levels", "field"),
        [
            (None, "levels"),
            (5, "levels"),
            ("lead", "levels"),
            (EscalationLevel("lead", after=H), "levels"),  # one level still goes in a list
            (["lead"], "levels[0]"),
            ([EscalationLevel("lead", after=H), None], "levels[1]"),
        ],
    )
    def test_ill_typed_policy_levels_are_refused_naming_their_field(
        self, levels: Any, field: str
    ) -> None:
        with pytest.raises(ValidationError) as refused:
            EscalationPolicy("p", levels)
        assert refused.value.field == field

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"name": None}, "name"),
            ({"calendar": 5}, "calendar"),
            ({"calendar": "office"}, "calendar"),
            ({"condition": None}, "condition"),
            ({"condition": {"tiers": ["vip"]}}, "condition"),
        ],
    )
    def test_ill_typed_policy_settings_are_refused_naming_their_field(
        self, options: dict[str, Any], field: str
    ) -> None:
        settings: dict[str, Any] = {"name": "p", "levels": [EscalationLevel("lead", after=H)]}
        with pytest.raises(ValidationError) as refused:
            EscalationPolicy(**{**settings, **options})
        assert refused.value.field == field

    def test_well_typed_settings_of_every_kind_still_build(self) -> None:
        pendulum = pytest.importorskip("pendulum")
        level = EscalationLevel(
            "lead",
            after=pendulum.duration(hours=2),  # a timedelta subclass
            since="updated",
            notify=("team_lead", "on_call:night"),
            reassign_group="tier2",
            reassign_to="eng_wu",
            raise_priority="high",
            add_tags=(tag for tag in ["escalated", "tier2"]),
            repeat_every=pendulum.duration(minutes=30),
        )
        assert level.add_tags == frozenset({"escalated", "tier2"})
        assert level.raise_priority is Priority.HIGH
        breach = EscalationLevel("breach", sla_clock="resolution", fraction=1)
        urgent = EscalationLevel("urgent", when=EscalationCondition(priorities="urgent"))
        policy = EscalationPolicy(
            "mixed",
            levels=(lv for lv in [level, breach, urgent]),
            calendar=OFFICE,
            condition=EscalationCondition(tiers=["vip"]),
        )
        assert [lv.name for lv in policy.levels] == ["lead", "breach", "urgent"]
        assert Desk(escalation=[TIERS, NAGGING, policy]) is not None


# -- a worker that comes late records every step at its own time ------------------------------
class TestConditionLevelsAreRecordedWhenReached:
    def test_a_condition_level_after_a_time_level_comes_right_after_it_however_late_the_worker(
        self,
    ) -> None:
        policy = EscalationPolicy(
            "managers",
            levels=[
                EscalationLevel("team lead", after=2 * H, notify=["team_lead"]),
                EscalationLevel(
                    "manager", when=EscalationCondition(priorities=["urgent"]), notify=["manager"]
                ),
            ],
        )
        desk, clock = scenario_desk(monday(9), escalation=[policy], sla=[])
        ticket = desk.open_ticket(
            subject="Server fans stopped",
            body="Rack 4",
            customer=WANG,
            channel="phone",
            priority=Priority.URGENT,
        )
        clock.set(monday(14))  # the worker was down from 09:00 to 14:00
        desk.run_due()
        reached = [
            (e.at, e.data["name"]) for e in desk.history(ticket.id) if e.type == EventType.ESCALATED
        ]
        assert reached == [(monday(11), "team lead"), (monday(11), "manager")]

    def test_a_condition_made_true_by_another_policys_step_is_reached_at_that_step(
        self,
    ) -> None:
        raiser = EscalationPolicy(
            "raise", levels=[EscalationLevel("raise", after=30 * M, raise_priority="urgent")]
        )
        urgent = EscalationPolicy(
            "urgent",
            levels=[
                EscalationLevel(
                    "lead", when=EscalationCondition(priorities=["urgent"]), notify=["team_lead"]
                )
            ],
        )
        desk, clock = scenario_desk(monday(9), escalation=[raiser, urgent], sla=[])
        ticket = desk.open_ticket(
            subject="Invoice wrong", body="...", customer=WANG, channel="email"
        )
        clock.set(monday(12))
        desk.run_due()
        reached = [
            (e.at, e.data["policy"])
            for e in desk.history(ticket.id)
            if e.type == EventType.ESCALATED
        ]
        assert reached == [(monday(9, 30), "raise"), (monday(9, 30), "urgent")]


NAGGING_THEN_MANAGER = EscalationPolicy(
    "managers",
    levels=[
        EscalationLevel(
            "team lead",
            after=timedelta(0),
            notify=["team_lead"],
            repeat_every=timedelta(minutes=30),
        ),
        EscalationLevel("manager", after=timedelta(hours=2), notify=["manager"]),
    ],
)


def test_repeats_missed_before_an_overdue_next_level_still_come_as_one() -> None:
    desk, clock = scenario_desk(monday(9), escalation=[NAGGING_THEN_MANAGER], sla=[])
    ticket = desk.open_ticket(
        subject="Server fans stopped", body="Rack 4", customer=WANG, channel="phone"
    )
    clock.set(monday(12))  # the worker was down from 09:00 to 12:00
    desk.run_due()
    steps = [
        (e.at, e.data["name"], e.data["repeat"])
        for e in desk.history(ticket.id)
        if e.type == EventType.ESCALATED
    ]
    assert steps == [
        (monday(9), "team lead", 0),
        (monday(10, 30), "team lead", 1),  # the last repeat due before the manager level
        (monday(11), "manager", 0),
    ]
