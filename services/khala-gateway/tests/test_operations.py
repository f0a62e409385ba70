"""Integration: revocation, drain, slow consumers, health/readiness/metrics and the admin APIs."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from gateway_testkit import (
    ADMIN_TOKEN,
    SERVICE_TOKEN,
    Client,
    Closed,
    FrameWriter,
    Issuer,
    Timeline,
    collect_until,
    wait_for,
)
from prometheus_client import REGISTRY

from khala_common.broker import Broker
from khala_common.grpc_server import service_metadata
from khala_gateway import metrics
from khala_gateway.app import GatewayServer
from openagents.control.v1 import revocation_pb2
from openagents.sync.v1 import gateway_admin_pb2, gateway_admin_pb2_grpc, ws_pb2

pytestmark = pytest.mark.integration

MONITORING = Path(__file__).resolve().parents[3] / "deploy" / "monitoring"


async def open_session(
    connect, server: GatewayServer, issuer: Issuer, org: str, **claims
) -> Client:
    client: Client = await connect(server)
    await client.hello(issuer.mint([f"org.{org}.*", f"org.{org}.run.*"], **claims))
    return client


async def publish_revocation(
    broker: Broker, key: str, revocation: revocation_pb2.Revocation
) -> None:
    await broker.publish(
        broker.topology.control, key, revocation, message_id=f"rev-{time.time_ns()}"
    )


async def test_session_revocation_closes_only_that_session_with_4009(
    gateway: GatewayServer, issuer: Issuer, connect, broker: Broker, unique: str
) -> None:
    revoked = await open_session(connect, gateway, issuer, unique, sid=f"s-{unique}")
    other = await open_session(connect, gateway, issuer, unique, sid=f"s2-{unique}")
    started = time.monotonic()
    await publish_revocation(
        broker,
        "session.revoked",
        revocation_pb2.Revocation(
            kind=revocation_pb2.REVOCATION_KIND_SESSION,
            session_ids=[f"s-{unique}"],
            reason="logout",
        ),
    )
    error = await revoked.expect("error")
    assert error.code == "reauth_required"
    assert await revoked.expect_close() == 4009
    assert time.monotonic() - started < 1.0
    await other.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce="still-here")))
    assert (await other.expect("pong")).nonce == "still-here"


async def test_user_revocation_closes_every_socket_of_the_user(
    gateway: GatewayServer, issuer: Issuer, connect, broker: Broker, unique: str
) -> None:
    user = f"user-{unique}"
    sockets = [await open_session(connect, gateway, issuer, unique, sub=user) for _ in range(2)]
    await publish_revocation(
        broker,
        "user.revoked",
        revocation_pb2.Revocation(kind=revocation_pb2.REVOCATION_KIND_USER, user_id=user),
    )
    for client in sockets:
        assert (await client.expect("error")).code == "reauth_required"
        assert await client.expect_close() == 4009


async def test_drain_sends_jittered_reconnect_then_1012(
    make_gateway, issuer: Issuer, connect, unique: str
) -> None:
    async with make_gateway() as server, aiohttp.ClientSession() as http:
        clients = [await open_session(connect, server, issuer, unique) for _ in range(3)]
        base = f"http://127.0.0.1:{server.http_port}"
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        first_reconnect = asyncio.Event()

        async def follow(client: Client) -> tuple[int, int | None]:
            reconnect = await client.expect("reconnect")
            first_reconnect.set()
            assert reconnect.reason == "drain"
            return reconnect.retry_after_ms, await client.expect_close()

        followers = [asyncio.create_task(follow(c)) for c in clients]
        drain = asyncio.create_task(server.drain())
        await first_reconnect.wait()
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503  # readiness turned false before any Reconnect
        results = await asyncio.gather(*followers)
        await drain
        assert [code for _, code in results] == [1012] * 3
        delays = [delay for delay, _ in results]
        assert all(500 <= d <= 1_500 for d in delays)
        assert len(set(delays)) > 1  # jittered per socket
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{base}/v1/ws")
        assert info.value.status == 503


async def test_slow_consumer_is_evicted_with_4008(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.firehose"
    await writer.append_many(topic, 150, payload_size=32 * 1024)
    evictions = metrics.SLOW_CONSUMER_EVICTIONS._value.get()

    def small_window(addr_info: Any) -> socket.socket:
        sock = socket.socket(addr_info[0], addr_info[1], addr_info[2])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    async with (
        make_gateway(
            send_queue_frames=20, send_queue_bytes=64 * 1024, slow_consumer_grace_s=0.5
        ) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_window)) as http,
    ):
        ws = await http.ws_connect(
            f"http://127.0.0.1:{server.http_port}/v1/ws", protocols=("khala.v1+proto",)
        )
        client = Client(ws, False)
        await client.hello(issuer.mint([f"org.{unique}.run.*"]))
        await client.subscribe((topic, "", 0))
        # the client reads nothing: its buffers, then the socket, then the send queue fill up
        await wait_for(lambda: metrics.SLOW_CONSUMER_EVICTIONS._value.get() > evictions, 10)
        received = Timeline()
        last_error = None
        try:
            while True:
                message = await client.recv(10)
                received.add(message)
                if message.WhichOneof("body") == "error":
                    last_error = message.error
        except Closed as closed:
            assert closed.code == 4008
        assert last_error is not None and last_error.code == "slow_consumer"
        got = received.seqs(topic)
        assert got == list(range(1, len(got) + 1)) and len(got) < 150

        # The client resumes from its cursor: exactly the rest, nothing lost.
        again = Client(
            await http.ws_connect(
                f"http://127.0.0.1:{server.http_port}/v1/ws", protocols=("khala.v1+proto",)
            ),
            False,
        )
        await again.hello(issuer.mint([f"org.{unique}.run.*"]))
        await again.subscribe((topic, "1", got[-1] if got else 0))
        rest = await collect_until(again, lambda t: "watermark" in t.kinds(topic), 10)
        assert got + rest.seqs(topic) == list(range(1, 151))


async def test_a_peer_that_never_reads_is_aborted_and_released(
    make_gateway, issuer: Issuer, writer: FrameWriter, unique: str
) -> None:
    topic = f"org.{unique}.run.stuck"
    await writer.append_many(topic, 150, payload_size=32 * 1024)

    def small_window(addr_info: Any) -> socket.socket:
        sock = socket.socket(addr_info[0], addr_info[1], addr_info[2])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    async with (
        make_gateway(
            send_queue_frames=20, send_queue_bytes=64 * 1024, slow_consumer_grace_s=0.3
        ) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_window)) as http,
    ):
        ws = await http.ws_connect(
            f"http://127.0.0.1:{server.http_port}/v1/ws", protocols=("khala.v1+proto",)
        )
        client = Client(ws, False)
        await client.hello(issuer.mint([f"org.{unique}.run.*"]))
        await client.subscribe((topic, "", 0))
        await wait_for(lambda: len(server.hub.connections) == 1, 5)
        # never read again: the close cannot be delivered, so the connection is aborted
        await wait_for(lambda: not server.hub.connections, 15)
        bindings = server.hub.bindings
        assert bindings is not None and topic not in bindings.topics()


def monitored_gateway_series() -> set[str]:
    """Every khala_gateway_* series the alert rules and dashboards query."""
    names: set[str] = set()
    for path in MONITORING.rglob("*"):
        if path.suffix in {".yaml", ".yml", ".json"}:
            names.update(re.findall(r"khala_gateway_[a-z_]+", path.read_text()))
    return names


async def test_health_readiness_and_metrics(gateway: GatewayServer) -> None:
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{gateway.http_port}"
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
    exported = set(re.findall(r"^# TYPE (khala_gateway_[a-z_]+) ", text, re.M))
    for series in re.findall(r"^(khala_gateway_[a-z_]+)", text, re.M):
        exported.add(series)
    wanted = {
        "khala_gateway_connections",  # connections
        "khala_gateway_frames_sent_total",  # frames
        "khala_gateway_bytes_sent_total",  # bytes
        "khala_gateway_duplicate_drops_total",  # drops
        "khala_gateway_slow_consumer_evictions_total",  # evictions
        "khala_gateway_replays_total",  # replays
        "khala_gateway_replay_seconds_bucket",  # replay duration
        "khala_gateway_fanout_lag_seconds_bucket",  # fanout lag
        "khala_gateway_frame_parses_total",
        "khala_gateway_frame_json_encodes_total",
    }
    used_by_monitoring = monitored_gateway_series()
    assert used_by_monitoring, "deploy/monitoring names no gateway series"
    missing = sorted((wanted | used_by_monitoring) - exported)
    assert not missing, f"not exported: {missing}"


async def test_readiness_fails_when_the_jwks_is_unreachable(make_gateway) -> None:
    async with make_gateway(control_url="http://127.0.0.1:9") as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.http_port}/readyz") as response:
                body = await response.json()
        assert response.status == 503
        assert any(p.startswith("jwks") for p in body["problems"])


async def test_fanout_metrics_over_http_and_grpc(
    make_gateway, issuer: Issuer, connect, writer: FrameWriter, unique: str
) -> None:
    busy, calm = f"org.{unique}.run.busy", f"org.{unique}.run.calm"
    async with make_gateway() as server:
        clients = [await open_session(connect, server, issuer, unique) for _ in range(2)]
        for client in clients:
            await client.subscribe((busy, "", 0))
            await client.expect("subscribed")
            await client.expect("watermark")
        await clients[0].subscribe((calm, "", 0))
        await clients[0].expect("subscribed")
        await clients[0].expect("watermark")
        lags = REGISTRY.get_sample_value("khala_gateway_fanout_lag_seconds_count") or 0.0
        for _ in range(3):
            await writer.append(busy)
        for client in clients:
            for _ in range(3):
                await client.expect("frame")
        # one lag observation per fanout message (not per subscriber)
        assert REGISTRY.get_sample_value("khala_gateway_fanout_lag_seconds_count") == lags + 3
        url = f"http://127.0.0.1:{server.http_port}/internal/v1/khala/fanout/metrics"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
            async with http.get(url, headers={"Authorization": "Bearer nope"}) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "forbidden"
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.get(url, params={"topic_limit": "x"}, headers=auth) as response:
                assert response.status == 400
            async with http.get(url, params={"topic_limit": "20"}, headers=auth) as response:
                assert response.status == 200
                body = await response.json()
            async with http.get(url, params={"topic_limit": "1"}, headers=auth) as response:
                assert [t["topic"] for t in (await response.json())["topics"]] == [busy]
        assert body["connections"] == 2
        assert body["instance"] == server.gateway.instance_id
        assert body["fanout_queue"].endswith(f"khala.fanout.gw.{server.gateway.instance_id}")
        by_topic = {t["topic"]: t for t in body["topics"]}
        assert by_topic[busy]["subscribers"] == 2
        assert by_topic[busy]["frames_sent"] == 6
        assert by_topic[calm]["subscribers"] == 1
        assert set(by_topic[busy]) >= {
            "drops",
            "replays",
            "slow_consumer_evictions",
            "frames_per_second",
            "fanout_lag_ms",
        }
        assert 0 < by_topic[busy]["fanout_lag_ms"] < 5_000  # published_at_ms -> receipt
        assert by_topic[calm]["fanout_lag_ms"] == 0  # no frame yet

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = gateway_admin_pb2_grpc.GatewayAdminStub(channel)
            reply = await stub.GetFanoutMetrics(
                gateway_admin_pb2.GetFanoutMetricsRequest(topic_limit=5),
                metadata=service_metadata(SERVICE_TOKEN),
            )
            assert reply.connections == 2
            assert {t.topic: t.subscribers for t in reply.topics} == {busy: 2, calm: 1}
            assert (reply.instance, reply.fanout_queue) == (body["instance"], body["fanout_queue"])
            grpc_topics = {t.topic: t for t in reply.topics}
            assert grpc_topics[busy].fanout_lag_ms > 0 and grpc_topics[calm].fanout_lag_ms == 0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetFanoutMetrics(gateway_admin_pb2.GetFanoutMetricsRequest())
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
