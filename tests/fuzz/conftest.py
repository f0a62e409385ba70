"""Fuzz fixtures. The property tests here are quick and run in `make test`; the
live-gateway fuzz runs (marked `fuzz`, and the 90 s CI slice marked `fuzz_ci`)
run only when selected with `-m fuzz` / `-m fuzz_ci`.
"""

from __future__ import annotations

import pytest

SKIP_REASONS = {
    "fuzz": "long fuzz run: select it with -m fuzz (make test-fuzz)",
    "fuzz_ci": "90 s live fuzz slice: select it with -m fuzz_ci (make test-fuzz-ci)",
}


def explicitly_selected(config: pytest.Config, marker: str) -> bool:
    """Whether `-m` names `marker` positively (e.g. `-m fuzz`, not `-m "not fuzz"`)."""
    expr = str(config.getoption("markexpr") or "")
    words = expr.replace("(", " ").replace(")", " ").split()
    return any(w == marker and (i == 0 or words[i - 1] != "not") for i, w in enumerate(words))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: long fuzz run against a live gateway")
    config.addinivalue_line("markers", "fuzz_ci: seeded 90 s fuzz slice against a live gateway")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, reason in SKIP_REASONS.items():
        if explicitly_selected(config, marker):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(skip)
