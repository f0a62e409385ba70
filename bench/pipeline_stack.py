"""The deployment the pipeline benchmark measures, and the CPU it spends.

`BenchDeployment` starts the four services as processes with scripts/stack.py
(a scratch database, a unique broker prefix, free ports), plus extra projector
and gateway replicas on ports of their own, and removes the database and the
broker objects at the end. `CpuMeter` reads utime+stime from /proc for every
process that carries the load: the services, the Postgres cluster (the postmaster
listening on the database URL's port, its children, and what it reaped), RabbitMQ
(the process listening on the AMQP URL's port) and
the load generator's own processes. Postgres and RabbitMQ are shared with other
users of the machine: their figures cover the case's window only, and include
whatever else ran then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "scripts"))

from stack import Stack, free_port  # noqa: E402

from khala_common.broker import delete_prefixed  # noqa: E402
from khala_common.topology import Topology  # noqa: E402

LOGS = ROOT / ".khala" / "bench-logs" / "pipeline"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What the deployment under test is configured with, beyond the defaults.
BENCH_ENV = {
    # One bench user holds every subscriber socket.
    "KHALA_GATEWAY_MAX_CONNECTIONS_PER_USER": "1000000",
    # Setup signs in and mints tokens in bursts; appends keep their default limits.
    "KHALA_RATE_LIMIT_MINT": "off",
    "KHALA_RATE_LIMIT_SIGN_IN": "off",
    "KHALA_RATE_LIMIT_REFRESH": "off",
    # Sockets and the append session outlive the default 5 / 15 minute tokens in full mode.
    "KHALA_SYNC_TOKEN_TTL_S": "7200",
    "KHALA_ACCESS_TOKEN_TTL_S": "7200",
    "KHALA_LOG_LEVEL": "warning",
}


def database_server_url() -> str:
    return os.environ.get(
        "KHALA_BENCH_DATABASE_URL",
        os.environ.get("KHALA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )


def amqp_server_url() -> str:
    return os.environ.get(
        "KHALA_BENCH_AMQP_URL",
        os.environ.get("KHALA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited with {proc.returncode}; see {log}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"replica at {url} not ready; see {log}")


@dataclass
class BenchDeployment:
    """The stack plus `projectors - 1` and `gateways - 1` extra replicas."""

    projectors: int = 1
    gateways: int = 1
    pg: str = field(default_factory=database_server_url)
    amqp: str = field(default_factory=amqp_server_url)
    db: str = field(default_factory=lambda: f"khala_pipe_{uuid.uuid4().hex[:8]}")
    prefix: str = field(default_factory=lambda: f"pipe.{uuid.uuid4().hex[:6]}.")
    stack: Stack | None = None
    replicas: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"{self.pg.rpartition('/')[0]}/{self.db}"

    async def start(self) -> None:
        conn = await asyncpg.connect(self.pg)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db}"')
        finally:
            await conn.close()
        self.stack = Stack.with_free_ports(
            database_url=self.database_url,
            amqp_url=self.amqp,
            amqp_prefix=self.prefix,
            log_dir=LOGS,
            extra_env=dict(BENCH_ENV),
        )
        await asyncio.to_thread(self._start_processes)

    def _start_processes(self) -> None:
        assert self.stack is not None
        self.stack.start_all()
        for service, count in (("projector", self.projectors), ("gateway", self.gateways)):
            for index in range(2, count + 1):
                self._start_replica(service, index)

    def _start_replica(self, service: str, index: int) -> None:
        assert self.stack is not None
        env = self.stack.env()
        http_port = free_port()
        env[f"KHALA_{service.upper()}_HTTP_PORT"] = str(http_port)
        env[f"KHALA_{service.upper()}_GRPC_PORT"] = str(free_port())
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{service}-{index}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"khala_{service}", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.replicas[f"{service}-{index}"] = (proc, http_port)
        _wait_ready(f"http://127.0.0.1:{http_port}", proc, log)

    def service_pids(self) -> dict[str, int]:
        """Every service process by name: control, runtime, projector[-N], gateway[-N]."""
        assert self.stack is not None
        pids = {name: proc.pid for name, proc in self.stack.procs.items()}
        pids.update({name: proc.pid for name, (proc, _port) in self.replicas.items()})
        return pids

    def server_ports(self) -> tuple[int, int]:
        """The TCP ports of the Postgres and RabbitMQ servers this deployment uses."""
        return urlsplit(self.pg).port or 5432, urlsplit(self.amqp).port or 5672

    def gateway_ws_urls(self) -> list[str]:
        assert self.stack is not None
        urls = [self.stack.ws_url]
        urls += [
            f"ws://127.0.0.1:{port}/v1/ws"
            for name, (_p, port) in sorted(self.replicas.items())
            if name.startswith("gateway")
        ]
        return urls

    def exited(self) -> dict[str, int]:
        """Service processes that died during the run, with their exit codes."""
        assert self.stack is not None
        dead = dict(self.stack.exited())
        dead.update(
            {n: p.returncode for n, (p, _port) in self.replicas.items() if p.poll() is not None}
        )
        return dead

    async def stop(self) -> None:
        """Stop every process; drop the database and the broker objects."""
        for proc, _port in self.replicas.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _port in self.replicas.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.stack is not None:
            await asyncio.to_thread(self.stack.stop_all)
        with contextlib.suppress(Exception):
            await delete_prefixed(self.amqp, Topology(self.prefix))
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.pg)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", self.db
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db}"')
            await conn.close()


# -- CPU accounting ---------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """utime + stime of a process in seconds (plus its reaped children's with `reaped`); 0 if gone."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def listener_pid(port: int) -> int | None:
    """The process listening on TCP `port` (found through /proc/net/tcp{,6} socket inodes)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{cols[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def children_of(parent: int) -> list[int]:
    """Every process whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if (
                fields is not None and int(fields[1]) == parent
            ):  # fields start at `state`; [1] is ppid
                found.append(int(entry.name))
    return found


def postgres_cpu_seconds(postmaster: int) -> float:
    """One Postgres cluster: its postmaster, every backend and helper it forked, and what it
    reaped (a backend that ends inside the window still counts)."""
    return cpu_seconds(postmaster, reaped=True) + sum(
        cpu_seconds(pid) for pid in children_of(postmaster)
    )


SYSTEM = ("runtime", "projector", "gateway", "postgres", "rabbitmq")


class CpuMeter:
    """CPU seconds per process between `snapshot()` calls, grouped by role.

    Postgres and RabbitMQ are the servers listening on the deployment's ports (another
    Postgres or RabbitMQ on the machine is not counted)."""

    def __init__(
        self, services: dict[str, int], load_pids: dict[str, int], pg_port: int, amqp_port: int
    ) -> None:
        self.services = services
        self.load_pids = load_pids
        self.postmaster = listener_pid(pg_port)
        self.rabbitmq = listener_pid(amqp_port)

    def snapshot(self) -> dict[str, float]:
        snap = {name: cpu_seconds(pid) for name, pid in self.services.items()}
        snap.update({f"load:{name}": cpu_seconds(pid) for name, pid in self.load_pids.items()})
        if self.postmaster is not None:
            snap["postgres"] = postgres_cpu_seconds(self.postmaster)
        if self.rabbitmq is not None:
            snap["rabbitmq"] = cpu_seconds(self.rabbitmq)
        return snap

    @staticmethod
    def table(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, object]:
        """CPU seconds and ms per event by role; replicas are summed into their role."""
        seconds: dict[str, float] = {}
        per_process: dict[str, float] = {}
        for name, start in before.items():
            used = max(0.0, after.get(name, start) - start)
            per_process[name] = round(used, 3)
            role = "load_generator" if name.startswith("load:") else name.split("-")[0]
            seconds[role] = seconds.get(role, 0.0) + used
        system = sum(seconds.get(role, 0.0) for role in SYSTEM)
        per_event = {
            role: round(s * 1000 / events, 3) if events else None for role, s in seconds.items()
        }
        return {
            "events": events,
            "cpu_seconds": {role: round(s, 3) for role, s in seconds.items()},
            "cpu_seconds_per_process": per_process,
            "ms_per_event": per_event,
            "system_cpu_seconds": round(system, 3),
            "system_ms_per_event": round(system * 1000 / events, 3) if events else None,
        }
