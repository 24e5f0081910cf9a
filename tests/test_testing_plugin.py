"""The pytest plugin's fixtures, used as a test author uses them."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from supportflow import Channel, Customer, Desk, ManualClock
from supportflow.model import RecipientRole
from supportflow.notify import MemoryNotifier

pytest_plugins = ["pytester"]


def _open(desk: Desk) -> str:
    ticket = desk.open_ticket(
        subject="VPN drops every hour",
        body="Since Monday.",
        customer=Customer(id="c-1", name="Ana Silva", contacts={"email": "ana@example.com"}),
        channel=Channel.EMAIL,
    )
    return ticket.id


def test_a_ticket_runs_through_its_sla_on_the_plugins_fixtures(
    memory_desk: Desk, manual_clock: ManualClock, memory_notifier: MemoryNotifier
) -> None:
    # Opened Monday 09:00 UTC: a normal e-mail is answered within 4 business hours, with
    # warnings at 75 % (12:00) and 90 % (12:36), late at 13:00.
    ticket_id = _open(memory_desk)
    manual_clock.advance(hours=3)
    memory_desk.run_due()
    assert memory_desk.deliver_pending().delivered == []  # a warning tells nobody
    manual_clock.advance(hours=1)
    memory_desk.run_due()
    sla = [(e.type, e.at, e.data.get("threshold")) for e in memory_desk.history(ticket_id)][2:]
    utc = timezone.utc
    assert sla == [
        ("SlaWarning", datetime(2026, 3, 2, 12, 0, tzinfo=utc), 75),
        ("SlaWarning", datetime(2026, 3, 2, 12, 36, tzinfo=utc), 90),
        ("SlaBreached", datetime(2026, 3, 2, 13, 0, tzinfo=utc), None),
    ]
    report = memory_desk.deliver_pending()
    assert len(report.delivered) == 1
    (delivery,) = memory_notifier.deliveries
    assert delivery.notification.kind == "sla"
    assert [r.role for r in delivery.recipients] == [RecipientRole.TEAM_LEAD]
    assert delivery.at == datetime(2026, 3, 2, 13, 0, tzinfo=utc)


def test_each_test_gets_fresh_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from supportflow import Channel, Customer
        from supportflow.testing import DEFAULT_START

        def test_first(memory_desk, manual_clock, memory_notifier):
            memory_desk.open_ticket(subject="s", body="b", customer=Customer("c-1"),
                                    channel=Channel.EMAIL)
            manual_clock.advance(days=2)
            memory_desk.run_due()
            memory_desk.deliver_pending()
            assert memory_notifier.deliveries

        def test_second(memory_desk, manual_clock, memory_notifier):
            assert manual_clock.now() == DEFAULT_START
            assert memory_desk.tickets() == []
            assert memory_notifier.deliveries == []
        """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
