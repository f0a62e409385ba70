"""The CLI's commands other than `tail`: each signs in from the config and calls one API."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from khala_client.api import KhalaApi
from khala_client.cli.config import Config
from khala_client.cli.render import table


class UsageError(Exception):
    """A mistake in the command line or the local state (exit status 2)."""


@contextlib.asynccontextmanager
async def open_api(config: Config, *, signed_in: bool = True) -> AsyncIterator[KhalaApi]:
    """A `KhalaApi` with the stored session; refreshed sessions are saved at once."""
    session = config.get_session()
    if signed_in and session is None:
        raise UsageError("not signed in: run `khala login --email you@example.com` first")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield KhalaApi(
            config.control_url,
            config.runtime_url,
            http,
            session=session,
            on_session=config.set_session,
        )


def org_of(args: argparse.Namespace, config: Config) -> str:
    """The org named on the command line, else the default one."""
    org = getattr(args, "org", None) or config.org
    if not org:
        raise UsageError("no org: pass --org ORG or set a default with `khala orgs use ORG`")
    return str(org)


def parse_payload(text: str | None) -> dict[str, Any] | None:
    """A `--payload` JSON object."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError('--payload must be a JSON object, e.g. \'{"text": "hi"}\'')
    return value


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    """Print the raw JSON with --json, else the human form."""
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)


# -- identity -------------------------------------------------------------


async def login(args: argparse.Namespace, config: Config) -> int:
    """Sign in and remember the session (and URLs, org, device)."""
    if args.control:
        config.control_url = args.control.rstrip("/")
    if args.runtime:
        config.runtime_url = args.runtime.rstrip("/")
    if args.gateway:
        config.gateway_url = args.gateway
    if args.device_id:
        config.device_id = args.device_id
    if args.surface:
        config.surface = args.surface
    if args.org:
        config.org = args.org
    config.session = None
    async with open_api(config, signed_in=False) as api:
        if args.email:
            session = await api.sign_in_dev(
                args.email,
                args.name or args.email.split("@")[0],
                device_id=config.device_id,
                surface=config.surface,
                client_version=config.client_version,
            )
        else:
            session = await api.sign_in(
                args.id_token,
                device_id=config.device_id,
                surface=config.surface,
                client_version=config.client_version,
            )
    config.set_session(session)
    emit(
        args,
        session.to_dict() | {"access_token": "…", "refresh_token": "…"},
        f"signed in as {session.user_id} (session {session.session_id}, device {config.device_id})",
    )
    return 0


async def logout(args: argparse.Namespace, config: Config) -> int:
    """Revoke the session and forget it."""
    async with open_api(config) as api:
        await api.logout()
    config.set_session(None)
    print("signed out")
    return 0


async def whoami(args: argparse.Namespace, config: Config) -> int:
    """The signed-in user, session and orgs."""
    async with open_api(config) as api:
        me = await api.me()
    user = me.get("user", {})
    orgs = ", ".join(f"{m['org_id']} ({m['role']})" for m in me.get("memberships", [])) or "none"
    emit(
        args,
        me,
        f"{user.get('email')} {user.get('user_id')}\norgs: {orgs}\ndefault org: {config.org or '-'}",
    )
    return 0


async def orgs_list(args: argparse.Namespace, config: Config) -> int:
    """Your memberships."""
    async with open_api(config) as api:
        me = await api.me()
    rows = [
        m | {"default": "*" if m.get("org_id") == config.org else ""}
        for m in me.get("memberships", [])
    ]
    emit(
        args,
        me.get("memberships", []),
        table(rows, ["org_id", "name", "role", "default"]) if rows else "no orgs",
    )
    return 0


async def orgs_create(args: argparse.Namespace, config: Config) -> int:
    """Create an org; it becomes the default when there is none."""
    async with open_api(config) as api:
        org = await api.create_org(args.org_id, args.name or args.org_id)
    if not config.org:
        config.org = args.org_id
        config.save()
    emit(args, org, f"created org {org['org_id']} (role {org.get('role', 'owner')})")
    return 0


async def orgs_use(args: argparse.Namespace, config: Config) -> int:
    """Set the default org."""
    config.org = args.org_id
    config.save()
    print(f"default org: {args.org_id}")
    return 0


async def token(args: argparse.Namespace, config: Config) -> int:
    """Print a sync token (or a valid access token with --access)."""
    async with open_api(config) as api:
        if args.access:
            access = await api.access_token()
            expires = api.session.expires_at_ms if api.session else 0
            emit(args, {"access_token": access, "expires_at_ms": expires}, access)
            return 0
        minted = await api.sync_token(
            args.topics or None, surface=config.surface, client_version=config.client_version
        )
    emit(args, minted, minted["token"])
    return 0


# -- runs -----------------------------------------------------------------

RUN_COLUMNS = ["run_id", "title", "status", "last_seq", "projection"]
WORKER_COLUMNS = [
    "worker_id",
    "status",
    "heartbeat_state",
    "heartbeat_age_ms",
    "last_seq",
    "projection",
]


async def runs_create(args: argparse.Namespace, config: Config) -> int:
    """Create a run."""
    async with open_api(config) as api:
        run = await api.create_run(org_of(args, config), args.run_id, args.title)
    emit(args, run, f"run {run['run_id']} {run['status']} (seq {run['last_seq']})")
    return 0


def _receipt_line(receipt: dict[str, Any]) -> str:
    return f"appended {receipt['stream_id']} seq {receipt['first_seq']}..{receipt['last_seq']}"


async def runs_append(args: argparse.Namespace, config: Config) -> int:
    """Append one event to a run."""
    payload = parse_payload(args.payload)
    if args.text is not None:
        payload = {"text": args.text}
    event: dict[str, Any] = {"type": args.type, "payload": payload or {}}
    if args.key:
        event["idempotency_key"] = args.key
    async with open_api(config) as api:
        receipt = await api.append_events(args.run_id, [event], args.expected_seq)
    emit(args, receipt, _receipt_line(receipt))
    return 0


async def runs_transition(args: argparse.Namespace, config: Config) -> int:
    """start / stop / complete: append the matching lifecycle event."""
    event: dict[str, Any] = {
        "type": args.event_type,
        "payload": {"reason": args.reason} if args.reason else {},
    }
    if args.key:
        event["idempotency_key"] = args.key
    async with open_api(config) as api:
        receipt = await api.append_events(args.run_id, [event])
    emit(args, receipt, f"{args.event_type}: {_receipt_line(receipt)}")
    return 0


async def runs_list(args: argparse.Namespace, config: Config) -> int:
    """An org's runs."""
    async with open_api(config) as api:
        page = await api.list_runs(org_of(args, config), args.limit)
    runs = page.get("runs", [])
    emit(args, page, table(runs, RUN_COLUMNS) if runs else "no runs")
    return 0


async def runs_get(args: argparse.Namespace, config: Config) -> int:
    """A run's snapshot."""
    async with open_api(config) as api:
        run = await api.get_run(args.run_id)
    emit(args, run, table([run], [*RUN_COLUMNS, "updated_at_ms"]))
    return 0


async def runs_events(args: argparse.Namespace, config: Config) -> int:
    """A run's events from runtime's log."""
    async with open_api(config) as api:
        page = await api.read_events(args.run_id, args.after_seq, args.limit)
    rows = [
        e | {"payload": json.dumps(e.get("payload"), sort_keys=True)}
        for e in page.get("events", [])
    ]
    emit(args, page, table(rows, ["stream_seq", "type", "payload"]) if rows else "no events")
    return 0


# -- workers --------------------------------------------------------------


async def workers_create(args: argparse.Namespace, config: Config) -> int:
    """Create or reattach a worker."""
    async with open_api(config) as api:
        worker = await api.create_worker(org_of(args, config), args.worker_id)
    emit(
        args, worker, f"worker {worker['worker_id']} {worker['status']} (seq {worker['last_seq']})"
    )
    return 0


async def workers_action(args: argparse.Namespace, config: Config) -> int:
    """heartbeat / stop / resume."""
    payload = parse_payload(args.payload)
    async with open_api(config) as api:
        call = {"heartbeat": api.heartbeat, "stop": api.stop_worker, "resume": api.resume_worker}[
            args.worker_action
        ]
        receipt = await call(args.worker_id, payload, args.key)
    emit(args, receipt, f"{args.worker_action}: {_receipt_line(receipt)}")
    return 0


async def workers_append(args: argparse.Namespace, config: Config) -> int:
    """Ingest one worker event."""
    event: dict[str, Any] = {"type": args.type, "payload": parse_payload(args.payload) or {}}
    if args.key:
        event["idempotency_key"] = args.key
    async with open_api(config) as api:
        receipt = await api.worker_events(args.worker_id, [event], args.expected_seq)
    emit(args, receipt, _receipt_line(receipt))
    return 0


async def workers_list(args: argparse.Namespace, config: Config) -> int:
    """An org's workers with heartbeat and projection state."""
    async with open_api(config) as api:
        page = await api.list_workers(org_of(args, config), args.limit)
    workers = page.get("workers", [])
    emit(args, page, table(workers, WORKER_COLUMNS) if workers else "no workers")
    return 0


async def workers_get(args: argparse.Namespace, config: Config) -> int:
    """A worker's snapshot."""
    async with open_api(config) as api:
        worker = await api.get_worker(args.worker_id)
    emit(args, worker, table([worker], WORKER_COLUMNS))
    return 0
