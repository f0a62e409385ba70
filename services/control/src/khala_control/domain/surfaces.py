"""The surface matrix (which topic classes each client surface may read) and
the minimum client version per surface.

Spec strings (used by the settings):
  matrix:   `web=runs,workers;desktop=runs,workers,run,worker;onyx=runs`
  minimums: `desktop=1.4.0;ios=2.0.0`
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from khala_common.topics import TopicClass
from khala_common.versions import Version, is_below, parse_version
from khala_control.domain.errors import ControlError

DEFAULT_MATRIX_SPEC = (
    "web=runs,workers;desktop=runs,workers,run,worker;ios=runs,workers,run,worker;onyx=runs"
)
_SURFACE = re.compile(r"^[a-z0-9_-]{1,32}$")


def _entries(spec: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for chunk in spec.split(";"):
        if not chunk.strip():
            continue
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if not sep or not _SURFACE.match(name):
            raise ValueError(f"expected `surface=value` entries separated by `;`, got {chunk!r}")
        entries.append((name, value.strip()))
    return entries


def parse_matrix(spec: str) -> dict[str, frozenset[TopicClass]]:
    """Surface → readable topic classes, from a matrix spec (ValueError if invalid)."""
    matrix: dict[str, frozenset[TopicClass]] = {}
    for name, value in _entries(spec):
        if name in matrix:
            raise ValueError(f"surface {name!r} appears twice")
        classes: set[TopicClass] = set()
        for raw in value.split(","):
            if not raw.strip():
                continue
            try:
                classes.add(TopicClass(raw.strip()))
            except ValueError:
                known = ", ".join(c.value for c in TopicClass)
                raise ValueError(f"unknown topic class {raw.strip()!r} (known: {known})") from None
        matrix[name] = frozenset(classes)
    if not matrix:
        raise ValueError("the matrix names no surface")
    return matrix


def parse_minimum_versions(spec: str, surfaces: frozenset[str]) -> dict[str, Version]:
    """Surface → minimum client version, from a minimums spec (ValueError if invalid)."""
    minimums: dict[str, Version] = {}
    for name, value in _entries(spec):
        if name not in surfaces:
            raise ValueError(f"surface {name!r} is not in the surface matrix")
        version = parse_version(value)
        if version is None:
            raise ValueError(f"invalid version {value!r} for surface {name!r}")
        minimums[name] = version
    return minimums


@dataclass(frozen=True)
class SurfacePolicy:
    """What each surface may read and which client versions it must run."""

    matrix: dict[str, frozenset[TopicClass]] = field(hash=False)
    minimum_versions: dict[str, Version] = field(default_factory=dict, hash=False)

    @classmethod
    def from_specs(cls, matrix_spec: str, minimums_spec: str = "") -> SurfacePolicy:
        """A policy from spec strings (ValueError naming the problem)."""
        matrix = parse_matrix(matrix_spec)
        return cls(matrix, parse_minimum_versions(minimums_spec, frozenset(matrix)))

    def readable(self, surface: str) -> frozenset[TopicClass]:
        """The topic classes `surface` may read, or `bad_request` if it is unknown."""
        classes = self.matrix.get(surface)
        if classes is None:
            known = ", ".join(sorted(self.matrix))
            raise ControlError("bad_request", f"unknown surface {surface!r} (known: {known})")
        return classes

    def check_client_version(self, surface: str, client_version: str) -> None:
        """Refuse (`upgrade_required`) a client older than its surface's minimum."""
        minimum = self.minimum_versions.get(surface)
        if minimum is not None and is_below(client_version, minimum):
            raise ControlError(
                "upgrade_required",
                f"{surface} clients must run version {minimum} or newer",
                surface=surface,
                minimum_version=str(minimum),
            )
