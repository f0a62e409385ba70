"""Fanout messages to `khala.fanout`: committed frames as per-org FanoutBatch messages.

- Each message (transient) is a FanoutBatch of one org's frames, in frame_id
  order: routing key `org.<org>` (topology.fanout_key), message_id
  `<key>/<first frame_id>-<last frame_id>`, each entry the exact
  `frames.frame_bytes` (a serialized openagents.sync.v1.KhalaFrame). One
  message per org per commit instead of one per frame is most of what the
  fanout hop costs (docs/pipeline.md); a batch holds at most MAX_BATCH_BYTES.
- `publish_frames` returns only once the broker confirmed every message, so a
  caller may advance its publish cursor past them (usecases/publisher.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from khala_common.broker import Broker
from khala_common.topology import fanout_key
from khala_projector.domain.frames import StoredFrame
from openagents.sync.v1.frames_pb2 import FanoutBatch

BATCH_TYPE = FanoutBatch.DESCRIPTOR.full_name
MAX_BATCH_BYTES = 512 * 1024

Doorbell = Callable[[Sequence[StoredFrame]], Awaitable[None]]


async def publish_frames(broker: Broker, exchange: str, frames: Sequence[StoredFrame]) -> None:
    """Publish committed frames as per-org FanoutBatch messages; returns once the
    broker confirmed them all (raises otherwise)."""
    # Publishes are issued in order on one channel; awaiting their confirms
    # together keeps one round trip per call instead of one per message.
    await asyncio.gather(
        *(
            broker.publish_raw(
                exchange,
                key,
                FanoutBatch(frames=[f.frame_bytes for f in batch]).SerializeToString(),
                type_name=BATCH_TYPE,
                message_id=f"{key}/{batch[0].frame_id}-{batch[-1].frame_id}",
                # Doorbells: a lost one is read from Postgres, so the broker need
                # not write them to disk.
                persistent=False,
            )
            for key, batch in org_batches(frames)
        )
    )


def org_batches(frames: Sequence[StoredFrame]) -> list[tuple[str, list[StoredFrame]]]:
    """Frames grouped by fanout key (each group in the given order), cut at
    MAX_BATCH_BYTES; groups in order of their first frame."""
    groups: dict[str, list[StoredFrame]] = {}
    sizes: dict[str, int] = {}
    batches: list[tuple[str, list[StoredFrame]]] = []
    for frame in frames:
        key = fanout_key(frame.topic)
        group = groups.get(key)
        if group is None or sizes[key] + len(frame.frame_bytes) > MAX_BATCH_BYTES:
            group = groups[key] = []
            sizes[key] = 0
            batches.append((key, group))
        group.append(frame)
        sizes[key] += len(frame.frame_bytes)
    return batches


def fanout_doorbell(broker: Broker) -> Doorbell:
    """Publish frames to khala.fanout exactly as the live publisher does."""

    async def ring(frames: Sequence[StoredFrame]) -> None:
        if frames:
            await publish_frames(broker, broker.topology.fanout, frames)

    return ring
