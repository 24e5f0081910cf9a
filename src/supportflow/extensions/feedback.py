"""The feedback rules taking part in every desk command: surveys on resolve, follow-up
call-backs (回访) and the complaint closing check.

>>> feedback = FeedbackExtension(FeedbackPolicy(secret=b"0123456789abcdef"))
>>> desk = Desk(extensions=feedback.extensions)                     # doctest: +SKIP

``feedback.extensions`` is the extension and its follow-up timer companion: the desk hands a
due timer to the one extension whose ``timer_prefix`` names it, and the feedback rules own two
timers, ``survey:send`` and ``followup:due``.

What it does, command by command:

- open of a follow-up ticket (a customer writing on a closed ticket): the complaint findings
  copied from the old ticket are dropped, so the new case is investigated afresh.
- resolve: schedules a survey (``survey:send`` after ``survey_delay``) unless the ticket's
  channel is not surveyed, it was merged, or it already had one; schedules a follow-up
  (``followup:due`` after ``follow_up_delay``) for complaints and VIP customers; holds a
  complaint's auto-close until the complaint is complete.
- reopen before the survey went out, or cancel: the survey is cancelled.
- close of a complaint: :class:`~supportflow.feedback.ComplaintIncomplete` lists what is
  missing, and nothing is stored. When the system closes it (auto-close, idle chat) the close
  stands, a ``ComplaintClosedIncomplete`` event is recorded and the team lead is told.
- ``survey:send``: writes the survey record, records ``SurveySent`` and sends the customer a
  signed link that expires after ``survey_ttl``.
- ``followup:due``: tells the follow-up's assignee to call the customer.

Records are written with ``change.follow_ups``, in the transaction of the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs

from supportflow._change import Change, DeskExtension, customer_recipient
from supportflow.automation import state_time
from supportflow.clock import ensure_aware
from supportflow.errors import ValidationError
from supportflow.events import EventType
from supportflow.feedback import (
    COMPLAINT_FIELDS,
    FOLLOW_UP,
    SURVEY,
    ComplaintIncomplete,
    FeedbackPolicy,
    FollowUpOutcome,
    RejectReason,
    StateKey,
    SurveyClaims,
    SurveyRejected,
    SurveyScores,
    complaint_missing,
    csat_is_low,
    follow_up_reasons,
    is_complaint,
    is_merged,
    sign_survey_token,
    survey_wanted,
    ticket_dimensions,
)
from supportflow.model import (
    Recipient,
    RecipientRole,
    StatusCategory,
    Timer,
    check_text,
    coerce_enum,
)
from supportflow.storage import Record, UnitOfWork

__all__ = ["FeedbackExtension", "FollowUpTimers", "customer_recipient", "upsert_record"]

SURVEY_TIMER = "survey:send"
FOLLOW_UP_TIMER = "followup:due"
_OPEN = (StatusCategory.NEW, StatusCategory.ACTIVE, StatusCategory.WAITING)
# What makes a ticket a complete complaint, as ``Change.update`` names the changes.
_COMPLAINT_INPUTS = frozenset({"kind", *(f"fields.{name}" for name in COMPLAINT_FIELDS)})


def upsert_record(
    uow: UnitOfWork,
    kind: str,
    record_id: str,
    at: datetime,
    update: Callable[[dict[str, Any]], None],
    *,
    ticket_id: str | None = None,
    status: str | None = None,
) -> Record:
    """Insert the record, or update it under its version: ``update`` edits a copy of its data
    (an empty dict for a new record). A concurrent writer makes the command retry."""
    current = uow.get_record(kind, record_id)
    data: dict[str, Any] = dict(current.data) if current is not None else {}
    update(data)
    if current is None:
        record = Record(kind, record_id, data, at, at, ticket_id, status)
        uow.put_record(record)
        return record
    record = attrs.evolve(
        current,
        data=data,
        updated_at=max(at, current.updated_at),
        status=status if status is not None else current.status,
        version=current.version + 1,
    )
    uow.put_record(record, current.version)
    return record


def _set_state(change: Change, **values: Any) -> None:
    change.set_state(**values)


def _iso(value: datetime) -> str:
    return value.isoformat()


def _reasons(reasons: object) -> list[str]:
    if isinstance(reasons, str) or not isinstance(reasons, Iterable):
        raise ValidationError("reasons", reasons, "a list of reasons (non-empty strings)")
    found = list(reasons)
    for reason in found:
        check_text("reasons", reason)
    return found


class FeedbackExtension(DeskExtension):
    """Surveys, follow-ups and complaint checks on every command of a desk (see the module).

    The methods taking a :class:`Change` are the commands of
    :class:`~supportflow.services.feedback.FeedbackService`, run through ``desk.execute``.
    """

    timer_prefix = "survey"

    def __init__(self, policy: FeedbackPolicy) -> None:
        if not isinstance(policy, FeedbackPolicy):
            raise ValidationError("policy", policy, "a FeedbackPolicy")
        self.policy = policy
        self.follow_up_timers = FollowUpTimers(self)

    @property
    def extensions(self) -> tuple[DeskExtension, ...]:
        """What to pass to ``Desk(extensions=...)``: this extension and its timer companion."""
        return (self, self.follow_up_timers)

    # -- hooks -----------------------------------------------------------------------------
    def opened(self, change: Change) -> None:
        # A ticket opened as a follow-up (a customer writing on a closed ticket) copies the old
        # one's custom fields; a complaint's findings among them are the old case's, and would
        # make the new case look investigated already. It starts without them (recorded as a
        # ``TicketUpdated`` by the system); the old ticket keeps them, one link away.
        ticket = change.ticket
        if not ticket.fields or not any(link.kind == "follows" for link in ticket.links):
            return
        stale = [name for name in COMPLAINT_FIELDS if name in ticket.fields]
        if stale:
            change.update("system", {}, frozenset(), frozenset(), {}, drop_fields=stale)

    def status_changed(
        self, change: Change, before: StatusCategory, after: StatusCategory, trigger: str
    ) -> None:
        policy = self.policy
        ticket = change.ticket
        if after is StatusCategory.RESOLVED and before is not StatusCategory.RESOLVED:
            if survey_wanted(ticket, policy):
                self._schedule_survey(change)
            complaint = is_complaint(ticket, policy)
            if complaint:  # the follow-up must come after this resolution
                _set_state(change, **{StateKey.FOLLOW_UP_DONE_AT: None})
            reasons = follow_up_reasons(ticket, policy)
            if reasons:
                self.schedule_follow_up(change, reasons, by="system")
            if complaint and complaint_missing(change.ticket):
                _set_state(change, autoclose_at=None)  # held until the complaint is complete
        elif before is StatusCategory.RESOLVED and after in _OPEN:
            self._cancel_survey(change, "reopened")
        if after is StatusCategory.CLOSED and before is not StatusCategory.CLOSED:
            if trigger == "cancel":
                self._cancel_survey(change, "cancelled")
            elif is_complaint(ticket, policy):
                missing = complaint_missing(ticket)
                if missing and not change.system_move:  # by="system" is no deadline
                    raise ComplaintIncomplete(ticket.id, missing)
                if missing:  # a deadline closed it: raising would stall the due work
                    change.record(EventType.COMPLAINT_CLOSED_INCOMPLETE, {"missing": missing})
                    change.notify(
                        "complaint",
                        [Recipient(RecipientRole.TEAM_LEAD, change.rules.team_lead)],
                        f"[#{ticket.number}] Complaint closed incomplete",
                        f"Missing: {', '.join(missing)}.",
                    )

    def fields_changed(self, change: Change, changed: frozenset[str]) -> None:
        # The findings are custom fields anyone may set (desk.update), and the kind may change:
        # a resolved complaint's auto-close is held while it is incomplete, and counts again
        # once it is complete or no longer a complaint.
        if changed.isdisjoint(_COMPLAINT_INPUTS):
            return
        if change.category() is not StatusCategory.RESOLVED:
            return
        ticket = change.ticket
        if is_complaint(ticket, self.policy):
            if complaint_missing(ticket):
                _set_state(change, autoclose_at=None)
            else:
                self.release_complaint(change)
            return
        original = change.original
        policy = change.rules.auto_close
        if (
            original is not None
            and is_complaint(original, self.policy)
            and policy.enabled
            and not ticket.state.get("autoclose_at")
        ):
            _set_state(change, autoclose_at=_iso(policy.due(change.at)))

    def timers(self, change: Change) -> list[Timer]:
        ticket = change.ticket
        due = state_time(ticket, StateKey.SURVEY_DUE_AT)
        return [Timer(ticket.id, SURVEY_TIMER, due, "survey")] if due is not None else []

    def fire(self, change: Change, timer: Timer) -> None:
        if timer.key != SURVEY_TIMER or not change.ticket.state.get(StateKey.SURVEY_DUE_AT):
            return
        if is_merged(change.ticket, self.policy):
            self._cancel_survey(change, "merged")
            return
        self._send_survey(change)

    # -- surveys ---------------------------------------------------------------------------
    def _schedule_survey(self, change: Change) -> None:
        survey_id = change.new_id()
        due = change.at + self.policy.survey_delay
        _set_state(
            change,
            **{
                StateKey.SURVEY_ID: survey_id,
                StateKey.SURVEY_DUE_AT: _iso(due),
                StateKey.SURVEY_SENT_AT: None,
                StateKey.SURVEY_EXPIRES_AT: None,
                StateKey.SURVEY_ANSWERED_AT: None,
            },
        )
        change.record(
            EventType.SURVEY_SCHEDULED, {"survey_id": survey_id, "due_at": _iso(due)}, "system"
        )

    def _cancel_survey(self, change: Change, reason: str) -> None:
        state = change.ticket.state
        if not state.get(StateKey.SURVEY_DUE_AT):
            return
        survey_id = state.get(StateKey.SURVEY_ID)
        _set_state(change, **{StateKey.SURVEY_ID: None, StateKey.SURVEY_DUE_AT: None})
        change.record(
            EventType.SURVEY_CANCELLED, {"survey_id": survey_id, "reason": reason}, "system"
        )

    def _send_survey(self, change: Change) -> None:
        policy, ticket, at = self.policy, change.ticket, change.at
        survey_id = str(ticket.state[StateKey.SURVEY_ID])
        # Tokens carry whole seconds: the stored expiry is the one the token checks.
        expires = datetime.fromtimestamp(int((at + policy.survey_ttl).timestamp()), timezone.utc)
        token = sign_survey_token(policy.secret, survey_id, ticket.id, expires)
        _set_state(
            change,
            **{
                StateKey.SURVEY_DUE_AT: None,
                StateKey.SURVEY_SENT_AT: _iso(at),
                StateKey.SURVEY_EXPIRES_AT: _iso(expires),
            },
        )
        change.record(
            EventType.SURVEY_SENT, {"survey_id": survey_id, "expires_at": _iso(expires)}, "system"
        )
        link = policy.survey_url.format(token=token)
        change.notify(
            "survey",
            [customer_recipient(ticket.customer)],
            f"[#{ticket.number}] How did we do?",
            f"Your request “{ticket.subject}” was resolved. Tell us how we did "
            f"(until {expires:%Y-%m-%d %H:%M} UTC): {link}",  # an instant, not a local day
            survey_id=survey_id,
            token=token,
            expires_at=_iso(expires),
        )
        base = _survey_data(change, expires)

        def write(uow: UnitOfWork) -> None:
            def fill(data: dict[str, Any]) -> None:
                data.update(base)

            upsert_record(uow, SURVEY, survey_id, at, fill, ticket_id=ticket.id, status="sent")

        change.follow_ups.append(write)

    def answer_survey(
        self, change: Change, claims: SurveyClaims, scores: SurveyScores, out: list[Record]
    ) -> None:
        """Record the customer's answer once; the survey record lands in ``out``."""
        ticket, at = change.ticket, change.at
        state = ticket.state
        if state.get(StateKey.SURVEY_ID) != claims.survey_id or not state.get(
            StateKey.SURVEY_SENT_AT
        ):
            raise SurveyRejected(
                RejectReason.UNKNOWN_SURVEY,
                f"ticket {ticket.id} did not send survey {claims.survey_id}",
            )
        if state.get(StateKey.SURVEY_ANSWERED_AT):
            raise SurveyRejected(
                RejectReason.ALREADY_ANSWERED,
                f"survey {claims.survey_id} was answered at {state[StateKey.SURVEY_ANSWERED_AT]}",
            )
        if change.now >= claims.expires_at:
            raise SurveyRejected(
                RejectReason.EXPIRED,
                f"survey {claims.survey_id} expired at {claims.expires_at.isoformat()}",
            )
        _set_state(change, **{StateKey.SURVEY_ANSWERED_AT: _iso(at)})
        answer = scores.as_data()
        change.record(
            EventType.FEEDBACK_RECORDED,
            {"survey_id": claims.survey_id, **answer, **ticket_dimensions(ticket)},
            ticket.customer.id,
        )
        if csat_is_low(scores.csat, self.policy):
            self.schedule_follow_up(change, ["low_csat"], by="system")
        base = _survey_data(change, claims.expires_at)

        def write(uow: UnitOfWork) -> None:
            def update(data: dict[str, Any]) -> None:
                for key, value in base.items():
                    data.setdefault(key, value)  # the record of the send may be missing
                data.update(answer, answered_at=_iso(at))

            survey = claims.survey_id
            answered = upsert_record(
                uow, SURVEY, survey, at, update, ticket_id=ticket.id, status="answered"
            )
            out.append(answered)

        change.follow_ups.append(write)

    # -- follow-ups ------------------------------------------------------------------------
    def schedule_follow_up(
        self,
        change: Change,
        reasons: Iterable[str],
        *,
        by: str,
        due_at: datetime | None = None,
        assignee: str | None = None,
        out: list[Record] | None = None,
    ) -> str:
        """Schedule a call-back (one per ticket at a time: a second cause adds its reason to
        the pending one). Returns the follow-up's id."""
        reasons = _reasons(reasons)
        check_text("by", by)
        check_text("assignee", assignee, optional=True)
        if due_at is not None:
            ensure_aware(due_at, "due_at")
        ticket, at = change.ticket, change.at
        state = ticket.state
        existing = state.get(StateKey.FOLLOW_UP_ID)
        if existing:
            known = list(state.get(StateKey.FOLLOW_UP_REASONS) or [])
            merged = list(dict.fromkeys([*known, *reasons]))
            if merged != known:
                _set_state(change, **{StateKey.FOLLOW_UP_REASONS: merged})
            self._write_follow_up(change, str(existing), None, {"reasons": merged}, out)
            return str(existing)
        follow_up_id = change.new_id()
        due = due_at if due_at is not None else at + self.policy.follow_up_delay
        who = assignee or self.policy.follow_up_assignee or ticket.assignee
        who = who or change.rules.team_lead
        _set_state(
            change,
            **{
                StateKey.FOLLOW_UP_ID: follow_up_id,
                StateKey.FOLLOW_UP_DUE_AT: _iso(due),
                StateKey.FOLLOW_UP_ATTEMPTS: 0,
                StateKey.FOLLOW_UP_REASONS: reasons,
                StateKey.FOLLOW_UP_ASSIGNEE: who,
                StateKey.FOLLOW_UP_NOTIFIED: None,
            },
        )
        change.record(
            EventType.FOLLOW_UP_SCHEDULED,
            {"follow_up_id": follow_up_id, "reasons": reasons, "due_at": _iso(due),
             "assignee": who},
            by,
        )  # fmt: skip
        data = {
            "reasons": reasons,
            "due_at": _iso(due),
            "assignee": who,
            "customer_id": ticket.customer.id,
            "customer_name": ticket.customer.name,
            "attempts": [],
            "outcome": None,
        }
        self._write_follow_up(change, follow_up_id, "scheduled", data, out)
        return follow_up_id

    def complete_follow_up(
        self,
        change: Change,
        outcome: FollowUpOutcome,
        *,
        by: str,
        note: str | None,
        out: list[Record],
    ) -> None:
        """Record how the call went: retry an unreachable customer, record the failure after
        the last retry, or close the follow-up (and reopen or follow an unhappy customer)."""
        outcome = coerce_enum(FollowUpOutcome, outcome, "outcome")
        check_text("by", by)
        if note is not None and not isinstance(note, str):
            raise ValidationError("note", note, "a string or None")
        ticket, at, policy = change.ticket, change.at, self.policy
        state = ticket.state
        follow_up_id = state.get(StateKey.FOLLOW_UP_ID)
        if not follow_up_id:
            raise ValidationError("ticket_id", ticket.id, "a ticket with a follow-up scheduled")
        follow_up_id = str(follow_up_id)
        attempts = int(state.get(StateKey.FOLLOW_UP_ATTEMPTS) or 0) + 1
        attempt = {"at": _iso(at), "by": by, "outcome": outcome.value, "note": note}
        if outcome is FollowUpOutcome.NOT_REACHABLE and attempts <= policy.follow_up_retries:
            retry_at = at + policy.follow_up_retry_interval
            _set_state(
                change,
                **{
                    StateKey.FOLLOW_UP_ATTEMPTS: attempts,
                    StateKey.FOLLOW_UP_DUE_AT: _iso(retry_at),
                    StateKey.FOLLOW_UP_NOTIFIED: None,
                },
            )
            change.record(
                EventType.FOLLOW_UP_ATTEMPTED,
                {"follow_up_id": follow_up_id, "attempt": attempts, "outcome": outcome.value,
                 "next_due_at": _iso(retry_at), "note": note},
                by,
            )  # fmt: skip
            self._write_follow_up(
                change, follow_up_id, "scheduled", {"due_at": _iso(retry_at)}, out, attempt
            )
            return
        dimensions = ticket_dimensions(ticket)
        _set_state(change, **_FOLLOW_UP_CLEARED)
        if outcome is FollowUpOutcome.NOT_REACHABLE:
            change.record(
                EventType.FOLLOW_UP_FAILED,
                {"follow_up_id": follow_up_id, "attempts": attempts, "note": note, **dimensions},
                by,
            )
            change.notify(
                "follow_up",
                [Recipient(RecipientRole.TEAM_LEAD, change.rules.team_lead)],
                f"[#{ticket.number}] Follow-up failed",
                f"{ticket.customer.name or ticket.customer.id} could not be reached after "
                f"{attempts} attempts.",
            )
            self._write_follow_up(
                change, follow_up_id, "failed", {"outcome": "failed"}, out, attempt
            )
            return
        _set_state(change, **{StateKey.FOLLOW_UP_DONE_AT: _iso(at)})
        change.record(
            EventType.FOLLOW_UP_COMPLETED,
            {"follow_up_id": follow_up_id, "outcome": outcome.value, "attempts": attempts,
             "note": note, **dimensions},
            by,
        )  # fmt: skip
        self._write_follow_up(
            change, follow_up_id, "completed", {"outcome": outcome.value}, out, attempt
        )
        if outcome is FollowUpOutcome.REACHED_NOT_SATISFIED:
            self._not_satisfied(change, by, note)
        self.release_complaint(change)

    def _write_follow_up(
        self,
        change: Change,
        follow_up_id: str,
        status: str | None,
        values: Mapping[str, Any],
        out: list[Record] | None,
        attempt: Mapping[str, Any] | None = None,
    ) -> None:
        ticket_id, at = change.ticket.id, change.at

        def update(data: dict[str, Any]) -> None:
            data.update(values)
            data.setdefault("ticket_id", ticket_id)
            if attempt is not None:
                data["attempts"] = [*data.get("attempts", []), dict(attempt)]

        def write(uow: UnitOfWork) -> None:
            record = upsert_record(
                uow, FOLLOW_UP, follow_up_id, at, update, ticket_id=ticket_id, status=status
            )
            if out is not None:
                out.append(record)

        change.follow_ups.append(write)

    def _not_satisfied(self, change: Change, by: str, note: str | None) -> None:
        reason = "customer not satisfied at follow-up"
        workflow = change.rules.workflow
        if self.policy.not_satisfied == "reopen":
            if change.category() in _OPEN:
                return  # still in work: nothing to reopen, and no second ticket for one case
            if "reopen" in workflow.allowed(change.ticket.status):
                change.fire("reopen", by, {"reason": reason})
                return
        self._open_linked(change, by, note or reason)

    def _open_linked(self, change: Change, by: str, body: str) -> None:
        """Open a new ticket that follows this one, in the same unit of work."""
        change.open_follow_up(body, by, fields={})

    # -- complaints ------------------------------------------------------------------------
    def record_complaint(
        self, change: Change, *, by: str, root_cause: str, responsibility: str, remedy: str
    ) -> None:
        """Store the complaint's root cause, responsibility and remedy as custom fields."""
        check_text("by", by)
        for field, value in (
            ("root_cause", root_cause),
            ("responsibility", responsibility),
            ("remedy", remedy),
        ):
            check_text(field, value)
        ticket = change.ticket
        if not is_complaint(ticket, self.policy):
            raise ValidationError(
                "ticket_id",
                ticket.id,
                f"a ticket of kind {self.policy.complaint_kind!r} (it is {ticket.kind!r})",
            )
        values = dict(zip(COMPLAINT_FIELDS, (root_cause, responsibility, remedy), strict=True))
        change.update(by, {}, frozenset(), frozenset(), values)
        self.release_complaint(change)

    def release_complaint(self, change: Change) -> None:
        """A resolved complaint that is now complete may auto-close again."""
        ticket = change.ticket
        policy = change.rules.auto_close
        if (
            is_complaint(ticket, self.policy)
            and change.category() is StatusCategory.RESOLVED
            and policy.enabled
            and not ticket.state.get("autoclose_at")
            and not complaint_missing(ticket)
        ):
            _set_state(change, autoclose_at=_iso(policy.due(change.at)))


class FollowUpTimers(DeskExtension):
    """The ``followup:due`` timer of a :class:`FeedbackExtension`: the assignee is told to
    call the customer when a follow-up falls due (again after each unreachable attempt)."""

    timer_prefix = "followup"

    def __init__(self, owner: FeedbackExtension) -> None:
        self.owner = owner

    def timers(self, change: Change) -> list[Timer]:
        ticket = change.ticket
        if ticket.state.get(StateKey.FOLLOW_UP_NOTIFIED):
            return []
        due = state_time(ticket, StateKey.FOLLOW_UP_DUE_AT)
        return [Timer(ticket.id, FOLLOW_UP_TIMER, due, "follow_up")] if due is not None else []

    def fire(self, change: Change, timer: Timer) -> None:
        ticket = change.ticket
        state = ticket.state
        follow_up_id = state.get(StateKey.FOLLOW_UP_ID)
        if timer.key != FOLLOW_UP_TIMER or not follow_up_id:
            return
        _set_state(change, **{StateKey.FOLLOW_UP_NOTIFIED: True})
        assignee = str(state.get(StateKey.FOLLOW_UP_ASSIGNEE) or change.rules.team_lead)
        lead = assignee == change.rules.team_lead
        role = RecipientRole.TEAM_LEAD if lead else RecipientRole.AGENT
        reasons = ", ".join(state.get(StateKey.FOLLOW_UP_REASONS) or [])
        change.record(
            EventType.REMINDER_SENT, {"reason": "follow_up", "follow_up_id": follow_up_id}
        )
        change.notify(
            "follow_up",
            [Recipient(role, assignee)],
            f"[#{ticket.number}] Follow-up call due",
            f"Call {ticket.customer.name or ticket.customer.id} back about “{ticket.subject}” "
            f"({reasons}) and record the outcome.",
            follow_up_id=follow_up_id,
        )


_FOLLOW_UP_CLEARED: dict[str, Any] = {
    StateKey.FOLLOW_UP_ID: None,
    StateKey.FOLLOW_UP_DUE_AT: None,
    StateKey.FOLLOW_UP_ATTEMPTS: None,
    StateKey.FOLLOW_UP_REASONS: None,
    StateKey.FOLLOW_UP_ASSIGNEE: None,
    StateKey.FOLLOW_UP_NOTIFIED: None,
}


def _survey_data(change: Change, expires: datetime) -> dict[str, Any]:
    ticket = change.ticket
    return {
        "ticket_id": ticket.id,
        "customer_id": ticket.customer.id,
        "sent_at": str(ticket.state.get(StateKey.SURVEY_SENT_AT) or _iso(change.at)),
        "expires_at": _iso(expires),
        **ticket_dimensions(ticket),
    }
