"""`khala-gateway [serve|migrate]`: parse settings once, then run."""

from __future__ import annotations

import argparse
import os
import sys

from khala_common import loop as event_loop
from khala_common.logs import configure_logging, get_logger
from khala_common.runner import run_service
from khala_common.settings import SettingsError
from khala_common.telemetry import configure_tracing
from khala_gateway.app import GatewayApp
from khala_gateway.settings import Settings

SERVICE = "khala-gateway"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SERVICE, description="Khala WebSocket gateway")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=("serve", "migrate"),
        help="serve (default) or migrate (the gateway owns no schema: a no-op)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = _parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"{SERVICE}: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE)
    log = get_logger(SERVICE)
    if args.command == "migrate":
        log.info("nothing to migrate: the gateway reads schema khala owned by the projector")
        return 0
    event_loop.run(run_service(GatewayApp(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
