"""One trace end to end (issue 20), on the four services as real processes.

The test starts an OTLP/HTTP receiver (an aiohttp server decoding
ExportTraceServiceRequest), starts the stack with KHALA_TRACE_EXPORTER=otlp
pointing at it, and plays a client whose own root span is the known
`traceparent` below:

* control: the client mints its sync token with that traceparent, so control's
  server span joins the trace as a child of the client's span (a sibling of the
  append: control is not on the append path, so it is not in the chain);
* the chain: runtime's append (HTTP server span, child of the client's span) ->
  runtime's relay publish (`outbox publish`, continuing the traceparent stored
  with the outbox row) -> the projector's `project` (consuming the
  RuntimeEventBatch, committing, publishing the FanoutBatch) -> the gateway's
  `fanout deliver` (handing the frame to the client's socket), each span the
  parent of the next;
* runtime's /metrics, asked for OpenMetrics, carries an exemplar with the trace id.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from stack import Stack, free_port

from khala_client import PROTO, KhalaApi, connect
from khala_common.broker import delete_prefixed
from khala_common.topics import run_topic
from khala_common.topology import Topology

from .conftest import ARTIFACTS
from .support import Received, read_until

pytestmark = pytest.mark.e2e

SERVICES = ("control", "runtime", "projector", "gateway")
TRACE_ID = uuid.uuid4().hex
CLIENT_SPAN_ID = uuid.uuid4().hex[:16]
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service,
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.start_time_unix_nano,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[OtlpReceiver]:
    running = OtlpReceiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def stack(e2e_database: str, amqp_url: str, receiver: OtlpReceiver) -> AsyncIterator[Stack]:
    """The four services exporting spans over OTLP/HTTP to `receiver`."""
    prefix = f"e2e.{uuid.uuid4().hex[:8]}."
    running = Stack.with_free_ports(
        database_url=e2e_database,
        amqp_url=amqp_url,
        amqp_prefix=prefix,
        log_dir=ARTIFACTS / "e2e" / "test_one_trace",
        extra_env={
            "KHALA_TRACE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "KHALA_RUNTIME_ADMIN_PORT": str(free_port()),
        },
    )
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
        await delete_prefixed(amqp_url, Topology(prefix))


def _service(span: ReceivedSpan, name: str) -> bool:
    return name in span.service


def _one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if _service(s, service) and s.name == name]
    assert found, f"no {service} span {name!r} in the trace: {spans}"
    return found[0]


async def _wait_for_chain(receiver: OtlpReceiver, timeout_s: float = 20.0) -> list[ReceivedSpan]:
    """The trace's spans, once the gateway's delivery span has been exported."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        spans = receiver.of_trace(TRACE_ID)
        if any(_service(s, "gateway") and s.name == "fanout deliver" for s in spans):
            return spans
        await asyncio.sleep(0.2)
    raise AssertionError(f"the trace never reached the gateway: {receiver.of_trace(TRACE_ID)}")


async def test_one_append_is_one_trace_across_the_services(
    stack: Stack,
    api: KhalaApi,
    org_id: str,
    http: aiohttp.ClientSession,
    receiver: OtlpReceiver,
) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id, title="one trace")
    topic = run_topic(org_id, run_id)
    bearer = {"Authorization": f"Bearer {await api.access_token()}", "traceparent": TRACEPARENT}

    # The client mints its sync token in its trace (control joins it) ...
    async with http.post(
        f"{stack.url('control')}/api/sync/token",
        json={"topics": [topic], "client_version": "1.0.0"},
        headers=bearer,
    ) as response:
        assert response.status == 200, await response.text()
        token = (await response.json())["token"]
    socket = await connect(http, stack.ws_url, token, protocol=PROTO)
    await socket.subscribe([topic])
    received = await read_until(socket, topic, 1, Received())  # run.created: another trace

    # ... and appends one event in it; the frame reaches the socket.
    async with http.post(
        f"{stack.url('runtime')}/api/v1/runs/{run_id}/events",
        json={"events": [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]},
        headers={**bearer, "X-Request-Id": f"req-{TRACE_ID[:8]}"},
    ) as response:
        assert response.status in (200, 201), await response.text()
    await read_until(socket, topic, 2, received)
    assert received.seqs[-1] == 2

    spans = await _wait_for_chain(receiver)
    services = {s.service for s in spans}
    for name in ("control", "runtime", "projector", "gateway"):
        assert any(name in service for service in services), (name, services)

    # control: a child of the client's span, beside the append (not on its path)
    mint = [s for s in spans if _service(s, "control") and s.parent_span_id == CLIENT_SPAN_ID]
    assert mint, spans
    # the chain, each span the parent of the next, in time order
    append = next(
        s
        for s in spans
        if _service(s, "runtime") and s.name.startswith("POST ") and "events" in s.name
    )
    assert append.parent_span_id == CLIENT_SPAN_ID
    relay = _one(spans, "runtime", "outbox publish")
    project = _one(spans, "projector", "project")
    deliver = _one(spans, "gateway", "fanout deliver")
    chain = [append, relay, project, deliver]
    for parent, child in itertools.pairwise(chain):
        assert child.parent_span_id == parent.span_id, (parent, child)
        assert child.start_ns >= parent.start_ns, (parent, child)

    # runtime's latency histograms carry the trace as an exemplar (OpenMetrics)
    admin = f"http://127.0.0.1:{stack.extra_env['KHALA_RUNTIME_ADMIN_PORT']}"
    async with http.get(
        f"{admin}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await response.text()
    assert f'# {{trace_id="{TRACE_ID}"}}' in text, "no exemplar with the trace id"
    await socket.close()
