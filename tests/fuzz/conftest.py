"""Fuzz fixtures. The property tests here are quick and run in `make test`; the
live-gateway fuzz run (marked `fuzz`) runs only when selected with `-m fuzz`.
"""

from __future__ import annotations

import pytest


def explicitly_selected(config: pytest.Config, marker: str) -> bool:
    """Whether `-m` names `marker` positively (e.g. `-m fuzz`, not `-m "not fuzz"`)."""
    expr = str(config.getoption("markexpr") or "")
    return marker in expr.replace(f"not {marker}", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: long fuzz run against a live gateway")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if explicitly_selected(config, "fuzz"):
        return
    skip = pytest.mark.skip(reason="long fuzz run: select it with -m fuzz (make test-fuzz)")
    for item in items:
        if item.get_closest_marker("fuzz"):
            item.add_marker(skip)
