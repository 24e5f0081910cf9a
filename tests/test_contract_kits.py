"""The contract kits themselves: they pass an adapter written from the docs alone, and fail
adapters that break a promise of the port.

The adapters (``tests/_kit_stores.py``, ``tests/_kit_notifiers.py``) go through the kits the
documented way, a test class subclassing ``StorageContract`` or ``NotifierContract`` with the
fixtures the docs name, in a pytest run of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# Each adapter that breaks a promise, and the one check of the kit that must catch it.
BROKEN = {
    "NumberBlindStore": "test_inserting_a_taken_number_raises_conflict",
    "NaiveAsUtcStore": "test_naive_datetimes_are_refused_by_every_call",
    "UncheckedClaimStore": "test_bad_limits_leases_and_owners_are_refused",
    "AutocommitReleaseStore": "test_a_raising_unit_of_work_keeps_no_release_or_delivery_report",
    "PartialBatchStore": "test_a_batch_with_odd_text_is_kept_or_refused_whole",
    "RevivingEnqueueStore": "test_a_repeated_key_does_not_revive_a_delivered_or_dead_row",
    "OwnerBlindStore": "test_a_late_failure_report_leaves_another_workers_claim_alone",
    "TiesByKeyStore": "test_timers_due_at_the_same_time_are_claimed_in_the_order_they_were_set",
    "TiesAsWrittenStore": "test_find_records_created_at_the_same_time_come_by_id",
}

_KIT_CLASS = """

class Test{store}(StorageContract):
    @pytest.fixture
    def store(self):
        store = _kit_stores.{store}()
        yield store
        store.close()
"""


def _failed_checks(result: pytest.RunResult) -> dict[str, set[str]]:
    failed: dict[str, set[str]] = {}
    for line in result.outlines:
        if line.startswith("FAILED "):
            _, test_class, check = line.split(" ")[1].split("::")
            failed.setdefault(test_class.removeprefix("Test"), set()).add(check.split("[")[0])
    return failed


def test_the_storage_kit_passes_a_correct_adapter_and_fails_each_broken_one(
    pytester: pytest.Pytester,
) -> None:
    pytester.syspathinsert(Path(__file__).parent)
    source = "import pytest\nimport _kit_stores\nfrom supportflow.testing import StorageContract\n"
    for store in ["DictStore", *BROKEN]:
        source += _KIT_CLASS.format(store=store)
    pytester.makepyfile(test_adapters=source)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    expected = {store: {check} for store, check in BROKEN.items()}
    assert _failed_checks(result) == expected, result.stdout.str()
    assert "errors" not in result.parseoutcomes()


# -- the notifier kit --------------------------------------------------------------------
_NOTIFIER_CLASS = """

class Test{notifier}(NotifierContract):
    @pytest.fixture
    def notifier(self):
        return _kit_notifiers.{notifier}()

    @pytest.fixture
    def received(self, notifier):
        return lambda: notifier.inbox

    @pytest.fixture
    def failing_notifier(self):
        return _kit_notifiers.{failing}()
"""

# Each notifier that breaks a promise, and the check of the kit that must catch it (others
# may fail too: a notifier that sends one message per recipient shows it in every count).
BROKEN_NOTIFIERS = {
    "OneByOneNotifier": "test_delivery_arrives_once_with_its_key",
    "EveryoneNotifier": "test_a_delivery_goes_to_the_recipients_given",
}


def test_the_notifier_kit_passes_a_correct_notifier_and_fails_each_broken_one(
    pytester: pytest.Pytester,
) -> None:
    pytester.syspathinsert(Path(__file__).parent)
    source = "import pytest\nimport _kit_notifiers\n"
    source += "from supportflow.testing import NotifierContract\n"
    for notifier in ["InboxNotifier", *BROKEN_NOTIFIERS]:
        source += _NOTIFIER_CLASS.format(notifier=notifier, failing="RefusedNotifier")
    pytester.makepyfile(test_notifiers=source)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rfs")
    failed = _failed_checks(result)
    assert "InboxNotifier" not in failed, result.stdout.str()
    for notifier, check in BROKEN_NOTIFIERS.items():
        assert check in failed.get(notifier, set()), result.stdout.str()
    assert "skipped" not in result.parseoutcomes()  # every check ran on the correct one


def test_the_notifier_kit_says_what_to_raise_on_failure(pytester: pytest.Pytester) -> None:
    pytester.syspathinsert(Path(__file__).parent)
    source = "import pytest\nimport _kit_notifiers\n"
    source += "from supportflow.testing import NotifierContract\n"
    source += _NOTIFIER_CLASS.format(notifier="InboxNotifier", failing="OSErrorNotifier")
    pytester.makepyfile(test_notifiers=source)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-k", "failure")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failing_notifier raised ConnectionRefusedError*"])
    result.stdout.fnmatch_lines(["*raise DeliveryError(message, permanent=*"])


def test_the_kits_say_which_fixture_to_provide(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_unfinished="""
        import pytest
        from supportflow.testing import NotifierContract, StorageContract

        class TestNoStore(StorageContract):
            pass

        class TestNoReceiver(NotifierContract):
            @pytest.fixture
            def notifier(self):
                return None
        """
    )
    result = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-k", "follow_the_protocols or arrives_once"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*override the `store` fixture*"])
    result.stdout.fnmatch_lines(["*override the `received` fixture*"])


def test_the_storage_kit_says_how_to_write_a_store_opener(pytester: pytest.Pytester) -> None:
    pytester.syspathinsert(Path(__file__).parent)
    pytester.makepyfile(
        test_opener="""
        import pytest
        import _kit_stores
        from supportflow.testing import StorageContract

        class TestLambdaOpener(StorageContract):
            supports_multiple_processes = True

            @pytest.fixture
            def store(self):
                return _kit_stores.DictStore()

            @pytest.fixture
            def store_opener(self):
                return lambda: _kit_stores.DictStore()
        """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-k", "processes")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*functools.partial(YourStore, ...), not a lambda*"])
