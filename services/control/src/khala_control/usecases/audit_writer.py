"""Buffered audit writes for high-volume entries (sync-token mints and denials).

Guarantee: an entry handed to `submit` is written to `control.audit_log`
within about `flush_interval_s`, or, if Postgres refuses it until shutdown,
logged at error level entry by entry (and counted in
`khala_control_audit_lost_total`). It is never dropped silently. A failed
batch stays buffered, in order, and is retried on the next tick; a batch whose
commit outcome is unknown (connection lost during COMMIT) may be written
twice. What a hard kill (SIGKILL, OOM) loses is the buffer: at most the
entries of the last `flush_interval_s`, which is the trade-off for not paying
a Postgres round trip per mint. With `flush_interval_s = 0` every `submit`
writes before returning (a mint is then refused if its audit entry cannot be
written). The buffer is bounded: past `max_pending` entries, `submit` raises
`audit_unavailable` (503) rather than grow without limit.

Entries that describe a state change (session created or revoked, membership
changed) do not come here: they are written in the transaction of the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from khala_common.logs import get_logger
from khala_control.domain.errors import ControlError
from khala_control.metrics import AUDIT_LOST, AUDIT_PENDING, AUDIT_WRITE_FAILURES, AUDIT_WRITTEN
from khala_control.storage import audit
from khala_control.storage.audit import AuditEntry

BATCH_MAX = 2_000
MAX_PENDING = 100_000
log = get_logger("audit")


class AuditWriter:
    """Buffers entries and writes them in batches; `run` is owned by the app."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flush_interval_s: float,
        batch_max: int = BATCH_MAX,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._pool = pool
        self._interval_s = flush_interval_s
        self._batch_max = batch_max
        self._max_pending = max_pending
        self._pending: list[AuditEntry] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def buffered(self) -> bool:
        """Whether entries are batched (False: written by `submit` itself)."""
        return self._interval_s > 0

    @property
    def pending(self) -> int:
        """Entries buffered and not yet written."""
        return len(self._pending)

    async def submit(self, entry: AuditEntry) -> None:
        """Queue `entry` (or write it now, when not buffered)."""
        if not self.buffered:
            async with self._pool.acquire() as conn:
                await audit.record(conn, entry)
            return
        if len(self._pending) >= self._max_pending:
            raise ControlError(
                "audit_unavailable", "the audit log cannot be written; try again shortly"
            )
        self._pending.append(entry)
        AUDIT_PENDING.set(len(self._pending))
        if len(self._pending) >= self._batch_max:
            self._wake.set()

    async def run(self) -> None:
        """Flush every `flush_interval_s` (sooner when a batch is full) until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                AUDIT_WRITE_FAILURES.inc()
                log.warning(
                    "audit batch write failed; will retry", error=repr(exc), pending=self.pending
                )

    async def flush(self) -> int:
        """Write everything buffered so far; returns how many entries were written."""
        written = 0
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._batch_max]
                async with self._pool.acquire() as conn, conn.transaction():
                    await audit.write_batch(conn, batch)
                # Entries submitted meanwhile were appended after the batch.
                del self._pending[: len(batch)]
                written += len(batch)
                AUDIT_WRITTEN.inc(len(batch))
                AUDIT_PENDING.set(len(self._pending))
        return written

    async def close(self, timeout_s: float = 5.0) -> None:
        """Final flush, retried until `timeout_s`; what is still unwritten is logged."""
        deadline = time.monotonic() + timeout_s
        while self._pending:
            try:
                await self.flush()
            except Exception as exc:
                AUDIT_WRITE_FAILURES.inc()
                if time.monotonic() >= deadline:
                    log.error("audit log unwritable at shutdown", error=repr(exc))
                    break
                await asyncio.sleep(0.2)
        for entry in self._pending:
            log.error(
                "audit entry not written",
                action=entry.action,
                at=entry.at.isoformat(),
                user_id=entry.user_id,
                session_id=entry.session_id,
                org_ids=list(entry.org_ids),
                client_ip=entry.client_ip,
                detail=dict(entry.detail),
            )
        AUDIT_LOST.inc(len(self._pending))
        self._pending.clear()
        AUDIT_PENDING.set(0)
