"""`khala-projector [serve | migrate | rebuild | dlq]`: settings are parsed once, here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

from khala_common import loop as event_loop
from khala_common.db import migrate
from khala_common.logs import configure_logging, get_logger
from khala_common.runner import run_service
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_projector.app import ProjectorApp
from khala_projector.domain.projection import Projection
from khala_projector.handlers.cli import dlq_command, rebuild_command
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage import MIGRATIONS_DIR


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="khala-projector",
        description="Projects runtime events into Khala documents and topic logs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run the projector (default)")
    commands.add_parser("migrate", help="apply schema migrations")
    rebuild = commands.add_parser(
        "rebuild",
        help="re-derive a projection from runtime's log into a new topic epoch",
        description="Resumes an interrupted rebuild of the same scope; live traffic keeps "
        "flowing. Progress on stderr, a JSON report on stdout.",
    )
    rebuild.add_argument(
        "--projection", required=True, choices=[p.value for p in Projection], help="what to rebuild"
    )
    rebuild.add_argument("--org", default="", help="only this org (default: every org)")
    rebuild.add_argument(
        "--abandon", action="store_true", help="give up the unfinished rebuild of this scope"
    )
    dlq = commands.add_parser("dlq", help="inspect or replay khala.projector.dlq")
    dlq_actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = dlq_actions.add_parser("list", help="print dead letters as JSON lines (not consumed)")
    listing.add_argument("--limit", type=int, default=100, help="most messages shown (0 = all)")
    replay = dlq_actions.add_parser("replay", help="move dead letters back to khala.runtime.events")
    replay.add_argument("--limit", type=int, default=0, help="most messages moved (0 = all)")
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "serve"
    return args


def main(argv: list[str] | None = None) -> None:
    """Console entry point `khala-projector`."""
    args = _parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"khala-projector: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command in ("rebuild", "dlq"):
        # Operator commands keep stdout for their JSON result: logs go to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            configure_logging("projector", settings.log_level)
    else:
        configure_logging("projector", settings.log_level)
    configure_tracing("khala-projector")
    log = get_logger("projector.main")
    if args.command == "migrate":
        applied = migrate(settings.database_url, SCHEMA, MIGRATIONS_DIR)
        log.info("migrations applied", schema=SCHEMA, applied=applied)
        return
    if args.command == "rebuild":
        code = asyncio.run(
            rebuild_command(settings, args.projection, args.org, abandon=args.abandon)
        )
        raise SystemExit(code)
    if args.command == "dlq":
        raise SystemExit(asyncio.run(dlq_command(settings, args.action, args.limit)))
    event_loop.run(run_service(ProjectorApp(settings)))


if __name__ == "__main__":
    main()
