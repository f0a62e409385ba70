"""Where a benchmark keeps its results: `bench/results/<name>.json` (the latest
run and the history of runs) and `bench/results/<name>.md` (rendered from the
history)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def record(
    name: str, result: dict[str, Any], markdown: Callable[[list[dict[str, Any]]], str]
) -> None:
    """Append `result` to `<name>.json`'s history and rewrite `<name>.md`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    history: list[dict[str, Any]] = []
    if json_path.exists():
        history = json.loads(json_path.read_text()).get("history", [])
    history.append(result)
    json_path.write_text(json.dumps({"latest": result, "history": history}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(history))
