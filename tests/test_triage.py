"""Triage on the desk, told as support-desk stories: classification when a ticket opens and
when it changes, the early warning to the team lead, and mass incidents.

Every story runs through a real :class:`~supportflow.Desk` on a manual clock; the incident
stories run on the memory store and on SQLite, where the follow-up writes share the command's
unit of work.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pendulum
import pytest

from supportflow import Customer, Desk, EventType, Priority, RecipientRole, Role, Ticket
from supportflow.classify import (
    AddTags,
    CategoryIs,
    Classifier,
    FlagTeamLead,
    IsVip,
    Keywords,
    RaisePriority,
    RouteTo,
    Rule,
    SetCategory,
    SetFingerprint,
    SetImpactUrgency,
)
from supportflow.errors import ValidationError
from supportflow.events import Event
from supportflow.extensions import Change, IncidentPolicy, Triage
from supportflow.extensions.feedback import FeedbackExtension
from supportflow.feedback import FOLLOW_UP, FeedbackPolicy
from supportflow.storage import MemoryStore, OutboxEntry, OutboxStatus, SqliteStore, Storage
from supportflow.testing import ManualClock, scenario_desk

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday morning
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "triage.py"

RULES = [
    Rule(
        "network",
        Keywords(["vpn", "断网", "无法连接"]),
        [SetCategory("network"), RouteTo("netops")],
    ),
    Rule("billing", Keywords(["invoice", "发票", "refund"]), [SetCategory("billing")]),
    Rule("finance", CategoryIs("billing"), [AddTags("finance"), RouteTo("finance")]),
    Rule("outage", Keywords(["everyone", "所有人"]), [SetImpactUrgency("high", "high")]),
    Rule("minor", Keywords(["typo", "错别字"]), [SetImpactUrgency("low", "low")]),
    Rule("vip", IsVip(), [RouteTo("vip-desk"), RaisePriority("urgent")]),
]


def make_desk(
    rules: list[Rule] | None = None,
    *,
    incidents: IncidentPolicy | None = None,
    store: Storage | None = None,
    **options: Any,
) -> tuple[Desk, ManualClock]:
    ids = itertools.count(1)
    triage = Triage(Classifier(RULES if rules is None else rules), incidents)
    options.setdefault("triage", triage)
    return scenario_desk(
        START, store=store or MemoryStore(), id_factory=lambda: f"t{next(ids)}", **options
    )


def open_ticket(desk: Desk, subject: str, body: str = "", n: int = 1, **options: Any) -> Ticket:
    customer = options.pop("customer", None) or Customer(id=f"c-{n}", name=f"Customer {n}")
    return desk.open_ticket(
        subject=subject, body=body, customer=customer, channel="email", **options
    )


def events(desk: Desk, ticket_id: str, kind: str) -> list[Event]:
    return [event for event in desk.history(ticket_id) if event.type == kind]


def pending(desk: Desk, kind: str | None = None) -> list[OutboxEntry]:
    with desk.store.transaction() as uow:
        rows = uow.list_outbox(OutboxStatus.PENDING, limit=10_000)
    return [row for row in rows if kind is None or row.notification.kind == kind]


def lead_rows(desk: Desk, ticket_id: str, kind: str) -> list[OutboxEntry]:
    return [
        row
        for row in pending(desk, kind)
        if row.notification.ticket_id == ticket_id
        and [r.role for r in row.notification.recipients] == [RecipientRole.TEAM_LEAD]
    ]


# ---------------------------------------------------------------------------- early warning


def test_a_chinese_ticket_mentioning_a_journalist_warns_the_team_lead_at_once() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "订单三天没有发货", "再没人处理，我就把聊天记录发给记者。")

    assert "early-warning" in ticket.tags
    assert ticket.priority >= Priority.HIGH
    [warning] = events(desk, ticket.id, EventType.EARLY_WARNING)
    assert warning.data["words"] == ["记者"]
    [row] = lead_rows(desk, ticket.id, "early_warning")  # in the outbox with the ticket itself
    assert row.notification.recipients[0].address == "team_lead"
    assert "记者" in row.notification.subject
    assert row.notification.data["words"] == ["记者"]


def test_a_later_customer_message_warns_again_only_for_the_new_word() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "退款一直没到", "我已经联系了记者")
    desk.reply(ticket.id, "我们正在核实，请稍等。", by="agent_li")
    desk.reply(ticket.id, "记者明天就来，我也会请律师。", by="c-1", role=Role.CUSTOMER)

    warnings = events(desk, ticket.id, EventType.EARLY_WARNING)
    assert [w.data["words"] for w in warnings] == [["记者"], ["律师"]]
    assert len(lead_rows(desk, ticket.id, "early_warning")) == 2

    desk.reply(ticket.id, "记者和律师都在等你们的答复", by="c-1", role=Role.CUSTOMER)
    desk.reply(ticket.id, "请不要找律师，我们马上处理。", by="agent_li")  # agents are not read
    assert len(events(desk, ticket.id, EventType.EARLY_WARNING)) == 2
    assert len(lead_rows(desk, ticket.id, "early_warning")) == 2


def test_i_will_sue_warns_but_issue_does_not() -> None:
    desk, _ = make_desk()
    calm = open_ticket(desk, "An issue with my order", "The issue is the size.", n=1)
    angry = open_ticket(desk, "Order never arrived", "Refund me today or I will sue.", n=2)

    assert "early-warning" not in calm.tags
    assert calm.priority is Priority.NORMAL
    assert events(desk, calm.id, EventType.EARLY_WARNING) == []
    assert lead_rows(desk, calm.id, "early_warning") == []
    assert "early-warning" in angry.tags
    assert [e.data["words"] for e in events(desk, angry.id, EventType.EARLY_WARNING)] == [["sue"]]
    assert len(lead_rows(desk, angry.id, "early_warning")) == 1


def test_a_lead_who_removes_the_early_warning_tag_is_not_overruled() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "Cancel my contract", "My lawyer will call you.")
    desk.update(ticket.id, by="lead_wang", remove_tags=["early-warning"])
    desk.reply(ticket.id, "Thanks for calling me back.", by="c-1", role=Role.CUSTOMER)
    assert "early-warning" not in desk.get_ticket(ticket.id).tags

    desk.reply(ticket.id, "Actually the police should hear of this.", by="c-1", role="customer")
    assert "early-warning" in desk.get_ticket(ticket.id).tags  # a new word is a new warning


# --------------------------------------------------------------------------- rules on a desk


def test_a_vip_rule_routes_to_its_group_and_jumps_the_queue() -> None:
    desk, clock = make_desk()
    for n in range(3):
        open_ticket(desk, "Where is my parcel?", "Ordered last week.", n=n)
        clock.advance(minutes=5)
    vip = open_ticket(desk, "Where is my parcel?", "Ordered last week.", customer=Customer(
        id="c-vip", name="Ms Zhao", tier="vip"
    ))  # fmt: skip

    assert (vip.group, vip.priority) == ("vip-desk", Priority.URGENT)
    [assigned] = events(desk, vip.id, EventType.ASSIGNED)
    assert assigned.data["group"] == "vip-desk"
    queue = sorted(desk.tickets(), key=lambda t: (-t.priority.rank, t.created_at))
    assert queue[0].id == vip.id  # last in, first served
    vip_due = {r.name: r.due_at for r in desk.sla(vip.id)}["first_response"]
    first_due = {r.name: r.due_at for r in desk.sla(queue[1].id)}["first_response"]
    assert vip_due is not None
    assert first_due is not None
    assert vip_due < first_due


def test_impact_and_urgency_decide_the_priority_through_the_matrix() -> None:
    desk, _ = make_desk()
    by_rule = open_ticket(desk, "所有人都登录不了", n=1)
    given = open_ticket(desk, "Login page slow", n=2, impact="medium", urgency="low")

    assert (by_rule.impact, by_rule.urgency, by_rule.priority) == ("high", "high", Priority.URGENT)
    assert (given.impact, given.urgency, given.priority) == ("medium", "low", Priority.LOW)
    [classified] = events(desk, given.id, EventType.CLASSIFIED)
    assert {"rule": "<matrix>", "action": "set_priority"}.items() <= classified.data["reasons"][
        0
    ].items()


def test_an_explicit_priority_wins_and_stays_after_reclassification() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "Everyone is locked out", priority="low")
    assert (ticket.priority, ticket.priority_explicit) == (Priority.LOW, True)
    [classified] = events(desk, ticket.id, EventType.CLASSIFIED)
    assert "<explicit-priority>" in [r["rule"] for r in classified.data["reasons"]]

    desk.set_priority(ticket.id, "normal", by="lead_wang", reason="one office only")
    desk.reply(ticket.id, "Still everyone, still locked out", by="c-1", role=Role.CUSTOMER)
    desk.update(ticket.id, by="agent_li", impact="high", urgency="high", add_tags=["login"])
    ticket = desk.get_ticket(ticket.id)
    assert (ticket.priority, ticket.priority_explicit) == (Priority.NORMAL, True)


def test_a_person_re_rating_impact_or_urgency_asks_the_matrix_again() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "Typo on the pricing page", "Everyone can see it.")
    # "outage" says high × high, then "minor" says low × low: the later rule wins.
    assert (ticket.impact, ticket.urgency, ticket.priority) == ("low", "low", Priority.LOW)

    ticket = desk.update(ticket.id, by="lead_wang", impact="high", urgency="high")
    assert (ticket.impact, ticket.urgency, ticket.priority) == ("high", "high", Priority.URGENT)
    ticket = desk.update(ticket.id, by="lead_wang", urgency="medium")
    assert (ticket.urgency, ticket.priority) == ("medium", Priority.HIGH)
    reasons = events(desk, ticket.id, EventType.CLASSIFIED)[-1].data["reasons"]
    kept = [r["detail"] for r in reasons if r["rule"] == "minor"]
    assert kept == ["impact=low (the ticket keeps high) urgency=low (the ticket keeps medium)"]


def test_the_classified_event_lists_rule_action_and_matched_words() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "VPN 无法连接", "从早上开始公司VPN就断网了")

    [classified] = events(desk, ticket.id, EventType.CLASSIFIED)
    assert classified.actor == "system"
    network = [r for r in classified.data["reasons"] if r["rule"] == "network"]
    assert [(r["action"], r["detail"]) for r in network] == [
        ("set_category", "network"),
        ("route_to", "netops"),
    ]
    assert network[0]["matched"] == ["vpn", "断网", "无法连接"]
    assert network[0]["fields"] == ["subject", "description"]
    assert classified.data["category"] == "network"
    assert classified.data["fingerprint"] == "network|vpn|断网|无法连接"
    assert (ticket.category, ticket.group) == ("network", "netops")


def test_reclassification_does_not_undo_an_agents_category() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "VPN invoice", "The VPN add-on on my invoice is wrong")
    assert ticket.category == "billing"  # the later rule wins on the first pass

    ticket = desk.update(ticket.id, by="agent_li", category="network")
    desk.reply(ticket.id, "And the refund for the VPN?", by="c-1", role=Role.CUSTOMER)
    ticket = desk.update(ticket.id, by="agent_li", fields={"contract": "A-17"})
    assert ticket.category == "network"

    other = open_ticket(desk, "VPN question", "What does the VPN add-on cost?", n=2)
    assert other.category == "network"
    other = desk.update(other.id, by="agent_li", category="billing")
    assert other.category == "billing"
    assert "finance" in other.tags  # rules read the agent's category, not their own


def test_a_flag_team_lead_rule_tells_the_lead_once() -> None:
    rules = [Rule("chargeback", Keywords(["chargeback", "拒付"]), [FlagTeamLead("chargeback")])]
    desk, _ = make_desk(rules)
    ticket = open_ticket(desk, "Chargeback filed", "My bank opened a chargeback.")
    desk.reply(ticket.id, "The chargeback is still open.", by="c-1", role=Role.CUSTOMER)

    [row] = lead_rows(desk, ticket.id, "team_lead_flag")
    assert "chargeback" in row.notification.subject
    assert row.notification.data["rules"] == ["chargeback"]


def test_rules_loaded_from_a_json_document_work_on_the_desk() -> None:
    document = {
        "rules": [
            {
                "name": "network",
                "when": {"keywords": ["vpn", "断网"]},
                "then": {"category": "network", "route_to": "netops", "tags": ["outage"]},
            },
            {
                "name": "vip",
                "when": {"vip": True},
                "then": {"route_to": "vip-desk", "raise_priority": "high"},
            },
        ],
        "sensitive_words": ["记者", "律师"],
    }
    classifier = Classifier.from_json(json.dumps(document, ensure_ascii=False))
    desk, _ = make_desk(triage=Triage(classifier))
    ticket = open_ticket(desk, "家里断网了", "请尽快处理", customer=Customer(id="c", tier="VIP"))

    assert (ticket.category, ticket.group, ticket.priority) == ("network", "vip-desk", "high")
    assert ticket.tags == {"outage"}
    lawyer = open_ticket(desk, "Cancel", "My lawyer will call", n=2)  # not in this list
    assert events(desk, lawyer.id, EventType.EARLY_WARNING) == []
    assert events(desk, open_ticket(desk, "找律师", n=3).id, EventType.EARLY_WARNING)


def test_triage_none_turns_it_all_off() -> None:
    desk, _ = make_desk(triage=None)
    ticket = open_ticket(desk, "VPN 无法连接，我要找记者", "Everyone, I will sue")

    assert (ticket.category, ticket.group, ticket.tags) == (None, None, frozenset())
    assert ticket.priority is Priority.NORMAL
    kinds = {event.type for event in desk.history(ticket.id)}
    assert not kinds & {EventType.CLASSIFIED, EventType.EARLY_WARNING, EventType.PRIORITY_CHANGED}
    assert pending(desk, "early_warning") == []


def test_a_desk_warns_on_the_built_in_words_by_default() -> None:
    desk, _ = scenario_desk(START)
    ticket = open_ticket(desk, "再不退款我就去消协投诉")
    assert "early-warning" in ticket.tags
    assert events(desk, ticket.id, EventType.CLASSIFIED)[0].data["category"] is None


def test_a_failed_command_leaves_no_classification_or_warning_behind() -> None:
    desk, _ = make_desk()
    ticket = open_ticket(desk, "Parcel late", "Ordered two weeks ago.")
    before, rows = desk.history(ticket.id), pending(desk)

    def write_then_fail(change: Change) -> None:
        change.message("Everyone here says: VPN down, lawyer next.", "c-1", Role.CUSTOMER,
                       public=True)  # fmt: skip
        assert change.events[-1].type == EventType.EARLY_WARNING  # it did run...
        raise RuntimeError("the agent's tool crashed")

    with pytest.raises(RuntimeError):
        desk.execute(ticket.id, write_then_fail)
    assert desk.history(ticket.id) == before  # ...and nothing of it was kept
    assert pending(desk) == rows
    assert desk.get_ticket(ticket.id).tags == frozenset()


def test_keep_lets_what_a_person_set_stand_in_the_classifier() -> None:
    classifier = Classifier(RULES)
    desk, _ = make_desk(triage=None)
    ticket = desk.update(
        open_ticket(desk, "Invoice typo").id, by="a", category="network", impact="high"
    )
    free = classifier.classify(ticket)
    kept = classifier.classify(ticket, keep=("category", "impact", "urgency"))

    assert (free.category, free.impact, free.urgency) == ("billing", "low", "low")
    assert (kept.category, kept.impact, kept.urgency) == ("network", "high", "low")
    assert "finance" in free.tags
    assert "finance" not in kept.tags
    with pytest.raises(ValidationError, match="keep"):
        classifier.classify(ticket, keep=("priority",))


# ----------------------------------------------------------------------------- mass incidents


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[Storage]:
    chosen: Storage = MemoryStore() if request.param == "memory" else SqliteStore(":memory:")
    yield chosen
    chosen.close()


def incident_desk(
    store: Storage, on_resolve: Literal["resolve", "note"] = "resolve"
) -> tuple[Desk, ManualClock]:
    policy = IncidentPolicy(threshold=5, window=timedelta(minutes=10), on_resolve=on_resolve)
    return make_desk(incidents=policy, store=store)


def report_outage(desk: Desk, clock: ManualClock, count: int, every: int = 1) -> list[Ticket]:
    reports = []
    for n in range(count):
        clock.advance(minutes=every)
        subject = "VPN 又连不上了" if n % 2 else "VPN down since this morning"
        reports.append(open_ticket(desk, subject, "Cannot reach the office network.", n=n))
    return reports


def incidents(desk: Desk) -> list[Ticket]:
    return [t for t in desk.tickets() if t.kind == "incident"]


def test_five_reports_within_ten_minutes_open_one_incident(store: Storage) -> None:
    desk, clock = incident_desk(store)
    reports = report_outage(desk, clock, 4)
    assert incidents(desk) == []

    fifth = report_outage(desk, clock, 1)[0]
    [incident] = incidents(desk)
    assert fifth.linked("parent") == (incident.id,)  # the command returns it linked
    reports = [desk.get_ticket(t.id) for t in [*reports, fifth]]
    assert all(t.linked("parent") == (incident.id,) for t in reports)
    assert set(incident.linked("child")) == {t.id for t in reports}
    assert (incident.category, incident.priority, incident.tags) == (
        "network",
        Priority.HIGH,
        {"mass-incident"},
    )
    [detected] = events(desk, incident.id, EventType.INCIDENT_DETECTED)
    assert detected.data["count"] == 5
    assert detected.data["examples"] == [t.id for t in reports]
    assert detected.data["fingerprint"] == "network|vpn"
    assert detected.data["window_seconds"] == 600
    [row] = lead_rows(desk, incident.id, "incident")
    assert row.notification.data["examples"] == detected.data["examples"]


def test_later_reports_are_linked_while_the_incident_is_open(store: Storage) -> None:
    desk, clock = incident_desk(store)
    report_outage(desk, clock, 5)
    clock.advance(hours=2)  # long after the window: the incident is still open
    late = report_outage(desk, clock, 2)

    [incident] = incidents(desk)
    assert all(t.linked("parent") == (incident.id,) for t in late)  # returned linked
    assert all(desk.get_ticket(t.id).linked("parent") == (incident.id,) for t in late)
    assert len(desk.get_ticket(incident.id).linked("child")) == 7
    assert len(events(desk, incident.id, EventType.INCIDENT_DETECTED)) == 1


def test_reports_outside_the_window_are_not_counted(store: Storage) -> None:
    desk, clock = incident_desk(store)
    early = report_outage(desk, clock, 4, every=4)  # 9:04, 9:08, 9:12, 9:16
    later = report_outage(desk, clock, 2, every=4)  # 9:20, 9:24: never five in ten minutes
    last = report_outage(desk, clock, 1, every=1)  # 9:25: four since 9:15
    assert incidents(desk) == []

    clock.advance(minutes=1)
    fifth = open_ticket(desk, "VPN down", "Same here", n=9)  # 9:26: five since 9:16
    [incident] = incidents(desk)
    [detected] = events(desk, incident.id, EventType.INCIDENT_DETECTED)
    assert detected.data["count"] == 5
    assert detected.data["examples"] == [early[-1].id, *(t.id for t in later), last[0].id, fifth.id]
    assert all(desk.get_ticket(t.id).linked("parent") == () for t in early[:3])


def test_resolving_the_incident_resolves_its_children(store: Storage) -> None:
    desk, clock = incident_desk(store)
    reports = report_outage(desk, clock, 5)
    desk.reply(reports[0].id, "We are on it.", by="agent_li")
    [incident] = incidents(desk)

    desk.resolve(incident.id, by="netops_chen", resolution="Core router replaced")
    for report in reports:
        child = desk.get_ticket(report.id)
        assert (child.status, child.resolution) == ("resolved", "Core router replaced")
        [resolved] = [
            e
            for e in events(desk, child.id, EventType.STATUS_CHANGED)
            if e.data["to"] == "resolved"
        ]
        assert (resolved.actor, resolved.data["incident_id"]) == ("system", incident.id)


def test_other_extensions_keep_their_writes_for_children_resolved_with_the_incident(
    store: Storage,
) -> None:
    feedback = FeedbackExtension(FeedbackPolicy(secret=b"0123456789abcdef"))
    policy = IncidentPolicy(threshold=5)
    desk, clock = make_desk(incidents=policy, store=store, extensions=feedback.extensions)
    report_outage(desk, clock, 4)
    clock.advance(minutes=1)
    vip = open_ticket(desk, "VPN down", customer=Customer(id="c-vip", tier="vip"))
    [incident] = incidents(desk)

    desk.resolve(incident.id, by="netops_chen", resolution="Router replaced")
    [scheduled] = events(desk, vip.id, EventType.FOLLOW_UP_SCHEDULED)  # a VIP gets a call-back
    with store.transaction() as uow:
        [record] = uow.find_records(FOLLOW_UP, ticket_id=vip.id)
    assert record.id == scheduled.data["follow_up_id"]


def test_with_on_resolve_note_the_children_get_a_note_and_stay_open(store: Storage) -> None:
    desk, clock = incident_desk(store, on_resolve="note")
    reports = report_outage(desk, clock, 5)
    [incident] = incidents(desk)

    desk.resolve(incident.id, by="netops_chen", resolution="Core router replaced")
    for report in reports:
        child = desk.get_ticket(report.id)
        assert child.status == "open"
        [note] = [m for m in child.messages if not m.public]
        assert note.body == f"Incident {incident.id} was resolved: Core router replaced"


def test_an_incident_can_form_again_after_the_first_is_resolved(store: Storage) -> None:
    desk, clock = incident_desk(store)
    report_outage(desk, clock, 5)
    [first] = incidents(desk)
    desk.resolve(first.id, by="netops_chen", resolution="Router replaced")

    again = report_outage(desk, clock, 4)  # the five old reports are still in the window
    assert [t.id for t in incidents(desk)] == [first.id]
    assert all(t.linked("parent") == () for t in again)
    again += report_outage(desk, clock, 1)
    [second] = [t for t in incidents(desk) if t.id != first.id]
    [detected] = events(desk, second.id, EventType.INCIDENT_DETECTED)
    assert (detected.data["count"], detected.data["examples"]) == (5, [t.id for t in again])
    assert desk.get_ticket(first.id).status == "resolved"


def test_a_cancelled_incident_stops_collecting_reports(store: Storage) -> None:
    desk, clock = incident_desk(store)
    reports = report_outage(desk, clock, 5)
    [incident] = incidents(desk)
    desk.cancel(incident.id, by="lead_wang", reason="false alarm: one office's cable")

    late = report_outage(desk, clock, 1)[0]
    assert desk.get_ticket(late.id).linked("parent") == ()
    assert all(desk.get_ticket(t.id).status == "open" for t in reports)  # nothing resolved


def test_a_reopened_incident_collects_reports_again(store: Storage) -> None:
    desk, clock = incident_desk(store)
    report_outage(desk, clock, 5)
    [incident] = incidents(desk)
    desk.resolve(incident.id, by="netops_chen", resolution="Router replaced")
    desk.reopen(incident.id, by="netops_chen", reason="down again")

    late = report_outage(desk, clock, 1)[0]
    assert desk.get_ticket(late.id).linked("parent") == (incident.id,)


def test_incident_tickets_are_not_classified_again(store: Storage) -> None:
    desk, clock = incident_desk(store)
    for n in range(5):
        clock.advance(minutes=1)
        open_ticket(desk, "VPN down, calling a journalist", n=n)
    [incident] = incidents(desk)
    desk.update(incident.id, by="lead_wang", add_tags=["major"])
    desk.reply(incident.id, "Status page updated", by="lead_wang")

    kinds = [event.type for event in desk.history(incident.id)]
    assert EventType.CLASSIFIED not in kinds
    assert EventType.EARLY_WARNING not in kinds


def test_the_incident_writes_share_the_commands_unit_of_work(
    store: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk, clock = incident_desk(store)
    report_outage(desk, clock, 4)
    with store.transaction() as uow:
        unit = type(uow)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(unit, "put_record", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            open_ticket(desk, "VPN down", n=5)
    assert len(desk.tickets()) == 4  # the fifth report, and its occurrence, are gone

    clock.advance(minutes=1)
    fifth = open_ticket(desk, "VPN down", n=5)
    [incident] = incidents(desk)
    assert events(desk, incident.id, EventType.INCIDENT_DETECTED)[0].data["count"] == 5
    assert fifth.linked("parent") == (incident.id,)


def test_a_follow_up_ticket_joins_the_open_incident() -> None:
    desk, clock = incident_desk(MemoryStore())
    old = open_ticket(desk, "Cannot log in", n=9)
    desk.resolve(old.id, by="agent_li", resolution="restarted the client")
    desk.close(old.id, by="agent_li")
    report_outage(desk, clock, 5)
    [incident] = incidents(desk)

    follow_up = desk.reply(old.id, "VPN down again!", by="c-9", role=Role.CUSTOMER)
    assert follow_up.id != old.id
    assert desk.get_ticket(follow_up.id).linked("parent") == (incident.id,)


def test_the_incident_policy_refuses_nonsense() -> None:
    with pytest.raises(ValidationError, match="threshold"):
        IncidentPolicy(threshold=1)
    with pytest.raises(ValidationError, match="window"):
        IncidentPolicy(window=timedelta(0))
    with pytest.raises(ValidationError, match="on_resolve"):
        IncidentPolicy(on_resolve="close")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Triage(5, 5), "classifier"),  # type: ignore[arg-type]
        (lambda: Triage(RULES), "classifier"),  # type: ignore[arg-type]
        (lambda: Triage(None, 5), "incidents"),  # type: ignore[arg-type]
        (lambda: Triage(Classifier([]), {"threshold": 5}), "incidents"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(threshold=None), "threshold"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(threshold="5"), "threshold"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(threshold=2.5), "threshold"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(threshold=True), "threshold"),
        (lambda: IncidentPolicy(window=5), "window"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(window=None), "window"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(on_resolve=["note"]), "on_resolve"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(examples=None), "examples"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(examples="3"), "examples"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(examples=1.5), "examples"),  # type: ignore[arg-type]
        (lambda: IncidentPolicy(examples=-1), "examples"),
    ],
)
def test_ill_typed_triage_arguments_are_refused_when_built(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        build()
    assert refused.value.field == field


def test_well_typed_triage_arguments_build_as_before() -> None:
    policy = IncidentPolicy(threshold=2, window=pendulum.duration(minutes=5), examples=0)
    triage = Triage(incidents=policy)

    assert policy.window == timedelta(minutes=5)
    assert triage.incidents is policy
    assert triage.classifier.rules == ()
    assert Triage(None, None).incidents is None


def test_a_rule_given_fingerprint_groups_different_words() -> None:
    rules = [
        Rule("vpn", Keywords(["vpn", "无法连接"]), [SetFingerprint("outage-vpn")]),
        Rule("mail", Keywords(["outlook"]), [SetFingerprint("outage-mail")]),
    ]
    desk, clock = make_desk(rules, incidents=IncidentPolicy(threshold=3))
    for n, subject in enumerate(["VPN down", "无法连接公司网络", "Outlook down", "vpn broken"]):
        clock.advance(minutes=1)
        open_ticket(desk, subject, n=n)
    [incident] = incidents(desk)
    assert incident.fields["fingerprint"] == "outage-vpn"
    assert len(incident.linked("child")) == 3


# -------------------------------------------------------------------------------- the example


def test_the_triage_example_tells_its_morning(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    for needle in ("记者", "Early warning", "Mass incident", "vip-desk", "resolved"):
        assert needle in out, needle
