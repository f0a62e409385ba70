"""Unit tests: the bounded send queue, round-robin rounds and batching."""

from khala_gateway.domain.outbox import Lane, Outbox
from khala_gateway.domain.wire import WireFrame
from openagents.sync.v1 import ws_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(seq: int, size: int = 10) -> WireFrame:
    return WireFrame(seq, "1", b"x" * size)


def marker(topic: str) -> ws_pb2.ServerMessage:
    return ws_pb2.ServerMessage(watermark=ws_pb2.Watermark(topic=topic, seq=1, live=True))


def seqs(items: list) -> list:
    return [[f.seq for f in i] if isinstance(i, list) else i.WhichOneof("body") for i in items]


def test_control_first_then_one_batch_across_topics_round_robin() -> None:
    box = Outbox(100, 10_000)
    a, b = Lane("a"), Lane("b")
    for s in (1, 2, 3):
        box.push(a, frame(s))
    box.push(b, frame(11))
    box.push_control(ws_pb2.ServerMessage(pong=ws_pb2.Pong(nonce="n")))
    out = box.take_round(quantum=2, max_message_bytes=10_000)
    assert seqs(out) == ["pong", [1, 2, 11]]
    assert seqs(box.take_round(2, 10_000)) == [[3]]
    assert not box
    assert box.frames == 0 and box.bytes == 0


def test_markers_split_batches_and_keep_lane_order() -> None:
    box = Outbox(100, 10_000)
    a = Lane("a")
    box.push(a, frame(1))
    box.push(a, marker("a"))
    box.push(a, frame(2))
    assert seqs(box.take_round(10, 10_000)) == [[1], "watermark", [2]]


def test_batches_respect_the_message_size() -> None:
    box = Outbox(100, 100_000)
    a = Lane("a")
    for s in range(1, 6):
        box.push(a, frame(s, 400))
    assert seqs(box.take_round(10, 1000)) == [[1, 2], [3, 4], [5]]
    box.push(a, frame(6, 5000))  # larger than a message: goes alone
    assert seqs(box.take_round(10, 1000)) == [[6]]


def test_room_and_saturation_time() -> None:
    clock = Clock()
    box = Outbox(3, 1_000, clock=clock)
    a = Lane("a")
    assert box.room() == 3
    box.push(a, frame(1))
    box.push(a, frame(2))
    assert box.room() == 1 and box.saturated_for() == 0.0
    box.push(a, frame(3))
    assert box.room() == 0
    clock.now += 4
    assert box.saturated_for() == 4.0
    box.take_round(1, 10_000)
    assert box.room() == 1 and box.saturated_for() == 0.0
    big = Outbox(100, 50, clock=clock)
    big.push(a, frame(9, 60))
    assert big.room() == 0  # over the byte bound


def test_discarded_lane_releases_its_budget_and_ignores_pushes() -> None:
    box = Outbox(10, 10_000)
    a, b = Lane("a"), Lane("b")
    box.push(a, frame(1))
    box.push(b, frame(2))
    box.discard(a)
    box.push(a, frame(3))
    assert box.frames == 1
    assert seqs(box.take_round(10, 10_000)) == [[2]]


def _event_frame(seq: int, payload_bytes: int) -> WireFrame:
    from openagents.sync.v1 import frames_pb2

    data = frames_pb2.KhalaFrame(
        topic="org.acme.run.r1",
        seq=seq,
        kind=frames_pb2.FRAME_KIND_EVENT,
        key=f"evt-{seq}",
        payload_bytes=bytes(i % 256 for i in range(payload_bytes)),
        schema_version="openagents.runtime.v1.RuntimeEvent@1",
        epoch="1733390000000123456",
        published_at_ms=1733390000000,
    ).SerializeToString()
    return WireFrame.decode(data)


def test_no_message_exceeds_max_frame_bytes_in_either_codec() -> None:
    """Regression: batches were sized by proto bytes, so on khala.v1+json (payload in
    base64) a batch reached ~4/3 of the max_frame_bytes the Welcome advertises."""
    from khala_gateway.domain.wire import JsonCodec, ProtoCodec

    limit = 1024 * 1024
    for codec in (JsonCodec(), ProtoCodec()):
        box = Outbox(1000, 100 * limit)
        lane = Lane("org.acme.run.r1")
        frames = [_event_frame(s, 150_000 + 7 * s) for s in range(1, 31)]
        for f in frames:
            box.push(lane, f)
        sent: list[int] = []
        sizes: list[int] = []
        while box:
            for item in box.take_round(1000, limit, codec.frame_cost, codec.batch_overhead):
                assert isinstance(item, list)
                sizes.append(
                    len(
                        codec.encode_frames(item).encode()
                        if not codec.binary
                        else codec.encode_frames(item)
                    )
                )
                sent.extend(f.seq for f in item)
        assert sent == list(range(1, 31))  # nothing lost or reordered by the split
        assert max(sizes) <= limit, (type(codec).__name__, max(sizes))
        assert len(sizes) > 1


def test_json_cost_is_exact_for_a_batch() -> None:
    from khala_gateway.domain.wire import JsonCodec

    codec = JsonCodec()
    frames = [_event_frame(s, 1000 + s) for s in range(1, 5)]
    encoded = codec.encode_frames(frames).encode()
    assert len(encoded) == codec.batch_overhead + sum(codec.frame_cost(f) for f in frames) - 1
