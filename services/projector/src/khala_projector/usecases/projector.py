"""Projection of one stream's delivered events: dedupe, gap fill, fold, commit, fan out.

Guarantees (DESIGN §4.3):
- Exactly-once folding: an event is folded only when its seq is checkpoint+1;
  seq <= checkpoint is a duplicate (skipped), seq > checkpoint+1 is a gap whose
  missing events are read from runtime's ReadStream and folded in order first.
  The checkpoint advances in the same transaction as documents and frames.
- The caller acks the delivered messages only after `project` returns, i.e.
  after commit; any exception means nothing was committed for the batch (or the
  commit happened and a redelivery will be skipped as a duplicate).
- A commit refused because another writer moved the checkpoint (a rebuild
  switch, a drift repair, an overlapping failover) is re-planned from the new
  checkpoint at once, up to CHECKPOINT_RETRIES times, before it counts as a failure.
- Publication to the fanout happens after commit and is at-least-once (see
  publisher.py); a publish failure never fails the projection.

Fault injection (tests only, off by default): with `crash_after_commit` = n the
process SIGKILLs itself right after its nth commit, before publishing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from khala_common.logs import get_logger
from khala_common.telemetry import exemplar
from khala_projector import metrics
from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.domain.events import StreamRef
from khala_projector.domain.frames import StoredFrame
from khala_projector.domain.projection import Folded, fold
from khala_projector.domain.sequencing import contiguous_range, plan
from khala_projector.domain.status import StreamStatus, stream_status
from khala_projector.storage.projection_store import CheckpointMoved, ProjectionStore, StreamState
from khala_projector.usecases.publisher import FanoutPublisher
from openagents.runtime.v1.events_pb2 import RuntimeEvent

# Default for the most events read from runtime and committed per transaction
# while filling a gap.
GAP_CHUNK_EVENTS = 500
# Attempts of one batch whose commit finds the checkpoint moved by another writer.
CHECKPOINT_RETRIES = 3
# Streams whose committed state is remembered (a few hundred bytes each).
STATE_CACHE_STREAMS = 50_000

log = get_logger("projector")


class Projector:
    """Applies batches of one stream's events to the khala schema."""

    def __init__(
        self,
        store: ProjectionStore,
        reader: RuntimeReader,
        publisher: FanoutPublisher,
        clock: Callable[[], float] = time.time,
        gap_chunk_events: int = GAP_CHUNK_EVENTS,
        crash_after_commit: int = 0,
    ) -> None:
        self._gap_chunk_events = gap_chunk_events
        self._store = store
        self._reader = reader
        self._publisher = publisher
        self._clock = clock
        self._crash_after_commit = crash_after_commit
        self._commits = 0
        # Commit and publish of this process's writers (consumer, drift repair) run
        # one at a time, so frames are published in commit (frame_id) order and a
        # failed publish never leaves an earlier frame behind a later cursor.
        self._serial = asyncio.Lock()
        # The committed state of recently projected streams, so steady rounds
        # skip reading checkpoints and documents back. A stale entry (another
        # writer moved the checkpoint) only costs a CheckpointMoved, which drops
        # it; so does any failed commit, whose outcome may be unknown.
        self._states: OrderedDict[str, StreamState] = OrderedDict()

    async def project(self, stream: StreamRef, delivered: Sequence[RuntimeEvent]) -> None:
        """Fold the new events among `delivered` (one stream, arrival order) and publish."""
        with _timed_batch():
            for attempt in range(1, CHECKPOINT_RETRIES + 1):
                try:
                    await self._project_once(stream, delivered)
                    return
                except CheckpointMoved as exc:
                    metrics.WRITE_FAILURES.labels("checkpoint_moved").inc()
                    if attempt == CHECKPOINT_RETRIES:
                        raise
                    log.info(
                        "checkpoint moved; re-planning", stream_id=stream.stream_id, error=str(exc)
                    )

    async def project_many(
        self, batches: Sequence[tuple[StreamRef, Sequence[RuntimeEvent]]]
    ) -> None:
        """Fold the delivered events of several distinct streams in one transaction.

        The streams' new contiguous events are committed (and published) together;
        a stream whose deliveries reveal a gap is projected on its own first. Any
        exception means the joint commit did not happen (the caller may retry
        stream by stream: what did commit is then skipped as duplicates).
        """
        with _timed_batch():
            states = await self._load_many([stream for stream, _ in batches])
            ready: list[tuple[StreamRef, StreamState, list[RuntimeEvent]]] = []
            for (stream, delivered), state in zip(batches, states, strict=True):
                todo = plan(state.last_seq, delivered)
                if todo.gap is not None:
                    await self.project(stream, delivered)
                    continue
                metrics.DUPLICATES_SKIPPED.inc(todo.duplicates)
                if todo.fresh:
                    ready.append((stream, state, list(todo.fresh)))
            if ready:
                await self._apply(ready)

    async def _load_many(self, streams: Sequence[StreamRef]) -> list[StreamState]:
        """Each stream's state: remembered, or read (and remembered)."""
        missing = [s for s in streams if s.stream_id not in self._states]
        loaded = dict(
            zip(
                [s.stream_id for s in missing],
                await self._store.load_many(missing) if missing else [],
                strict=True,
            )
        )
        states = [self._states.get(s.stream_id) or loaded[s.stream_id] for s in streams]
        for stream, state in zip(streams, states, strict=True):
            self._remember(stream.stream_id, state)
        return states

    def _remember(self, stream_id: str, state: StreamState) -> None:
        self._states[stream_id] = state
        self._states.move_to_end(stream_id)
        while len(self._states) > STATE_CACHE_STREAMS:
            self._states.popitem(last=False)

    async def _project_once(self, stream: StreamRef, delivered: Sequence[RuntimeEvent]) -> None:
        (state,) = await self._load_many([stream])
        todo = plan(state.last_seq, delivered)
        metrics.DUPLICATES_SKIPPED.inc(todo.duplicates)
        if not todo.fresh:
            return
        if todo.gap is None:
            await self._apply([(stream, state, list(todo.fresh))])
            return
        # A long gap (e.g. a projector started on an existing log) is read and
        # committed in chunks so no transaction or response grows unbounded.
        after_seq, up_to_seq = todo.gap
        while after_seq < up_to_seq:
            chunk_end = min(up_to_seq, after_seq + self._gap_chunk_events)
            events = await self._fill_gap(stream, after_seq, chunk_end)
            (state,) = await self._apply([(stream, state, events)])
            after_seq = chunk_end

    async def _apply(
        self, todo: Sequence[tuple[StreamRef, StreamState, list[RuntimeEvent]]]
    ) -> list[StreamState]:
        """Fold contiguous events after each stream's state, commit them together,
        publish; returns the new states."""
        folds = [(fold(stream, state.doc, events), state) for stream, state, events in todo]
        async with self._serial:
            now_ms = int(self._clock() * 1000)
            frames = await self._commit(folds, now_ms)
            await self._publisher.publish_committed(frames)
        oldest_ms = now_ms
        for (folded, _), (_, _, events) in zip(folds, todo, strict=True):
            metrics.EVENTS_PROJECTED.labels(folded.projection.value).inc(len(events))
            oldest_ms = min(oldest_ms, events[-1].occurred_at_ms)
        lag_s = max(0.0, (now_ms - oldest_ms) / 1000)
        metrics.PROJECTION_LAG.set(lag_s)
        metrics.PROJECTION_LAG_HIST.observe(lag_s)
        return [_state_after(f) for f, _ in folds]

    async def repair(
        self, stream: StreamRef, expected: StreamState, log_events: list[RuntimeEvent]
    ) -> bool:
        """Rewrite a drifted document as the fold of its whole log (1..checkpoint).

        Appends one DOC_UPSERT in the current epoch, so subscribers converge without
        an epoch change. False (nothing written) if the checkpoint moved meanwhile.
        """
        folded = fold(stream, None, log_events).doc_only()
        async with self._serial:
            try:
                frames = await self._commit([(folded, expected)], int(self._clock() * 1000))
            except CheckpointMoved:
                metrics.WRITE_FAILURES.labels("checkpoint_moved").inc()
                return False
            await self._publisher.publish_committed(frames)
        return True

    async def _commit(
        self, folds: Sequence[tuple[Folded, StreamState]], now_ms: int
    ) -> list[StoredFrame]:
        try:
            frames = await self._store.commit_many(folds, now_ms)
        except BaseException as exc:
            for folded, _ in folds:
                self._states.pop(folded.stream.stream_id, None)
            if not isinstance(exc, CheckpointMoved):
                metrics.WRITE_FAILURES.labels("error").inc()
            raise
        for folded, _ in folds:
            self._remember(folded.stream.stream_id, _state_after(folded))
        metrics.FRAMES_COMMITTED.inc(len(frames))
        self._commits += 1
        if self._crash_after_commit and self._commits == self._crash_after_commit:
            log.warning("fault injection: SIGKILL after commit", commits=self._commits)
            os.kill(os.getpid(), signal.SIGKILL)
        return frames

    async def _fill_gap(
        self, stream: StreamRef, after_seq: int, up_to_seq: int
    ) -> list[RuntimeEvent]:
        log.info(
            "filling gap", stream_id=stream.stream_id, after_seq=after_seq, up_to_seq=up_to_seq
        )
        fetched = await self._reader.read_stream(
            stream.stream_id, after_seq, up_to_seq, purpose="gap"
        )
        events = contiguous_range(stream.stream_id, after_seq, up_to_seq, fetched)
        metrics.GAPS_FILLED.inc()
        metrics.GAP_EVENTS_FETCHED.inc(len(events))
        return events

    async def statuses(self, heads: Sequence[tuple[str, int]]) -> list[StreamStatus]:
        """Projection status of each (stream_id, runtime head_seq)."""
        checkpoints = await self._store.checkpoints([stream_id for stream_id, _ in heads])
        return [
            stream_status(stream_id, head, *checkpoints.get(stream_id, (0, 0)))
            for stream_id, head in heads
        ]


def _state_after(folded: Folded) -> StreamState:
    """The stream's state once `folded` is committed."""
    return StreamState(folded.last_seq, folded.doc, folded.doc_hash)


@contextlib.contextmanager
def _timed_batch() -> Iterator[None]:
    """Time one projection transaction into BATCH_SECONDS, with the current trace
    (the projection span) as the observation's exemplar."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started, exemplar())
