"""What a rebuild covers and which epoch it writes (pure).

A rebuild of projection P (optionally one org) re-derives every document of P
and every topic P feeds (`org.<org>.runs` + `org.<org>.run.<id>`, or the worker
equivalents) from runtime's log into a new topic epoch, minted by
domain/epochs.py (time-ordered and random, never reused even after a backup
restore rewinds `rebuild_id`), so a client cursor of any earlier epoch is
recognisably stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from khala_projector.domain.projection import Projection


class RebuildStatus(StrEnum):
    """Lifecycle of a rebuild row."""

    STAGING = "staging"  # frames of the new epoch are being written; nothing switched
    SWITCHED = "switched"  # every org switched; old epochs' frames may remain
    DONE = "done"  # old epochs deleted
    ABANDONED = "abandoned"  # given up; its staged frames were deleted


UNFINISHED = (RebuildStatus.STAGING, RebuildStatus.SWITCHED)


@dataclass(frozen=True)
class RebuildScope:
    """A projection and an org ('' = every org)."""

    projection: Projection
    org_id: str = ""

    def overlaps(self, other: RebuildScope) -> bool:
        """Whether both scopes could rebuild the same topic."""
        if self.projection is not other.projection:
            return False
        return not self.org_id or not other.org_id or self.org_id == other.org_id

    def describe(self) -> str:
        """`runs org=acme` or `workers (every org)`."""
        org = f"org={self.org_id}" if self.org_id else "(every org)"
        return f"{self.projection.value} {org}"
