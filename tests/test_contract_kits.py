"""The contract kits themselves: they pass an adapter written from the docs alone, and fail
adapters that break a promise of the port.

The adapters (``tests/_kit_stores.py``) go through the kit the documented way, a test class
subclassing ``StorageContract`` with a ``store`` fixture, in one pytest run of their own.
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
}

_KIT_CLASS = """

class Test{store}(StorageContract):
    @pytest.fixture
    def store(self):
        store = _kit_stores.{store}()
        yield store
        store.close()
"""


def test_the_storage_kit_passes_a_correct_adapter_and_fails_each_broken_one(
    pytester: pytest.Pytester,
) -> None:
    pytester.syspathinsert(Path(__file__).parent)
    source = "import pytest\nimport _kit_stores\nfrom supportflow.testing import StorageContract\n"
    for store in ["DictStore", *BROKEN]:
        source += _KIT_CLASS.format(store=store)
    pytester.makepyfile(test_adapters=source)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    failed: dict[str, set[str]] = {store: set() for store in ["DictStore", *BROKEN]}
    for line in result.outlines:
        if line.startswith("FAILED "):
            _, test_class, check = line.split(" ")[1].split("::")
            failed[test_class.removeprefix("Test")].add(check.split("[")[0])
    expected = {"DictStore": set()} | {store: {check} for store, check in BROKEN.items()}
    assert failed == expected, result.stdout.str()
    assert "errors" not in result.parseoutcomes()
