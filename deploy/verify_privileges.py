"""Prove deploy/postgres/roles.sql and deploy/rabbitmq/definitions.json on real servers.

Postgres (`--postgres ADMIN_URL`, a superuser URL): in a scratch database it runs
roles.sql twice, applies the three services' real migrations as their own roles
(and, in a second scratch database, first as the superuser the way `make run`
does, then roles.sql again), then checks that every role reaches its own schema
only and that the gateway can SELECT the khala tables and write nothing. The
scratch databases are dropped; the cluster-wide roles stay (roles.sql is
idempotent), unless `--drop-roles`.

RabbitMQ (`--amqp URL` of any user plus `--rabbitmq-api URL` with admin
credentials KHALA_RABBITMQ_ADMIN_USER/PASSWORD, default guest/guest): the
definitions are imported into a scratch vhost with renamed users (so nothing
real on a shared broker is touched), then each service user performs the
declarations and publishes its service really does (khala_common.broker), the
messages flow runtime -> khala.projector -> DLQ / fanout -> gateway queue, the
gateway-queue policy applies, and the operations outside each user's
permissions are refused. The vhost and users are deleted at the end.

Run from the repository root with the workspace environment:
  uv run --no-sync python deploy/verify_privileges.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
  uv run --no-sync python deploy/verify_privileges.py --amqp amqp://guest:guest@127.0.0.1:5672/ \\
      --rabbitmq-api http://127.0.0.1:15672
Exit status 0 only if every check passed; each check prints one line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
ROLES_SQL = ROOT / "deploy/postgres/roles.sql"
MIGRATIONS = {
    "control": ("khala_control", ROOT / "services/control/src/khala_control/storage/migrations"),
    "runtime": ("khala_runtime", ROOT / "services/runtime/src/khala_runtime/storage/migrations"),
    "khala": (
        "khala_projector",
        ROOT / "services/projector/src/khala_projector/storage/migrations",
    ),
}
PASSWORDS = {
    "khala_control": "pc-" + secrets.token_hex(8),
    "khala_runtime": "pr-" + secrets.token_hex(8),
    "khala_projector": "pp-" + secrets.token_hex(8),
    "khala_gateway": "pg-" + secrets.token_hex(8),
}

failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    """Record and print one check."""
    print(
        f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail and not ok else ''}",
        flush=True,
    )
    if not ok:
        failures.append(name)


# ---------------------------------------------------------------- Postgres


def _with_db(url: str, dbname: str, user: str | None = None, password: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if user is not None:
        netloc = f"{user}:{quote(password or '', safe='')}@{netloc}"
    elif "@" in parts.netloc:
        netloc = parts.netloc
    return urlunsplit((parts.scheme, netloc, "/" + dbname, parts.query, ""))


def _run_roles_sql(admin_db_url: str) -> subprocess.CompletedProcess[str]:
    args = ["psql", admin_db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(ROLES_SQL)]
    for role, password in PASSWORDS.items():
        args[4:4] = ["-v", f"{role.removeprefix('khala_')}_password={password}"]
    return subprocess.run(args, capture_output=True, text=True)


def _refused(conn, sql: str) -> bool:  # type: ignore[no-untyped-def]
    import psycopg

    try:
        with conn.transaction():
            conn.execute(sql)
    except psycopg.Error:
        return True
    return False


def verify_postgres(admin_url: str, drop_roles: bool) -> None:
    """Run roles.sql and the migrations in scratch databases and check every privilege."""
    import psycopg

    from khala_common.db import migrate

    suffix = secrets.token_hex(4)
    fresh, upgraded = f"khala_privcheck_{suffix}", f"khala_privcheck_up_{suffix}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in (fresh, upgraded):
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        # --- a new deployment: roles first, migrations as the owning roles
        url = _with_db(admin_url, fresh)
        for attempt in (1, 2):
            done = _run_roles_sql(url)
            check(
                f"postgres: roles.sql run {attempt} on a new database",
                done.returncode == 0,
                done.stderr.strip(),
            )
        for schema, (role, directory) in MIGRATIONS.items():
            role_url = _with_db(admin_url, fresh, role, PASSWORDS[role])
            try:
                first = migrate(role_url, schema, directory)
                again = migrate(role_url, schema, directory)
                check(
                    f"postgres: {role} migrates schema {schema} ({first} then {again})",
                    first > 0 and again == 0,
                )
            except Exception as exc:  # report any failure as a failed check
                check(f"postgres: {role} migrates schema {schema}", False, repr(exc))
        done = _run_roles_sql(url)
        check(
            "postgres: roles.sql run 3 after the migrations",
            done.returncode == 0,
            done.stderr.strip(),
        )
        _check_isolation(admin_url, fresh)

        # --- an existing database migrated by the superuser (make run), then roles.sql
        url = _with_db(admin_url, upgraded)
        for schema, (_role, directory) in MIGRATIONS.items():
            migrate(url, schema, directory)
        done = _run_roles_sql(url)
        check(
            "postgres: roles.sql on a database migrated by the superuser",
            done.returncode == 0,
            done.stderr.strip(),
        )
        with psycopg.connect(url) as conn:
            wrong = conn.execute(
                "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('control', 'runtime', 'khala') AND c.relkind IN ('r', 'p', 'S', 'v') "
                "AND pg_get_userbyid(c.relowner) <> pg_get_userbyid(n.nspowner)"
            ).fetchall()
        check(
            "postgres: every table/sequence now belongs to its schema's role",
            not wrong,
            str(wrong[:5]),
        )
        _check_isolation(admin_url, upgraded)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in (fresh, upgraded):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if drop_roles:
                for role in PASSWORDS:
                    admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _check_isolation(admin_url: str, dbname: str) -> None:
    import psycopg

    def connect(role: str) -> psycopg.Connection:
        return psycopg.connect(_with_db(admin_url, dbname, role, PASSWORDS[role]), autocommit=True)

    created: dict[str, str] = {}
    probes = {
        "khala_control": ("control", "runtime.events", "khala.topics"),
        "khala_runtime": ("runtime", "control.users", "khala.topics"),
        "khala_projector": ("khala", "runtime.events", "control.users"),
    }
    for role, (own, *foreign) in probes.items():
        with connect(role) as conn:
            probe = f"{own}.probe_{secrets.token_hex(3)}"
            check(
                f"postgres[{dbname}]: {role} can create in its schema {own}",
                not _refused(conn, f"CREATE TABLE {probe} (x int)"),
            )
            created[role] = probe
            for table in foreign:
                check(
                    f"postgres[{dbname}]: {role} cannot read {table}",
                    _refused(conn, f"SELECT * FROM {table}"),
                )
            check(
                f"postgres[{dbname}]: {role} cannot create in schema public",
                _refused(conn, "CREATE TABLE public.probe (x int)"),
            )
    with connect("khala_gateway") as gw:
        tables = [
            r[0]
            for r in gw.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'khala' AND tablename NOT LIKE '%yoyo%'"
            ).fetchall()
        ]
        check(f"postgres[{dbname}]: gateway sees the khala tables", len(tables) >= 3, str(tables))
        readable = all(not _refused(gw, f"SELECT * FROM khala.{t} LIMIT 1") for t in tables)
        check(f"postgres[{dbname}]: gateway can SELECT every khala table", readable)
        check(
            f"postgres[{dbname}]: gateway can SELECT a table the projector created later (default privileges)",
            not _refused(gw, f"SELECT * FROM {created['khala_projector']}"),
        )
        check(
            f"postgres[{dbname}]: gateway cannot INSERT into khala.topics",
            _refused(
                gw, "INSERT INTO khala.topics (topic, epoch, is_doc) VALUES ('x', '1', false)"
            ),
        )
        check(
            f"postgres[{dbname}]: gateway cannot INSERT even outside read-only mode",
            _refused(
                gw,
                "SET LOCAL default_transaction_read_only = off; SET LOCAL transaction_read_only = off; "
                "INSERT INTO khala.topics (topic, epoch, is_doc) VALUES ('x', '1', false)",
            ),
        )
        check(
            f"postgres[{dbname}]: gateway cannot CREATE in khala",
            _refused(
                gw, "SET LOCAL transaction_read_only = off; CREATE TABLE khala.gw_probe (x int)"
            ),
        )
        check(
            f"postgres[{dbname}]: gateway cannot read schema control",
            _refused(gw, "SELECT * FROM control.users"),
        )
        check(
            f"postgres[{dbname}]: gateway cannot read schema runtime",
            _refused(gw, "SELECT * FROM runtime.events"),
        )


# ---------------------------------------------------------------- RabbitMQ


class Api:
    """A few management API calls."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        user = os.environ.get("KHALA_RABBITMQ_ADMIN_USER", "guest")
        password = os.environ.get("KHALA_RABBITMQ_ADMIN_PASSWORD", "guest")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": self.auth, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


async def _refused_amqp(url: str, action: Callable[[object], Awaitable[object]]) -> bool:
    import aio_pika
    from aiormq.exceptions import ChannelAccessRefused, ChannelClosed

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        try:
            await action(channel)
        except (ChannelAccessRefused, ChannelClosed) as exc:
            return (
                "403" in str(exc)
                or "ACCESS_REFUSED" in str(exc)
                or isinstance(exc, ChannelAccessRefused)
            )
        return False
    finally:
        await connection.close()


async def verify_rabbitmq(amqp_url: str, api_url: str) -> None:
    """Import the definitions into a scratch vhost and exercise every user's permissions."""
    import aio_pika

    from khala_common.broker import Broker
    from khala_common.topology import Topology

    sys.path.insert(0, str(ROOT / "deploy/rabbitmq"))
    import apply_definitions

    api = Api(api_url)
    tag = secrets.token_hex(4)
    vhost = f"khala-privcheck-{tag}"
    users = {s: f"khala-{s}-privcheck-{tag}" for s in apply_definitions.SERVICES}
    pw = {s: f"{s}-{secrets.token_hex(8)}" for s in apply_definitions.SERVICES}
    definitions = json.loads(apply_definitions.DEFAULT_DEFINITIONS.read_text())
    rendered = apply_definitions.render(definitions, pw, vhost)
    for user in rendered["users"]:
        user["name"] = users[user["name"].removeprefix("khala-")]
    for perm in rendered["permissions"]:
        perm["user"] = users[perm["user"].removeprefix("khala-")]
    parts = urlsplit(amqp_url)
    host = parts.netloc.rsplit("@", 1)[-1]

    def url(service: str) -> str:
        return urlunsplit(
            ("amqp", f"{users[service]}:{pw[service]}@{host}", "/" + quote(vhost, safe=""), "", "")
        )

    try:
        api.call("POST", "/api/definitions", rendered)
        check("rabbitmq: definitions import through the management API", True)
        exported = api.call("GET", f"/api/definitions/{quote(vhost, safe='')}")
        names = {q["name"] for q in exported["queues"]} | {e["name"] for e in exported["exchanges"]}  # type: ignore[index]
        want = {
            "khala.projector",
            "khala.projector.dlq",
            "khala.runtime.events",
            "khala.fanout",
            "khala.control",
            "khala.projector.dlx",
        }
        check("rabbitmq: exchanges and queues exist", want <= names, str(sorted(want - names)))
        api.call("POST", "/api/definitions", rendered)
        check("rabbitmq: a second import is accepted (idempotent)", True)
        await _exercise(url, api, vhost, Broker, Topology, aio_pika)
    finally:
        for path in [f"/api/vhosts/{quote(vhost, safe='')}"] + [
            f"/api/users/{quote(u, safe='')}" for u in users.values()
        ]:
            try:
                api.call("DELETE", path)
            except urllib.error.HTTPError:
                pass


async def _first(queue, no_ack: bool, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    """The first message a consumer of `queue` receives, or None after `timeout_s`."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future = loop.create_future()

    async def on_message(message) -> None:  # type: ignore[no-untyped-def]
        if not arrived.done():
            arrived.set_result(message)

    tag = await queue.consume(on_message, no_ack=no_ack)
    try:
        return await asyncio.wait_for(arrived, timeout_s)
    except TimeoutError:
        return None
    finally:
        await queue.cancel(tag)


async def _exercise(url, api, vhost, Broker, Topology, aio_pika) -> None:  # type: ignore[no-untyped-def]
    topology = Topology("")
    brokers = {s: Broker(url(s), topology) for s in ("control", "runtime", "projector", "gateway")}
    try:
        for service, broker in brokers.items():
            try:
                await broker.connect()
                check(f"rabbitmq: {service} user logs in", True)
            except Exception as exc:
                check(f"rabbitmq: {service} user logs in", False, repr(exc))
                return
        try:
            await _service_paths(brokers, api, vhost, topology)
        except Exception as exc:  # any refusal here is a failed check
            check(
                "rabbitmq: the services' own declarations, bindings and publishes", False, repr(exc)
            )
        await _denials(url, aio_pika)
    finally:
        for broker in brokers.values():
            await broker.close()


async def _queue_policy(api: Api, vhost: str, queue: str) -> str | None:
    """The policy applied to `queue` (the management database learns of new queues late)."""
    for _ in range(60):
        try:
            info = api.call("GET", f"/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}")
            policy = info.get("policy")  # type: ignore[union-attr]
            if policy:
                return str(policy)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        await asyncio.sleep(0.5)
    return None


async def _service_paths(brokers, api, vhost, topology) -> None:  # type: ignore[no-untyped-def]
    """What each service really does (khala_common.broker calls), as the service's user."""
    from google.protobuf.empty_pb2 import Empty

    control, runtime, projector, gateway = (
        brokers[s] for s in ("control", "runtime", "projector", "gateway")
    )
    await control.exchange(topology.control)
    await runtime.exchange(topology.runtime_events)
    queue = await projector.declare_projector_queue(5)
    check("rabbitmq: projector's declaration matches the definitions (x-delivery-limit 5)", True)
    await projector.exchange(topology.fanout)
    instance = secrets.token_hex(4)
    fanout_q = await gateway.channel.declare_queue(
        f"{topology.fanout}.gw.{instance}",
        durable=True,
        auto_delete=True,
        arguments={"x-max-length": 100_000, "x-overflow": "drop-head", "x-expires": 300_000},
    )
    await fanout_q.bind(await gateway.exchange(topology.fanout), routing_key="org.acme.runs")
    control_q = await gateway.channel.declare_queue(
        f"{topology.control}.gw.{instance}", exclusive=True, auto_delete=True
    )
    await control_q.bind(await gateway.exchange(topology.control), routing_key="session.revoked")
    check("rabbitmq: gateway declares and binds its instance queues", True)
    # before any consumer is cancelled: the gateway queues are auto-delete
    policy = await _queue_policy(api, vhost, fanout_q.name)
    check(
        "rabbitmq: policy khala-gateway-queues applies to gateway queues",
        policy == "khala-gateway-queues",
        str(policy),
    )

    await runtime.publish(topology.runtime_events, "acme.run", Empty(), message_id="m1")
    got = await _first(queue, no_ack=False)
    check("rabbitmq: runtime -> khala.runtime.events -> khala.projector", got is not None)
    if got is not None:
        await got.reject(requeue=False)
        dlq = await projector.channel.declare_queue(
            topology.projector_dlq, durable=True, arguments={"x-queue-type": "quorum"}
        )
        dead = await _first(dlq, no_ack=False)
        check(
            "rabbitmq: a rejected message is dead-lettered to khala.projector.dlq", dead is not None
        )
        if dead is not None:
            await dead.ack()
    await projector.publish(topology.fanout, "org.acme.runs", Empty(), message_id="f1")
    delivered = await _first(fanout_q, no_ack=True)
    check("rabbitmq: projector -> khala.fanout -> gateway instance queue", delivered is not None)
    await control.publish(topology.control, "session.revoked", Empty(), message_id="r1")
    revoked = await _first(control_q, no_ack=True)
    check("rabbitmq: control -> khala.control -> gateway revocation queue", revoked is not None)


async def _denials(url, aio_pika) -> None:  # type: ignore[no-untyped-def]
    """What each user must NOT be able to do: each attempt must be refused (403)."""

    def publish_to(exchange: str):  # type: ignore[no-untyped-def]
        async def act(channel):  # type: ignore[no-untyped-def]
            target = await channel.get_exchange(exchange, ensure=False)
            await target.publish(aio_pika.Message(b"x"), routing_key="x")

        return act

    def declare_exchange(exchange: str):  # type: ignore[no-untyped-def]
        async def act(channel):  # type: ignore[no-untyped-def]
            await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)

        return act

    def consume(queue_name: str):  # type: ignore[no-untyped-def]
        async def act(channel):  # type: ignore[no-untyped-def]
            q = await channel.get_queue(queue_name, ensure=False)
            await q.consume(lambda message: None)

        return act

    def declare_queue(queue_name: str):  # type: ignore[no-untyped-def]
        async def act(channel):  # type: ignore[no-untyped-def]
            await channel.declare_queue(queue_name, exclusive=True, auto_delete=True)

        return act

    denied = [
        (
            "control publishes to khala.runtime.events",
            "control",
            publish_to("khala.runtime.events"),
        ),
        ("control declares khala.fanout", "control", declare_exchange("khala.fanout")),
        ("control consumes khala.projector", "control", consume("khala.projector")),
        ("runtime publishes to khala.fanout", "runtime", publish_to("khala.fanout")),
        ("runtime publishes to khala.control", "runtime", publish_to("khala.control")),
        ("runtime consumes khala.projector", "runtime", consume("khala.projector")),
        ("projector publishes to khala.control", "projector", publish_to("khala.control")),
        (
            "projector publishes to khala.runtime.events",
            "projector",
            publish_to("khala.runtime.events"),
        ),
        ("gateway publishes to khala.fanout", "gateway", publish_to("khala.fanout")),
        (
            "gateway publishes to khala.runtime.events",
            "gateway",
            publish_to("khala.runtime.events"),
        ),
        ("gateway consumes khala.projector", "gateway", consume("khala.projector")),
        ("gateway declares a queue outside its patterns", "gateway", declare_queue("other.queue")),
    ]
    for name, service, action in denied:
        check(f"rabbitmq: refused: {name}", await _refused_amqp(url(service), action))


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres", metavar="ADMIN_URL", help="superuser URL of a Postgres server"
    )
    parser.add_argument(
        "--drop-roles", action="store_true", help="drop the khala_* roles at the end"
    )
    parser.add_argument(
        "--amqp", metavar="URL", help="AMQP URL of the broker (host and port are used)"
    )
    parser.add_argument("--rabbitmq-api", metavar="URL", help="management API of the same broker")
    args = parser.parse_args()
    if not args.postgres and not args.amqp:
        parser.error("nothing to verify: give --postgres and/or --amqp with --rabbitmq-api")
    if args.postgres:
        verify_postgres(args.postgres, args.drop_roles)
    if args.amqp:
        if not args.rabbitmq_api:
            parser.error("--amqp needs --rabbitmq-api (the definitions are imported through it)")
        asyncio.run(verify_rabbitmq(args.amqp, args.rabbitmq_api))
    print(f"{len(failures)} failed" if failures else "all privilege checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
