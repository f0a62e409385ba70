"""Start, watch and stop the four Khala services as real processes.

Used by `make run` (default ports, stays up until Ctrl-C), `make demo`, and the
e2e/chaos tests (free ports, one database and broker prefix per test run).
Each service runs as `python -m khala_<svc> serve` after `migrate`, exactly as
a user would start it; logs go to one file per service.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("control", "runtime", "projector", "gateway")
MIGRATING = ("control", "runtime", "projector")
DEFAULT_PORTS = {
    "control": (8081, 9081),
    "runtime": (8082, 9082),
    "projector": (8083, 9083),
    "gateway": (8084, 9084),
}
# Each service's own dev gRPC credential (KHALA_SERVICE_TOKEN), and the callers
# every server accepts (KHALA_SERVICE_CREDENTIALS); `operator` keeps the old shared
# dev token, for tools and a process started without a service (docs/security.md).
DEV_TOKENS = {name: f"khala-dev-{name}-token" for name in SERVICES}
DEV_CREDENTIALS = ",".join(
    [*(f"{name}:{token}" for name, token in DEV_TOKENS.items()), "operator:khala-dev-service-token"]
)
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/khala"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


# Below Linux's ephemeral range (32768-60999), so the thousands of client
# connections a test opens can never take a port between choosing and binding it.
_SERVICE_PORTS = range(20000, 32000)


def free_port() -> int:
    """A port outside the ephemeral range that nothing listens on right now."""
    while True:
        port = random.choice(_SERVICE_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def reachable(url: str, default_port: int, timeout_s: float = 1.0) -> bool:
    """Whether the host:port of `url` accepts TCP connections."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout_s
        ):
            return True
    except OSError:
        return False


@dataclass
class Stack:
    """The four services of one deployment, as child processes."""

    database_url: str
    amqp_url: str
    log_dir: Path
    amqp_prefix: str = ""
    ports: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def with_free_ports(cls, **kwargs: object) -> Stack:
        """A stack on ports no other process uses (for tests)."""
        ports = {name: (free_port(), free_port()) for name in SERVICES}
        return cls(ports=ports, **kwargs)  # type: ignore[arg-type]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service][0]}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['gateway'][0]}/v1/ws"

    def env(self, process: str = "") -> dict[str, str]:
        """The environment every service process gets (`process`: a replica's name,
        whose own ports replace its service's)."""
        env = dict(os.environ)
        env.update(
            {
                "KHALA_DATABASE_URL": self.database_url,
                "KHALA_AMQP_URL": self.amqp_url,
                "KHALA_AMQP_PREFIX": self.amqp_prefix,
                "KHALA_CONTROL_URL": self.url("control"),
                "KHALA_TOKEN_ISSUER": self.url("control"),
                "KHALA_CONTROL_GRPC_TARGET": f"127.0.0.1:{self.ports['control'][1]}",
                "KHALA_RUNTIME_GRPC_TARGET": f"127.0.0.1:{self.ports['runtime'][1]}",
                "KHALA_PROJECTOR_GRPC_TARGET": f"127.0.0.1:{self.ports['projector'][1]}",
                "KHALA_DEV_IDP_ENABLED": "true",
                "KHALA_SERVICE_CREDENTIALS": DEV_CREDENTIALS,
                "KHALA_RUNTIME_URL": self.url("runtime"),
                "KHALA_DASHBOARD_DIR": str(ROOT / "clients" / "web" / "dashboard"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if process:
            env["KHALA_SERVICE_TOKEN"] = DEV_TOKENS[_service_of(process)]
        for name in (*SERVICES, process):
            if name in self.ports:
                http_port, grpc_port = self.ports[name]
                service = _service_of(name).upper()
                env[f"KHALA_{service}_HTTP_PORT"] = str(http_port)
                env[f"KHALA_{service}_GRPC_PORT"] = str(grpc_port)
        env.update(self.extra_env)
        return env

    def _module(self, process: str) -> str:
        return f"khala_{_service_of(process)}"

    def add_replica(self, service: str) -> str:
        """Start one more process of `service` on free ports; its name (`<service>-<n>`)."""
        index = 2
        while f"{service}-{index}" in self.ports:
            index += 1
        name = f"{service}-{index}"
        self.ports[name] = (free_port(), free_port())
        self.start(name)
        self.wait_ready(name)
        return name

    def migrate(self) -> None:
        """Apply every service's migrations (fails loudly)."""
        for service in MIGRATING:
            subprocess.run(
                [sys.executable, "-m", self._module(service), "migrate"],
                env=self.env(),
                check=True,
                cwd=ROOT,
            )

    def start(self, service: str) -> None:
        """Start one service (its log appends to <log_dir>/<service>.log)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{service}.log", "ab")
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", self._module(service), "serve"],
            env=self.env(service),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    def wait_ready(self, service: str, timeout_s: float = 30.0) -> None:
        """Block until the service's /readyz answers 200."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.url(service)}/readyz"
        last = ""
        while time.monotonic() < deadline:
            proc = self.procs.get(service)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{service} exited with {proc.returncode}; see {self.log_dir}/{service}.log"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(
            f"{service} not ready after {timeout_s}s ({last}); see {self.log_dir}/{service}.log"
        )

    def start_all(self) -> None:
        """Migrate, then start every service in dependency order and wait for readiness."""
        self.migrate()
        for service in SERVICES:
            self.start(service)
        for service in SERVICES:
            self.wait_ready(service)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to a service and reap it."""
        proc = self.procs.pop(service, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, service: str, sig: int = signal.SIGKILL) -> None:
        self.kill(service, sig)
        self.start(service)
        self.wait_ready(service)

    def stop_all(self) -> None:
        """SIGTERM every process (replicas and gateway first), SIGKILL what does not exit."""
        for name in [n for n in self.procs if n not in SERVICES]:
            self.kill(name, signal.SIGTERM)
        for service in reversed(SERVICES):
            self.kill(service, signal.SIGTERM)

    def exited(self) -> Mapping[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}


def _service_of(process: str) -> str:
    """The service a process runs: `projector-2` runs `projector`."""
    return process.split("-", 1)[0]


def ensure_database(url: str) -> None:
    """Create the database named in `url` if it does not exist."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "khala"
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def ensure_servers(database_url: str, amqp_url: str) -> None:
    """Make sure Postgres and RabbitMQ answer, starting them with Docker if possible."""
    if reachable(database_url, 5432) and reachable(amqp_url, 5672):
        return
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    ):
        print("Postgres/RabbitMQ not reachable: starting them from deploy/compose.yaml")
        subprocess.run(
            [
                "docker",
                "compose",
                "-f",
                str(ROOT / "deploy/compose.yaml"),
                "up",
                "-d",
                "--wait",
                "postgres",
                "rabbitmq",
            ],
            check=True,
        )
        return
    missing = [
        n
        for n, u, p in (("PostgreSQL", database_url, 5432), ("RabbitMQ", amqp_url, 5672))
        if not reachable(u, p)
    ]
    sys.exit(
        f"{' and '.join(missing)} not reachable ({database_url} / {amqp_url}) and no Docker engine found.\n"
        "Install and start them (Debian: apt-get install postgresql rabbitmq-server), or set\n"
        "KHALA_DATABASE_URL / KHALA_AMQP_URL to running servers, or install Docker."
    )


def banner(stack: Stack) -> str:
    control = stack.url("control")
    return f"""
Khala is up.
  dashboard {control}/dashboard/   (operator dashboard; sign in with any email)
  control   {control}   (JWKS {control}/.well-known/jwks.json)
  runtime   {stack.url("runtime")}
  projector {stack.url("projector")}
  gateway   {stack.url("gateway")}
  WebSocket {stack.ws_url}   (subprotocols khala.v1+proto, khala.v1+json)

Get a token (dev identity provider):
  ID=$(curl -s -XPOST {control}/api/dev/id-token -d '{{"email":"me@example.com","name":"Me"}}' | jq -r .id_token)
  AT=$(curl -s -XPOST {control}/api/auth/session -d "{{\\"id_token\\":\\"$ID\\",\\"device_id\\":\\"laptop\\",\\"surface\\":\\"desktop\\",\\"client_version\\":\\"1.0.0\\"}}" | jq -r .access_token)
  curl -s -XPOST {control}/api/orgs -H "Authorization: Bearer $AT" -d '{{"org_id":"acme","name":"Acme"}}'
  curl -s -XPOST {control}/api/sync/token -H "Authorization: Bearer $AT" -d '{{"topics":["org.acme.runs"],"surface":"desktop","client_version":"1.0.0"}}'
Or watch live frames for a new run: make demo
Logs: {stack.log_dir}/<service>.log     Stop: Ctrl-C
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the whole Khala system locally.")
    parser.add_argument("command", choices=["run"])
    parser.parse_args()
    database_url = os.environ.get("KHALA_DATABASE_URL", DEFAULT_DATABASE_URL)
    amqp_url = os.environ.get("KHALA_AMQP_URL", DEFAULT_AMQP_URL)
    ensure_servers(database_url, amqp_url)
    ensure_database(database_url)
    stack = Stack(database_url=database_url, amqp_url=amqp_url, log_dir=ROOT / ".khala" / "logs")
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start_all()
        print(banner(stack), flush=True)
        while not stop:
            dead = stack.exited()
            if dead:
                print(f"service exited: {dead}; see {stack.log_dir}", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        print("stopping…", flush=True)
        stack.stop_all()


if __name__ == "__main__":
    main()
