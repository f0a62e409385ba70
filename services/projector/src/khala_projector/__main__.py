"""`khala-projector [serve | migrate]`: settings are parsed once, here."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from khala_common.db import migrate
from khala_common.logs import configure_logging, get_logger
from khala_common.runner import serve
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_projector.app import create_app, services_key
from khala_projector.settings import SCHEMA, Settings
from khala_projector.storage import MIGRATIONS_DIR


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="khala-projector",
        description="Projects runtime events into Khala documents and topic logs.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=("serve", "migrate"),
        help="serve (default): run the projector; migrate: apply schema migrations",
    )
    return parser.parse_args(argv)


async def _serve(settings: Settings) -> None:
    app = create_app(settings)

    async def drain() -> None:
        app[services_key].readiness.draining = True

    await serve(app, settings.bind_host, settings.http_port, on_signal=drain)


def main(argv: list[str] | None = None) -> None:
    """Console entry point `khala-projector`."""
    args = _parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"khala-projector: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("projector", settings.log_level)
    configure_tracing("khala-projector")
    log = get_logger("projector.main")
    if args.command == "migrate":
        applied = migrate(settings.database_url, SCHEMA, MIGRATIONS_DIR)
        log.info("migrations applied", schema=SCHEMA, applied=applied)
        return
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
