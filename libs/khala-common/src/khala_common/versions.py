"""Client versions: `MAJOR[.MINOR[.PATCH…]][-prerelease][+build]`, compared the
semver way (missing parts are 0; a prerelease sorts before its release; build
metadata is ignored)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION = re.compile(
    r"^v?(\d{1,9}(?:\.\d{1,9}){0,4})(?:-([0-9A-Za-z.-]{1,64}))?(?:\+[0-9A-Za-z.-]{1,64})?$"
)


@dataclass(frozen=True)
class Version:
    """A parsed client version."""

    release: tuple[int, ...]
    prerelease: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = ".".join(str(part) for part in self.release)
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text

    def _padded(self, width: int) -> tuple[int, ...]:
        return self.release + (0,) * (width - len(self.release))

    def __lt__(self, other: Version) -> bool:
        width = max(len(self.release), len(other.release))
        mine, theirs = self._padded(width), other._padded(width)
        if mine != theirs:
            return mine < theirs
        if not self.prerelease or not other.prerelease:
            return bool(self.prerelease) and not other.prerelease
        return _prerelease_key(self.prerelease) < _prerelease_key(other.prerelease)


def _prerelease_key(parts: tuple[str, ...]) -> list[tuple[int, int, str]]:
    # Numeric identifiers sort numerically and before alphanumeric ones.
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def parse_version(text: str) -> Version | None:
    """The version `text` denotes, or None when it does not parse."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    release = tuple(int(part) for part in match.group(1).split("."))
    prerelease = tuple(match.group(2).split(".")) if match.group(2) else ()
    if any(part == "" for part in prerelease):
        return None
    return Version(release, prerelease)


def is_below(client_version: str, minimum: Version) -> bool:
    """Whether `client_version` is older than `minimum` (unparseable counts as older)."""
    parsed = parse_version(client_version)
    return parsed is None or parsed < minimum
