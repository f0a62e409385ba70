"""`khala-control [serve|migrate|rotate-key]`: parse settings once, then run."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from khala_common.db import migrate
from khala_common.logs import configure_logging, get_logger
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_control.app import CONTROL_KEYS, DEV_IDP_KEYS, ControlApp, rotate_signing_key
from khala_control.settings import SCHEMA, Settings
from khala_control.storage import MIGRATIONS_DIR


async def _serve(settings: Settings) -> None:
    log = get_logger("main")
    control = ControlApp(settings)
    await control.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await control.stop()


def main(argv: list[str] | None = None) -> None:
    """Console entry point `khala-control`."""
    parser = argparse.ArgumentParser(prog="khala-control", description="Khala control service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP and gRPC (default)")
    commands.add_parser("migrate", help="apply database migrations to schema `control`")
    rotate = commands.add_parser("rotate-key", help="activate a new signing key")
    rotate.add_argument("--purpose", choices=(CONTROL_KEYS, DEV_IDP_KEYS), default=CONTROL_KEYS)
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"khala-control: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("control", settings.log_level)
    configure_tracing("control", settings.otel_exporter)
    log = get_logger("main")

    if args.command == "migrate":
        applied = migrate(settings.database_url, SCHEMA, MIGRATIONS_DIR)
        log.info("migrations applied", schema=SCHEMA, applied=applied)
    elif args.command == "rotate-key":
        kid = asyncio.run(rotate_signing_key(settings, args.purpose))
        log.info("signing key rotated", purpose=args.purpose, kid=kid)
    else:
        asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
