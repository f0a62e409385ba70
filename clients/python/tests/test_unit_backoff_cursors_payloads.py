"""Backoff, cursor stores, payload decoding and LocalState, without a network."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from khala_client import (
    Backoff,
    Cursor,
    FileCursorStore,
    FrameApplied,
    LocalState,
    MemoryCursorStore,
    SnapshotAborted,
    SnapshotCompleted,
    SnapshotStarted,
    SqliteCursorStore,
    TopicReset,
    UnknownSchema,
    decode_payload,
    event_payload,
)
from khala_client.cursors import open_store
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2


def test_backoff_is_full_jitter_capped_and_resets_after_a_healthy_connection() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, healthy_after_s=30.0, rng=random.Random(7))
    ceilings = []
    for _ in range(10):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings[:4] == [0.5, 1.0, 2.0, 4.0] and ceilings[-1] == 30.0
    backoff.connection_lasted(5.0)
    assert backoff.ceiling() == 30.0
    backoff.connection_lasted(31.0)
    assert backoff.ceiling() == 0.5


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(rng=random.Random(1))
    assert backoff.next_delay(retry_after_s=2.5) >= 2.5


def test_full_jitter_spreads_delays() -> None:
    delays = [Backoff(rng=random.Random(seed), attempt=5).next_delay() for seed in range(200)]
    assert min(delays) < 2.0 and max(delays) > 14.0  # uniform over [0, 16]


@pytest.mark.parametrize("name", ["cursors.json", "cursors.sqlite"])
def test_persistent_stores_survive_a_reopen(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sub" / name
    store = open_store(str(path))
    store.save("org.a.runs", Cursor("1", 5))
    store.save("org.a.run.r", Cursor("2", 9))
    store.save("org.a.runs", Cursor("1", 6))
    store.delete("org.a.run.r")
    again = open_store(str(path))
    assert again.load() == {"org.a.runs": Cursor("1", 6)}


def test_file_store_writes_atomically_readable_json(tmp_path: Path) -> None:
    store = FileCursorStore(tmp_path / "c.json")
    store.save("t", Cursor("e", 3))
    assert json.loads((tmp_path / "c.json").read_text())["cursors"] == {
        "t": {"after_seq": 3, "epoch": "e"}
    }
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temp file left behind


def test_file_store_rejects_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{nope")
    with pytest.raises(ValueError, match="unreadable"):
        FileCursorStore(tmp_path / "c.json")


def test_sqlite_store_can_join_the_application_transaction(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "app.db")
    db.execute("CREATE TABLE lines (seq INTEGER)")
    db.commit()
    store = SqliteCursorStore(connection=db, autocommit=False)
    db.execute("INSERT INTO lines VALUES (1)")
    store.save("t", Cursor("1", 1))
    db.rollback()  # state and cursor roll back together
    assert store.load() == {}
    db.execute("INSERT INTO lines VALUES (1)")
    store.save("t", Cursor("1", 1))
    db.commit()
    assert SqliteCursorStore(tmp_path / "app.db").load() == {"t": Cursor("1", 1)}


def test_memory_store() -> None:
    store = MemoryCursorStore({"a": Cursor("1", 2)})
    store.save("b", Cursor("1", 1))
    store.delete("a")
    assert store.load() == {"b": Cursor("1", 1)}


def _frame(
    topic: str, seq: int, kind: int, key: str, payload: bytes, schema: str
) -> frames_pb2.KhalaFrame:
    return frames_pb2.KhalaFrame(
        topic=topic,
        seq=seq,
        kind=kind,
        key=key,
        payload_bytes=payload,
        schema_version=schema,
        epoch="1",
    )


def test_payloads_are_decoded_by_schema_version() -> None:
    run = summaries_pb2.RunSummary(run_id="r1", status=summaries_pb2.RUN_STATUS_RUNNING)
    frame = _frame(
        "org.a.runs",
        1,
        frames_pb2.FRAME_KIND_DOC_UPSERT,
        "r1",
        run.SerializeToString(),
        "openagents.codex.v1.RunSummary@1",
    )
    assert decode_payload(frame) == run
    worker = summaries_pb2.CodexWorkerSummary(worker_id="w")
    frame = _frame(
        "org.a.workers",
        1,
        frames_pb2.FRAME_KIND_DOC_UPSERT,
        "w",
        worker.SerializeToString(),
        "openagents.codex.v1.CodexWorkerSummary@1",
    )
    assert decode_payload(frame) == worker
    event = events_pb2.RuntimeEvent(type="run.output", payload_json=b'{"text":"hi"}')
    frame = _frame(
        "org.a.run.r",
        1,
        frames_pb2.FRAME_KIND_EVENT,
        "e",
        event.SerializeToString(),
        "openagents.runtime.v1.RuntimeEvent@1",
    )
    decoded = decode_payload(frame)
    assert isinstance(decoded, events_pb2.RuntimeEvent) and event_payload(decoded) == {"text": "hi"}
    delete = _frame("org.a.runs", 2, frames_pb2.FRAME_KIND_DOC_DELETE, "r1", b"junk", "anything@9")
    assert decode_payload(delete) is None


def test_unknown_schema_version_is_refused_not_skipped() -> None:
    frame = _frame(
        "org.a.runs",
        1,
        frames_pb2.FRAME_KIND_DOC_UPSERT,
        "r",
        b"",
        "openagents.codex.v1.RunSummary@2",
    )
    with pytest.raises(UnknownSchema, match="RunSummary@2"):
        decode_payload(frame)


def _applied(
    topic: str,
    seq: int,
    key: str,
    payload,
    *,
    snapshot: bool = False,
    kind=frames_pb2.FRAME_KIND_DOC_UPSERT,
):
    frame = frames_pb2.KhalaFrame(topic=topic, seq=seq, kind=kind, key=key, epoch="1")
    return FrameApplied(topic, frame, payload, snapshot)


def test_local_state_swaps_snapshots_and_applies_deletes() -> None:
    state = LocalState()
    topic = "org.a.runs"
    old = summaries_pb2.RunSummary(run_id="gone")
    state.apply(_applied(topic, 1, "gone", old))
    state.apply(SnapshotStarted(topic, "1", 5))
    state.apply(_applied(topic, 3, "r1", summaries_pb2.RunSummary(run_id="r1"), snapshot=True))
    assert set(state.docs[topic]) == {"gone"}  # not swapped before the end
    state.apply(SnapshotCompleted(topic, 5))
    assert set(state.docs[topic]) == {"r1"}
    state.apply(_applied(topic, 6, "r1", None, kind=frames_pb2.FRAME_KIND_DOC_DELETE))
    assert state.docs[topic] == {}
    state.apply(SnapshotStarted(topic, "1", 7))
    state.apply(_applied(topic, 7, "x", summaries_pb2.RunSummary(run_id="x"), snapshot=True))
    state.apply(SnapshotAborted(topic))
    assert state.docs[topic] == {}
    state.apply(TopicReset(topic, "epoch_changed"))
    assert topic not in state.docs
