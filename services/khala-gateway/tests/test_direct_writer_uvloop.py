"""The direct-write fast path must be taken on the loop services run on: uvloop's
transports do not subclass asyncio.Transport, and an isinstance check once sent
every live frame through aiohttp's per-message writer instead."""

from __future__ import annotations

import asyncio

import uvloop

from khala_gateway.handlers.ws_transport import TransportWriter
from khala_gateway.handlers.ws_transport import direct_writable as _direct_writable


def test_uvloop_and_asyncio_transports_both_get_the_direct_writer() -> None:
    async def check() -> list[tuple[str, bool]]:
        seen: list[tuple[str, bool]] = []
        accepted = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            transport = writer.transport
            seen.append((type(transport).__name__, _direct_writable(transport)))
            TransportWriter(transport, None).write(b"x")  # type: ignore[arg-type]
            accepted.set()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(accepted.wait(), 5)
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        writer.close()
        server.close()
        return seen

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        on_uvloop = runner.run(check())
    with asyncio.Runner() as runner:
        on_asyncio = runner.run(check())
    assert on_uvloop[0] == ("TCPTransport", True)
    assert on_asyncio[0][1] is True
    assert not _direct_writable(object())
