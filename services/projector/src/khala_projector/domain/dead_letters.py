"""What a dead-lettered projector message is and why it died, read from the
headers RabbitMQ adds when dead-lettering (pure; the queue itself is
adapters/dlq.py's)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from khala_common.topology import TYPE_HEADER
from khala_projector.domain.events import InvalidEvent, decode_event

# Headers RabbitMQ adds when dead-lettering or redelivering; not carried over.
_DEAD_LETTER_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ, described for an operator."""

    message_id: str
    routing_key: str
    reason: str
    deaths: int
    queue: str
    type: str
    bytes: int
    stream_id: str = ""
    stream_seq: int = 0
    event_type: str = ""
    event_id: str = ""
    invalid: str = ""

    def to_json(self) -> str:
        """One JSON object (a line of `dlq list`)."""
        return json.dumps(asdict(self), sort_keys=True)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def original_routing_key(headers: Mapping[str, Any], fallback: str) -> str:
    """The routing key the message had before it was dead-lettered."""
    keys = _first_death(headers).get("routing-keys")
    if isinstance(keys, list) and keys:
        return _text(keys[0])
    return fallback


def describe(
    body: bytes, headers: Mapping[str, Any], routing_key: str, message_id: str | None
) -> DeadLetter:
    """What a dead-lettered message is and why it died."""
    death = _first_death(headers)
    letter = DeadLetter(
        message_id=message_id or "",
        routing_key=original_routing_key(headers, routing_key),
        reason=_text(death.get("reason") or headers.get("x-first-death-reason")),
        deaths=int(death.get("count") or 0),
        queue=_text(death.get("queue") or headers.get("x-first-death-queue")),
        type=_text(headers.get(TYPE_HEADER)),
        bytes=len(body),
    )
    try:
        event, stream = decode_event(body)
    except InvalidEvent as exc:
        return DeadLetter(**{**asdict(letter), "invalid": str(exc)})
    return DeadLetter(
        **{
            **asdict(letter),
            "stream_id": stream.stream_id,
            "stream_seq": event.stream_seq,
            "event_type": event.type,
            "event_id": event.event_id,
        }
    )


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message's headers without the dead-lettering ones."""
    return {k: v for k, v in headers.items() if k not in _DEAD_LETTER_HEADERS}
