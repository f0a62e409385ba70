"""Regression tests of three holes found against `make run`, through the four real
services (docs/security.md):

1. after logout, the session's unexpired sync token opened a WebSocket, and its
   access token kept working on runtime;
2. a `web` session minted an `onyx` sync token (the surface came from the request);
3. one Subscribe of ~15,500 cursors got ~15,500 error replies, unbounded.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

from khala_client import PROTO, KhalaApi
from khala_client.api import ApiError
from khala_common.topics import runs_topic
from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.e2e


async def _hello(
    http: aiohttp.ClientSession, ws_url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(ws_url, protocols=(PROTO,), max_msg_size=0)
    hello = ws_pb2.Hello(token=token, client_name="e2e", client_version="1.0.0")
    await ws.send_bytes(ws_pb2.ClientMessage(hello=hello).SerializeToString())
    return ws


async def _next(ws: aiohttp.ClientWebSocketResponse) -> ws_pb2.ServerMessage:
    while True:
        reply = await ws.receive(timeout=10)
        assert reply.type == aiohttp.WSMsgType.BINARY, reply
        message = ws_pb2.ServerMessage.FromString(reply.data)
        if message.WhichOneof("body") != "heartbeat":
            return message


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    closing = await ws.receive(timeout=10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    return ws.close_code


async def test_logout_refuses_the_sessions_unexpired_tokens_everywhere(
    api: KhalaApi, org_id: str, stack, http: aiohttp.ClientSession
) -> None:
    run = await api.create_run(org_id, title="before logout")
    sync_token = (await api.sync_token([runs_topic(org_id)]))["token"]
    access = await api.access_token()
    ws = await _hello(http, stack.ws_url, sync_token)
    assert (await _next(ws)).WhichOneof("body") == "welcome"

    await api.logout()
    # The open socket is evicted ...
    assert (await _next(ws)).error.code == "reauth_required"
    assert await _closed_with(ws) == 4009
    # ... and the same unexpired sync token no longer opens one.
    again = await _hello(http, stack.ws_url, sync_token)
    error = await _next(again)
    assert error.error.code == "reauth_required"
    assert await _closed_with(again) == 4009

    # Control and runtime refuse the unexpired access token (runtime within 1 s:
    # its introspection cache holds an answer 0.5 s; the wait is recorded, not asserted).
    headers = {"Authorization": f"Bearer {access}"}
    async with http.get(f"{stack.url('control')}/api/me", headers=headers) as response:
        assert response.status == 401
    started = time.monotonic()
    while True:
        async with http.get(
            f"{stack.url('runtime')}/api/v1/runs/{run['run_id']}", headers=headers
        ) as response:
            if response.status == 401:
                break
            assert response.status == 200
        assert time.monotonic() - started < 10, "runtime kept accepting a revoked session"
        await asyncio.sleep(0.05)
    print(f"runtime refused the revoked session after {time.monotonic() - started:.3f} s")


async def test_a_web_session_cannot_mint_another_surface(
    stack, http: aiohttp.ClientSession
) -> None:
    web = KhalaApi(stack.url("control"), stack.url("runtime"), http)
    tag = uuid.uuid4().hex[:8]
    await web.sign_in_dev(
        f"web-{tag}@example.com", "Web", device_id=f"browser-{tag}", surface="web"
    )
    await web.create_org(f"org-{tag}", "Web org")
    for surface in ("onyx", "desktop", "ios"):
        with pytest.raises(ApiError) as refused:
            await web.sync_token(surface=surface)
        assert (refused.value.status, refused.value.code) == (403, "surface_mismatch")
    minted = await web.sync_token()  # the session's own surface
    assert minted["scope"] == [f"org.org-{tag}.runs", f"org.org-{tag}.workers"]
    # and runtime holds web to its row of the matrix: no run events
    run = await web.create_run(f"org-{tag}")
    with pytest.raises(ApiError) as refused:
        await web.read_events(run["run_id"])
    assert (refused.value.status, refused.value.code) == (403, "forbidden_surface")


async def test_one_huge_subscribe_gets_one_error(
    api: KhalaApi, org_id: str, stack, http: aiohttp.ClientSession
) -> None:
    ws = await _hello(http, stack.ws_url, (await api.sync_token([runs_topic(org_id)]))["token"])
    assert (await _next(ws)).WhichOneof("body") == "welcome"
    cursors = [ws_pb2.TopicCursor(topic=f"org.other-{i}.runs") for i in range(15_500)]
    subscribe = ws_pb2.Subscribe(request_id="huge", cursors=cursors)
    await ws.send_bytes(ws_pb2.ClientMessage(subscribe=subscribe).SerializeToString())
    await ws.send_bytes(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="after")).SerializeToString())
    error = await _next(ws)
    assert (error.error.code, error.error.request_id) == ("too_many_subscriptions", "huge")
    assert (await _next(ws)).pong.nonce == "after"  # nothing else was queued
    await ws.close()
