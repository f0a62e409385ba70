"""JSON encodings of runtime's proto messages and run heads for the HTTP API.

Integers stay JSON numbers (unlike proto3 JSON, which quotes uint64) and
payloads are embedded as JSON objects.
"""

from __future__ import annotations

import json
from typing import Any

from khala_runtime.domain.model import RunHead
from openagents.runtime.v1.events_pb2 import Receipt, RuntimeEvent


def run_json(head: RunHead) -> dict[str, Any]:
    """A run snapshot."""
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
