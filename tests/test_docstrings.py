"""The ``>>>`` examples in the package's docstrings run and show what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import supportflow

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(supportflow.__path__, prefix="supportflow.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failed, _ = doctest.testmod(module, optionflags=flags, verbose=False)
    assert failed == 0, f"{failed} docstring example(s) of {name} failed (see the output above)"
