"""Every example in ``examples/`` runs to the end and tells its story.

Examples are run as a user would run them: a fresh Python process, from an unrelated working
directory. Examples added later are picked up by the glob.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples_to_run() -> None:
    names = {example.name for example in EXAMPLES}
    assert {"quickstart.py", "custom_workflow.py"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example_runs_to_the_end(example: Path, tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip(), f"{example.name} printed nothing"
