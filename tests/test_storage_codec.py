"""The storage codec: domain values to JSON and back, exactly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

from supportflow.errors import ValidationError
from supportflow.events import Event
from supportflow.model import Notification, Recipient, RecipientRole, Timer
from supportflow.storage import OutboxEntry, OutboxStatus, Record
from supportflow.storage import _codec as codec
from supportflow.testing.storage_contract import full_ticket

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _through_json(doc: object) -> object:
    return json.loads(codec.dump_json(doc))


def test_a_fully_populated_ticket_round_trips_exactly() -> None:
    ticket = full_ticket()
    doc = codec.ticket_to_doc(ticket)
    assert _through_json(doc) == doc  # plain JSON values only
    back = codec.ticket_from_doc(_through_json(doc))
    assert back == ticket
    assert back.sla == ticket.sla
    assert back.tags == ticket.tags
    assert back.customer.contacts == ticket.customer.contacts
    assert back.fields["nested"] == {"ключ": ["значение", {"深": "层"}]}
    assert back.created_at.utcoffset() == timedelta(hours=8)


def test_the_document_shape_is_stable_and_readable() -> None:
    doc = codec.ticket_to_doc(full_ticket())
    assert doc["channel"] == "chat"
    assert doc["priority"] == "urgent"
    assert doc["created_at"] == "2026-03-06T16:30:05.123456+08:00"
    assert doc["tags"] == sorted(doc["tags"])
    clock = doc["sla"]["clocks"][1]
    assert clock["target"] == 8 * 3600 * 10**6 + 7  # microseconds, exact
    assert clock["pending_warnings"][0][0] == 95


def test_other_values_round_trip() -> None:
    at = datetime(2026, 3, 6, 16, 30, 0, 1, tzinfo=SHANGHAI)
    notification = Notification(
        "k-🔑",
        "reply",
        (Recipient(RecipientRole.ON_CALL, "+86 138", "值班"),),
        "主题",
        "正文",
        at,
        "t-1",
        {"a": [1, {"b": None}]},
    )
    values = [
        Event("t-1", 3, "StatusChanged", at, "agent_李", {"from": "open", "to": "closed"}),
        Timer("t-1", "sla:resolution:breach", at, "sla"),
        notification,
        OutboxEntry(notification, OutboxStatus.DEAD, 3, at, "boom", None),
        Record("survey", "r-1", {"score": 5}, at, at, "t-1", "sent", 2),
    ]
    for value in values:
        doc = codec.to_doc(value)
        assert codec.from_doc(_through_json(doc), type(value)) == value


def test_named_and_pendulum_zones_keep_the_instant() -> None:
    for at in (
        datetime(2026, 7, 1, 12, 0, 0, 5, tzinfo=ZoneInfo("Europe/Berlin")),
        pendulum.datetime(2026, 1, 1, 23, 59, 59, 999999, tz="America/New_York"),
    ):
        back = codec.timer_from_doc(codec.timer_to_doc(Timer("t", "k", at)))
        assert back.due_at == at
        assert back.due_at.utcoffset() == at.utcoffset()


def test_naive_datetimes_and_bad_documents_are_refused() -> None:
    with pytest.raises(ValidationError):
        codec.instant_to_micros(datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        codec.timer_from_doc({"ticket_id": "t", "key": "k", "due_at": "2026-01-01T00:00:00"})
    with pytest.raises(ValidationError):
        codec.timer_from_doc({"ticket_id": "t"})
    with pytest.raises(ValidationError):
        codec.dump_json({"x": float("nan")})


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [timezone.utc, timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=9))]
        ),
    )
)
def test_instants_as_micros_are_exact_and_ordered(at: datetime) -> None:
    micros = codec.instant_to_micros(at)
    assert codec.micros_to_instant(micros) == at
    later = at + timedelta(microseconds=1)
    assert codec.instant_to_micros(later) == micros + 1


@given(st.timedeltas())
def test_timedeltas_are_exact(delta: timedelta) -> None:
    assert codec.converter.structure(codec.converter.unstructure(delta), timedelta) == delta


def test_the_ticket_cache_decodes_only_text_it_has_not_seen() -> None:
    cache = codec.TicketCache()
    ticket = full_ticket()
    text = codec.ticket_json(ticket)
    assert json.loads(text) == codec.ticket_to_doc(ticket)  # the same document
    assert codec.ticket_json(ticket) == text  # and the same text every time
    first = cache.ticket(ticket.id, text)
    assert first == ticket
    assert cache.ticket(ticket.id, text) is first  # same text: not decoded again
    # Other text under the same id (another writer, or PostgreSQL's rendering) is decoded.
    other = json.dumps(json.loads(text), sort_keys=True)
    again = cache.ticket(ticket.id, other)
    assert again == ticket
    assert again is not first
    cache.remember(ticket.id, "written", first)
    assert cache.ticket(ticket.id, "written") is first


def test_the_ticket_cache_stays_within_its_bounds() -> None:
    ticket = full_ticket()
    text = codec.ticket_json(ticket)
    cache = codec.TicketCache(entries=3, chars=len(text) * 100)
    for n in range(10):
        cache.remember(f"t-{n}", text, ticket)
    assert len(cache._docs) == 3
    assert set(cache._docs) == {"t-7", "t-8", "t-9"}
    small = codec.TicketCache(entries=100, chars=len(text) * 8)
    for n in range(20):
        small.remember(f"t-{n}", text, ticket)
    assert small._held <= len(text) * 8
    small.remember("huge", text * 2, ticket)  # over an eighth of the budget: not kept
    assert "huge" not in small._docs
    small.clear()
    assert small._docs == {}
    assert small._held == 0
