"""Inbound limits: a token bucket for messages per second, and client-version minimums."""

from __future__ import annotations

import re
from collections.abc import Mapping

_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


class TokenBucket:
    """`rate` tokens per second up to `burst`; each message takes one."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def allow(self, now: float) -> bool:
        """Take a token if one is available at `now`."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def parse_version(text: str) -> tuple[int, ...] | None:
    """`1.2.3` (optionally `v1.2.3-beta`) as a tuple, or None if it has no numeric prefix."""
    match = _VERSION.match(text)
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _padded(version: tuple[int, ...], length: int) -> tuple[int, ...]:
    return version + (0,) * (length - len(version))


def below_minimum(client_version: str, surface: str, minimums: Mapping[str, str]) -> str | None:
    """The minimum version `client_version` fails for `surface`, or None if it is allowed.

    A surface without a configured minimum accepts any version; with one, an
    unparseable client version is below it.
    """
    minimum = minimums.get(surface)
    if not minimum:
        return None
    wanted = parse_version(minimum)
    got = parse_version(client_version)
    if wanted is None:
        return None
    if got is None:
        return minimum
    length = max(len(wanted), len(got))
    return minimum if _padded(got, length) < _padded(wanted, length) else None
