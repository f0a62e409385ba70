"""What an idle WebSocket costs in a bare aiohttp server: the floor under the
gateway's RSS per idle socket.

    uv run --no-sync python bench/aiohttp_idle_floor.py --sockets 8000

Starts a minimal aiohttp WebSocket server (upgrade, then wait for messages:
no authentication, no subscription, no Khala state) as a child process on
127.0.0.1, opens `--sockets` client sockets to it from this process and
reports the server's RSS growth per socket. The gateway's own state per
socket (connection, outbox, subscription, sender task) comes on top of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

SERVER = """
import sys
from aiohttp import web

async def handle(request):
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws

app = web.Application()
app.router.add_get("/ws", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * resource.getpagesize()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def measure(sockets: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])  # noqa: ASYNC220
    try:
        url = f"http://127.0.0.1:{port}/ws"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(100):
                try:
                    await (await http.ws_connect(url)).close()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            before = rss_bytes(server.pid)
            opened = []
            for start in range(0, sockets, 200):
                count = min(200, sockets - start)
                opened += await asyncio.gather(*(http.ws_connect(url) for _ in range(count)))
            await asyncio.sleep(2)
            after = rss_bytes(server.pid)
            for ws in opened:
                await ws.close()
    finally:
        server.terminate()
        server.wait(10)
    return {
        "sockets": sockets,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "rss_per_socket_kb": round((after - before) / sockets / 1024, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=8000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.sockets + 500 > hard:
        parser.error(f"--sockets needs {args.sockets + 500} file descriptors; the limit is {hard}")
    started = time.time()
    result = asyncio.run(measure(args.sockets))
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
