"""Direct writes of complete WebSocket messages to an upgraded socket's transport.

The send buffer (`usecases/send_buffer.py`) writes whole rounds through a
`DirectWriter`; this is it for aiohttp's sockets, over asyncio's transports and
uvloop's alike. Above `DIRECT_WRITE_LIMIT` buffered bytes the socket is left to
the sender, which waits for the drain.
"""

from __future__ import annotations

import asyncio

# Above this many bytes buffered in the transport, messages go through
# aiohttp's writer (which waits for the drain) instead of direct writes.
DIRECT_WRITE_LIMIT = 64 * 1024
DRAIN_POLL_S = 0.005


class TransportWriter:
    """Direct writes of complete WebSocket messages to an upgraded socket's transport."""

    __slots__ = ("_drain", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: object) -> None:
        self._transport = transport
        # aiohttp's own writer waits on its protocol's flow control the same way.
        self._drain = getattr(protocol, "_drain_helper", None)

    def writable(self) -> bool:
        """Open and under DIRECT_WRITE_LIMIT bytes buffered."""
        transport = self._transport
        return not transport.is_closing() and transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT

    def write(self, data: bytes) -> None:
        """Hand complete WebSocket messages to the transport."""
        if self._transport.is_closing():
            raise ConnectionResetError("the socket is closing")
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport holds DIRECT_WRITE_LIMIT bytes or more."""
        transport = self._transport
        if transport.is_closing() or transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT:
            return
        if self._drain is not None:  # returns once the transport resumes writing
            await self._drain()
        # Without aiohttp's flow control (or at exactly its high-water mark) poll.
        while (  # noqa: ASYNC110 - the transport offers no event to wait on
            not transport.is_closing() and transport.get_write_buffer_size() >= DIRECT_WRITE_LIMIT
        ):
            await asyncio.sleep(DRAIN_POLL_S)


def direct_writable(transport: object) -> bool:
    """Whether `transport` supports TransportWriter: asyncio's transports and
    uvloop's (which do not subclass asyncio.Transport) both do."""
    return all(
        callable(getattr(transport, name, None))
        for name in ("write", "is_closing", "get_write_buffer_size")
    )
