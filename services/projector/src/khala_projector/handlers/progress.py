"""A plain progress bar on stderr for the CLI (redrawn in place on a terminal,
one line every few seconds otherwise, e.g. in a CI or kubectl log)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30


def render(label: str, done: int, total: int, detail: str, elapsed_s: float) -> str:
    """`label [#####-----]  50%  5/10 detail  1m02s` (pure)."""
    ratio = min(1.0, done / total) if total > 0 else 1.0
    filled = round(ratio * BAR_WIDTH)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    minutes, seconds = divmod(int(elapsed_s), 60)
    parts = [f"{label} [{bar}] {ratio * 100:3.0f}%  {done}/{total}"]
    if detail:
        parts.append(detail)
    parts.append(f"{minutes}m{seconds:02d}s")
    return "  ".join(parts)


class ProgressBar:
    """Writes progress to `out`; `update` is cheap to call often."""

    def __init__(
        self,
        out: TextIO,
        *,
        interactive: bool | None = None,
        line_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._interactive = out.isatty() if interactive is None else interactive
        self._line_interval_s = line_interval_s
        self._clock = clock
        self._started = clock()
        self._last_line = float("-inf")
        self._drawn = False

    def update(self, label: str, done: int, total: int, detail: str = "") -> None:
        """Show the current progress of phase `label`."""
        now = self._clock()
        text = render(label, done, total, detail, now - self._started)
        if self._interactive:
            self._out.write("\r\x1b[2K" + text)
            self._drawn = True
        elif done >= total or now - self._last_line >= self._line_interval_s:
            self._out.write(text + "\n")
            self._last_line = now
        self._out.flush()

    def note(self, message: str) -> None:
        """Print a line of its own (below the bar)."""
        self._end_line()
        self._out.write(message + "\n")
        self._out.flush()

    def close(self) -> None:
        """End the bar's line."""
        self._end_line()
        self._out.flush()

    def _end_line(self) -> None:
        if self._drawn:
            self._out.write("\n")
            self._drawn = False
