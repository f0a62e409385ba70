"""`khala-projector rebuild`: re-derive a projection from runtime's log into a new
topic epoch while the live projector keeps running.

Guarantees (full design in docs/projector.md, "Rebuild"):
- Stage: every stream of the scope is read from runtime's ReadStream in chunks
  and folded by the same pure reducers as the live path; each chunk's frames
  (new epoch, invisible to readers), staged document and progress commit
  together, so an interrupted rebuild resumes where it stopped.
- Switch, per org, in one transaction that holds the org's topic rows and
  checkpoints: events the live consumer projected meanwhile are read from
  runtime and staged, then documents, checkpoints and `topics.epoch` switch
  together. The consumer waits on those locks and continues in the new epoch,
  so per-stream order is kept and nothing is folded twice or skipped.
- Clients: a cursor of the old epoch gets stale_cursor(epoch_changed). Staged
  frames are not fanned out; after the switch the head frame of every switched
  topic is published once as a doorbell (best effort: gateways also notice the
  new epoch from their head poll). Then the old epoch's frames are deleted.
- One rebuild process at a time (advisory lock); overlapping scopes refused.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from khala_common.logs import get_logger
from khala_projector.adapters.fanout import Doorbell
from khala_projector.adapters.runtime_reader import RuntimeReader
from khala_projector.domain.frames import StoredFrame
from khala_projector.domain.projection import fold
from khala_projector.domain.rebuild import RebuildScope, RebuildStatus
from khala_projector.domain.sequencing import contiguous_after, contiguous_range
from khala_projector.storage.rebuild_store import (
    OrgSwitch,
    Rebuild,
    RebuildStore,
    StagedStream,
    StreamsChanged,
)

# Staging passes before switching: each pass catches up with the live
# checkpoints, so the catch-up done under the switch locks stays small.
STAGING_PASSES = 3
SWITCH_ATTEMPTS = 5
PAGE_STREAMS = 1_000

log = get_logger("projector.rebuild")


class Progress(Protocol):
    """Where a rebuild reports its phases (the CLI's progress bar on stderr)."""

    def update(self, label: str, done: int, total: int, detail: str = "") -> None:
        """Show the current progress of phase `label`."""

    def note(self, message: str) -> None:
        """Print a line of its own."""

    def close(self) -> None:
        """End the display."""


class RebuildError(RuntimeError):
    """The rebuild cannot proceed (message says why and what to do)."""


@dataclass(frozen=True)
class RebuildReport:
    """What one invocation did."""

    rebuild_id: int
    epoch: str
    resumed: bool
    streams: int
    events_staged: int
    orgs_switched: int
    old_frames_deleted: int


class Rebuilder:
    """Runs rebuilds against a RebuildStore and runtime's ReadStream."""

    def __init__(
        self,
        store: RebuildStore,
        reader: RuntimeReader,
        *,
        chunk: int = 500,
        progress: Progress | None = None,
        doorbell: Doorbell | None = None,
        before_switch: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._reader = reader
        self._chunk = chunk
        self._progress = progress
        self._doorbell = doorbell
        self._before_switch = before_switch
        self._clock = clock
        self._events = 0

    async def run(self, scope: RebuildScope) -> RebuildReport:
        """Start or resume the rebuild of `scope` and finish it."""
        async with self._store.exclusive() as free:
            if not free:
                raise RebuildError("another rebuild is running (advisory lock held)")
            rebuild, resumed = await self._open(scope)
            started = time.monotonic()
            try:
                return await self._finish(rebuild, resumed)
            finally:
                await self._store.add_active_time(rebuild, time.monotonic() - started)
                if self._progress is not None:
                    self._progress.close()

    async def abandon(self, scope: RebuildScope) -> int:
        """Give up the unfinished rebuild of `scope`; returns staged frames deleted."""
        async with self._store.exclusive() as free:
            if not free:
                raise RebuildError("another rebuild is running (advisory lock held)")
            same = [r for r in await self._store.unfinished() if r.scope == scope]
            if not same:
                raise RebuildError(f"no unfinished rebuild of {scope.describe()}")
            rebuild = same[0]
            if rebuild.status is RebuildStatus.SWITCHED:
                raise RebuildError(
                    f"rebuild {rebuild.rebuild_id} already switched every org; "
                    "run it again (without --abandon) to finish its cleanup"
                )
            deleted = await self._store.discard_staged(rebuild)
            await self._store.clean_old_epochs(rebuild.rebuild_id)
            await self._store.set_status(rebuild, RebuildStatus.ABANDONED)
            log.info("rebuild abandoned", rebuild_id=rebuild.rebuild_id, frames_deleted=deleted)
            return deleted

    async def _open(self, scope: RebuildScope) -> tuple[Rebuild, bool]:
        unfinished = await self._store.unfinished()
        for rebuild in unfinished:
            if rebuild.scope == scope:
                self._note(f"resuming rebuild {rebuild.rebuild_id} of {scope.describe()}")
                return rebuild, True
        for rebuild in unfinished:
            if rebuild.scope.overlaps(scope):
                raise RebuildError(
                    f"rebuild {rebuild.rebuild_id} of {rebuild.scope.describe()} is unfinished; "
                    "resume it or abandon it (--abandon) first"
                )
        rebuild = await self._store.create(scope)
        self._note(f"rebuild {rebuild.rebuild_id} of {scope.describe()} into epoch {rebuild.epoch}")
        return rebuild, False

    async def _finish(self, rebuild: Rebuild, resumed: bool) -> RebuildReport:
        orgs = 0
        if rebuild.status is RebuildStatus.STAGING:
            await self._stage_all(rebuild)
            if self._before_switch is not None:
                await self._before_switch()
            orgs = await self._switch_all(rebuild)
            await self._store.set_status(rebuild, RebuildStatus.SWITCHED)
        deleted = await self._store.clean_old_epochs(rebuild.rebuild_id)
        await self._store.set_status(rebuild, RebuildStatus.DONE)
        streams = await self._store.stream_count(rebuild)
        report = RebuildReport(
            rebuild.rebuild_id, rebuild.epoch, resumed, streams, self._events, orgs, deleted
        )
        log.info("rebuild done", **asdict(report))
        return report

    # -- staging -----------------------------------------------------------------

    async def _stage_all(self, rebuild: Rebuild) -> None:
        for _ in range(STAGING_PASSES):
            await self._store.enroll(rebuild)
            progress = await self._store.progress(rebuild)
            done, total = progress.staged, progress.streams
            staged_any, after = False, ""
            while True:
                page = await self._store.streams(rebuild, after=after, behind_only=True)
                for stream in page:
                    await self._stage_stream(rebuild, stream)
                    staged_any = True
                    done = min(total, done + 1)
                    self._show("staging", done, total, f"{self._events} events")
                if len(page) < PAGE_STREAMS:
                    break
                after = page[-1].stream.stream_id
            if not staged_any:
                break
        progress = await self._store.progress(rebuild)
        self._show("staging", progress.staged, progress.streams, f"{self._events} events")

    async def _stage_stream(self, rebuild: Rebuild, staged: StagedStream) -> None:
        """Stage a stream up to runtime's head, a chunk per transaction."""
        stream_id = staged.stream.stream_id
        seq = staged.staged_seq
        doc = await self._store.staged_doc(rebuild, stream_id) if seq else None
        while True:
            fetched = await self._reader.read_stream(
                stream_id, seq, seq + self._chunk, purpose="rebuild"
            )
            events = contiguous_after(stream_id, seq, fetched)
            if events:
                folded = fold(staged.stream, doc, events)
                await self._store.stage(rebuild, folded, seq, self._now_ms())
                self._events += len(events)
                seq, doc = folded.last_seq, folded.doc
            if len(events) < self._chunk:
                break
        if seq < staged.checkpoint_seq:
            raise RebuildError(
                f"runtime's log of {stream_id} ends at #{seq} but the projection is at "
                f"#{staged.checkpoint_seq}; refusing to rebuild a shorter history"
            )

    def _show(self, phase: str, done: int, total: int, detail: str) -> None:
        if self._progress is not None:
            self._progress.update(phase, done, total, detail)

    # -- switch --------------------------------------------------------------------

    async def _switch_all(self, rebuild: Rebuild) -> int:
        orgs = await self._store.pending_orgs(rebuild)
        for done, org_id in enumerate(orgs, start=1):
            await self._switch_org(rebuild, org_id)
            self._show("switching", done, len(orgs), f"org {org_id}")
        return len(orgs)

    async def _switch_org(self, rebuild: Rebuild, org_id: str) -> None:
        for _ in range(SWITCH_ATTEMPTS):
            streams = await self._store.all_streams(rebuild, org_id)
            try:
                async with self._store.switching(rebuild, org_id) as switch:
                    live = await switch.lock([s.stream for s in streams])
                    for staged in streams:
                        await self._catch_up(switch, staged, live.get(staged.stream.stream_id, 0))
                    heads = await switch.finish()
            except StreamsChanged as exc:
                log.info("org gained streams before its switch", org_id=org_id, error=str(exc))
                await self._store.enroll(rebuild)
                for staged in await self._store.all_streams(rebuild, org_id):
                    if staged.behind:
                        await self._stage_stream(rebuild, staged)
                continue
            log.info("org switched", org_id=org_id, epoch=rebuild.epoch, topics=len(heads))
            await self._ring(heads)
            return
        raise RebuildError(f"org {org_id} kept gaining streams; run the rebuild again")

    async def _catch_up(self, switch: OrgSwitch, staged: StagedStream, live_seq: int) -> None:
        """Stage, under the switch locks, the events projected live since staging."""
        stream_id = staged.stream.stream_id
        seq = staged.staged_seq
        if seq >= live_seq:
            return
        doc = await switch.staged_doc(stream_id) if seq else None
        while seq < live_seq:
            end = min(live_seq, seq + self._chunk)
            fetched = await self._reader.read_stream(stream_id, seq, end, purpose="rebuild")
            events = contiguous_range(stream_id, seq, end, fetched)
            folded = fold(staged.stream, doc, events)
            await switch.stage(folded, seq, self._now_ms())
            self._events += len(events)
            seq, doc = folded.last_seq, folded.doc

    async def _ring(self, heads: Sequence[StoredFrame]) -> None:
        if self._doorbell is None or not heads:
            return
        try:
            await self._doorbell(heads)
        except Exception as exc:
            # Best effort: gateways also see the new epoch through their head poll.
            log.warning("doorbell publish failed", error=repr(exc))

    def _note(self, message: str) -> None:
        log.info(message)
        if self._progress is not None:
            self._progress.note(message)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
