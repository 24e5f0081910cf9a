"""Feedback stories: surveys, follow-up calls (回访), complaints, the voice of the customer and
knowledge links, through a real Desk with the FeedbackExtension."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from supportflow import Customer, Desk, IdleChatPolicy, Ticket
from supportflow.errors import ConcurrencyConflict, ValidationError
from supportflow.events import EventType
from supportflow.extensions import Change
from supportflow.extensions.feedback import FeedbackExtension
from supportflow.feedback import (
    ComplaintIncomplete,
    FeedbackPolicy,
    RejectReason,
    SurveyRejected,
    SurveyScores,
    complaint_missing,
    follow_up_reasons,
    is_merged,
    read_survey_token,
    sign_survey_token,
    survey_wanted,
)
from supportflow.model import Notification, RecipientRole
from supportflow.services import FeedbackService
from supportflow.storage import MemoryStore, OutboxStatus
from supportflow.testing import scenario_desk

SECRET = b"feedback-test-secret-0123456789"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday morning


class Centre:
    """A desk with the feedback rules, its clock and the feedback service."""

    def __init__(self, desk_options: dict[str, Any] | None = None, **policy: Any) -> None:
        self.extension = FeedbackExtension(FeedbackPolicy(secret=SECRET, **policy))
        options: dict[str, Any] = {"idle_chat": IdleChatPolicy(enabled=False)}
        options.update(desk_options or {})
        self.desk, self.clock = scenario_desk(T0, extensions=self.extension.extensions, **options)
        self.service = FeedbackService(self.desk, self.extension)

    def open(
        self,
        *,
        kind: str = "request",
        tier: str = "standard",
        channel: str = "email",
        name: str = "Wang Fang",
        customer_id: str = "c-17",
    ) -> Ticket:
        return self.desk.open_ticket(
            subject="Password reset mail never arrives",
            body="...",
            customer=Customer(
                id=customer_id, name=name, tier=tier, contacts={"email": f"{customer_id}@ex.com"}
            ),
            channel=channel,
            kind=kind,
            assignee="agent_li",
        )

    def resolved(self, **options: Any) -> Ticket:
        ticket = self.open(**options)
        self.desk.reply(ticket.id, "Could you look in your spam folder?", by="agent_li")
        return self.desk.resolve(ticket.id, by="agent_li", resolution="Spam filter")

    def later(self, **amount: float) -> None:
        self.clock.advance(**amount)
        self.desk.run_due()

    def outbox(self, kind: str, ticket_id: str | None = None) -> list[Notification]:
        with self.desk.store.transaction() as uow:
            entries = uow.list_outbox(OutboxStatus.PENDING, limit=10_000)
        return [
            e.notification
            for e in entries
            if e.notification.kind == kind
            and (ticket_id is None or e.notification.ticket_id == ticket_id)
        ]

    def token(self, ticket_id: str) -> str:
        [survey] = self.outbox("survey", ticket_id)
        return str(survey.data["token"])

    def types(self, ticket_id: str) -> list[str]:
        return [event.type for event in self.desk.history(ticket_id)]

    def events(self, ticket_id: str, kind: str) -> list[dict[str, Any]]:
        return [dict(e.data) for e in self.desk.history(ticket_id) if e.type == kind]


@pytest.fixture
def centre() -> Centre:
    return Centre(follow_up_delay=timedelta(hours=4))


# -- surveys ------------------------------------------------------------------------------------
def test_resolving_schedules_a_survey_sent_an_hour_later(centre: Centre) -> None:
    ticket = centre.resolved()
    [scheduled] = centre.events(ticket.id, EventType.SURVEY_SCHEDULED)
    assert scheduled["due_at"] == (T0 + timedelta(hours=1)).isoformat()
    with centre.desk.store.transaction() as uow:
        assert "survey:send" in [t.key for t in uow.timers(ticket.id)]
    centre.later(minutes=59)
    assert centre.outbox("survey") == []
    centre.later(minutes=1)
    [sent] = centre.events(ticket.id, EventType.SURVEY_SENT)
    assert sent["expires_at"] == (T0 + timedelta(hours=1, days=14)).isoformat()
    [note] = centre.outbox("survey", ticket.id)
    assert note.recipients[0].role is RecipientRole.CUSTOMER
    assert note.recipients[0].address == "c-17@ex.com"
    assert str(note.data["token"]) in note.body
    claims = read_survey_token(SECRET, str(note.data["token"]), T0 + timedelta(hours=2))
    assert (claims.ticket_id, claims.survey_id) == (ticket.id, scheduled["survey_id"])


def test_survey_sent_by_a_later_command_writes_its_record(centre: Centre) -> None:
    ticket = centre.resolved()
    centre.clock.advance(hours=2)
    centre.desk.add_note(ticket.id, "customer called, all good", by="agent_li")  # catches up
    [survey] = centre.service.surveys(ticket.id)
    assert survey.status == "sent"
    assert survey.data["channel"] == "email"
    assert survey.data["expires_at"] == (T0 + timedelta(hours=1, days=14)).isoformat()


def test_survey_sent_by_run_due_writes_its_record(centre: Centre) -> None:
    ticket = centre.resolved()
    centre.later(hours=2)
    assert [s.status for s in centre.service.surveys(ticket.id)] == ["sent"]


def test_no_survey_for_a_cancelled_ticket(centre: Centre) -> None:
    ticket = centre.open()
    centre.desk.cancel(ticket.id, by="agent_li", reason="duplicate of #3")
    centre.later(days=1)
    assert EventType.SURVEY_SCHEDULED not in centre.types(ticket.id)
    assert centre.outbox("survey") == []


def test_no_survey_for_a_merged_ticket(centre: Centre) -> None:
    tagged = centre.open()
    centre.desk.update(tagged.id, by="agent_li", add_tags=["merged"])
    centre.desk.resolve(tagged.id, by="agent_li")
    linked = centre.resolved()  # merged after the survey was scheduled
    other = centre.open(customer_id="c-18")
    centre.desk.link(linked.id, other.id, kind="merged_into", by="agent_li")
    centre.later(hours=2)
    assert EventType.SURVEY_SCHEDULED not in centre.types(tagged.id)
    [cancelled] = centre.events(linked.id, EventType.SURVEY_CANCELLED)
    assert cancelled["reason"] == "merged"
    assert centre.outbox("survey") == []


def test_reopening_before_the_survey_goes_out_cancels_it(centre: Centre) -> None:
    ticket = centre.resolved()
    centre.clock.advance(minutes=30)
    centre.desk.reply(ticket.id, "Still nothing", by="c-17", role="customer")
    centre.later(hours=2)
    [cancelled] = centre.events(ticket.id, EventType.SURVEY_CANCELLED)
    assert cancelled["reason"] == "reopened"
    assert centre.outbox("survey") == []


def test_surveys_only_for_the_chosen_channels() -> None:
    centre = Centre(survey_channels=["chat", "web"])
    email = centre.resolved(channel="email")
    chat = centre.resolved(channel="chat", customer_id="c-18")
    centre.later(hours=2)
    assert centre.outbox("survey", email.id) == []
    assert len(centre.outbox("survey", chat.id)) == 1


def test_a_survey_answer_is_recorded_once(centre: Centre) -> None:
    ticket = centre.resolved()
    centre.later(hours=2)
    token = centre.token(ticket.id)
    record = centre.service.respond(token, csat=5, nps=9, ces=2, comment="Quick and kind")
    assert record.status == "answered"
    assert (record.data["csat"], record.data["nps"], record.data["ces"]) == (5, 9, 2)
    assert record.data["comment"] == "Quick and kind"
    assert record.ticket_id == ticket.id
    [answer] = centre.events(ticket.id, EventType.FEEDBACK_RECORDED)
    assert (answer["csat"], answer["nps"], answer["agent"], answer["channel"]) == (
        5,
        9,
        "agent_li",
        "email",
    )
    assert centre.desk.history(ticket.id)[-1].actor == "c-17"
    before = centre.types(ticket.id)
    with pytest.raises(SurveyRejected) as second:
        centre.service.respond(token, csat=1)
    assert second.value.reason is RejectReason.ALREADY_ANSWERED
    assert centre.types(ticket.id) == before
    assert [r.data["csat"] for r in centre.service.surveys(ticket.id)] == [5]


def _payload(token: str) -> dict[str, Any]:
    text = token.split(".")[0]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return result


def _with_payload(token: str, payload: dict[str, Any]) -> str:
    raw = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{raw}.{token.split('.')[1]}"


def test_forged_tampered_and_malformed_tokens_are_rejected(centre: Centre) -> None:
    ticket = centre.resolved()
    other = centre.resolved(customer_id="c-18")
    centre.later(hours=2)
    token = centre.token(ticket.id)
    claims = _payload(token)
    forged = sign_survey_token(b"not-our-secret-at-all!", claims["s"], claims["t"],
                               datetime.fromtimestamp(claims["e"], timezone.utc))  # fmt: skip
    cases = {
        forged: RejectReason.BAD_SIGNATURE,
        _with_payload(token, {**claims, "t": other.id}): RejectReason.BAD_SIGNATURE,
        _with_payload(
            token, {**claims, "e": claims["e"] + 86_400 * 30}
        ): RejectReason.BAD_SIGNATURE,
        "hello": RejectReason.MALFORMED,
        token[:-3] + "!!!": RejectReason.MALFORMED,
    }
    for bad, reason in cases.items():
        with pytest.raises(SurveyRejected) as rejected:
            centre.service.respond(bad, csat=1)
        assert rejected.value.reason is reason, bad
    # A validly signed token for a survey the ticket never sent.
    unknown = sign_survey_token(SECRET, "s-unknown", ticket.id, T0 + timedelta(days=3))
    with pytest.raises(SurveyRejected) as rejected:
        centre.service.respond(unknown, csat=1)
    assert rejected.value.reason is RejectReason.UNKNOWN_SURVEY
    assert "did not send survey s-unknown" in str(rejected.value)
    assert centre.events(ticket.id, EventType.FEEDBACK_RECORDED) == []


def test_an_expired_survey_is_rejected(centre: Centre) -> None:
    ticket = centre.resolved()
    centre.later(hours=2)
    token = centre.token(ticket.id)
    centre.clock.advance(days=14)
    with pytest.raises(SurveyRejected, match=r"\(expired\)") as rejected:
        centre.service.respond(token, csat=4)
    assert rejected.value.reason is RejectReason.EXPIRED
    assert centre.events(ticket.id, EventType.FEEDBACK_RECORDED) == []


@pytest.mark.parametrize(
    ("answer", "field"),
    [({"csat": 0}, "csat"), ({"csat": 6}, "csat"), ({"nps": -1}, "nps"), ({"nps": 11}, "nps"),
     ({"ces": 8}, "ces"), ({"ces": 0}, "ces"), ({"csat": True}, "csat"), ({"csat": 4.5}, "csat"),
     ({}, "csat")],
)  # fmt: skip
def test_scores_out_of_range_name_the_field(
    centre: Centre, answer: dict[str, Any], field: str
) -> None:
    ticket = centre.resolved()
    centre.later(hours=2)
    with pytest.raises(ValidationError) as invalid:
        centre.service.respond(centre.token(ticket.id), **answer)
    assert invalid.value.field == field
    assert centre.service.respond(centre.token(ticket.id), nps=10).data["nps"] == 10


# -- follow-ups ---------------------------------------------------------------------------------
def test_a_resolved_complaint_gets_a_follow_up_call(centre: Centre) -> None:
    ticket = centre.resolved(kind="complaint")
    [scheduled] = centre.events(ticket.id, EventType.FOLLOW_UP_SCHEDULED)
    assert scheduled["reasons"] == ["complaint"]
    assert scheduled["assignee"] == "agent_li"
    assert scheduled["due_at"] == (T0 + timedelta(hours=4)).isoformat()
    [record] = centre.service.follow_ups(ticket.id)
    assert (record.status, record.data["due_at"]) == ("scheduled", scheduled["due_at"])
    centre.later(hours=3)
    assert centre.outbox("follow_up") == []
    centre.later(hours=1)
    [call] = centre.outbox("follow_up", ticket.id)
    assert (call.recipients[0].role, call.recipients[0].address) == (RecipientRole.AGENT,
                                                                     "agent_li")  # fmt: skip
    assert "complaint" in call.body
    done = centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")
    assert (done.status, done.data["outcome"]) == ("completed", "reached_satisfied")
    assert [a["outcome"] for a in done.data["attempts"]] == ["reached_satisfied"]
    [completed] = centre.events(ticket.id, EventType.FOLLOW_UP_COMPLETED)
    assert (completed["attempts"], completed["channel"]) == (1, "email")


def test_a_low_csat_gets_a_follow_up_and_a_fair_one_does_not(centre: Centre) -> None:
    low = centre.resolved()
    fair = centre.resolved(customer_id="c-18")
    centre.later(hours=2)
    centre.service.respond(centre.token(low.id), csat=2)
    centre.service.respond(centre.token(fair.id), csat=3)
    [scheduled] = centre.events(low.id, EventType.FOLLOW_UP_SCHEDULED)
    assert scheduled["reasons"] == ["low_csat"]
    assert centre.events(fair.id, EventType.FOLLOW_UP_SCHEDULED) == []


def test_vip_customers_get_a_follow_up(centre: Centre) -> None:
    vip = centre.resolved(tier="vip", kind="complaint")
    [scheduled] = centre.events(vip.id, EventType.FOLLOW_UP_SCHEDULED)
    assert scheduled["reasons"] == ["complaint", "vip"]
    regular = centre.resolved(customer_id="c-18")
    assert centre.events(regular.id, EventType.FOLLOW_UP_SCHEDULED) == []
    # A low CSAT later adds its reason to the pending call rather than booking a second one.
    centre.later(hours=2)
    centre.service.respond(centre.token(vip.id), csat=1)
    [record] = centre.service.follow_ups(vip.id)
    assert record.data["reasons"] == ["complaint", "vip", "low_csat"]


def test_an_unreachable_customer_is_tried_again_then_the_failure_recorded() -> None:
    centre = Centre(follow_up_retries=2, follow_up_retry_interval=timedelta(hours=3),
                    follow_up_delay=timedelta(hours=1))  # fmt: skip
    ticket = centre.resolved(tier="vip")
    centre.later(hours=1)
    assert len(centre.outbox("follow_up", ticket.id)) == 1
    for attempt in (1, 2):
        record = centre.service.complete_follow_up(ticket.id, "not_reachable", by="agent_li")
        assert record.status == "scheduled"
        retry_at = centre.clock.now() + timedelta(hours=3)
        assert record.data["due_at"] == retry_at.isoformat()
        [*_, tried] = centre.events(ticket.id, EventType.FOLLOW_UP_ATTEMPTED)
        assert (tried["attempt"], tried["next_due_at"]) == (attempt, retry_at.isoformat())
        centre.later(hours=3)  # the agent is told again
        assert len(centre.outbox("follow_up", ticket.id)) == 1 + attempt
    record = centre.service.complete_follow_up(ticket.id, "not_reachable", by="agent_li")
    assert (record.status, len(record.data["attempts"])) == ("failed", 3)
    [failed] = centre.events(ticket.id, EventType.FOLLOW_UP_FAILED)
    assert failed["attempts"] == 3
    [lead] = [n for n in centre.outbox("follow_up", ticket.id) if "failed" in n.subject]
    assert lead.recipients[0].role is RecipientRole.TEAM_LEAD
    with centre.desk.store.transaction() as uow:
        assert "followup:due" not in [t.key for t in uow.timers(ticket.id)]
    with pytest.raises(ValidationError, match="a ticket with a follow-up scheduled"):
        centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")


def test_an_unhappy_customer_reopens_the_ticket(centre: Centre) -> None:
    ticket = centre.resolved(tier="vip")
    centre.service.complete_follow_up(ticket.id, "reached_not_satisfied", by="agent_li",
                                      note="still gets no mail")  # fmt: skip
    assert centre.desk.get_ticket(ticket.id).status == "in_progress"
    reopened = centre.events(ticket.id, EventType.STATUS_CHANGED)[-1]
    assert (reopened["trigger"], reopened["reason"]) == (
        "reopen",
        "customer not satisfied at follow-up",
    )


@pytest.mark.parametrize("policy", ["reopen", "new_ticket"])
def test_an_unhappy_customer_gets_a_linked_ticket(policy: str) -> None:
    centre = Centre(not_satisfied=policy)
    ticket = centre.resolved(tier="vip")
    if policy == "reopen":  # a closed ticket cannot be reopened: it is followed instead
        centre.desk.close(ticket.id, by="agent_li")
    centre.service.complete_follow_up(ticket.id, "reached_not_satisfied", by="agent_li",
                                      note="still gets no mail")  # fmt: skip
    old = centre.desk.get_ticket(ticket.id)
    [follow_id] = old.linked("followed_by")
    follow = centre.desk.get_ticket(follow_id)
    assert follow.linked("follows") == (ticket.id,)
    assert (follow.customer.id, follow.status) == ("c-17", "open")
    assert follow.description == "still gets no mail"
    assert old.status == ("closed" if policy == "reopen" else "resolved")


# -- complaints ---------------------------------------------------------------------------------
def test_a_complaint_cannot_close_until_everything_is_recorded(centre: Centre) -> None:
    ticket = centre.resolved(kind="complaint")
    before = centre.types(ticket.id)
    with pytest.raises(ComplaintIncomplete) as incomplete:
        centre.desk.close(ticket.id, by="agent_li")
    assert incomplete.value.missing == (
        "root cause",
        "responsibility",
        "remedy offered",
        "a completed follow-up",
    )
    assert "missing: root cause, responsibility, remedy offered, a completed follow-up" in str(
        incomplete.value
    )
    assert isinstance(incomplete.value, ValidationError)
    assert centre.types(ticket.id) == before
    assert centre.desk.get_ticket(ticket.id).status == "resolved"
    centre.service.record_complaint(ticket.id, root_cause="Mail relay blacklisted",
                                    responsibility="IT operations",
                                    remedy="One month free", by="team_lead")  # fmt: skip
    assert centre.service.complaint_missing(ticket.id) == ["a completed follow-up"]
    with pytest.raises(ComplaintIncomplete, match=r"missing: a completed follow-up$"):
        centre.desk.close(ticket.id, by="agent_li")
    centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")
    assert centre.desk.close(ticket.id, by="agent_li").status == "closed"


def test_a_complaint_waits_for_completion_before_closing_by_itself(centre: Centre) -> None:
    ticket = centre.resolved(kind="complaint")
    centre.later(days=8)
    assert centre.desk.get_ticket(ticket.id).status == "resolved"  # auto-close held
    centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")
    centre.service.record_complaint(ticket.id, root_cause="Relay", responsibility="IT",
                                    remedy="Apology", by="team_lead")  # fmt: skip
    centre.later(days=6)
    assert centre.desk.get_ticket(ticket.id).status == "resolved"
    centre.later(days=1)
    assert centre.desk.get_ticket(ticket.id).status == "closed"


def test_a_complaint_closed_by_the_system_is_flagged_not_blocked() -> None:
    centre = Centre({"idle_chat": IdleChatPolicy()})
    ticket = centre.open(kind="complaint", channel="chat")
    centre.desk.reply(ticket.id, "Are you there?", by="agent_li")
    centre.later(minutes=6)  # the idle chat closes: resolved, then closed, by the system
    assert centre.desk.get_ticket(ticket.id).status == "closed"
    [flag] = centre.events(ticket.id, EventType.COMPLAINT_CLOSED_INCOMPLETE)
    assert "root cause" in flag["missing"]
    [lead] = centre.outbox("complaint", ticket.id)
    assert lead.recipients[0].role is RecipientRole.TEAM_LEAD


def test_complaint_details_only_on_complaints(centre: Centre) -> None:
    ticket = centre.open()
    with pytest.raises(ValidationError, match="a ticket of kind 'complaint'"):
        centre.service.record_complaint(ticket.id, root_cause="x", responsibility="y",
                                        remedy="z", by="team_lead")  # fmt: skip
    complaint = centre.open(kind="complaint")
    with pytest.raises(ValidationError, match="root_cause"):
        centre.service.record_complaint(complaint.id, root_cause=" ", responsibility="y",
                                        remedy="z", by="team_lead")  # fmt: skip


def _closed_complaint(centre: Centre) -> Ticket:
    """A complaint investigated, called back and closed, with a custom field of its own."""
    ticket = centre.resolved(kind="complaint")
    centre.desk.update(ticket.id, by="agent_li", fields={"order_no": "A-1"})
    centre.service.record_complaint(ticket.id, root_cause="Mail relay blacklisted",
                                    responsibility="IT operations", remedy="One month free",
                                    by="team_lead")  # fmt: skip
    centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")
    return centre.desk.close(ticket.id, by="agent_li")


def test_a_complaint_written_on_after_closing_starts_a_case_without_the_old_findings(
    centre: Centre,
) -> None:
    old = _closed_complaint(centre)
    new = centre.desk.reply(old.id, "It happened again!", by="c-17", role="customer")
    assert new.linked("follows") == (old.id,)
    assert new.kind == "complaint"
    # The findings were the old case's: the new one is investigated afresh; other fields stay.
    assert dict(new.fields) == {"order_no": "A-1"}
    assert complaint_missing(new) == [
        "root cause", "responsibility", "remedy offered", "a completed follow-up",
    ]  # fmt: skip
    assert centre.desk.get_ticket(old.id).fields["complaint_root_cause"] == "Mail relay blacklisted"
    # The history says where they went: dropped by the system as the ticket was opened, once
    # it was linked to the old one.
    *_, linked, dropped = centre.desk.history(new.id)
    assert (linked.type, dict(linked.data)) == (
        EventType.LINKED, {"kind": "follows", "ticket_id": old.id},
    )  # fmt: skip
    assert (dropped.type, dropped.actor) == (EventType.TICKET_UPDATED, "system")
    assert dropped.data["changes"] == {
        "fields.complaint_root_cause": ["Mail relay blacklisted", None],
        "fields.complaint_responsibility": ["IT operations", None],
        "fields.complaint_remedy": ["One month free", None],
    }
    # So it cannot close on the old case's findings and call.
    centre.desk.reply(new.id, "Sorry, we are checking the relay again", by="agent_li")
    centre.desk.resolve(new.id, by="agent_li", resolution="Relay delisted again")
    with pytest.raises(ComplaintIncomplete) as incomplete:
        centre.desk.close(new.id, by="agent_li")
    assert incomplete.value.missing[:3] == ("root cause", "responsibility", "remedy offered")
    centre.later(days=30)
    assert centre.desk.get_ticket(new.id).status == "resolved"  # its auto-close is held


def test_a_follow_up_of_a_ticket_no_longer_a_complaint_drops_the_findings_too(
    centre: Centre,
) -> None:
    old = _closed_complaint(centre)
    centre.desk.update(old.id, by="team_lead", kind="request")
    new = centre.desk.reply(old.id, "One more thing", by="c-17", role="customer")
    assert (new.kind, dict(new.fields)) == ("request", {"order_no": "A-1"})
    centre.desk.update(new.id, by="team_lead", kind="complaint")  # filed as one after all
    assert complaint_missing(centre.desk.get_ticket(new.id))[:3] == [
        "root cause", "responsibility", "remedy offered",
    ]  # fmt: skip


def test_a_follow_up_without_findings_keeps_its_fields_and_records_no_update(
    centre: Centre,
) -> None:
    old = centre.resolved()
    centre.desk.update(old.id, by="agent_li", fields={"order_no": "A-1"})
    centre.desk.close(old.id, by="agent_li")
    new = centre.desk.reply(old.id, "Still broken", by="c-17", role="customer")
    assert dict(new.fields) == {"order_no": "A-1"}
    assert EventType.TICKET_UPDATED not in centre.types(new.id)


# -- voice of the customer ----------------------------------------------------------------------
def test_suggestions_go_to_product_and_bugs_to_rnd(centre: Centre) -> None:
    ticket = centre.open()
    idea = centre.service.capture(ticket.id, kind="suggestion", summary="Dark mode",
                                  by="agent_li")  # fmt: skip
    bug = centre.service.capture(ticket.id, kind="bug", summary="Export crashes", by="agent_li")
    assert (idea.data["route"], idea.status, idea.data["tickets"]) == ("product", "submitted",
                                                                       [ticket.id])  # fmt: skip
    assert (bug.data["route"], bug.status) == ("rnd", "submitted")
    captured = centre.events(ticket.id, EventType.VOICE_CAPTURED)
    assert [(c["record_id"], c["route"]) for c in captured] == [(idea.id, "product"),
                                                               (bug.id, "rnd")]  # fmt: skip
    with pytest.raises(ValidationError, match="kind="):
        centre.service.capture(ticket.id, kind="praise", summary="x", by="agent_li")


def test_shipping_a_suggestion_tells_every_customer_who_asked(centre: Centre) -> None:
    first = centre.open()
    second = centre.open(customer_id="c-18", name="Li Lei")
    idea = centre.service.capture(first.id, kind="suggestion", summary="Dark mode", by="agent_li")
    attached = centre.service.attach(idea.id, second.id, by="agent_wang")
    assert attached.data["tickets"] == [first.id, second.id]
    assert centre.service.attach(idea.id, second.id, by="agent_wang").version == attached.version
    assert centre.service.set_status(idea.id, "accepted").status == "accepted"
    assert centre.outbox("voice_shipped") == []
    shipped = centre.service.set_status(idea.id, "shipped", notify_customers=True)
    assert [h["status"] for h in shipped.data["history"]] == ["submitted", "accepted", "shipped"]
    notices = centre.outbox("voice_shipped")
    assert sorted(n.recipients[0].address for n in notices) == ["c-17@ex.com", "c-18@ex.com"]
    assert {n.ticket_id for n in notices} == {first.id, second.id}
    assert all("Dark mode" in n.body for n in notices)
    with pytest.raises(ValidationError, match="it is final"):
        centre.service.set_status(idea.id, "accepted")
    assert [r.id for r in centre.service.voice("shipped")] == [idea.id]


def test_a_declined_suggestion_notifies_nobody(centre: Centre) -> None:
    ticket = centre.open()
    idea = centre.service.capture(ticket.id, kind="suggestion", summary="Fax", by="agent_li")
    centre.service.set_status(idea.id, "declined", notify_customers=True)
    assert centre.outbox("voice_shipped") == []
    with pytest.raises(ValidationError, match="record_id"):
        centre.service.set_status("no-such-record", "accepted")


# -- knowledge ----------------------------------------------------------------------------------
def test_articles_cited_and_typical_cases(centre: Centre) -> None:
    first = centre.resolved()
    second = centre.open(customer_id="c-18")
    centre.service.cite_article(first.id, "kb-42", by="agent_li")
    centre.service.cite_article(first.id, "kb-42", by="agent_li")  # once is enough
    centre.service.cite_article(second.id, "kb-42", by="agent_wang")
    assert len(centre.events(first.id, EventType.ARTICLE_CITED)) == 1
    assert [t.id for t in centre.service.tickets_citing("kb-42")] == [first.id, second.id]
    assert centre.service.tickets_citing("kb-0") == []
    with pytest.raises(ValidationError, match="a resolved or closed ticket"):
        centre.service.mark_typical_case(second.id, by="team_lead")
    centre.service.mark_typical_case(first.id, by="team_lead")
    assert [t.id for t in centre.service.typical_cases()] == [first.id]


# -- wiring and the pure rules ------------------------------------------------------------------
def test_the_service_needs_the_extension_on_the_desk() -> None:
    extension = FeedbackExtension(FeedbackPolicy(secret=SECRET))
    with pytest.raises(ValidationError, match=r"extension\.extensions"):
        FeedbackService(Desk(extensions=[extension]), extension)


def test_policy_and_scores_are_checked() -> None:
    with pytest.raises(ValidationError, match="secret"):
        FeedbackPolicy(secret=b"short")
    with pytest.raises(ValidationError, match="not_satisfied"):
        FeedbackPolicy(secret=SECRET, not_satisfied="ignore")
    with pytest.raises(ValidationError, match="survey_channels"):
        FeedbackPolicy(secret=SECRET, survey_channels=["fax"])
    assert "secret" not in repr(FeedbackPolicy(secret=SECRET))
    assert SurveyScores(comment="Nice").as_data()["comment"] == "Nice"


def test_tokens_expire_to_the_second() -> None:
    expires = T0 + timedelta(days=1)
    token = sign_survey_token(SECRET, "s-1", "t-1", expires)
    assert read_survey_token(SECRET, token, expires - timedelta(seconds=1)).expires_at == expires
    with pytest.raises(SurveyRejected, match="expired"):
        read_survey_token(SECRET, token, expires)
    with pytest.raises(ValidationError, match="survey_id"):
        sign_survey_token(SECRET, "s\n1", "t-1", expires)


# -- ill-typed arguments ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field"),
    [({"survey_channels": 5}, "survey_channels"), ({"survey_channels": "email"}, "survey_channels"),
     ({"survey_channels": [None]}, "survey_channels"), ({"survey_url": None}, "survey_url"),
     ({"survey_url": "https://ex.com/s/{id}"}, "survey_url"),
     ({"follow_up_assignee": ""}, "follow_up_assignee"),
     ({"follow_up_assignee": 5}, "follow_up_assignee"), ({"follow_up_vip": "yes"}, "follow_up_vip"),
     ({"complaint_kind": None}, "complaint_kind"), ({"merged_tag": ""}, "merged_tag"),
     ({"merged_link": 3}, "merged_link"), ({"secret": "a-string-not-bytes"}, "secret")],
)  # fmt: skip
def test_policy_refuses_ill_typed_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        FeedbackPolicy(**{"secret": SECRET, **options})
    assert refused.value.field == field


def test_policy_still_takes_what_it_took() -> None:
    policy = FeedbackPolicy(secret=SECRET, survey_channels=("email", "chat"),
                            survey_url="https://ex.com/s/{token}", follow_up_assignee="lead",
                            follow_up_vip=False)  # fmt: skip
    assert {c.value for c in policy.survey_channels or ()} == {"email", "chat"}
    assert policy.survey_url.format(token="abc") == "https://ex.com/s/abc"


@pytest.mark.parametrize(
    ("build", "field"),
    [(lambda ext: FeedbackExtension(None), "policy"),
     (lambda ext: FeedbackExtension({"secret": SECRET}), "policy"),
     (lambda ext: FeedbackService(None, ext), "desk"),
     (lambda ext: FeedbackService(Desk(extensions=ext.extensions), None), "extension")],
)  # fmt: skip
def test_extension_and_service_refuse_what_they_are_not_built_from(
    build: Callable[[FeedbackExtension], object], field: str
) -> None:
    extension = FeedbackExtension(FeedbackPolicy(secret=SECRET))
    with pytest.raises(ValidationError) as refused:
        build(extension)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda s: s.surveys([1]), "ticket_id"), (lambda s: s.surveys(""), "ticket_id"),
     (lambda s: s.surveys(status=5), "status"), (lambda s: s.follow_ups(ticket_id=7), "ticket_id"),
     (lambda s: s.schedule_follow_up([1], by="agent_li"), "ticket_id"),
     (lambda s: s.schedule_follow_up("t-1", by="agent_li", assignee=5), "assignee"),
     (lambda s: s.complete_follow_up(None, "reached_satisfied", by="agent_li"), "ticket_id"),
     (lambda s: s.complete_follow_up("t-1", "reached_satisfied", by="a", note=5), "note"),
     (lambda s: s.record_complaint(5, root_cause="a", responsibility="b", remedy="c", by="d"),
      "ticket_id"),
     (lambda s: s.capture(None, kind="bug", summary="x", by="agent_li"), "ticket_id"),
     (lambda s: s.attach([1], "t-1", by="agent_li"), "record_id"),
     (lambda s: s.attach("r-1", [1], by="agent_li"), "ticket_id"),
     (lambda s: s.set_status([1], "accepted"), "record_id"),
     (lambda s: s.set_status("r-1", "accepted", notify_customers="yes"), "notify_customers"),
     (lambda s: s.set_status("r-1", "accepted", by=None), "by"),
     (lambda s: s.cite_article(None, "kb-42", by="agent_li"), "ticket_id"),
     (lambda s: s.tickets_citing([1]), "article_id"),
     (lambda s: s.tickets_citing(""), "article_id"),
     (lambda s: s.mark_typical_case(None, by="team_lead"), "ticket_id"),
     (lambda s: s.complaint_missing(None), "ticket_id")],
)  # fmt: skip
def test_service_refuses_ill_typed_arguments(
    centre: Centre, call: Callable[[FeedbackService], object], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        call(centre.service)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("command", "field"),
    [(lambda ext, c: ext.schedule_follow_up(c, "complaint", by="agent_li"), "reasons"),
     (lambda ext, c: ext.schedule_follow_up(c, [None], by="agent_li"), "reasons"),
     (lambda ext, c: ext.schedule_follow_up(c, ["manual"], by=""), "by"),
     (lambda ext, c: ext.schedule_follow_up(c, ["manual"], by="a", due_at=T0.replace(tzinfo=None)),
      "due_at"),
     (lambda ext, c: ext.complete_follow_up(c, "fine", by="agent_li", note=None, out=[]),
      "outcome"),
     (lambda ext, c: ext.record_complaint(c, by="a", root_cause=None, responsibility="b",
                                          remedy="c"), "root_cause")],
)  # fmt: skip
def test_extension_commands_refuse_ill_typed_arguments(
    centre: Centre, command: Callable[[FeedbackExtension, Change], object], field: str
) -> None:
    ticket = centre.open()
    with pytest.raises(ValidationError) as refused:
        centre.desk.execute(ticket.id, lambda change: command(centre.extension, change))
    assert refused.value.field == field
    assert centre.service.follow_ups(ticket.id) == []  # nothing was stored


EXPIRES = T0 + timedelta(days=1)
TOKEN = sign_survey_token(SECRET, "s-1", "t-1", EXPIRES)


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda t, p: sign_survey_token("secret", "s-1", "t-1", EXPIRES), "secret"),
     (lambda t, p: sign_survey_token(SECRET, "s-1", "t-1", None), "expires_at"),
     (lambda t, p: read_survey_token(SECRET, TOKEN, None), "now"),
     (lambda t, p: read_survey_token(SECRET, TOKEN, T0.replace(tzinfo=None)), "now"),
     (lambda t, p: read_survey_token(None, TOKEN, T0), "secret"),
     (lambda t, p: survey_wanted(None, p), "ticket"),
     (lambda t, p: survey_wanted(t, None), "policy"),
     (lambda t, p: is_merged(t.id, p), "ticket"),
     (lambda t, p: follow_up_reasons(t, "reopen"), "policy"),
     (lambda t, p: complaint_missing(None), "ticket")],
)  # fmt: skip
def test_the_pure_rules_refuse_ill_typed_arguments(
    centre: Centre, call: Callable[[Ticket, FeedbackPolicy], object], field: str
) -> None:
    ticket, policy = centre.open(), centre.extension.policy
    with pytest.raises(ValidationError) as refused:
        call(ticket, policy)
    assert refused.value.field == field
    assert survey_wanted(ticket, policy) is True
    assert read_survey_token(bytearray(SECRET), TOKEN, T0).survey_id == "s-1"


# -- a complaint completed through its custom fields --------------------------------------------
def test_a_complaint_completed_through_its_custom_fields_closes_by_itself(centre: Centre) -> None:
    ticket = centre.resolved(kind="complaint")
    centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")
    centre.later(days=8)
    assert centre.desk.get_ticket(ticket.id).status == "resolved"  # held: no findings yet
    centre.desk.update(ticket.id, by="team_lead", fields={
        "complaint_root_cause": "Relay", "complaint_responsibility": "IT",
        "complaint_remedy": "Apology"})  # fmt: skip
    assert centre.service.complaint_missing(ticket.id) == []
    centre.later(days=6)
    assert centre.desk.get_ticket(ticket.id).status == "resolved"
    centre.later(days=1)
    assert centre.desk.get_ticket(ticket.id).status == "closed"


def test_a_complaint_whose_finding_is_cleared_is_held_again(centre: Centre) -> None:
    ticket = centre.resolved(kind="complaint")
    centre.service.record_complaint(ticket.id, root_cause="Relay", responsibility="IT",
                                    remedy="Apology", by="team_lead")  # fmt: skip
    centre.service.complete_follow_up(ticket.id, "reached_satisfied", by="agent_li")
    centre.desk.update(ticket.id, by="team_lead", fields={"complaint_root_cause": ""})
    centre.later(days=30)
    assert centre.desk.get_ticket(ticket.id).status == "resolved"
    assert centre.events(ticket.id, EventType.COMPLAINT_CLOSED_INCOMPLETE) == []


def test_a_resolved_ticket_that_is_no_longer_a_complaint_closes_by_itself(
    centre: Centre,
) -> None:
    ticket = centre.resolved(kind="complaint")
    centre.desk.update(ticket.id, by="team_lead", kind="request")  # filed as a complaint by mistake
    centre.later(days=8)
    assert centre.desk.get_ticket(ticket.id).status == "closed"


# -- writes racing another desk -----------------------------------------------------------------
def _another_desk_first(centre: Centre, monkeypatch: pytest.MonkeyPatch, command) -> None:
    """Run ``command`` (as another desk would) between the service's check and its command."""
    execute = centre.desk.execute

    def racing(ticket_id, action):
        monkeypatch.setattr(centre.desk, "execute", execute)
        command()
        return execute(ticket_id, action)

    monkeypatch.setattr(centre.desk, "execute", racing)


def test_an_article_cited_meanwhile_by_another_desk_is_cited_once(
    centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = centre.open()
    _another_desk_first(
        centre,
        monkeypatch,
        lambda: centre.service.cite_article(ticket.id, "kb-42", by="agent_wang"),
    )
    centre.service.cite_article(ticket.id, "kb-42", by="agent_li")
    assert len(centre.events(ticket.id, EventType.ARTICLE_CITED)) == 1
    assert [t.id for t in centre.service.tickets_citing("kb-42")] == [ticket.id]


def test_a_ticket_attached_meanwhile_by_another_desk_is_attached_once(
    centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = centre.open(), centre.open(customer_id="c-18")
    idea = centre.service.capture(first.id, kind="suggestion", summary="Dark mode", by="agent_li")
    _another_desk_first(
        centre, monkeypatch, lambda: centre.service.attach(idea.id, second.id, by="agent_wang")
    )
    record = centre.service.attach(idea.id, second.id, by="agent_li")
    assert record.data["tickets"] == [first.id, second.id]
    assert len(centre.events(second.id, EventType.VOICE_ATTACHED)) == 1


# -- a record update that loses a race ----------------------------------------------------------
class _LosesOneRecordRace:
    """A store whose first voice-record update loses to another writer (as on PostgreSQL)."""

    def __init__(self, store) -> None:
        self.store, self.lost = store, False

    def transaction(self):
        @contextmanager
        def unit():
            with self.store.transaction() as uow:
                yield _Unit(uow, self)

        return unit()

    def close(self) -> None:
        self.store.close()


class _Unit:
    def __init__(self, uow, owner: _LosesOneRecordRace) -> None:
        self._uow, self._owner = uow, owner

    def __getattr__(self, name):
        return getattr(self._uow, name)

    def put_record(self, record, expected_version=None):
        if record.kind == "voice" and expected_version is not None and not self._owner.lost:
            self._owner.lost = True
            raise ConcurrencyConflict(f"voice/{record.id}", expected_version, expected_version + 1)
        return self._uow.put_record(record, expected_version)


def test_a_status_change_that_loses_a_race_is_retried() -> None:
    store = _LosesOneRecordRace(MemoryStore())
    centre = Centre({"store": store})
    ticket = centre.open()
    idea = centre.service.capture(ticket.id, kind="suggestion", summary="Dark mode", by="agent_li")
    accepted = centre.service.set_status(idea.id, "accepted")  # ConcurrencyConflict before
    assert store.lost
    assert accepted.status == "accepted"
    assert [h["status"] for h in accepted.data["history"]] == ["submitted", "accepted"]


# -- an unhappy customer on a ticket in work ----------------------------------------------------
@pytest.mark.parametrize("wait", [False, True])
def test_an_unhappy_customer_on_a_ticket_still_in_work_gets_no_second_ticket(
    centre: Centre, wait: bool
) -> None:
    ticket = centre.open()
    centre.desk.reply(ticket.id, "Looking into it", by="agent_li")
    if wait:
        centre.desk.fire(ticket.id, "wait_on_customer", by="agent_li")
    centre.service.schedule_follow_up(ticket.id, by="team_lead")
    done = centre.service.complete_follow_up(ticket.id, "reached_not_satisfied", by="agent_li",
                                             note="still waiting")  # fmt: skip
    assert done.status == "completed"
    assert centre.desk.get_ticket(ticket.id).linked("followed_by") == ()
    assert len(centre.desk.tickets()) == 1


# -- closing as "system" ------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["close", "fire"])
def test_a_caller_acting_as_system_cannot_close_an_incomplete_complaint(
    centre: Centre, command: str
) -> None:
    ticket = centre.resolved(kind="complaint")
    before = centre.types(ticket.id)
    close = (
        (lambda: centre.desk.close(ticket.id, by="system"))
        if command == "close"
        else (lambda: centre.desk.fire(ticket.id, "close", by="system"))
    )
    with pytest.raises(ComplaintIncomplete):
        close()
    assert centre.types(ticket.id) == before
    assert centre.desk.get_ticket(ticket.id).status == "resolved"


# -- the survey mail ----------------------------------------------------------------------------
def test_the_survey_mail_gives_the_expiry_as_an_instant(centre: Centre) -> None:
    centre.clock.set(T0 + timedelta(hours=16))  # 01:00 UTC on Tuesday: still Monday in America
    ticket = centre.resolved()
    centre.later(hours=2)
    [mail] = centre.outbox("survey", ticket.id)
    assert mail.data["expires_at"] == "2026-03-17T02:00:00+00:00"
    assert "(until 2026-03-17 02:00 UTC)" in mail.body
