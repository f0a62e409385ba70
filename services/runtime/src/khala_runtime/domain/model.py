"""Runtime's domain state. What crosses a process boundary (events, receipts,
event inputs) is a proto message; these types are runtime-internal."""

from __future__ import annotations

from dataclasses import dataclass

from khala_runtime.domain.ids import run_stream_id, worker_stream_id
from khala_runtime.domain.run_state import RunStatus
from khala_runtime.domain.worker_state import WorkerStatus


@dataclass(frozen=True)
class CreateRun:
    """A validated run-creation request."""

    org_id: str
    run_id: str
    title: str


@dataclass(frozen=True)
class RunHead:
    """A run's current state: the row appends lock and advance."""

    run_id: str
    org_id: str
    title: str
    status: RunStatus
    last_seq: int
    chain_hash: str
    created_at_ms: int
    updated_at_ms: int

    @property
    def stream_id(self) -> str:
        return run_stream_id(self.run_id)


@dataclass(frozen=True)
class CreateWorker:
    """A validated worker create-or-reattach request."""

    org_id: str
    worker_id: str


@dataclass(frozen=True)
class WorkerHead:
    """A worker's current state: the row appends lock and advance."""

    worker_id: str
    org_id: str
    status: WorkerStatus
    last_seq: int
    chain_hash: str
    last_heartbeat_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int

    @property
    def stream_id(self) -> str:
        return worker_stream_id(self.worker_id)
