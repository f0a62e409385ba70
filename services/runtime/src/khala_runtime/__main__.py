"""`khala-runtime [serve|migrate|verify]`: parse settings once, then run a command.

`verify --stream <stream_id>` or `verify --all` recomputes hash chains from
the event log and prints one line per stream (`--json`: one JSON object per
line). Exit status: 0 all chains intact, 1 a chain is broken, 2 bad
configuration, 3 unknown or malformed stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from khala_common import loop as event_loop
from khala_common.db import migrate
from khala_common.logs import configure_logging, get_logger
from khala_common.runner import run_service
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_runtime.app import RuntimeApp, verify_chains
from khala_runtime.settings import Settings
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA

EXIT_CONFIG = 2


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
        return asyncio.run(verify_chains(settings, args.stream, args.json))
    configure_tracing("khala-runtime")
    event_loop.run(run_service(RuntimeApp(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
