"""`khala`: sign in, mint tokens, tail topics, and drive runs and workers.

Exit status: 0 success; 1 the server refused (the error code and message are
printed) or could not be reached; 2 usage errors, including "not signed in";
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from khala_client.api import ApiError
from khala_client.cli import commands, tail
from khala_client.cli.config import Config, config_dir
from khala_client.client import ClientStopped


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="khala", description="Khala command line client.")
    parser.add_argument(
        "--config-dir",
        help="where the session is kept (default $KHALA_CONFIG_DIR or ~/.config/khala)",
    )
    parser.add_argument("--json", action="store_true", help="print raw JSON answers")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = sub.add_parser(
        "login", help="sign in (dev identity provider with --email, or an OIDC --id-token)"
    )
    login.add_argument("--control", help="control base URL (remembered)")
    login.add_argument("--runtime", help="runtime base URL (remembered)")
    login.add_argument(
        "--gateway", help="gateway WebSocket URL, e.g. ws://host:8084/v1/ws (remembered)"
    )
    who = login.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="sign in through control's dev identity provider")
    who.add_argument("--id-token", help="an ID token from your OIDC provider")
    login.add_argument("--name", default="", help="display name (dev identity provider)")
    login.add_argument(
        "--device-id", help="this device's id (default: generated once and remembered)"
    )
    login.add_argument(
        "--surface", default=None, help="desktop | web | ios | onyx (default desktop)"
    )
    login.add_argument("--org", help="default org for later commands")
    login.set_defaults(func=commands.login)

    sub.add_parser("logout", help="revoke this session").set_defaults(func=commands.logout)
    sub.add_parser("whoami", help="the signed-in user and orgs").set_defaults(func=commands.whoami)

    orgs = sub.add_parser("orgs", help="orgs you belong to").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    orgs.add_parser("list", help="your memberships").set_defaults(func=commands.orgs_list)
    create = orgs.add_parser("create", help="create an org (you become its owner)")
    create.add_argument("org_id")
    create.add_argument("--name", help="display name (default: the id)")
    create.set_defaults(func=commands.orgs_create)
    use = orgs.add_parser("use", help="set the default org")
    use.add_argument("org_id")
    use.set_defaults(func=commands.orgs_use)

    token = sub.add_parser("token", help="mint a sync token (or print the access token)")
    token.add_argument(
        "topics", nargs="*", metavar="TOPIC", help="topics to ask for (default: all allowed)"
    )
    token.add_argument("--access", action="store_true", help="print a valid access token instead")
    token.set_defaults(func=commands.token)

    tl = sub.add_parser("tail", help="follow topics live; resumes where the last tail stopped")
    tl.add_argument(
        "topics",
        nargs="+",
        metavar="TOPIC",
        help="full topic, or a shorthand for the default org: runs, workers, run:<id>, worker:<id>",
    )
    tl.add_argument("--from-start", action="store_true", help="forget stored cursors first")
    tl.add_argument("--no-resume", action="store_true", help="neither read nor store cursors")
    tl.add_argument(
        "--cursors",
        help="cursor store: a .json or .sqlite path (default <config dir>/cursors.sqlite)",
    )
    tl.add_argument(
        "--protocol", choices=["proto", "json"], default="proto", help="WebSocket subprotocol"
    )
    tl.add_argument(
        "--exit-when-live", action="store_true", help="stop once every topic is live (caught up)"
    )
    tl.add_argument("--count", type=int, default=0, help="stop after this many frames")
    tl.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds")
    tl.add_argument("--quiet", action="store_true", help="no connection notices on stderr")
    tl.set_defaults(func=tail.tail)

    _runs(sub)
    _workers(sub)
    return parser


def _org_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--org", help="org id (default: the one set by `khala orgs use`)")


def _runs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = sub.add_parser("runs", help="create, append to, stop and list runs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = runs.add_parser("create", help="create a run")
    _org_option(create)
    create.add_argument("--run-id", help="choose the id (retries are then idempotent)")
    create.add_argument("--title", default="")
    create.set_defaults(func=commands.runs_create)

    append = runs.add_parser("append", help="append one event")
    append.add_argument("run_id")
    append.add_argument(
        "--type",
        default="run.output",
        help="run.started, run.output, run.paused, ... (default run.output)",
    )
    body = append.add_mutually_exclusive_group()
    body.add_argument("--text", help='payload {"text": TEXT} (run.output)')
    body.add_argument("--payload", help="payload as a JSON object")
    append.add_argument("--key", help="idempotency key")
    append.add_argument("--expected-seq", type=int, help="refuse unless the run's last seq is this")
    append.set_defaults(func=commands.runs_append)

    for name, event, help_text in (
        ("start", "run.started", "start a run"),
        ("stop", "run.canceled", "stop (cancel) a run"),
        ("complete", "run.completed", "complete a run"),
    ):
        action = runs.add_parser(name, help=help_text)
        action.add_argument("run_id")
        action.add_argument("--reason", help="reason (stop)")
        action.add_argument("--key", help="idempotency key")
        action.set_defaults(func=commands.runs_transition, event_type=event)

    lst = runs.add_parser("list", help="an org's runs, newest first")
    _org_option(lst)
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(func=commands.runs_list)

    get = runs.add_parser("get", help="a run's snapshot")
    get.add_argument("run_id")
    get.set_defaults(func=commands.runs_get)

    events = runs.add_parser("events", help="a run's events from runtime's log")
    events.add_argument("run_id")
    events.add_argument("--after-seq", type=int, default=0)
    events.add_argument("--limit", type=int, default=100)
    events.set_defaults(func=commands.runs_events)


def _workers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workers = sub.add_parser(
        "workers", help="create, heartbeat, append to, stop and list workers"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    create = workers.add_parser("create", help="create or reattach a worker")
    create.add_argument("worker_id")
    _org_option(create)
    create.set_defaults(func=commands.workers_create)

    for name, help_text in (
        ("heartbeat", "record a heartbeat"),
        ("stop", "stop a worker"),
        ("resume", "resume a stopped worker"),
    ):
        action = workers.add_parser(name, help=help_text)
        action.add_argument("worker_id")
        action.add_argument("--payload", help="payload as a JSON object")
        action.add_argument("--key", help="idempotency key")
        action.set_defaults(func=commands.workers_action, worker_action=name)

    append = workers.add_parser("append", help="ingest one worker event")
    append.add_argument("worker_id")
    append.add_argument(
        "--type",
        default="worker.event",
        help="worker.started, worker.event, worker.error, worker.request.received, ... (default worker.event)",
    )
    append.add_argument("--payload", help="payload as a JSON object")
    append.add_argument("--key", help="idempotency key")
    append.add_argument("--expected-seq", type=int)
    append.set_defaults(func=commands.workers_append)

    lst = workers.add_parser("list", help="an org's workers with heartbeat and projection state")
    _org_option(lst)
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(func=commands.workers_list)

    get = workers.add_parser("get", help="a worker's snapshot")
    get.add_argument("worker_id")
    get.set_defaults(func=commands.workers_get)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `khala`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        directory = (
            config_dir()
            if args.config_dir is None
            else config_dir({"KHALA_CONFIG_DIR": args.config_dir})
        )
        config = Config.load(directory)
        return int(asyncio.run(args.func(args, config)) or 0)
    except (commands.UsageError, ValueError) as exc:
        print(f"khala: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"khala: {_describe(exc)}", file=sys.stderr)
        return 1
    except ClientStopped as exc:
        print(f"khala: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _describe(exc: ApiError) -> str:
    if exc.status == 0:
        return f"{exc.message}; is the service running? (`khala login --control/--runtime` sets the URLs)"
    hint = ""
    if exc.status == 401:
        hint = " (sign in again with `khala login`)"
    elif exc.code == "forbidden_topic":
        hint = " (you are not a member of that org, or the surface may not read it)"
    detail = ""
    if isinstance(exc.body, dict):
        error = exc.body.get("error", {})
        extra = (
            {k: v for k, v in error.items() if k not in ("code", "message")}
            if isinstance(error, dict)
            else {}
        )
        if extra:
            detail = " " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    return f"{exc.code} (HTTP {exc.status}): {exc.message}{detail}{hint}"


if __name__ == "__main__":
    sys.exit(main())
