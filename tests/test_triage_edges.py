"""Triage and classification at their edges: later passes, long threads, odd rule documents."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any

import pytest

from supportflow import Customer, Desk, EventType, Priority, Role
from supportflow import _conditions as conditions
from supportflow import _textmatch as textmatch
from supportflow._textmatch import Automaton, find_naive
from supportflow.classify import (
    AddTags,
    CapPriority,
    Classifier,
    Keywords,
    PriorityMatrix,
    Regex,
    RouteTo,
    Rule,
    SetCategory,
)
from supportflow.errors import ValidationError
from supportflow.extensions import Triage
from supportflow.storage import MemoryStore
from supportflow.testing import ManualClock

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def make_desk(triage: Triage | None) -> Desk:
    ids = itertools.count(1)
    return Desk(clock=ManualClock(START), store=MemoryStore(),
                id_factory=lambda: f"t{next(ids)}", triage=triage)  # fmt: skip


def events(desk: Desk, ticket_id: str, kind: str) -> list[Any]:
    return [event for event in desk.history(ticket_id) if event.type == kind]


# -- a stale early warning does not undo the lead's explicit priority ----------------

UNRELATED = [Rule("printer", Keywords(["printer"]), [SetCategory("hardware")])]


@pytest.mark.parametrize("rules", [[], UNRELATED], ids=["no rules", "an unrelated rule"])
@pytest.mark.parametrize("then", ["customer thanks", "agent adds a tag"])
def test_a_lead_who_lowers_an_early_warned_ticket_is_not_overruled(rules: Any, then: str) -> None:
    desk = make_desk(Triage(Classifier(rules)))
    ticket = desk.open_ticket(subject="Refund", body="I will talk to my lawyer about this",
                              customer=Customer(id="c-1"), channel="email")  # fmt: skip
    assert ticket.priority is Priority.HIGH
    desk.set_priority(ticket.id, "low", by="lead_wang", reason="checked: harmless")

    if then == "customer thanks":
        desk.reply(ticket.id, "Thanks, that works for me", by="c-1", role=Role.CUSTOMER)
    else:
        desk.update(ticket.id, by="agent_li", add_tags=["refund"])
    assert desk.get_ticket(ticket.id).priority is Priority.LOW

    desk.reply(ticket.id, "Now the police will hear of it", by="c-1", role=Role.CUSTOMER)
    assert desk.get_ticket(ticket.id).priority is Priority.HIGH  # a new warning still lifts it


# -- the Classified event of a later pass says what the ticket got ---------------------


def test_a_later_classified_event_reports_the_ticket_as_left_not_as_proposed() -> None:
    rules = [
        Rule("network", Keywords(["vpn"], fields=["messages"]),
             [SetCategory("network"), RouteTo("netops")]),
        Rule("minor", Keywords(["typo"], fields=["messages"]), [AddTags("minor"),
                                                                 CapPriority("high")]),
    ]  # fmt: skip
    desk = make_desk(Triage(Classifier(rules)))
    ticket = desk.open_ticket(subject="Login fails", body="cannot log in", channel="email",
                              customer=Customer(id="c-1"), impact="high", urgency="high",
                              group="vip-desk")  # fmt: skip
    desk.reply(ticket.id, "our vpn login page has a typo", by="c-1", role=Role.CUSTOMER)

    ticket = desk.get_ticket(ticket.id)
    assert (ticket.group, ticket.priority) == ("vip-desk", Priority.URGENT)  # routing: at open
    last = events(desk, ticket.id, EventType.CLASSIFIED)[-1].data
    assert (last["group"], last["priority"]) == (ticket.group, ticket.priority.value)
    assert last["category"] == ticket.category == "network"
    assert set(last["tags"]) <= ticket.tags


# -- a long chat is not re-read whole on every customer message -----------------------


def test_each_customer_message_is_read_once_however_long_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = [Rule("net", Keywords(["vpn", "wifi"], fields=["messages"]), [SetCategory("network")])]
    desk = make_desk(Triage(Classifier(rules)))
    ticket = desk.open_ticket(subject="Parcel", body="late", customer=Customer(id="c"),
                              channel="chat")  # fmt: skip
    body = "my order has not arrived yet and I am waiting for the parcel since last week " * 3
    read: list[int] = []
    normalize = textmatch.normalize

    def counting(text: str) -> str:
        read.append(len(text))
        return normalize(text)

    monkeypatch.setattr(textmatch, "normalize", counting)
    monkeypatch.setattr(conditions, "normalize", counting)

    replies = (f"{body} (#{n:04d})" for n in itertools.count())  # each its own text

    def characters_read_by_one_reply(text: str | None = None) -> int:
        read.clear()
        desk.reply(ticket.id, text or next(replies), by="c", role=Role.CUSTOMER)
        return sum(read)

    first = characters_read_by_one_reply()
    for _ in range(100):
        characters_read_by_one_reply()
    assert characters_read_by_one_reply() == first  # the new message, not the whole thread
    characters_read_by_one_reply("and the WIFI too")
    assert desk.get_ticket(ticket.id).category == "network"


# -- any pattern re cannot compile is a ValidationError -------------------------------


@pytest.mark.parametrize("pattern", ["a{99999999999}", "x{1,4294967296}"])
def test_a_regex_re_cannot_compile_is_a_validation_error(pattern: str) -> None:
    with pytest.raises(ValidationError) as error:
        Regex(pattern)
    assert error.value.field == "pattern"
    doc = {"rules": [{"name": "order", "when": {"regex": pattern}}]}
    with pytest.raises(ValidationError) as error:
        Classifier.from_dict(doc)
    assert (error.value.field, error.value.value) == ("rules[0].when.regex", pattern)


# -- from_json refuses what json refuses with a ValidationError -----------------------


@pytest.mark.parametrize(
    "text",
    [None, 42, b"\xff\xfe{", '{"rules": [], "n": ' + "1" * 5000 + "}", "[" * 100_000],
    ids=["none", "int", "not utf-8", "huge number", "deep"],
)
def test_from_json_names_json_for_any_text_json_refuses(text: Any) -> None:
    with pytest.raises(ValidationError) as error:
        Classifier.from_json(text)
    assert error.value.field == "json"


# -- long periodic keywords do not overflow the stack ---------------------------------


@pytest.mark.parametrize("word", ["a" * 600, "ab" * 600, "哈" * 2000])
def test_a_long_periodic_keyword_is_matched_without_recursion(word: str) -> None:
    automaton = Automaton([word])
    for text in (word + " x", "x " + word[:-1] + " y", word * 2):
        assert automaton.find(text) == find_naive([word], text)


# -- matrix levels that differ only in case are one level, given once -----------------


def test_a_matrix_level_given_twice_in_different_cases_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        PriorityMatrix({("High", "now"): "urgent", ("high", "now"): "low"})
    assert error.value.field == "matrix.high.now"
    doc = {"rules": [], "matrix": {"High": {"now": "urgent"}, "high": {"now": "low"}}}
    with pytest.raises(ValidationError):
        Classifier.from_dict(doc)
