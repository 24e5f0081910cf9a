"""Triage: a Monday morning at a support desk in Shanghai.

Tickets come in, in Chinese and English. The desk's rules sort them (billing, network), a VIP's
request jumps the queue, a customer threatening to call a journalist (记者) warns the team lead
at once, and five reports of the same VPN outage within ten minutes open one incident ticket
that the reports are linked to. When the network team resolves the incident, the reports are
resolved with it.

Each classification is printed with its reasons, read back from the ``Classified`` events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from supportflow import Customer, Desk, EventType, ManualClock, Ticket
from supportflow.classify import (
    AddTags,
    Classifier,
    IsVip,
    Keywords,
    RaisePriority,
    RouteTo,
    Rule,
    SetCategory,
    SetFingerprint,
    SetImpactUrgency,
)
from supportflow.extensions import IncidentPolicy, Triage
from supportflow.storage import MemoryStore, OutboxStatus

SHANGHAI = ZoneInfo("Asia/Shanghai")

RULES = Classifier(
    [
        Rule(
            "vpn-outage",
            Keywords(["vpn"]) & Keywords(["无法连接", "连不上", "down", "cannot connect"]),
            [
                SetCategory("network"),
                SetFingerprint("outage-vpn"),  # whatever words each report uses
                SetImpactUrgency(impact="medium", urgency="high"),
                RouteTo("netops"),
            ],
        ),
        Rule("billing", Keywords(["发票", "退款", "invoice", "refund"]), [SetCategory("billing")]),
        Rule("vip", IsVip(), [RouteTo("vip-desk"), RaisePriority("urgent"), AddTags("vip")]),
    ]
)

MORNING = [  # minutes after 9:00, customer, channel, subject, body
    (-8, Customer(id="c-101", name="李娜"), "email", "发票抬头开错了", "请帮忙重开发票，谢谢。"),
    (-5, Customer(id="c-102", name="王强"), "phone", "退款三周还没到账",
     "客服一直说在处理。今天再不解决，我就找记者曝光。"),
    (1, Customer(id="c-201", name="陈静"), "chat", "VPN 无法连接", "从早上开始就连不上公司网络。"),
    (2, Customer(id="c-202", name="Tom Baker"), "email", "VPN down", "Cannot reach the intranet."),
    (3, Customer(id="c-203", name="刘洋"), "chat", "VPN 连不上", "提示认证服务器超时。"),
    (4, Customer(id="c-204", name="Priya Nair"), "chat", "VPN down for our whole team",
     "Nobody in the Pudong office can connect."),
    (5, Customer(id="c-205", name="赵敏"), "email", "VPN 无法连接了", "重启电脑也没用。"),
    (6, Customer(id="c-301", name="Ms Zhou", tier="vip"), "phone", "Invoice needed today",
     "Our auditors need the Q1 invoice before noon."),
    (8, Customer(id="c-206", name="Mark Li"), "email", "VPN cannot connect", "Still down here."),
]  # fmt: skip


def show_classification(desk: Desk, ticket: Ticket) -> None:
    """One line per rule that acted: the words it matched, where, and what it did."""
    for event in desk.history(ticket.id):
        if event.type != EventType.CLASSIFIED:
            continue
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for reason in event.data["reasons"]:
            by_rule.setdefault(reason["rule"], []).append(reason)
        for rule, reasons in by_rule.items():
            first = reasons[0]
            matched = f" [{', '.join(first['matched'])}]" if first["matched"] else ""
            where = f" ({', '.join(first['fields'])})" if first["fields"] else ""
            did = "; ".join(f"{r['action']} {r['detail']}".strip() for r in reasons)
            print(f"        {rule}{matched}{where}: {did}")
        if event.data["fingerprint"]:
            print(f"        fingerprint {event.data['fingerprint']}")


def main() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 8, 50, tzinfo=SHANGHAI))
    triage = Triage(RULES, IncidentPolicy(threshold=5, on_resolve="resolve"))
    desk = Desk(store=MemoryStore(), clock=clock, triage=triage)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI)

    print("Monday morning, the desk opens\n")
    for minutes, customer, channel, subject, body in MORNING:
        clock.set(start + timedelta(minutes=minutes))
        ticket = desk.open_ticket(subject=subject, body=body, customer=customer, channel=channel)
        at = clock.now().astimezone(SHANGHAI).strftime("%H:%M")
        print(f"{at}  #{ticket.number} {subject}  ({customer.name}, {channel})")
        print(
            f"        → category {ticket.category or '-'}, priority {ticket.priority.value}, "
            f"group {ticket.group or '-'}, tags {', '.join(sorted(ticket.tags)) or '-'}"
        )
        show_classification(desk, ticket)
        for event in desk.history(ticket.id):
            if event.type == EventType.EARLY_WARNING:
                print(f"        ! Early warning: {', '.join(event.data['words'])}")
        for parent_id in ticket.linked("parent"):  # the desk returns the report already linked
            parent = desk.get_ticket(parent_id)
            print(f"        ↳ part of #{parent.number} {parent.subject}")

    with desk.store.transaction() as uow:
        outbox = uow.list_outbox(OutboxStatus.PENDING, limit=1000)
    print("\nThe team lead's inbox")
    for row in outbox:
        if any(r.role.value == "team_lead" for r in row.notification.recipients):
            print(f"  {row.notification.kind:14} {row.notification.subject}")

    [incident] = [t for t in desk.tickets() if t.kind == "incident"]
    [detected] = [e for e in desk.history(incident.id) if e.type == EventType.INCIDENT_DETECTED]
    numbers = {t.id: t.number for t in desk.tickets()}
    print(f"\n{incident.subject} (#{incident.number}, priority {incident.priority.value})")
    print(
        f"  {detected.data['count']} reports within {detected.data['window_seconds'] / 60:.0f} "
        f"minutes, fingerprint {detected.data['fingerprint']}"
    )
    print(f"  linked reports: {', '.join(f'#{numbers[c]}' for c in incident.linked('child'))}")

    print("\nThe queue, most urgent first")
    queue = [t for t in desk.tickets() if t.kind != "incident"]
    for ticket in sorted(queue, key=lambda t: (-t.priority.rank, t.created_at)):
        parent = (
            f", part of #{numbers[ticket.linked('parent')[0]]}" if ticket.linked("parent") else ""
        )
        print(
            f"  #{ticket.number:<2} {ticket.priority.value:7} {ticket.group or '-':9} "
            f"{ticket.subject}{parent}"
        )

    clock.advance(minutes=35)
    fix = "认证服务器证书已更新 / auth server certificate renewed"
    desk.resolve(incident.id, by="netops_chen", resolution=fix)
    print(f"\n{clock.now().astimezone(SHANGHAI):%H:%M}  netops resolve #{incident.number}")
    for child_id in incident.linked("child"):
        child = desk.get_ticket(child_id)
        print(f"  #{child.number} {child.status}: {child.resolution}")
    assert all(desk.get_ticket(c).status == "resolved" for c in incident.linked("child"))


if __name__ == "__main__":
    main()
