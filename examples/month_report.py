"""A month of a small support centre, then the manager's monthly report.

Four agents in Shanghai work March 2026: a few hundred requests by e-mail, chat, phone and web
form, some waiting on the customer, a few reopened, complaints investigated and called back,
surveys answered, escalations when a case drags on. Everything runs on a manual clock, so the
month takes a few seconds. The report is printed as Markdown.

Run it with ``python examples/month_report.py``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from supportflow import (
    BusinessCalendar,
    Customer,
    Desk,
    EscalationLevel,
    EscalationPolicy,
    IdleChatPolicy,
    default_sla_policies,
)
from supportflow.extensions.feedback import FeedbackExtension
from supportflow.feedback import FeedbackPolicy
from supportflow.services import FeedbackService, monthly_report
from supportflow.storage import OutboxStatus
from supportflow.testing import ManualClock, scenario_desk

SHANGHAI = ZoneInfo("Asia/Shanghai")
AGENTS = ("agent_li", "agent_wang", "agent_zhang", "agent_chen")
CHANNELS = ("email", "email", "email", "chat", "chat", "phone", "phone", "web")
SUBJECTS = ("Password reset mail never arrives", "Invoice shows the wrong amount",
            "App crashes on start", "Refund not received", "Cannot add a second user",
            "Export to Excel is slow", "Delivery is late")  # fmt: skip


class Month:
    """Plays planned actions in time order, firing due timers between them."""

    def __init__(self, desk: Desk, clock: ManualClock, feedback: FeedbackService) -> None:
        self.desk, self.clock, self.feedback = desk, clock, feedback
        self.plan: list[tuple[datetime, int, Callable[[], object]]] = []
        self.order = itertools.count()

    def at(self, when: datetime, action: Callable[[], object]) -> None:
        heapq.heappush(self.plan, (when, next(self.order), action))

    def run_until(self, end: datetime) -> None:
        while self.plan and self.plan[0][0] < end:
            when, _, action = heapq.heappop(self.plan)
            self.catch_up(when)
            self.clock.set(when)
            action()
        self.catch_up(end)
        self.clock.set(end)

    def catch_up(self, until: datetime) -> None:
        while (due := self.desk.next_due()) is not None and due <= until:
            self.clock.set(max(due, self.clock.now()))
            self.desk.run_due()

    def survey_token(self, ticket_id: str) -> str | None:
        with self.desk.store.transaction() as uow:
            for entry in uow.list_outbox(OutboxStatus.PENDING, limit=100_000):
                note = entry.notification
                if note.kind == "survey" and note.ticket_id == ticket_id:
                    return str(note.data["token"])
        return None


def plan_ticket(month: Month, rng: random.Random, opened: datetime, number: int) -> None:
    desk, feedback = month.desk, month.feedback
    channel = rng.choice(CHANNELS)
    agent = rng.choice(AGENTS)
    customer = Customer(
        id=f"c-{number}",
        name=f"Customer {number}",
        contacts={"email": f"c{number}@example.com"},
        tier="vip" if rng.random() < 0.05 else "standard",
    )
    complaint = rng.random() < 0.06
    ids: dict[str, str] = {}

    def open_ticket() -> None:
        ids["id"] = desk.open_ticket(
            subject=rng.choice(SUBJECTS),
            body="...",
            customer=customer,
            channel=channel,
            kind="complaint" if complaint else "request",
            assignee=agent,
        ).id

    month.at(opened, open_ticket)
    chat = channel == "chat"
    t = opened + timedelta(minutes=rng.uniform(0.5, 4) if chat else rng.uniform(10, 300))
    month.at(t, lambda: desk.reply(ids["id"], "Thanks, looking into it.", by=agent))
    if not chat and rng.random() < 0.3:  # we need something from the customer first
        t += timedelta(minutes=rng.uniform(2, 30))
        month.at(t, lambda: desk.fire(ids["id"], "wait_on_customer", by=agent))
        t += timedelta(hours=rng.uniform(1, 30))
        month.at(t, lambda: desk.reply(ids["id"], "Here it is.", by=customer.id, role="customer"))
        t += timedelta(minutes=rng.uniform(10, 240))
        month.at(t, lambda: desk.reply(ids["id"], "Got it, fixing.", by=agent))
    t += timedelta(minutes=rng.uniform(5, 90)) if chat else timedelta(hours=rng.uniform(0.2, 20))
    month.at(t, lambda: desk.resolve(ids["id"], by=agent, resolution="Fixed"))
    if rng.random() < 0.08:  # it comes back
        t += timedelta(hours=rng.uniform(2, 40))
        month.at(t, lambda: desk.reply(ids["id"], "Broken again.", by=customer.id,
                                       role="customer"))  # fmt: skip
        t += timedelta(minutes=rng.uniform(20, 300))
        month.at(t, lambda: desk.reply(ids["id"], "Sorry, fixed now.", by=agent))
        t += timedelta(minutes=rng.uniform(5, 60))
        month.at(t, lambda: desk.resolve(ids["id"], by=agent, resolution="Fixed for good"))
    if complaint:
        month.at(t + timedelta(hours=2), lambda: feedback.record_complaint(
            ids["id"], root_cause="Release 4.2 broke the mailer", responsibility="R&D",
            remedy="One month free", by="team_lead"))  # fmt: skip
    if rng.random() < 0.5:  # half the customers answer the survey
        answer_at = t + timedelta(hours=rng.uniform(2, 48))
        csat = rng.choices((5, 4, 3, 2, 1), weights=(50, 25, 12, 8, 5))[0]

        def answer() -> None:
            token = month.survey_token(ids["id"])
            if token is not None:
                feedback.respond(token, csat=csat, nps=min(10, csat * 2 + rng.randint(-1, 0)),
                                 ces=rng.randint(1, 7 - csat // 2))  # fmt: skip

        month.at(answer_at, answer)
    # Whoever has a follow-up due calls the customer a day and a half or more after the resolve;
    # a few customers never pick up.
    call_at = t + timedelta(days=rng.uniform(1.5, 4))
    never_answers = rng.random() < 0.1

    def call() -> None:
        ticket = desk.get_ticket(ids["id"])
        if not ticket.state.get("followup_id"):
            return
        reached = not never_answers and rng.random() > 0.25
        outcome = "reached_satisfied" if reached else "not_reachable"
        feedback.complete_follow_up(ids["id"], outcome, by=agent)
        if outcome == "not_reachable":
            month.at(month.clock.now() + timedelta(hours=5), call)

    month.at(call_at, call)


def main() -> None:
    office = BusinessCalendar(
        "Asia/Shanghai", {day: [("09:00", "12:00"), ("13:00", "18:00")] for day in range(5)}
    )
    feedback = FeedbackExtension(
        FeedbackPolicy(secret=b"example-survey-secret-2026", survey_delay=timedelta(hours=1),
                       follow_up_delay=timedelta(days=1))
    )  # fmt: skip
    start = datetime(2026, 3, 1, tzinfo=SHANGHAI)
    desk, clock = scenario_desk(
        start,
        sla=default_sla_policies(office),
        escalation=[EscalationPolicy("team lead", calendar=office, levels=[EscalationLevel(
            "lead", after=timedelta(hours=12), notify=["team_lead"])])],
        idle_chat=IdleChatPolicy(enabled=False),  # our chats end when the agent resolves them
        extensions=feedback.extensions,
    )  # fmt: skip
    month = Month(desk, clock, FeedbackService(desk, feedback))
    rng = random.Random(2026)
    number = 0
    for offset in range(31):
        day = date(2026, 3, 1) + timedelta(days=offset)
        weekday = day.weekday() < 5
        for _ in range(rng.randint(10, 15) if weekday else rng.randint(1, 4)):
            number += 1
            hour = rng.uniform(9, 18) if weekday else rng.uniform(10, 16)
            opened = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI) + timedelta(hours=hour)
            plan_ticket(month, rng, opened, number)
    month.run_until(datetime(2026, 4, 1, tzinfo=SHANGHAI))
    report = monthly_report(desk, 2026, 3, "Asia/Shanghai", group_by="channel", calendar=office)
    print(report.to_markdown())


if __name__ == "__main__":
    main()
