"""The Python SDK (`KhalaClient`) against the four real services.

* Reconnect across gateway restarts (a SIGTERM drain with `Reconnect`, then a
  SIGKILL) while lines are appended: every frame is applied exactly once, in
  order, on both subprotocols.
* A stale cursor (wrong epoch, or ahead of the head) is re-bootstrapped: the
  topic is reset and replayed from the start, and the store holds the real epoch.
* A restarted client resumes from its file or SQLite cursor store.
* The sync token (20 s here) is renewed over RefreshAuth on the same socket.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from khala_client import (
    JSON,
    PROTO,
    ApiTokenSource,
    Backoff,
    Connected,
    Cursor,
    Disconnected,
    FileCursorStore,
    FrameApplied,
    KhalaApi,
    KhalaClient,
    Live,
    LocalState,
    MemoryCursorStore,
    SqliteCursorStore,
    Subscribed,
    TopicReset,
    Update,
)
from khala_common.topics import run_topic, runs_topic
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2

from .clients_support import (
    FAST_ENV,
    LineWriter,
    append_lines,
    line_text,
    new_user,
    restart_gateway,
    running_stack,
)
from .support import assert_exact_sequence

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
async def stack(
    e2e_database: str, amqp_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[object]:
    async with running_stack(e2e_database, amqp_url, request, FAST_ENV) as running:
        yield running


@pytest.fixture
async def user(stack, http: aiohttp.ClientSession) -> tuple[KhalaApi, str]:
    return await new_user(stack, http)


class Recorder:
    """Drains a client's updates into a LocalState and a list, in a task."""

    def __init__(self, client: KhalaClient) -> None:
        self.client = client
        self.state = LocalState()
        self.updates: list[Update] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for update in self.client.updates():
            self.updates.append(update)
            self.state.apply(update)

    def applied(self, topic: str) -> list[FrameApplied]:
        return [u for u in self.updates if isinstance(u, FrameApplied) and u.topic == topic]

    async def wait_for(self, predicate, timeout_s: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.task.done():
                self.task.result()
                raise AssertionError(f"client stopped before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; last updates {self.updates[-5:]}"
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.client.close()
        await asyncio.wait_for(self.task, 10)


def _client(stack, api: KhalaApi, http, topics, *, store=None, protocol=PROTO) -> KhalaClient:
    return KhalaClient(
        stack.ws_url,
        ApiTokenSource(api),
        topics=topics,
        store=store if store is not None else MemoryCursorStore(),
        protocol=protocol,
        http=http,
        backoff=Backoff(base_s=0.2, cap_s=2.0),
    )


async def _new_run(api: KhalaApi, org: str) -> tuple[str, str]:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    await api.create_run(org, run_id, title="sdk e2e")
    await api.append_events(
        run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "start"}]
    )
    return run_id, run_topic(org, run_id)


async def test_reconnect_across_gateway_restarts_without_loss_or_duplicate(
    stack, user, http
) -> None:
    api, org = user
    run_id, topic = await _new_run(api, org)
    recorders = [
        Recorder(_client(stack, api, http, [topic, runs_topic(org)], protocol=protocol))
        for protocol in (PROTO, JSON)
    ]
    try:
        await _survive_restarts(stack, api, org, run_id, topic, recorders)
    finally:
        for rec in recorders:
            await rec.stop()


def _assert_no_duplicate_or_gap(rec: Recorder) -> None:
    """The wire itself was exact: the SDK never had to discard a duplicate or heal a gap."""
    assert rec.client.stats["duplicates"] == 0 and rec.client.stats["gaps"] == 0, rec.client.stats


def _live_count(rec: Recorder, topic: str) -> int:
    return sum(1 for u in rec.updates if isinstance(u, Live) and u.topic == topic and u.live)


async def _survive_restarts(stack, api, org, run_id, topic, recorders: list[Recorder]) -> None:
    for rec in recorders:
        await rec.wait_for(lambda rec=rec: _live_count(rec, topic) >= 1, 30, "live")
    writer = LineWriter(api, run_id)
    for round_, sig in enumerate((signal.SIGTERM, signal.SIGKILL), start=2):
        await asyncio.sleep(0.5)
        # SIGTERM drains with Reconnect{retry_after_ms} and close 1012; SIGKILL just vanishes (1006).
        await restart_gateway(stack, sig)
        for rec in recorders:
            await rec.wait_for(
                lambda rec=rec, n=round_: _live_count(rec, topic) >= n,
                60,
                f"live again ({sig.name})",
            )
    lines = await writer.finish()
    head = 2 + lines  # run.created, run.started, then the lines

    for rec in recorders:
        await rec.wait_for(
            lambda rec=rec: rec.state.event_seqs(topic)[-1:] == [head], 60, f"seq {head}"
        )
        assert_exact_sequence([u.seq for u in rec.applied(topic)], 1, head)
        connects = [u for u in rec.updates if isinstance(u, Connected)]
        assert len(connects) >= 3, "the client did not reconnect across both restarts"
        assert len({c.connection_id for c in connects}) == len(connects)
        reasons = [u.reason for u in rec.updates if isinstance(u, Disconnected)]
        assert "server drain (Reconnect)" in reasons, reasons
        resumed = [
            u for u in rec.updates if isinstance(u, Subscribed) and u.topic == topic and u.resumed
        ]
        assert len(resumed) >= 2, "reconnects must resume from the cursor, not start over"
        events = [u.payload for u in rec.applied(topic)]
        assert all(isinstance(e, events_pb2.RuntimeEvent) for e in events)
        texts = [e.payload_json for e in events[2:]]  # type: ignore[union-attr]
        assert texts == [f'{{"text":"{line_text(i)}"}}'.encode() for i in range(lines)]
        await rec.wait_for(
            lambda rec=rec: (
                getattr(rec.state.docs.get(runs_topic(org), {}).get(run_id), "last_seq", 0) == head
            ),
            30,
            "the run summary to reach the head",
        )
        summary = rec.state.docs[runs_topic(org)][run_id]
        assert isinstance(summary, summaries_pb2.RunSummary)
        assert summary.status == summaries_pb2.RUN_STATUS_RUNNING and summary.output_count == lines
        assert rec.client.cursor(topic).after_seq == head
        _assert_no_duplicate_or_gap(rec)


async def test_stale_cursor_is_rebootstrapped(stack, user, http) -> None:
    api, org = user
    run_id, topic = await _new_run(api, org)
    await append_lines(api, run_id, 0, 8, batch=8, pause_s=0)
    head = 10
    _ahead_run, ahead_topic = await _new_run(api, org)
    # A wrong epoch (as after a projection rebuild) and a cursor past the head.
    store = MemoryCursorStore(
        {topic: Cursor("epoch-that-never-was", 4), ahead_topic: Cursor("1", 999)}
    )
    rec = Recorder(_client(stack, api, http, [topic, ahead_topic], store=store))
    await rec.wait_for(
        lambda: rec.state.event_seqs(topic)[-1:] == [head], 30, "the replay after the reset"
    )
    await rec.wait_for(
        lambda: rec.state.event_seqs(ahead_topic)[-1:] == [2], 30, "the second reset"
    )

    resets = {u.topic: u.reason for u in rec.updates if isinstance(u, TopicReset)}
    assert resets == {topic: "epoch_changed", ahead_topic: "cursor_ahead"}
    assert_exact_sequence(rec.state.event_seqs(topic), 1, head)
    assert_exact_sequence(rec.state.event_seqs(ahead_topic), 1, 2)
    real_epoch = rec.applied(topic)[0].frame.epoch
    assert real_epoch and real_epoch != "epoch-that-never-was"
    assert store.load()[topic] == Cursor(real_epoch, head)
    # The reset is announced before any frame of the new subscription.
    kinds = [type(u).__name__ for u in rec.updates if getattr(u, "topic", None) == topic]
    assert kinds.index("TopicReset") < kinds.index("FrameApplied")
    _assert_no_duplicate_or_gap(rec)
    await rec.stop()


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_restarted_client_resumes_from_its_store(
    stack, user, http, tmp_path: Path, kind: str
) -> None:
    api, org = user
    run_id, topic = await _new_run(api, org)
    await append_lines(api, run_id, 0, 5, batch=5, pause_s=0)
    path = tmp_path / ("cursors.json" if kind == "file" else "cursors.sqlite")

    def open_store():
        return FileCursorStore(path) if kind == "file" else SqliteCursorStore(path)

    first = Recorder(_client(stack, api, http, [topic], store=open_store()))
    await first.wait_for(lambda: first.state.event_seqs(topic)[-1:] == [7], 30, "seq 7")
    assert_exact_sequence(first.state.event_seqs(topic), 1, 7)
    _assert_no_duplicate_or_gap(first)
    await first.stop()

    await append_lines(api, run_id, 5, 5, batch=5, pause_s=0)  # seqs 8..12 while no client runs
    second = Recorder(_client(stack, api, http, [topic], store=open_store()))
    await second.wait_for(lambda: second.state.event_seqs(topic)[-1:] == [12], 30, "seq 12")
    assert_exact_sequence(second.state.event_seqs(topic), 8, 12)
    assert [u.resumed for u in second.updates if isinstance(u, Subscribed)] == [True]
    _assert_no_duplicate_or_gap(second)
    await second.stop()
    assert open_store().load()[topic].after_seq == 12


async def test_sync_token_is_refreshed_on_the_same_socket(stack, user, http) -> None:
    api, org = user
    run_id, topic = await _new_run(api, org)
    client = _client(stack, api, http, [topic])
    client.refresh_margin_s = 8.0
    rec = Recorder(client)
    await rec.wait_for(lambda: rec.state.event_seqs(topic)[-1:] == [2], 30, "seq 2")
    first = next(u for u in rec.updates if isinstance(u, Connected))
    expires_ms = first.welcome.token_expires_at_ms
    assert 0 < expires_ms - time.time() * 1000 <= 21_000
    # Outlive the first token (20 s) plus the gateway's grace (2 s).
    await asyncio.sleep(max(0.0, (expires_ms / 1000) - time.time()) + 4)
    await append_lines(api, run_id, 0, 3, batch=3, pause_s=0)
    await rec.wait_for(lambda: rec.state.event_seqs(topic)[-1:] == [5], 20, "seq 5 after expiry")
    assert client.stats["refreshes"] >= 1
    assert [u.connection_id for u in rec.updates if isinstance(u, Connected)] == [
        first.connection_id
    ]
    assert_exact_sequence(rec.state.event_seqs(topic), 1, 5)
    _assert_no_duplicate_or_gap(rec)
    await rec.stop()
