"""RabbitMQ names of DESIGN §9, with an optional prefix so that test runs
sharing one broker never see each other's exchanges and queues."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

CONTENT_TYPE = "application/x-protobuf"
TYPE_HEADER = "x-proto-type"


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names; `prefix` is empty in production."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def runtime_events(self) -> str:
        return self._name("khala.runtime.events")

    @property
    def projector_queue(self) -> str:
        return self._name("khala.projector")

    @property
    def projector_dlx(self) -> str:
        return self._name("khala.projector.dlx")

    @property
    def projector_dlq(self) -> str:
        return self._name("khala.projector.dlq")

    @property
    def fanout(self) -> str:
        return self._name("khala.fanout")

    @property
    def control(self) -> str:
        return self._name("khala.control")


# -- projector partitions (docs/pipeline.md) ---------------------------------
#
# The outbox relay routes each stream's events to one of N partition queues,
# `khala.projector` (partition 0) and `khala.projector.<k>`, bound with routing
# key `partition.<k>`. Partition 0 also takes the per-event keys
# `<org>.run|worker` that older runtimes and `dlq replay` publish. A stream's
# partition is a stable hash of its id, so one replica at a time applies it.

LEGACY_EVENT_KEYS = ("*.run", "*.worker")


def partition_of(stream_id: str, partitions: int) -> int:
    """The projector partition of a stream (stable across processes and versions)."""
    return zlib.crc32(stream_id.encode()) % partitions


def partition_key(partition: int) -> str:
    """The `khala.runtime.events` routing key of a partition's batches."""
    return f"partition.{partition}"


def partition_queue(topology: Topology, partition: int) -> str:
    """The quorum queue of a partition (partition 0 keeps the historic name)."""
    base = topology.projector_queue
    return base if partition == 0 else f"{base}.{partition}"


def fanout_key(topic: str) -> str:
    """The `khala.fanout` routing key of a topic's frames: its org, `org.<org>`.

    Frames travel in per-org batches (one broker message per org per projector
    commit instead of one per frame); a gateway binds the org keys of the topics
    its clients hold and drops frames of topics nobody local holds.
    """
    first, _, rest = topic.partition(".")
    org, _, _ = rest.partition(".")
    return f"{first}.{org}"
