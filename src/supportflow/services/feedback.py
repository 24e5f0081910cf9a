"""``FeedbackService``: survey answers, follow-up calls, complaints, the voice of the customer
and knowledge links, on a desk that runs a :class:`FeedbackExtension`.

>>> feedback = FeedbackExtension(FeedbackPolicy(secret=b"0123456789abcdef"))  # doctest: +SKIP
>>> desk, clock = scenario_desk(extensions=feedback.extensions)      # doctest: +SKIP
>>> service = FeedbackService(desk, feedback)                       # doctest: +SKIP
>>> service.respond(token, csat=5, nps=9, comment="Quick and kind")  # doctest: +SKIP
Record(kind='survey', ..., status='answered', ...)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from supportflow.clock import to_utc
from supportflow.desk import Desk
from supportflow.errors import TicketNotFound, ValidationError
from supportflow.events import EventType
from supportflow.extensions import Change
from supportflow.extensions.feedback import FeedbackExtension, customer_recipient, upsert_record
from supportflow.feedback import (
    ARTICLE,
    FOLLOW_UP,
    SURVEY,
    TYPICAL_CASE_TAG,
    VOICE,
    FollowUpOutcome,
    RejectReason,
    SurveyRejected,
    SurveyScores,
    VoiceKind,
    VoiceStatus,
    check_voice_transition,
    complaint_missing,
    read_survey_token,
)
from supportflow.model import (
    Notification,
    Recipient,
    RecipientRole,
    StatusCategory,
    Ticket,
    check_text,
    coerce_enum,
)
from supportflow.storage import Record, UnitOfWork

__all__ = ["FeedbackService"]

_ID = "an id: a non-empty string"
_ID_OR_NONE = "an id: a non-empty string, or None"


class FeedbackService:
    """Feedback commands and queries on ``desk``; ``extension`` must be one of its extensions
    (pass ``Desk(extensions=extension.extensions)``)."""

    def __init__(self, desk: Desk, extension: FeedbackExtension) -> None:
        if not isinstance(desk, Desk):
            raise ValidationError("desk", desk, "a supportflow Desk")
        if not isinstance(extension, FeedbackExtension):
            raise ValidationError("extension", extension, "a FeedbackExtension")
        registered = desk.rules.extensions
        if any(part not in registered for part in extension.extensions):
            raise ValidationError(
                "desk", desk, "a Desk built with extensions=[*extension.extensions, ...]"
            )
        self.desk = desk
        self.extension = extension
        self.policy = extension.policy

    # -- surveys ---------------------------------------------------------------------------
    def respond(
        self,
        token: str,
        *,
        csat: int | None = None,
        nps: int | None = None,
        ces: int | None = None,
        comment: str | None = None,
    ) -> Record:
        """Record a customer's survey answer, once, before it expires.

        Scores out of range raise ``ValidationError`` naming the field. A token that is not
        ours, altered, expired, already used or not the ticket's survey raises
        :class:`~supportflow.feedback.SurveyRejected` with the reason; nothing is stored. The
        answer appends ``FeedbackRecorded`` to the ticket, and a CSAT at or below the policy's
        threshold schedules a follow-up, in the same unit of work as the survey record.
        """
        scores = SurveyScores(csat=csat, nps=nps, ces=ces, comment=comment)
        now = to_utc(self.desk.clock.now(), "clock.now()")
        claims = read_survey_token(self.policy.secret, token, now)
        out: list[Record] = []

        def action(change: Change) -> None:
            out.clear()
            self.extension.answer_survey(change, claims, scores, out)

        try:
            self.desk.execute(claims.ticket_id, action)
        except TicketNotFound:
            raise SurveyRejected(
                RejectReason.UNKNOWN_SURVEY, f"no ticket {claims.ticket_id!r}"
            ) from None
        return out[-1]

    def surveys(self, ticket_id: str | None = None, status: str | None = None) -> list[Record]:
        """Survey records (``sent``, ``answered``), oldest first."""
        check_text("ticket_id", ticket_id, optional=True, expected=_ID_OR_NONE)
        if status is not None:
            check_text("status", status)
        return self._find(SURVEY, ticket_id=ticket_id, status=status)

    # -- follow-ups ------------------------------------------------------------------------
    def schedule_follow_up(
        self, ticket_id: str, *, by: str, reason: str = "manual", assignee: str | None = None
    ) -> Record:
        """Schedule a call-back by hand (after a failed one, say); due after the policy's
        ``follow_up_delay``. A pending follow-up gets the reason added instead."""
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("by", by)
        check_text("reason", reason)
        check_text("assignee", assignee, optional=True, expected=_ID_OR_NONE)
        out: list[Record] = []

        def action(change: Change) -> None:
            out.clear()
            self.extension.schedule_follow_up(change, [reason], by=by, assignee=assignee, out=out)

        self.desk.execute(ticket_id, action)
        return out[-1]

    def complete_follow_up(
        self,
        ticket_id: str,
        outcome: FollowUpOutcome | str,
        *,
        by: str,
        note: str | None = None,
    ) -> Record:
        """Record the outcome of the ticket's pending follow-up call.

        ``not_reachable`` schedules a retry after ``follow_up_retry_interval`` until
        ``follow_up_retries`` retries are used, then records ``FollowUpFailed`` and tells the
        team lead. ``reached_not_satisfied`` reopens the ticket or opens a linked one, as the
        policy says. Returns the follow-up record.
        """
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("by", by)
        result = coerce_enum(FollowUpOutcome, outcome, "outcome")
        check_text("note", note, empty_ok=True, optional=True)
        out: list[Record] = []

        def action(change: Change) -> None:
            out.clear()
            self.extension.complete_follow_up(change, result, by=by, note=note, out=out)

        self.desk.execute(ticket_id, action)
        return out[-1]

    def follow_ups(self, ticket_id: str | None = None, status: str | None = None) -> list[Record]:
        """Follow-up records (``scheduled``, ``completed``, ``failed``), oldest first."""
        check_text("ticket_id", ticket_id, optional=True, expected=_ID_OR_NONE)
        if status is not None:
            check_text("status", status)
        return self._find(FOLLOW_UP, ticket_id=ticket_id, status=status)

    # -- complaints ------------------------------------------------------------------------
    def record_complaint(
        self, ticket_id: str, *, root_cause: str, responsibility: str, remedy: str, by: str
    ) -> Ticket:
        """Store what the investigation found (custom fields ``complaint_root_cause``,
        ``complaint_responsibility``, ``complaint_remedy``; audited as ``TicketUpdated``)."""
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("by", by)
        values = {"root_cause": root_cause, "responsibility": responsibility, "remedy": remedy}
        for field, value in values.items():
            check_text(field, value)
        return self.desk.execute(
            ticket_id, lambda change: self.extension.record_complaint(change, by=by, **values)
        )

    def complaint_missing(self, ticket_id: str) -> list[str]:
        """What the complaint still lacks before it may close (empty: it may close)."""
        return complaint_missing(self.desk.get_ticket(ticket_id))

    # -- voice of the customer -------------------------------------------------------------
    def capture(self, ticket_id: str, *, kind: VoiceKind | str, summary: str, by: str) -> Record:
        """Pass a suggestion (to ``product``) or a bug (to ``rnd``) on, from a ticket.

        The record (kind ``voice``, status ``submitted``) names the ticket and its customer;
        the ticket records ``VoiceCaptured``.
        """
        check_text("ticket_id", ticket_id, expected=_ID)
        voice = coerce_enum(VoiceKind, kind, "kind")
        check_text("summary", summary)
        check_text("by", by)
        out: list[Record] = []

        def action(change: Change) -> None:
            out.clear()
            record_id = change.new_id()
            ticket, at = change.ticket, change.at
            change.record(
                EventType.VOICE_CAPTURED,
                {"record_id": record_id, "kind": voice.value, "route": voice.route,
                 "summary": summary},
                by,
            )  # fmt: skip

            def fill(data: dict[str, Any]) -> None:
                data.update(
                    kind=voice.value,
                    route=voice.route,
                    summary=summary,
                    by=by,
                    tickets=[ticket.id],
                    customers=[_customer(ticket)],
                    history=[{"status": VoiceStatus.SUBMITTED.value, "at": at.isoformat(),
                              "by": by}],
                )  # fmt: skip

            def write(uow: UnitOfWork) -> None:
                submitted = VoiceStatus.SUBMITTED.value
                record = upsert_record(
                    uow, VOICE, record_id, at, fill, ticket_id=ticket.id, status=submitted
                )
                out.append(record)

            change.follow_ups.append(write)

        self.desk.execute(ticket_id, action)
        return out[-1]

    def attach(self, record_id: str, ticket_id: str, *, by: str) -> Record:
        """Another customer asks for the same thing: attach their ticket to the record."""
        check_text("record_id", record_id, expected=_ID)
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("by", by)
        record = self._voice(record_id)
        if ticket_id in record.data.get("tickets", []):
            return record
        out: list[Record] = []

        def action(change: Change) -> None:
            out.clear()
            ticket, at = change.ticket, change.at
            # Checked again in the unit of work: another desk may have attached it meanwhile.
            current = self._voice(record_id, change.store())
            if ticket.id in current.data.get("tickets", []):
                out.append(current)
                return
            change.record(EventType.VOICE_ATTACHED, {"record_id": record_id}, by)

            def add(data: dict[str, Any]) -> None:
                if ticket.id not in data["tickets"]:
                    data["tickets"] = [*data["tickets"], ticket.id]
                customers = data["customers"]
                if all(c["id"] != ticket.customer.id for c in customers):
                    data["customers"] = [*customers, _customer(ticket)]

            change.follow_ups.append(
                lambda uow: out.append(upsert_record(uow, VOICE, record_id, at, add))
            )

        self.desk.execute(ticket_id, action)
        return out[-1]

    def set_status(
        self,
        record_id: str,
        status: VoiceStatus | str,
        *,
        notify_customers: bool = False,
        by: str = "system",
    ) -> Record:
        """Move a suggestion or bug on (``accepted``, ``declined``, ``shipped``).

        Shipped with ``notify_customers``, each customer who asked for it is told, through the
        outbox in the same unit of work.
        """
        check_text("record_id", record_id, expected=_ID)
        if not isinstance(notify_customers, bool):
            raise ValidationError("notify_customers", notify_customers, "True or False")
        check_text("by", by)

        def change_status(uow: UnitOfWork) -> Record:
            # Read again on a retry: another writer may have moved the record meanwhile.
            now = to_utc(self.desk.clock.now(), "clock.now()")
            current = self._voice(record_id, uow)
            target = check_voice_transition(str(current.status), status)

            def move(data: dict[str, Any]) -> None:
                entry = {"status": target.value, "at": now.isoformat(), "by": by}
                data["history"] = [*data.get("history", []), entry]

            record = upsert_record(uow, VOICE, record_id, now, move, status=target.value)
            if target is VoiceStatus.SHIPPED and notify_customers:
                uow.enqueue(_shipped_notices(record, now))
            return record

        return self.desk.retrying(change_status)

    def voice(self, status: VoiceStatus | str | None = None) -> list[Record]:
        """Suggestions and bugs, oldest first, optionally of one status."""
        wanted = coerce_enum(VoiceStatus, status, "status").value if status else None
        return self._find(VOICE, status=wanted)

    # -- knowledge -------------------------------------------------------------------------
    def cite_article(self, ticket_id: str, article_id: str, *, by: str) -> Ticket:
        """Note that a knowledge-base article answered the ticket (``ArticleCited``)."""
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("article_id", article_id)
        check_text("by", by)
        with self.desk.store.transaction() as uow:
            cited = uow.get_record(ARTICLE, article_id)
        if cited is not None and ticket_id in cited.data.get("tickets", []):
            return self.desk.get_ticket(ticket_id)

        def action(change: Change) -> None:
            ticket, at = change.ticket, change.at
            # Checked again in the unit of work: another desk may have cited it meanwhile.
            current = change.store().get_record(ARTICLE, article_id)
            if current is not None and ticket.id in current.data.get("tickets", []):
                return
            change.record(EventType.ARTICLE_CITED, {"article_id": article_id}, by)

            def add(data: dict[str, Any]) -> None:
                tickets = data.get("tickets", [])
                if ticket.id not in tickets:
                    data["tickets"] = [*tickets, ticket.id]

            def write(uow: UnitOfWork) -> None:
                upsert_record(uow, ARTICLE, article_id, at, add)

            change.follow_ups.append(write)

        return self.desk.execute(ticket_id, action)

    def tickets_citing(self, article_id: str) -> list[Ticket]:
        """Tickets an article answered, in the order it was cited."""
        check_text("article_id", article_id)
        with self.desk.store.transaction() as uow:
            record = uow.get_record(ARTICLE, article_id)
            ids = record.data.get("tickets", []) if record is not None else []
            return [uow.get_ticket(ticket_id) for ticket_id in ids]

    def mark_typical_case(self, ticket_id: str, *, by: str) -> Ticket:
        """Tag a resolved or closed ticket as a typical case (for training and the knowledge
        base); other tickets raise ``ValidationError``."""
        check_text("ticket_id", ticket_id, expected=_ID)
        check_text("by", by)

        def action(change: Change) -> None:
            if change.category() not in (StatusCategory.RESOLVED, StatusCategory.CLOSED):
                raise ValidationError("ticket_id", change.ticket.id, "a resolved or closed ticket")
            change.update(by, {}, frozenset({TYPICAL_CASE_TAG}), frozenset(), {})

        return self.desk.execute(ticket_id, action)

    def typical_cases(self) -> list[Ticket]:
        """Tickets marked as typical cases, oldest first."""
        return self.desk.tickets(tag=TYPICAL_CASE_TAG)

    # -- helpers ---------------------------------------------------------------------------
    def _find(self, kind: str, **filters: Any) -> list[Record]:
        with self.desk.store.transaction() as uow:
            return uow.find_records(kind, **filters)

    def _voice(self, record_id: str, uow: UnitOfWork | None = None) -> Record:
        if uow is None:
            with self.desk.store.transaction() as unit:
                record = unit.get_record(VOICE, record_id)
        else:
            record = uow.get_record(VOICE, record_id)
        if record is None:
            raise ValidationError("record_id", record_id, "the id of a captured suggestion or bug")
        return record


def _customer(ticket: Ticket) -> dict[str, str]:
    recipient = customer_recipient(ticket.customer)
    return {
        "id": ticket.customer.id,
        "name": ticket.customer.name,
        "address": recipient.address,
        "ticket_id": ticket.id,
    }


def _shipped_notices(record: Record, now: datetime) -> list[Notification]:
    summary = record.data.get("summary", "")
    notices = []
    for customer in record.data.get("customers", []):
        notices.append(
            Notification(
                idempotency_key=f"voice:{record.id}:shipped:{customer['id']}",
                kind="voice_shipped",
                recipients=(
                    Recipient(RecipientRole.CUSTOMER, customer["address"], customer["name"]),
                ),
                subject="What you asked for is here",
                body=f"Thank you for telling us: “{summary}”. It has now shipped.",
                created_at=now,
                ticket_id=customer["ticket_id"],
                data={"record_id": record.id},
            )
        )
    return notices
