"""Drift detector: re-derives sampled documents from runtime's log and compares hashes.

Each period it takes the next `sample` checkpoints in stream_id order (a
rotating window, so every stream is visited in turn), reads the stream's whole
log 1..checkpoint from runtime's ReadStream, folds it with the same pure
reducers, and compares the hash with the stored document's (and with the
checkpoint's). A mismatch is counted and logged; with repair enabled the
document is rewritten from the log as a targeted rebuild (Projector.repair:
one DOC_UPSERT in the current epoch, conditional on the checkpoint not having
moved, so it never races the live consumer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from khala_common.logs import get_logger
from khala_projector import metrics
from khala_projector.adapters.runtime_reader import RuntimeReader, RuntimeUnavailable
from khala_projector.domain.events import InvalidEvent, stream_ref
from khala_projector.domain.projection import doc_hash, fold, projection_of
from khala_projector.domain.sequencing import GapNotFilled, contiguous_range
from khala_projector.storage.projection_store import CheckpointRow, ProjectionStore, StreamState
from khala_projector.usecases.projector import Projector
from openagents.runtime.v1.events_pb2 import RuntimeEvent

log = get_logger("projector.drift")


@dataclass
class DriftReport:
    """Outcome of one sample."""

    checked: int = 0
    drifted: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    errors: int = 0


class DriftDetector:
    """Samples checkpoints, re-derives their documents, and optionally repairs them."""

    def __init__(
        self,
        store: ProjectionStore,
        reader: RuntimeReader,
        projector: Projector,
        *,
        sample: int,
        repair: bool,
        chunk: int = 500,
    ) -> None:
        self._store = store
        self._reader = reader
        self._projector = projector
        self._sample = sample
        self._repair = repair
        self._chunk = chunk
        self._after = ""

    async def check_sample(self) -> DriftReport:
        """Check the next `sample` streams of the rotating window."""
        rows = await self._store.sample(self._after, self._sample)
        if len(rows) < self._sample and self._after:
            seen = {row.stream_id for row in rows}
            wrapped = await self._store.sample("", self._sample - len(rows))
            rows += [row for row in wrapped if row.stream_id not in seen]
        self._after = rows[-1].stream_id if rows else ""
        return await self._check_rows(rows)

    async def check_streams(self, stream_ids: list[str]) -> DriftReport:
        """Check the given streams now (outside the rotating window)."""
        return await self._check_rows(await self._store.checkpoint_rows(stream_ids))

    async def _check_rows(self, rows: list[CheckpointRow]) -> DriftReport:
        report = DriftReport()
        for row in rows:
            await self._check(row, report)
        return report

    async def run_forever(self, interval_s: float) -> None:
        """Check a sample every `interval_s` (run as an owned task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await self.check_sample()
            except Exception as exc:
                metrics.DRIFT_ERRORS.inc()
                log.warning("drift sample failed", error=repr(exc))
                continue
            if report.drifted or report.errors:
                log.warning(
                    "drift sample",
                    checked=report.checked,
                    drifted=report.drifted,
                    repaired=report.repaired,
                    errors=report.errors,
                )

    async def _check(self, row: CheckpointRow, report: DriftReport) -> None:
        try:
            stream = stream_ref(row.stream_id, row.org_id)
            events = await self._read_log(row.stream_id, row.last_seq)
        except (InvalidEvent, GapNotFilled, RuntimeUnavailable) as exc:
            report.errors += 1
            metrics.DRIFT_ERRORS.inc()
            log.warning("drift check failed", stream_id=row.stream_id, error=str(exc))
            return
        projection = projection_of(stream).value
        report.checked += 1
        metrics.DRIFT_CHECKS.labels(projection).inc()
        derived = fold(stream, None, events).doc_hash
        stored = doc_hash(row.doc) if row.doc is not None else ""
        if derived == stored == row.doc_hash == row.stored_doc_hash:
            return
        report.drifted.append(row.stream_id)
        metrics.DRIFT_INCIDENTS.labels(projection).inc()
        log.error(
            "projection drift",
            stream_id=row.stream_id,
            last_seq=row.last_seq,
            derived_hash=derived,
            document_hash=stored,
            checkpoint_hash=row.doc_hash,
            repair=self._repair,
        )
        if not self._repair:
            return
        expected = StreamState(row.last_seq, row.doc, row.doc_hash)
        if await self._projector.repair(stream, expected, events):
            report.repaired.append(row.stream_id)
            metrics.DRIFT_REPAIRS.labels(projection).inc()
            log.warning("drifted document repaired", stream_id=row.stream_id, hash=derived)

    async def _read_log(self, stream_id: str, last_seq: int) -> list[RuntimeEvent]:
        """Events 1..last_seq of the stream, checked to be exactly those."""
        events: list[RuntimeEvent] = []
        while len(events) < last_seq:
            after = len(events)
            end = min(last_seq, after + self._chunk)
            fetched = await self._reader.read_stream(stream_id, after, end, purpose="drift")
            events += contiguous_range(stream_id, after, end, fetched)
        return events
