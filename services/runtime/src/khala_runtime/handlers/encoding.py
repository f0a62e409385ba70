"""JSON encodings of runtime's proto messages and run heads for the HTTP API.

Integers stay JSON numbers (unlike proto3 JSON, which quotes uint64) and
payloads are embedded as JSON objects.
"""

from __future__ import annotations

import json
from typing import Any

from khala_runtime.domain.model import RunHead
from khala_runtime.domain.projection import Projection
from khala_runtime.usecases.runs import RunView
from khala_runtime.usecases.workers import WorkerView
from openagents.runtime.v1.events_pb2 import Receipt, RuntimeEvent


def projection_json(projection: Projection) -> dict[str, Any]:
    """A stream's projection status."""
    return {"state": projection.state.value, "lag_events": projection.lag_events}


def run_view_json(view: RunView) -> dict[str, Any]:
    """A run snapshot with its projection status."""
    return {**run_json(view.head), "projection": projection_json(view.projection)}


def worker_json(view: WorkerView) -> dict[str, Any]:
    """A worker snapshot: head, heartbeat freshness and projection status."""
    head = view.head
    return {
        "worker_id": head.worker_id,
        "org_id": head.org_id,
        "stream_id": head.stream_id,
        "status": head.status.value,
        "last_seq": head.last_seq,
        "chain_hash": head.chain_hash,
        "last_heartbeat_at_ms": head.last_heartbeat_at_ms,
        "heartbeat_state": view.heartbeat.state.value,
        "heartbeat_age_ms": view.heartbeat.age_ms,
        "heartbeat_stale_after_ms": view.heartbeat.stale_after_ms,
        "created_at_ms": head.created_at_ms,
        "updated_at_ms": head.updated_at_ms,
        "projection": projection_json(view.projection),
    }


def run_json(head: RunHead) -> dict[str, Any]:
    """A run's head (without projection status)."""
    return {
        "run_id": head.run_id,
        "org_id": head.org_id,
        "stream_id": head.stream_id,
        "title": head.title,
        "status": head.status.value,
        "last_seq": head.last_seq,
        "chain_hash": head.chain_hash,
        "created_at_ms": head.created_at_ms,
        "updated_at_ms": head.updated_at_ms,
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """An append receipt."""
    return {
        "stream_id": receipt.stream_id,
        "first_seq": receipt.first_seq,
        "last_seq": receipt.last_seq,
        "event_ids": list(receipt.event_ids),
        "chain_hash": receipt.chain_hash,
    }


def event_json(event: RuntimeEvent) -> dict[str, Any]:
    """One event of the log."""
    return {
        "event_id": event.event_id,
        "stream_id": event.stream_id,
        "org_id": event.org_id,
        "subject_id": event.subject_id,
        "stream_seq": event.stream_seq,
        "type": event.type,
        "payload": json.loads(event.payload_json),
        "idempotency_key": event.idempotency_key or None,
        "occurred_at_ms": event.occurred_at_ms,
        "chain_hash": event.chain_hash,
    }
