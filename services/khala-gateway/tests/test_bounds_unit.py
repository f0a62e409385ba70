"""Unit: control replies count against the send buffer; inbound field limits."""

from __future__ import annotations

from khala_gateway.domain.limits import (
    MAX_TOPIC_BYTES,
    hard_cap,
    hello_problem,
    nonce_problem,
    request_problem,
)
from khala_gateway.domain.outbox import Outbox
from khala_gateway.domain.wire import error_message


def test_control_messages_count_against_the_byte_bound_until_taken() -> None:
    now = [0.0]
    outbox = Outbox(10_000, 4096, clock=lambda: now[0])
    reply = error_message("invalid_topic", "not a Khala topic", topic="x" * 200, request_id="r")
    while outbox.room() > 0:
        outbox.push_control(reply)
    assert outbox.bytes >= 4096 and outbox.saturated_since == 0.0
    now[0] = 3.0
    assert outbox.saturated_for() == 3.0  # a slow consumer after the grace
    taken = outbox.take_round(256, 64 * 1024)
    assert taken and not any(isinstance(item, list) for item in taken) and outbox.bytes == 0
    assert outbox.control_bytes == 0 and outbox.room() > 0


def test_hard_cap_is_the_bound_plus_an_eighth_at_least_64_kib() -> None:
    assert hard_cap(8 * 1024 * 1024) == 9 * 1024 * 1024
    assert hard_cap(64 * 1024) == 128 * 1024


def test_field_limits() -> None:
    assert request_problem("r" * 128, ["org.a.runs"], 1) is None
    assert request_problem("r" * 129, [], 1) == (
        "bad_request",
        "request_id is longer than 128 characters",
    )
    assert request_problem("", ["org.a.runs"] * 3, 2) is not None
    assert request_problem("", ["org.a.runs"] * 3, 2)[0] == "too_many_subscriptions"  # type: ignore[index]
    assert request_problem("", ["x" * (MAX_TOPIC_BYTES + 1)], 2)[0] == "invalid_topic"  # type: ignore[index]
    assert request_problem("", ["é" * 128], 2) is not None  # bytes, not characters
    assert nonce_problem("n" * 128) is None and nonce_problem("n" * 129) is not None
    assert hello_problem("n" * 64, "v" * 64) is None
    assert "client_name" in (hello_problem("n" * 65, "1") or "")
    assert "client_version" in (hello_problem("n", "v" * 65) or "")
