"""Identifiers: run, worker and org ids are topic segments; streams are
`run:<run_id>` or `worker:<worker_id>`."""

from __future__ import annotations

from khala_common.topics import is_valid_segment

__all__ = ["is_valid_segment"]

RUN_STREAM_PREFIX = "run:"
WORKER_STREAM_PREFIX = "worker:"


def run_stream_id(run_id: str) -> str:
    """The stream id of a run."""
    return f"{RUN_STREAM_PREFIX}{run_id}"


def worker_stream_id(worker_id: str) -> str:
    """The stream id of a worker."""
    return f"{WORKER_STREAM_PREFIX}{worker_id}"


def parse_stream_id(stream_id: str) -> tuple[str, str] | None:
    """(`run` | `worker`, subject id) of a stream id, or None if malformed."""
    for kind, prefix in (("run", RUN_STREAM_PREFIX), ("worker", WORKER_STREAM_PREFIX)):
        if stream_id.startswith(prefix):
            subject = stream_id[len(prefix) :]
            return (kind, subject) if is_valid_segment(subject) else None
    return None


def run_routing_key(org_id: str) -> str:
    """Routing key of a run event on `khala.runtime.events`."""
    return f"{org_id}.run"


def worker_routing_key(org_id: str) -> str:
    """Routing key of a worker event on `khala.runtime.events`."""
    return f"{org_id}.worker"
