"""`khala-runtime [serve|migrate|verify]`: parse settings once, then run a command.

`verify --stream <stream_id>` or `verify --all` recomputes hash chains from
the event log and prints one line per stream (`--json`: one JSON object per
line). Exit status: 0 all chains intact, 1 a chain is broken, 2 bad
configuration, 3 unknown or malformed stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from khala_common import loop as event_loop
from khala_common.db import create_pool, migrate
from khala_common.logs import configure_logging, get_logger
from khala_common.runner import serve
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_runtime.app import build_app, drain
from khala_runtime.domain.errors import DomainError
from khala_runtime.settings import Settings
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA
from khala_runtime.usecases.verify import ChainReport, verify_all, verify_stream

EXIT_BROKEN = 1
EXIT_CONFIG = 2
EXIT_UNKNOWN_STREAM = 3


async def _serve(settings: Settings) -> None:
    app = await build_app(settings)
    await serve(app, settings.bind_host, settings.http_port, on_signal=lambda: drain(app))


def _report_line(report: ChainReport, as_json: bool) -> str:
    broken = report.broken
    if as_json:
        return json.dumps({
            "stream_id": report.stream_id,
            "ok": report.ok,
            "head_seq": report.head_seq,
            "chain_hash": report.chain_hash,
            "events_checked": report.events_checked,
            "broken_seq": broken.stream_seq if broken else None,
            "reason": broken.reason if broken else None,
            "expected": broken.expected if broken else None,
            "actual": broken.actual if broken else None,
        })
    if broken is None:
        return f"ok      {report.stream_id} seq={report.head_seq} chain={report.chain_hash}"
    return (f"BROKEN  {report.stream_id} at seq {broken.stream_seq}: {broken.reason} "
            f"(expected {broken.expected}, found {broken.actual})")


async def _verify(settings: Settings, stream_id: str | None, as_json: bool) -> int:
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    status = 0
    try:
        if stream_id is not None:
            try:
                reports = [await verify_stream(pool, stream_id)]
            except DomainError as exc:
                print(f"khala-runtime verify: {exc.message}", file=sys.stderr)
                return EXIT_UNKNOWN_STREAM
        else:
            reports = []
            async for report in verify_all(pool):
                print(_report_line(report, as_json), flush=True)
                status = status if report.ok else EXIT_BROKEN
        for report in reports:
            print(_report_line(report, as_json), flush=True)
            status = status if report.ok else EXIT_BROKEN
    finally:
        await pool.close()
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khala-runtime", description="Khala runtime service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP and gRPC (default)")
    commands.add_parser("migrate", help="apply schema migrations")
    verify = commands.add_parser("verify", help="recompute hash chains from the event log")
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("--stream", help="one stream: run:<run_id> or worker:<worker_id>")
    target.add_argument("--all", action="store_true", help="every run and worker stream")
    verify.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point of `khala-runtime`."""
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"khala-runtime: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging("runtime", settings.log_level)
    log = get_logger("main")
    if command == "migrate":
        applied = migrate(settings.database_url, SCHEMA, MIGRATIONS_DIR)
        log.info("migrations applied", count=applied, schema=SCHEMA)
        return 0
    if command == "verify":
        return asyncio.run(_verify(settings, args.stream, args.json))
    configure_tracing("khala-runtime")
    event_loop.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
