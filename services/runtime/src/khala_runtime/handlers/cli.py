"""Operator commands besides `serve`: `verify` recomputes hash chains.

`verify` prints one line per stream (`as_json`: one JSON object per line) and
returns the process exit status: 0 all chains intact, 1 a chain is broken,
3 unknown or malformed stream.
"""

from __future__ import annotations

import json
import sys

import asyncpg

from khala_runtime.domain.errors import DomainError
from khala_runtime.usecases.verify import ChainReport, verify_all, verify_stream

EXIT_BROKEN = 1
EXIT_UNKNOWN_STREAM = 3


def report_line(report: ChainReport, as_json: bool) -> str:
    """One stream's verification result as printed by `verify`."""
    broken = report.broken
    if as_json:
        return json.dumps(
            {
                "stream_id": report.stream_id,
                "ok": report.ok,
                "head_seq": report.head_seq,
                "chain_hash": report.chain_hash,
                "events_checked": report.events_checked,
                "broken_seq": broken.stream_seq if broken else None,
                "reason": broken.reason if broken else None,
                "expected": broken.expected if broken else None,
                "actual": broken.actual if broken else None,
            }
        )
    if broken is None:
        return f"ok      {report.stream_id} seq={report.head_seq} chain={report.chain_hash}"
    return (
        f"BROKEN  {report.stream_id} at seq {broken.stream_seq}: {broken.reason} "
        f"(expected {broken.expected}, found {broken.actual})"
    )


async def verify_command(pool: asyncpg.Pool, stream_id: str | None, as_json: bool) -> int:
    """Verify one stream (or every stream when `stream_id` is None); the exit status."""
    status = 0
    if stream_id is not None:
        try:
            reports = [await verify_stream(pool, stream_id)]
        except DomainError as exc:
            print(f"khala-runtime verify: {exc.message}", file=sys.stderr)
            return EXIT_UNKNOWN_STREAM
    else:
        reports = []
        async for report in verify_all(pool):
            print(report_line(report, as_json), flush=True)
            status = status if report.ok else EXIT_BROKEN
    for report in reports:
        print(report_line(report, as_json), flush=True)
        status = status if report.ok else EXIT_BROKEN
    return status
