"""Drills and bench smoke as tests (`make test-drills`, part of .ci/run): they run
only when selected with `-m drills`."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "drills: operational drills and bench smoke (make test-drills)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expr = str(config.getoption("markexpr") or "")
    words = expr.replace("(", " ").replace(")", " ").split()
    if any(w == "drills" and (i == 0 or words[i - 1] != "not") for i, w in enumerate(words)):
        return
    skip = pytest.mark.skip(
        reason="drills and bench smoke: select them with -m drills (make test-drills)"
    )
    for item in items:
        if item.get_closest_marker("drills"):
            item.add_marker(skip)
