"""Revoked sessions, refused at Hello and RefreshAuth (`reauth_required`, close 4009).

Guarantee: once control has committed a session's revocation, this gateway
refuses every token of that session (by its `sid`) until no such token can
still verify, even if the revocation was published while this instance was
not listening:

- Live: `ControlConsumer` adds each `khala.control` Revocation as it arrives
  (and the hub evicts the session's sockets). Its queue has `x-expires`, not
  `exclusive`, so it outlives a short broker disconnect and keeps what was
  published meanwhile; the queue of a gateway that is gone expires on its own.
- Reload: at start, and after every broker reconnect (the channel reopening),
  the whole set is reloaded from control's `ListRevokedSessions` (service
  credential), retried every second until it succeeds (`adapters/revocation_sync.py`). Until the first load
  succeeded the `revocations` readiness check fails.
- Forgetting: an entry is dropped after `refuse_until_ms` (control's answer:
  revocation time + the longest token lifetime + skew) or, for a broker
  message, after `revoked_at_ms + retention_s`; past it every token of the
  session has expired anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RevokedSessions:
    """Session ids whose tokens are refused, each until its own deadline."""

    def __init__(self, retention_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._retention_ms = int(retention_s * 1000)
        self._clock = clock
        self._until_ms: dict[str, int] = {}

    def add(self, session_id: str, revoked_at_ms: int, refuse_until_ms: int = 0) -> None:
        """Refuse `session_id` until `refuse_until_ms` (default: revoked_at + retention)."""
        if not session_id:
            return
        revoked_at_ms = revoked_at_ms or int(self._clock() * 1000)
        until = max(refuse_until_ms, revoked_at_ms + self._retention_ms)
        if until > self._until_ms.get(session_id, 0):
            self._until_ms[session_id] = until

    def __contains__(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        until = self._until_ms.get(session_id)
        return until is not None and until > self._clock() * 1000

    def __len__(self) -> int:
        return len(self._until_ms)

    def prune(self) -> int:
        """Forget entries past their deadline; returns how many."""
        now_ms = self._clock() * 1000
        expired = [sid for sid, until in self._until_ms.items() if until <= now_ms]
        for sid in expired:
            del self._until_ms[sid]
        return len(expired)
