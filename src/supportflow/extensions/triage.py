"""Triage on the desk: classification, early warnings and mass incidents.

:class:`Triage` runs the :class:`~supportflow.classify.Classifier` when a ticket opens and again
when its text or fields change, applies what it decides (category, impact and urgency,
priority, tags, group, assignee), records why (``Classified``), warns the team lead at once
on sensitive words (``EarlyWarning`` and a ``team_lead`` notification), and opens one parent
incident when many tickets with the same fingerprint arrive together (``IncidentDetected``).

Later passes never undo what a person set: the category, impact and urgency a ticket has are
kept (rules only fill gaps), a tag an agent removed is not added back, and the priority is only
raised, except that when a person changes impact or urgency the matrix decides it again. An
explicit priority is never lowered.

Detection keeps windowed counts per fingerprint in the store
(``record_occurrence``/``occurrences``), so a new ticket never scans the open ones. Tickets
already linked to an incident do not count towards the next one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from numbers import Integral
from typing import Any, Literal

import attrs

from supportflow._change import Change, DeskExtension
from supportflow.classify import (
    EARLY_WARNING_TAG,
    Classification,
    Classifier,
    FlagTeamLead,
    Reason,
    fingerprint,
)
from supportflow.errors import ValidationError
from supportflow.events import EventType
from supportflow.model import (
    Channel,
    Customer,
    Message,
    Priority,
    Recipient,
    RecipientRole,
    Role,
    StatusCategory,
    Ticket,
    check_duration,
    whole_number,
)
from supportflow.storage import Record, UnitOfWork

__all__ = ["IncidentPolicy", "Triage"]

INCIDENT_KIND = "incident"
_HOOK = "triage"
_KEPT = ("category", "impact", "urgency")  # what a later pass never replaces
_DONE = (StatusCategory.RESOLVED, StatusCategory.CLOSED)


@attrs.frozen(slots=True)
class IncidentPolicy:
    """When ``threshold`` tickets with one fingerprint open within ``window``, open a parent
    incident and link them; later ones are linked while it is open. On resolving the incident,
    ``on_resolve="resolve"`` resolves the linked tickets with its resolution, ``"note"`` leaves
    them open with an internal note."""

    threshold: int = 5
    window: timedelta = timedelta(minutes=10)
    on_resolve: Literal["resolve", "note"] = "resolve"
    examples: int = 5

    def __attrs_post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, Integral):
            raise ValidationError("threshold", self.threshold, "a whole number, at least 2")
        if self.threshold < 2:
            raise ValidationError("threshold", self.threshold, "at least 2")
        check_duration("window", self.window)
        if self.on_resolve not in ("resolve", "note"):
            raise ValidationError("on_resolve", self.on_resolve, "'resolve' or 'note'")
        whole_number("examples", self.examples, 0)


class Triage(DeskExtension):
    """Classification, early warning and mass-incident detection for a desk.

    >>> desk = Desk(triage=Triage(Classifier(rules), IncidentPolicy(threshold=5)))
    ...                                                          # doctest: +SKIP
    """

    def __init__(
        self,
        classifier: Classifier | None = None,
        incidents: IncidentPolicy | None = None,
    ) -> None:
        if classifier is not None and not isinstance(classifier, Classifier):
            raise ValidationError("classifier", classifier, "a Classifier, or None for no rules")
        if incidents is not None and not isinstance(incidents, IncidentPolicy):
            raise ValidationError("incidents", incidents, "an IncidentPolicy, or None")
        self.classifier = classifier if classifier is not None else Classifier([])
        self.incidents = incidents
        self._quiet: Classifier | None = None

    def _rules_only(self) -> Classifier:
        """The classifier without its early warning (built once, when first needed)."""
        if self._quiet is None:
            classifier = self.classifier
            self._quiet = Classifier(
                classifier.rules, matrix=classifier.matrix, sensitive_words=None
            )
        return self._quiet

    # -- hooks -----------------------------------------------------------------------------
    def opened(self, change: Change) -> None:
        ticket = change.ticket
        if ticket.kind == INCIDENT_KIND or _HOOK in change.active_hooks:
            return
        if self.incidents is None and not self._may_classify(ticket):
            return
        classification = self._apply(change, first=True)
        if self.incidents is not None:
            key = fingerprint(change.ticket, classification)
            if key is not None:
                self._watch_incident(change, key)

    def message_added(self, change: Change, message: Message) -> None:
        """Classify again on a public customer message.

        Without rules, only a sensitive word can change the outcome (the matrix reads impact
        and urgency, which a message does not change), so a message without one is skipped
        rather than re-reading the whole thread. A sensitive word split across two messages
        is then not caught; one within a message always is.
        """
        if not (message.role is Role.CUSTOMER and message.public):
            return
        classifier = self.classifier
        if not classifier.rules and not classifier.finds_sensitive(message.body):
            return
        if self._skip(change):
            return
        self._apply(change, first=False)

    def fields_changed(self, change: Change, changed: frozenset[str]) -> None:
        if self._skip(change):
            return
        # A person re-rating impact or urgency asks the matrix again, downwards too.
        self._apply(change, first=False, reprioritize=bool(changed & {"impact", "urgency"}))

    def status_changed(
        self, change: Change, before: StatusCategory, after: StatusCategory, trigger: str
    ) -> None:
        if self.incidents is None or (before in _DONE) == (after in _DONE):
            return  # before reading ``change.ticket``, which builds the ticket
        ticket = change.ticket
        if ticket.kind != INCIDENT_KIND:
            return
        policy, resolution = self.incidents, ticket.resolution or "resolved with the incident"
        incident_id, key = ticket.id, str(ticket.fields.get("fingerprint") or "")
        children = ticket.linked("child") if after is StatusCategory.RESOLVED else ()
        # Resolved or closed (a cancelled false alarm too): later reports start a new count.
        # Reopened: later reports join it again.
        status = "open" if after not in _DONE else after.value
        rules, new_id, now = change.rules, change.new_id, change.now

        def settle_children(uow: UnitOfWork) -> None:
            for child_id in children:
                child = Change(rules, uow.get_ticket(child_id), now, "system", new_id)
                child.uow = uow
                child.catch_up(before_command=True)
                category = child.category()
                if policy.on_resolve == "resolve" and "resolve" in rules.workflow.allowed(
                    child.ticket.status
                ):
                    child.fire(
                        "resolve",
                        "system",
                        {"resolution": resolution, "incident_id": incident_id},
                        system=True,
                    )
                elif category not in _DONE:
                    child.message(
                        f"Incident {incident_id} was resolved: {resolution}",
                        "system",
                        Role.AGENT,
                        public=False,
                    )
                _commit(child, uow, insert=False)
            record = uow.get_record(INCIDENT_KIND, key) if key else None
            # The record may already belong to a newer incident with the same fingerprint.
            if record is not None and record.ticket_id == incident_id and record.status != status:
                uow.put_record(
                    attrs.evolve(record, status=status, updated_at=now, version=record.version + 1),
                    expected_version=record.version,
                )

        change.follow_ups.append(settle_children)

    def _may_classify(self, ticket: Ticket) -> bool:
        """Whether classifying ``ticket`` can change anything: without rules, only the matrix
        (it needs impact and urgency) and a sensitive word can (most desks run like this)."""
        classifier = self.classifier
        if classifier.rules or (ticket.impact is not None and ticket.urgency is not None):
            return True
        # One pass over all of it: a phrase read across two texts only costs a full
        # classification, which then finds nothing.
        texts = (ticket.subject, ticket.description, *_customer_bodies(ticket))
        return classifier.finds_sensitive("\n".join(texts))

    def _skip(self, change: Change) -> bool:
        return change.ticket.kind == INCIDENT_KIND or _HOOK in change.active_hooks

    # -- classification --------------------------------------------------------------------
    def _apply(self, change: Change, *, first: bool, reprioritize: bool = False) -> Classification:
        change.active_hooks.add(_HOOK)
        try:
            return self._apply_classification(change, first=first, reprioritize=reprioritize)
        finally:
            change.active_hooks.discard(_HOOK)

    def _apply_classification(
        self, change: Change, *, first: bool, reprioritize: bool
    ) -> Classification:
        ticket = change.ticket
        # Later passes never undo what a person set: they fill gaps, add tags, raise priority.
        result = self.classifier.classify(ticket, keep=() if first else _KEPT)
        updates: dict[str, Any] = {}
        for name in _KEPT:
            value, current = getattr(result, name), getattr(ticket, name)
            if value is not None and value != current and (first or current is None):
                updates[name] = value
        # A tag given once is not given again: an agent who removed it meant it.
        given = frozenset(ticket.state.get("triage_tags") or ())
        new_tags = result.tags - ticket.tags - given
        if result.tags - given:
            change.set_state(triage_tags=sorted(given | result.tags))
        if updates or new_tags:
            change.update("system", updates, frozenset(new_tags), frozenset(), {})
        routed = (result.group, result.assignee)
        if first and any(routed) and routed != (ticket.group, ticket.assignee):
            change.assign(result.assignee, result.group, "system")
        priority, current = result.priority, change.ticket.priority
        warned = set(ticket.state.get("early_warning_words") or ())
        new_warning = any(word not in warned for word in result.early_warning_words)
        if not first and ticket.priority_explicit and priority > current and not new_warning:
            # Only a new early warning lifts a priority a person set: the lead saw the last one
            # and chose, and a later pass never undoes what a person did. The rules still may.
            priority = self._rules_only().classify(ticket, keep=_KEPT).priority
        moved = priority != current and (first or reprioritize or priority > current)
        if moved:
            change.set_priority(priority, "system", "classification", explicit=False)
        flags = self._fresh_flags(change.ticket, result.reasons)
        # What the ticket now has, not what the classifier proposed: a later pass keeps a
        # person's routing and priority, and does not give back a tag an agent removed.
        after = change.ticket
        kept_tags = set(after.tags)
        if new_warning:
            kept_tags.add(EARLY_WARNING_TAG)  # a new warning gives it back, just below
        if result.reasons and (first or updates or new_tags or moved or flags):
            change.record(
                EventType.CLASSIFIED,
                {
                    "reasons": [
                        {
                            "rule": reason.rule,
                            "action": reason.action,
                            "detail": reason.detail,
                            "matched": list(reason.matched),
                            "fields": list(reason.fields),
                        }
                        for reason in result.reasons
                    ],
                    "category": after.category,
                    "priority": after.priority.value,
                    "tags": sorted(result.tags & kept_tags),
                    "group": after.group,
                    "assignee": after.assignee,
                    "fingerprint": fingerprint(after, result),
                },
                actor="system",
            )
        self._flag_team_lead(change, flags)
        self._early_warning(change, result.early_warning_words)
        return result

    def _early_warning(self, change: Change, words: Iterable[str]) -> None:
        ticket = change.ticket
        known = set(ticket.state.get("early_warning_words") or ())
        fresh = [word for word in words if word not in known]
        if not fresh:
            return
        change.set_state(early_warning_words=sorted(known | set(fresh)))
        if EARLY_WARNING_TAG not in change.ticket.tags:
            change.update("system", {}, frozenset({EARLY_WARNING_TAG}), frozenset(), {})
        change.record(EventType.EARLY_WARNING, {"words": fresh}, actor="system")
        change.notify(
            "early_warning",
            [Recipient(RecipientRole.TEAM_LEAD, change.rules.team_lead)],
            f"[#{ticket.number}] Early warning: {', '.join(fresh)}",
            f"{ticket.subject}\n\nSensitive words: {', '.join(fresh)}. "
            f"Customer: {ticket.customer.name or ticket.customer.id}.",
            words=fresh,
        )

    @staticmethod
    def _fresh_flags(ticket: Ticket, reasons: Iterable[Reason]) -> dict[str, str]:
        """Rules whose ``FlagTeamLead`` has not yet reached the team lead: {rule: reason}."""
        known = set(ticket.state.get("team_lead_flags") or ())
        return {
            reason.rule: reason.detail
            for reason in reasons
            if reason.action == FlagTeamLead.kind and reason.rule not in known
        }

    def _flag_team_lead(self, change: Change, flags: dict[str, str]) -> None:
        """Tell the team lead once per rule that flagged the ticket."""
        if not flags:
            return
        ticket = change.ticket
        known = set(ticket.state.get("team_lead_flags") or ())
        change.set_state(team_lead_flags=sorted(known | set(flags)))
        why = "; ".join(detail or f"flagged by rule {rule}" for rule, detail in flags.items())
        change.notify(
            "team_lead_flag",
            [Recipient(RecipientRole.TEAM_LEAD, change.rules.team_lead)],
            f"[#{ticket.number}] For the team lead: {why}",
            f"{ticket.subject}\n\nFlagged by {', '.join(flags)}: {why}. "
            f"Customer: {ticket.customer.name or ticket.customer.id}.",
            rules=list(flags),
        )

    # -- mass incidents --------------------------------------------------------------------
    def _watch_incident(self, change: Change, key: str) -> None:
        policy = self.incidents
        assert policy is not None
        ticket_id, at = change.ticket.id, change.at
        rules, new_id, now = change.rules, change.new_id, change.now
        category = change.ticket.category or "unknown"

        def link(uow: UnitOfWork, child_id: str, incident_id: str) -> None:
            for one, kind, other in (
                (child_id, "parent", incident_id),
                (incident_id, "child", child_id),
            ):
                linked = Change(rules, uow.get_ticket(one), now, "system", new_id)
                linked.uow = uow
                linked.link(kind, other, "system")
                _commit(linked, uow, insert=False)

        def detect(uow: UnitOfWork) -> None:
            uow.record_occurrence(key, ticket_id, at)
            record = uow.get_record(INCIDENT_KIND, key)
            if record is not None and record.status == "open":
                link(uow, ticket_id, str(record.data["incident_id"]))
                change.result = uow.get_ticket(ticket_id)  # the command returns it linked
                return
            since = at - policy.window
            if record is not None:  # reports from before the last incident ended had their turn
                since = max(since, record.updated_at)
            seen = list(dict.fromkeys(uow.occurrences(key, since)))
            if len(seen) < policy.threshold:
                return
            tickets = [t for t in map(uow.get_ticket, seen) if not t.linked("parent")]
            if len(tickets) < policy.threshold:
                return
            incident = Change.new(rules, now, new_id, uow.next_ticket_number())
            incident.uow = uow
            incident.active_hooks.add(_HOOK)
            incident.open(
                ticket_id=new_id(),
                subject=f"Mass incident: {category} ({len(tickets)} reports)",
                body="\n".join(f"#{t.number}: {t.subject}" for t in tickets[: policy.examples]),
                customer=Customer(id="internal", name="Mass incident"),
                channel=Channel.API,
                priority=max([Priority.HIGH, *(t.priority for t in tickets)]),
                priority_explicit=False,
                category=category,
                kind=INCIDENT_KIND,
                tags=frozenset({"mass-incident"}),
                fields={"fingerprint": key},
                impact="high",
                urgency=None,
                group=None,
                assignee=None,
                actor="system",
            )
            examples = [t.id for t in tickets[: policy.examples]]
            minutes = policy.window.total_seconds() / 60
            incident.record(
                EventType.INCIDENT_DETECTED,
                {
                    "fingerprint": key,
                    "count": len(tickets),
                    "window_seconds": policy.window.total_seconds(),
                    "examples": examples,
                    "incident_id": incident.ticket.id,
                },
            )
            incident.notify(
                "incident",
                [Recipient(RecipientRole.TEAM_LEAD, rules.team_lead)],
                f"Mass incident: {category}, {len(tickets)} reports in {minutes:g} minutes",
                "\n".join(f"#{t.number} {t.subject}" for t in tickets[: policy.examples]),
                examples=examples,
            )
            _commit(incident, uow, insert=True)
            incident_id = incident.ticket.id
            data = {"incident_id": incident_id, "fingerprint": key}
            if record is None:
                uow.put_record(Record(INCIDENT_KIND, key, data, now, now, incident_id, "open", 1))
            else:
                uow.put_record(
                    attrs.evolve(
                        record, data=data, status="open", ticket_id=incident_id,
                        updated_at=now, version=record.version + 1,
                    ),
                    expected_version=record.version,
                )  # fmt: skip
            for child in tickets:
                link(uow, child.id, incident_id)
            change.result = uow.get_ticket(ticket_id)

        change.follow_ups.append(detect)


def _commit(change: Change, uow: UnitOfWork, *, insert: bool) -> None:
    """Commit a change made inside a follow-up, then its own follow-ups (another extension's
    survey for a resolved child, say), in the same unit of work."""
    change.commit(uow, insert=insert)
    for follow_up in change.follow_ups:
        follow_up(uow)


def _customer_bodies(ticket: Ticket) -> list[str]:
    """What the customer wrote after the description: early warning reads it too."""
    return [message.body for message in ticket.messages if message.role is Role.CUSTOMER]
