"""Duration settings are checked when they are made.

A duration of centuries is a typo (``days=`` for ``minutes=``); worse, a deadline set with it
falls past the year 9999, where no date exists, so every ticket it touches would fail later.
Each setting refuses such values when its policy or desk is built, naming itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
import pytest

from supportflow import (
    BusinessCalendar,
    Customer,
    Desk,
    ManualClock,
    Priority,
    SlaPolicy,
    SlaTarget,
    ValidationError,
)
from supportflow.automation import AutoClosePolicy, CallbackPolicy, IdleChatPolicy
from supportflow.clock import SystemClock
from supportflow.escalation import EscalationLevel, EscalationPolicy
from supportflow.extensions.triage import IncidentPolicy
from supportflow.feedback import FeedbackPolicy
from supportflow.model import check_duration
from supportflow.notify.dispatcher import Dispatcher
from supportflow.storage import MemoryStore

CENTURIES = timedelta(days=400_000)  # about 1,095 years
SECRET = b"0123456789abcdef"

# Each duration setting: how to build it with a value, and the field its error names.
SETTINGS: list[tuple[str, Callable[[timedelta], Any]]] = [
    ("first_response", lambda d: SlaTarget(first_response=d)),
    ("next_response", lambda d: SlaTarget(next_response=d)),
    ("resolution", lambda d: SlaTarget(resolution=d)),
    ("after", lambda d: EscalationLevel("lead", after=d)),
    ("repeat_every", lambda d: EscalationLevel("lead", after=timedelta(0), repeat_every=d)),
    ("after", lambda d: AutoClosePolicy(after=d)),
    ("close_after", lambda d: IdleChatPolicy(close_after=d)),
    ("escalate_after", lambda d: CallbackPolicy(escalate_after=d)),
    ("survey_delay", lambda d: FeedbackPolicy(secret=SECRET, survey_delay=d)),
    ("survey_ttl", lambda d: FeedbackPolicy(secret=SECRET, survey_ttl=d)),
    ("follow_up_delay", lambda d: FeedbackPolicy(secret=SECRET, follow_up_delay=d)),
    (
        "follow_up_retry_interval",
        lambda d: FeedbackPolicy(secret=SECRET, follow_up_retry_interval=d),
    ),
    ("window", lambda d: IncidentPolicy(window=d)),
    ("timer_lease", lambda d: Desk(timer_lease=d)),
    ("lease", lambda d: Dispatcher(MemoryStore(), {}, clock=SystemClock(), lease=d)),
]


@pytest.mark.parametrize(("field", "build"), SETTINGS, ids=[f for f, _ in SETTINGS])
def test_a_duration_of_centuries_is_refused_by_name(
    field: str, build: Callable[[timedelta], Any]
) -> None:
    with pytest.raises(ValidationError) as caught:
        build(CENTURIES)
    assert caught.value.field == field
    assert "1,000 years" in str(caught.value)


@pytest.mark.parametrize(("field", "build"), SETTINGS, ids=[f for f, _ in SETTINGS])
def test_long_but_sane_durations_still_build(field: str, build: Callable[[timedelta], Any]) -> None:
    build(timedelta(days=3 * 365))  # a three-year contract term, say
    build(pendulum.duration(days=30))  # pendulum Durations are timedeltas


def test_the_bound_is_one_thousand_years_inclusive() -> None:
    check_duration("window", timedelta(days=365_250))
    with pytest.raises(ValidationError, match="1,000 years"):
        check_duration("window", timedelta(days=365_250, microseconds=1))
    with pytest.raises(ValidationError, match="above zero"):
        check_duration("window", timedelta(0))
    check_duration("window", timedelta(0), least=timedelta(0))
    check_duration("window", None, optional=True)
    with pytest.raises(ValidationError, match="a timedelta"):
        check_duration("window", 60)


# A desk open one minute a week: a year of business time takes 525,600 weeks.
SPARSE = BusinessCalendar("Europe/London", {"mon": [("09:00", "09:01")]}, name="sparse")


def test_an_sla_target_its_calendar_cannot_count_within_a_thousand_years_is_refused() -> None:
    hours = timedelta(hours=900)  # 54,000 business minutes: about 1,036 years of Mondays
    with pytest.raises(ValidationError) as caught:
        SlaPolicy(
            "sparse",
            calendar=SPARSE,
            targets={Priority.LOW: SlaTarget(first_response=timedelta(1), resolution=hours)},
        )
    assert caught.value.field == "targets[low].resolution"
    assert "'sparse'" in str(caught.value)
    # The same target on an office calendar is a few months, and fine.
    office = BusinessCalendar("Europe/London", {d: [("09:00", "17:00")] for d in range(5)})
    SlaPolicy("office", calendar=office, targets={Priority.LOW: SlaTarget(resolution=hours)})


def test_escalation_and_auto_close_durations_are_checked_on_their_calendar() -> None:
    long = timedelta(hours=900)
    with pytest.raises(ValidationError) as caught:
        EscalationPolicy("slow", [EscalationLevel("lead", after=long)], calendar=SPARSE)
    assert caught.value.field == "levels['lead'].after"
    level = EscalationLevel("lead", after=timedelta(0), repeat_every=long)
    with pytest.raises(ValidationError) as caught:
        EscalationPolicy("slow", [level], calendar=SPARSE)
    assert caught.value.field == "levels['lead'].repeat_every"
    with pytest.raises(ValidationError) as caught:
        AutoClosePolicy(after=long, calendar=SPARSE)
    assert caught.value.field == "after"
    # An hour of Mondays is sixty weeks: counted, and the deadline is a real date.
    policy = AutoClosePolicy(after=timedelta(hours=1), calendar=SPARSE)
    assert policy.due(datetime(2026, 3, 2, tzinfo=timezone.utc)).year == 2027


@pytest.mark.parametrize(
    ("calendar", "longest"),
    [(BusinessCalendar.always(), timedelta(days=365_250)), (SPARSE, timedelta(hours=860))],
)
def test_every_target_a_policy_accepts_gives_a_ticket_a_real_deadline(
    calendar: BusinessCalendar, longest: timedelta
) -> None:
    policy = SlaPolicy(
        "long", calendar=calendar, targets={Priority.NORMAL: SlaTarget(resolution=longest)}
    )
    desk = Desk(clock=ManualClock(datetime(2026, 3, 2, 9, tzinfo=timezone.utc)), sla=[policy])
    ticket = desk.open_ticket(
        subject="s", body="b", customer=Customer(id="c", name="C"), channel="email"
    )
    assert ticket.sla is not None
    resolution = ticket.sla.clocks[2]
    assert resolution.due_at is not None
    assert 3000 <= resolution.due_at.year < 3100
