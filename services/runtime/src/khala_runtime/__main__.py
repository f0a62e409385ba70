"""`khala-runtime [serve|migrate]`: parse settings once, then run a command."""

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
from khala_runtime.app import build_app, drain
from khala_runtime.settings import Settings
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA


async def _serve(settings: Settings) -> None:
    app = await build_app(settings)
    await serve(app, settings.bind_host, settings.http_port, on_signal=lambda: drain(app))


def main(argv: list[str] | None = None) -> int:
    """Console entry point of `khala-runtime`."""
    parser = argparse.ArgumentParser(prog="khala-runtime", description="Khala runtime service")
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "migrate"))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"khala-runtime: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging("runtime", settings.log_level)
    log = get_logger("main")
    if args.command == "migrate":
        applied = migrate(settings.database_url, SCHEMA, MIGRATIONS_DIR)
        log.info("migrations applied", count=applied, schema=SCHEMA)
        return 0
    configure_tracing("khala-runtime")
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
