"""RabbitMQ names of DESIGN §9, with an optional prefix so that test runs
sharing one broker never see each other's exchanges and queues."""

from __future__ import annotations

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
