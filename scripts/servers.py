"""Private Postgres and RabbitMQ servers for tests that kill and restart them.

Destructive tests (the chaos run, the relay-outage test) must never touch the
servers other people use. These helpers start a Postgres cluster (`initdb` in a
temporary directory, its own port and socket directory) and a RabbitMQ node (its
own node name, AMQP and distribution ports, data, log and config files; no
plugins) as child processes in their own process group, so a test may SIGKILL
the whole server (postmaster and backends, or the Erlang VM and its helpers) and
start it again on the same data and port. `close()` kills what still runs and
removes the directory. The same helpers give a machine without Docker the
servers the tests need (`KHALA_TEST_SERVERS=private`, see conftest.py).

Postgres keeps `fsync` off (a killed process loses nothing the kernel already
has; only a machine crash would) but `synchronous_commit` on: a commit answered
to a client is in the WAL that the restart replays.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stack import free_port

PG_BIN_DIRS = ("/usr/lib/postgresql",)


def postgres_bin(name: str) -> str:
    """Path of a Postgres server program (`initdb`, `postgres`, `pg_isready`), taken from the
    directory `pg_ctl` on PATH resolves to, else from Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    dirs = [Path(os.path.realpath(found)).parent] if found else []
    for base in PG_BIN_DIRS:
        dirs.extend(sorted(Path(base).glob("*/bin"), reverse=True))
    for bin_dir in dirs:
        if (bin_dir / name).exists():
            return str(bin_dir / name)
    raise FileNotFoundError(
        f"{name} not found next to pg_ctl or under {PG_BIN_DIRS} (apt-get install postgresql)"
    )


def rabbitmq_server_bin() -> str:
    """The RabbitMQ start script itself (not Debian's wrapper, which switches user and config)."""
    for candidate in ("/usr/lib/rabbitmq/bin/rabbitmq-server",):
        if os.path.exists(candidate):
            return candidate
    found = shutil.which("rabbitmq-server")
    if found:
        return found
    raise FileNotFoundError("rabbitmq-server not found (apt-get install rabbitmq-server)")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _kill_group(proc: subprocess.Popen[bytes] | None, port: int) -> None:
    """SIGKILL a server's whole process group, reap its leader, and wait until the
    port is closed (the group's other members die a moment after the leader)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (_port_open(port) or _group_alive(proc.pid)) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left: a Postgres backend that outlives its
    postmaster holds the shared memory block, and the next postmaster refuses to start."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Crashable:
    """kill / restart / close of a private server: SIGKILL its whole process group
    (a crash: nothing flushed), start again on the same data and ports, remove it."""

    proc: subprocess.Popen[bytes] | None
    port: int
    root: Path
    restarts: int

    def start(self, timeout_s: float = 60.0) -> None:  # pragma: no cover - per server
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the server's process group and wait until its port is closed."""
        _kill_group(self.proc, self.port)
        self.proc = None

    def restart(self) -> None:
        """Crash, then start again with the same data directory and ports."""
        self.kill()
        self.start()
        self.restarts += 1

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PrivatePostgres(_Crashable):
    """A Postgres cluster of its own in a temporary directory (trust auth, user postgres)."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="khala-pg-")))
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        """Admin URL (database `postgres`)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _user(self) -> str | None:
        # initdb and postgres refuse to run as root: use the `postgres` account then.
        if os.geteuid() != 0:
            return None
        pwd.getpwnam("postgres")
        return "postgres"

    def _initdb(self) -> None:
        user = self._user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                postgres_bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            user=user,
            cwd=self.root,
        )
        conf = (
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\n"
            "max_connections = 300\n"
            "shared_buffers = 64MB\n"
            "fsync = off\n"
            "full_page_writes = off\n"
            "synchronous_commit = on\n"
            "logging_collector = off\n"
        )
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(conf)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server (initdb on first start) and wait until it accepts connections."""
        if not self.data_dir.exists():
            self._initdb()
        log = open(self.root / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [postgres_bin("postgres"), "-D", str(self.data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._user(),
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        ready = [
            postgres_bin("pg_isready"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
        ]
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}; see {self.root}/postgres.log"
                )
            if subprocess.run(ready, capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres not ready after {timeout_s}s; see {self.root}/postgres.log")


@dataclass
class PrivateRabbitMQ(_Crashable):
    """A RabbitMQ node of its own: own node name, AMQP and distribution ports, data dir; no plugins."""

    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="khala-rabbit-")))
    node: str = field(default_factory=lambda: f"khala-{uuid.uuid4().hex[:8]}@localhost")
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        """The node's environment: everything it writes stays under `root`."""
        env = dict(os.environ)
        env.update(
            {
                "HOME": str(self.root),  # the Erlang cookie
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.root / "log"),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.root / "plugins-expand"),
                "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
            }
        )
        return env

    def _configure(self) -> None:
        (self.root / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            "log.console = true\n"
            "log.console.level = warning\n"
            "log.file = false\n"
            "vm_memory_high_watermark.absolute = 1GB\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        (self.root / "advanced.config").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the node and wait until its AMQP port accepts connections."""
        if not (self.root / "rabbitmq.conf").exists():
            self._configure()
        log = open(self.root / "rabbitmq.log", "ab")
        self.proc = subprocess.Popen(
            [rabbitmq_server_bin()],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq exited with {self.proc.returncode}; see {self.root}/rabbitmq.log"
                )
            if _port_open(self.port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"rabbitmq not ready after {timeout_s}s; see {self.root}/rabbitmq.log")
