#!/usr/bin/env python3
"""Fill the service users' passwords into definitions.json and import it.

definitions.json is the broker's desired state (DESIGN §9): exchanges, the
projector's quorum queue and DLQ, the gateway-queue policy, one user per
service with per-service permissions. It ships with EMPTY password hashes (a
user with an empty hash cannot log in), so importing it by mistake locks the
service users out rather than giving them known passwords. This script puts
salted SHA-256 hashes (RabbitMQ's `rabbit_password_hashing_sha256`) of the real
passwords in and either writes the result or POSTs it to the management API.

Passwords come from KHALA_RABBITMQ_PASSWORD_{CONTROL,RUNTIME,PROJECTOR,GATEWAY};
`--dev` fills any that are unset with `khala-dev-<service>` (compose, dev
overlay, tests). Importing is additive and idempotent: existing users,
exchanges and queues are updated or left as they are, never deleted; a user's
password is set to the given one on every import.

  # render for `rabbitmqctl import_definitions` or `load_definitions`:
  apply_definitions.py --render /secure/place/definitions.json
  # import through the management API (admin credentials from the environment):
  KHALA_RABBITMQ_ADMIN_USER=admin KHALA_RABBITMQ_ADMIN_PASSWORD=... \\
    apply_definitions.py --api http://rabbitmq:15672 --wait 60

Standard library only, so it runs in any Python 3.9+ image.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_DEFINITIONS = Path(__file__).resolve().parent / "definitions.json"
SERVICES = ("control", "runtime", "projector", "gateway")


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def passwords(environ: dict[str, str], dev: bool) -> dict[str, str]:
    """The password of each service user; missing ones are an error unless `dev`."""
    found: dict[str, str] = {}
    missing = []
    for service in SERVICES:
        value = environ.get(f"KHALA_RABBITMQ_PASSWORD_{service.upper()}", "")
        if not value and dev:
            value = f"khala-dev-{service}"
        if not value:
            missing.append(f"KHALA_RABBITMQ_PASSWORD_{service.upper()}")
        found[service] = value
    if missing:
        raise SystemExit(f"apply_definitions: {', '.join(missing)} not set (or pass --dev)")
    return found


def render(definitions: dict, secrets_by_service: dict[str, str], vhost: str | None) -> dict:
    """A copy of `definitions` with password hashes filled in and, if asked, another vhost."""
    out = json.loads(json.dumps(definitions))
    for user in out.get("users", []):
        service = user["name"].removeprefix("khala-")
        if service not in secrets_by_service:
            raise SystemExit(f"apply_definitions: no password for user {user['name']!r}")
        user["password_hash"] = password_hash(secrets_by_service[service])
        user["hashing_algorithm"] = "rabbit_password_hashing_sha256"
    if vhost is not None:
        for section in ("vhosts",):
            for item in out.get(section, []):
                item["name"] = vhost
        for section in (
            "permissions",
            "topic_permissions",
            "policies",
            "queues",
            "exchanges",
            "bindings",
            "parameters",
        ):
            for item in out.get(section, []):
                item["vhost"] = vhost
    return out


def post(api: str, user: str, password: str, body: dict, wait_s: float) -> None:
    """POST the definitions to <api>/api/definitions, retrying until `wait_s` passes."""
    url = api.rstrip("/") + "/api/definitions"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(body).encode()
    deadline = time.monotonic() + wait_s
    while True:
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                print(f"apply_definitions: imported into {api} (HTTP {response.status})")
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code < 500 and exc.code != 404:
                raise SystemExit(f"apply_definitions: {url}: HTTP {exc.code}: {detail}") from None
            problem = f"HTTP {exc.code}: {detail}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(exc)
        if time.monotonic() >= deadline:
            raise SystemExit(f"apply_definitions: {url} not reachable: {problem}")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument(
        "--dev", action="store_true", help="default unset passwords to khala-dev-<service>"
    )
    parser.add_argument("--vhost", help="put everything in this vhost instead of the file's")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--render", metavar="PATH", help="write the rendered definitions ('-' = stdout)"
    )
    target.add_argument(
        "--api", metavar="URL", help="management API base URL, e.g. http://rabbitmq:15672"
    )
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep retrying the API")
    args = parser.parse_args(argv)

    definitions = json.loads(args.definitions.read_text())
    rendered = render(definitions, passwords(dict(os.environ), args.dev), args.vhost)
    if args.render is not None:
        text = json.dumps(rendered, indent=2) + "\n"
        if args.render == "-":
            sys.stdout.write(text)
        else:
            path = Path(args.render)
            path.write_text(text)
            path.chmod(0o600)
        return 0
    admin_user = os.environ.get("KHALA_RABBITMQ_ADMIN_USER", "guest")
    admin_password = os.environ.get("KHALA_RABBITMQ_ADMIN_PASSWORD", "guest")
    post(args.api, admin_user, admin_password, rendered, args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
