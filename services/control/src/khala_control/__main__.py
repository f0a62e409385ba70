"""`khala-control [serve|migrate|keys rotate|keys list]`: parse settings once, then run.

`rotate-key` is kept as an alias of `keys rotate`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from khala_common import loop as event_loop
from khala_common.db import migrate
from khala_common.logs import configure_logging, get_logger
from khala_common.runner import run_service
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_control.app import (
    CONTROL_KEYS,
    DEV_IDP_KEYS,
    ControlApp,
    KeyFileInUse,
    list_signing_keys,
    rotate_signing_key,
)
from khala_control.settings import SCHEMA, Settings
from khala_control.storage import MIGRATIONS_DIR


def _rotate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--purpose", choices=(CONTROL_KEYS, DEV_IDP_KEYS), default=CONTROL_KEYS)
    parser.add_argument(
        "--publish-delay-s",
        type=float,
        default=10.0,
        help="how long the new key is published before it signs (default 10; must exceed "
        "verifiers' minimum JWKS refetch interval, 5 s in khala_common)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khala-control", description="Khala control service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP and gRPC (default)")
    commands.add_parser("migrate", help="apply database migrations to schema `control`")
    keys = commands.add_parser("keys", help="manage the signing keys stored in Postgres")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    _rotate_arguments(
        key_commands.add_parser("rotate", help="stage, publish, then activate a new key")
    )
    listing = key_commands.add_parser("list", help="print every key and its status as JSON lines")
    listing.add_argument("--purpose", choices=(CONTROL_KEYS, DEV_IDP_KEYS), default=CONTROL_KEYS)
    _rotate_arguments(commands.add_parser("rotate-key", help="alias of `keys rotate`"))
    return parser


def _keys(settings: Settings, args: argparse.Namespace) -> None:
    log = get_logger("main")
    if args.command == "rotate-key" or args.keys_command == "rotate":
        try:
            kid = asyncio.run(
                rotate_signing_key(settings, args.purpose, publish_delay_s=args.publish_delay_s)
            )
        except KeyFileInUse as exc:
            print(f"khala-control: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        log.info("signing key rotated", purpose=args.purpose, kid=kid)
        print(json.dumps({"purpose": args.purpose, "active_kid": kid}))
        return
    for key in asyncio.run(list_signing_keys(settings, args.purpose)):
        print(
            json.dumps(
                {
                    "kid": key.kid,
                    "purpose": key.purpose,
                    "status": key.status,
                    "created_at": key.created_at.isoformat(),
                    "activated_at": key.activated_at and key.activated_at.isoformat(),
                    "retired_at": key.retired_at and key.retired_at.isoformat(),
                }
            )
        )


def main(argv: list[str] | None = None) -> None:
    """Console entry point `khala-control`."""
    args = _parser().parse_args(argv)
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
    elif args.command in ("keys", "rotate-key"):
        _keys(settings, args)
    else:
        try:
            event_loop.run(run_service(ControlApp(settings)))
        except SettingsError as exc:
            print(f"khala-control: invalid configuration: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


if __name__ == "__main__":
    main()
