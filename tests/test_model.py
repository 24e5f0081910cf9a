"""The value objects' private fast builders (``_replacer``, ``_maker``) against attrs' own."""

from __future__ import annotations

import itertools
import random
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from supportflow.errors import ValidationError
from supportflow.model import (
    Channel,
    Customer,
    Link,
    Message,
    Priority,
    Role,
    SlaClock,
    SlaClockState,
    Ticket,
    _maker,
    _replacer,
)

AT = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
TICKET = Ticket(
    id="t-1",
    number=1,
    subject="Printer on fire",
    description="Smoke from tray 2",
    customer=Customer(id="c-1", name="Ana"),
    channel=Channel.EMAIL,
    status="new",
    created_at=AT,
    updated_at=AT,
)
# Values of the right type for the ticket fields a command changes.
NEW_VALUES: dict[str, Any] = {
    "status": "open",
    "updated_at": AT + timedelta(minutes=5),
    "priority": Priority.URGENT,
    "assignee": "agent_li",
    "group": "tier-2",
    "tags": frozenset({"vip"}),
    "messages": (Message("m1", "c-1", Role.CUSTOMER, "hello", AT),),
    "links": (Link("parent", "t-0"),),
    "sequence": 7,
    "resolution": "fixed",
    "state": {"resolved_at": AT.isoformat()},
    "next_deadline": AT + timedelta(hours=4),
    "version": 3,
}


@given(st.lists(st.sampled_from(sorted(NEW_VALUES)), unique=True))
def test_replace_gives_what_attrs_evolve_gives(changed: list[str]) -> None:
    changes = {name: NEW_VALUES[name] for name in changed}
    replaced = _replacer(Ticket)(TICKET, changes)
    assert type(replaced) is Ticket
    assert replaced == attrs.evolve(TICKET, **changes)
    assert TICKET.status == "new"  # the old version is left as it was


def test_replaced_and_made_values_stay_frozen() -> None:
    replaced = _replacer(Ticket)(TICKET, {"status": "open"})
    made = _maker(Link)("child", "t-9")
    assert made == Link("child", "t-9")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        replaced.status = "closed"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.kind = "parent"  # type: ignore[misc]


def test_more_sets_of_changes_than_generated_replacers_still_replace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("supportflow.model._REPLACERS_PER_CLASS", 2)
    replace = _replacer(SlaClock)
    clock = SlaClock("first_response", timedelta(hours=1))
    changes: list[dict[str, Any]] = [
        {"state": SlaClockState.RUNNING},
        {"since": AT},
        {"cycle": 2, "met_at": AT},
        {"elapsed": timedelta(minutes=3), "state": SlaClockState.MET},
    ]
    for change in changes:  # the last two go through the one function that asks
        assert replace(clock, change) == attrs.evolve(clock, **change)


def test_replacers_generated_on_several_threads_at_once_stay_apart() -> None:
    # Each thread asks for replacers of other sets of changed fields, in its own order: a
    # replacer generated for one set must never be kept for another.
    values: dict[str, Any] = {
        "name": "next_response",
        "elapsed": timedelta(minutes=5),
        "cycle": 7,
        "warnings_fired": (75,),
        "pending_warnings": ((90, AT),),
        "target": timedelta(hours=9),
    }
    sets = [list(order) for size in (1, 2, 3) for order in itertools.permutations(values, size)]
    clock = SlaClock("first_response", timedelta(hours=1))
    wrong: list[tuple[str, ...]] = []

    def work(replace: Callable[[SlaClock, Mapping[str, Any]], SlaClock], seed: int) -> None:
        for changed in random.Random(seed).sample(sets, len(sets)):
            changes = {name: values[name] for name in changed}
            try:
                replaced = replace(clock, changes)
            except KeyError:
                wrong.append(tuple(changed))
                continue
            if any(getattr(replaced, name) != value for name, value in changes.items()):
                wrong.append(tuple(changed))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for trial in range(25):
            replace = _replacer(SlaClock)
            seeds = range(trial * 8, trial * 8 + 6)
            threads = [threading.Thread(target=work, args=(replace, seed)) for seed in seeds]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_class_the_fast_builders_cannot_serve_is_refused_when_they_are_made() -> None:
    @attrs.frozen(slots=True)
    class Referable:  # keeps its __weakref__ slot
        name: str

    @attrs.frozen(slots=True, weakref_slot=False)
    class Base:
        name: str

    @attrs.frozen(slots=True, weakref_slot=False)
    class Derived(Base):
        extra: int

    for refused in (Referable, Derived):
        with pytest.raises(TypeError, match=refused.__name__):
            _replacer(refused)
        with pytest.raises(TypeError, match=refused.__name__):
            _maker(refused)


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("customer.id", {"id": 17}),
        ("customer.name", {"id": "c-1", "name": None}),
        ("customer.tier", {"id": "c-1", "tier": ["vip"]}),
        ("customer.language", {"id": "c-1", "language": 3}),
        ("customer.contacts", {"id": "c-1", "contacts": {1: "ana@example.com"}}),
        ("customer.contacts", {"id": "c-1", "contacts": "ana@example.com"}),
        ("customer.contacts", {"id": "c-1", "contacts": 7}),
    ],
)
def test_a_malformed_customer_names_the_field(field: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        Customer(**fields)
    assert refused.value.field == field


def test_a_customer_keeps_contacts_given_as_pairs_or_with_a_number() -> None:
    # Stored customers may hold a phone number written as a number: they must stay readable.
    assert Customer(id="c-1", contacts=[("email", "ana@example.com")]).contacts == {
        "email": "ana@example.com"
    }
    assert Customer(id="c-1", contacts={"phone": 5551234}).contacts == {"phone": 5551234}
