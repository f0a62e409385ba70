"""Integration: Origin allowlist, per-user cap, client-version minimum, inbound rate
limit, idle timeout and replay budgets on a real gateway."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from gateway_testkit import Client, Closed, FrameWriter, Issuer, collect_until

from openagents.sync.v1 import ws_pb2

pytestmark = pytest.mark.integration


def scope(org: str) -> list[str]:
    return [f"org.{org}.*", f"org.{org}.run.*"]


async def test_origin_not_on_the_allowlist_is_closed_4003(
    make_gateway, issuer: Issuer, unique: str
) -> None:
    async with (
        make_gateway(allowed_origins=("https://app.example",)) as server,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{server.http_port}/v1/ws"
        bad = await http.ws_connect(
            url, protocols=("khala.v1+proto",), origin="https://evil.example"
        )
        msg = await bad.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and bad.close_code == 4003
        assert msg.extra == "origin not allowed"
        good = Client(
            await http.ws_connect(url, protocols=("khala.v1+proto",), origin="https://app.example"),
            False,
        )
        await good.hello(issuer.mint(scope(unique)))
        await good.ws.close()


async def test_per_user_connection_cap(make_gateway, issuer: Issuer, connect, unique: str) -> None:
    async with make_gateway(max_connections_per_user=2) as server:
        user = f"u-{unique}"
        first = [await connect(server) for _ in range(2)]
        for client in first:
            await client.hello(issuer.mint(scope(unique), sub=user))
        third: Client = await connect(server)
        await third.send(
            ws_pb2.ClientMessage(hello=ws_pb2.Hello(token=issuer.mint(scope(unique), sub=user)))
        )
        assert await third.expect_close() == 4003
        other: Client = await connect(server)
        await other.hello(issuer.mint(scope(unique), sub=f"{user}-2"))  # another user is fine
        await first[0].ws.close()
        again: Client = await connect(server)
        for _ in range(50):  # the closed socket is released shortly after
            try:
                await again.hello(issuer.mint(scope(unique), sub=user))
                break
            except (Closed, AssertionError):
                again = await connect(server)
        else:
            pytest.fail("a freed slot was never reusable")


async def test_client_below_the_surface_minimum_gets_upgrade_required(
    make_gateway, issuer: Issuer, connect, unique: str
) -> None:
    async with make_gateway(min_client_versions=(("desktop", "2.0.0"),)) as server:
        old: Client = await connect(server)
        await old.send(
            ws_pb2.ClientMessage(
                hello=ws_pb2.Hello(token=issuer.mint(scope(unique)), client_version="1.9.9")
            )
        )
        error = await old.expect("error")
        assert error.code == "upgrade_required" and "2.0.0" in error.message
        assert await old.expect_close() == 4010
        new: Client = await connect(server)
        await new.send(
            ws_pb2.ClientMessage(
                hello=ws_pb2.Hello(token=issuer.mint(scope(unique)), client_version="2.0.1")
            )
        )
        assert (await new.expect("welcome")).connection_id


async def test_too_many_messages_per_second_is_rate_limited(
    make_gateway, issuer: Issuer, connect, unique: str
) -> None:
    async with make_gateway(max_messages_per_s=2.0, message_burst=5) as server:
        client: Client = await connect(server)
        await client.hello(issuer.mint(scope(unique)))
        for i in range(8):
            await client.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce=str(i))))
        pongs, error = 0, None
        try:
            while True:
                message = await client.recv()
                if message.WhichOneof("body") == "pong":
                    pongs += 1
                elif message.WhichOneof("body") == "error":
                    error = message.error
        except Closed as closed:
            assert closed.code == 4029
        assert pongs == 5
        assert error is not None and error.code == "rate_limited" and error.retry_after_ms > 0


async def test_replay_budget_per_subscription(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.long"
    await writer.append_many(topic, 300)
    async with make_gateway(replay_budget=100) as server:
        client: Client = await connect(server)
        await client.hello(issuer.mint(scope(unique)))
        await client.subscribe((topic, "1", 150))
        error = await client.expect("error")
        assert (error.code, error.reason, error.head_seq) == ("stale_cursor", "replay_budget", 300)
        await client.subscribe((topic, "1", 200))  # exactly the budget
        assert (await client.expect("subscribed")).head_seq == 300


async def test_global_cap_on_concurrent_replays(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    big, other = f"org.{unique}.run.big", f"org.{unique}.run.other"
    await writer.append_many(big, 2000, payload_size=4096)
    await writer.append_many(other, 10)
    async with make_gateway(
        max_concurrent_replays=1, send_queue_frames=20, slow_consumer_grace_s=60
    ) as server:
        stuck: Client = await connect(server)
        await stuck.hello(issuer.mint(scope(unique)))
        await stuck.subscribe((big, "", 0))  # never read: the replay stays in progress
        await stuck.expect("subscribed")
        client: Client = await connect(server)
        await client.hello(issuer.mint(scope(unique)))
        await client.subscribe((other, "1", 2))
        error = await client.expect("error")
        assert (error.code, error.reason, error.topic) == ("stale_cursor", "replay_budget", other)
        assert error.retry_after_ms > 0
        await client.subscribe((other, "1", 10))  # caught up: no replay needed
        await client.expect("subscribed")
        assert (await client.expect("watermark")).seq == 10
        await client.send(ws_pb2.ClientMessage(unsubscribe=ws_pb2.Unsubscribe(topics=[other])))
        await client.subscribe((other, "", 0))  # a fresh subscription is never stale
        await client.expect("subscribed")
        timeline = await collect_until(client, lambda t: "watermark" in t.kinds(other))
        assert timeline.seqs(other) == list(range(1, 11))


async def test_idle_socket_is_closed_4002_while_pings_keep_another_open(
    make_gateway, issuer: Issuer, connect, unique: str
) -> None:
    async with make_gateway(idle_timeout_s=0.6, heartbeat_interval_ms=200) as server:
        idle: Client = await connect(server)
        await idle.hello(issuer.mint(scope(unique)))
        started = time.monotonic()
        pinger: Client = await connect(server)
        await pinger.hello(issuer.mint(scope(unique)))

        async def keep_pinging() -> None:
            for i in range(8):  # 1.6 s, well past the idle timeout
                await pinger.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce=str(i))))
                assert (await pinger.expect("pong")).nonce == str(i)
                await asyncio.sleep(0.2)

        pinging = asyncio.create_task(keep_pinging())
        # server heartbeats keep arriving on the idle socket; they are not inbound traffic
        assert await idle.expect_close() == 4002
        assert idle.heartbeats >= 2
        assert time.monotonic() - started >= 0.6
        await pinging  # the socket that pinged was never closed
        assert not pinger.ws.closed
