"""Hash-chain verification of streams: recompute each chain from the event log
and report the first broken link (`khala-runtime verify`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from khala_runtime.domain.chain import ChainBreak, ChainChecker
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.ids import parse_stream_id
from khala_runtime.storage import events as event_sql
from khala_runtime.storage import streams as stream_sql

PAGE = 1000
HEADS_PAGE = 500


@dataclass(frozen=True)
class ChainReport:
    """The outcome of verifying one stream."""

    stream_id: str
    head_seq: int
    chain_hash: str
    events_checked: int
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify_stream(pool: asyncpg.Pool, stream_id: str) -> ChainReport:
    """Recompute one stream's chain against its recorded head."""
    if parse_stream_id(stream_id) is None:
        raise DomainError(
            "validation_error", f"stream_id: malformed {stream_id!r}", field="stream_id"
        )
    report = await _verify(pool, stream_id)
    if report is None:
        raise DomainError("stream_not_found", f"stream {stream_id!r} does not exist")
    return report


async def verify_all(pool: asyncpg.Pool) -> AsyncIterator[ChainReport]:
    """Verify every run and worker stream, in stream_id order."""
    after = ""
    while True:
        heads = await stream_sql.stream_heads(pool, after=after, limit=HEADS_PAGE)
        if not heads:
            return
        for head in heads:
            report = await _verify(pool, head.stream_id)
            if report is not None:
                yield report
        after = heads[-1].stream_id


async def _verify(pool: asyncpg.Pool, stream_id: str) -> ChainReport | None:
    # One repeatable-read snapshot: the head and the log agree even while
    # appends go on.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        head = await stream_sql.stream_head(conn, stream_id)
        return None if head is None else await _check(conn, head)


async def _check(conn: asyncpg.Connection, head: stream_sql.StreamHead) -> ChainReport:
    checker = ChainChecker()
    checked = 0
    cursor = 0
    while checker.broken is None:
        # Read past the recorded head too: events beyond it are a break as well.
        page = await event_sql.read_events(
            conn, head.stream_id, after_seq=cursor, up_to_seq=2**63 - 1, limit=PAGE
        )
        for event in page:
            checked += 1
            if checker.feed(event) is not None:
                break
        if len(page) < PAGE:
            break
        cursor = page[-1].stream_seq
    broken = checker.finish(head.last_seq, head.chain_hash)
    return ChainReport(head.stream_id, head.last_seq, head.chain_hash, checked, broken)
