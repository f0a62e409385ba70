"""The org audit of runtime actions: every event of an org's runs and workers with
the actor that wrote it, oldest first, keyset-paged by (occurred_at_ms, stream_id,
stream_seq): a stream's events in seq order, streams interleaved by time.

Only the org's admins and owners read it (`Action.READ_AUDIT`); a caller who is
not one gets the same `forbidden` whether the org exists or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from khala_runtime.domain.actor import Actor
from khala_runtime.domain.errors import ValidationError
from khala_runtime.domain.ids import is_valid_segment

KINDS = ("run", "worker")

Position = tuple[int, str, int]
"""(occurred_at_ms, stream_id, stream_seq): the audit's order."""

AUDIT_START: Position = (-1, "", 0)
"""The position before an org's first event."""


@dataclass(frozen=True)
class AuditEntry:
    """One write in an org: which stream, which event, when and by whom
    (None: written before actors were recorded)."""

    event_id: str
    stream_id: str
    subject_kind: str  # "run" | "worker"
    subject_id: str
    stream_seq: int
    type: str
    occurred_at_ms: int
    actor: Actor | None


def parse_audit_cursor(raw: str | None) -> Position:
    """The position an `after` cursor (`<occurred_at_ms>.<stream_seq>.<stream_id>`)
    names; the start when absent. ValidationError if it is not one this API returned."""
    if raw is None or raw == "":
        return AUDIT_START
    millis, _, rest = raw.partition(".")
    seq, _, stream_id = rest.partition(".")
    kind, _, subject = stream_id.partition(":")
    if not (_is_number(millis) and _is_number(seq) and kind in KINDS and is_valid_segment(subject)):
        raise ValidationError("after", "malformed; pass next_after back unchanged")
    return int(millis), stream_id, int(seq)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def audit_cursor(entry: AuditEntry) -> str:
    """The `after` cursor that continues the audit after `entry`."""
    return f"{entry.occurred_at_ms}.{entry.stream_seq}.{entry.stream_id}"
