"""Trace context and request id carried past the request (issue 20: one trace end
to end): per-event W3C carriers of a batch message, and the log lines written
while a carried context is current."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from khala_common.logs import configure_logging, get_logger
from khala_common.telemetry import (
    TRACE_CONTEXTS_HEADER,
    carrier_of,
    context_of,
    continued,
    current_traceparent,
    exemplar,
    extract_context,
    request_id,
    trace_contexts,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def test_a_carrier_round_trips_trace_and_request_id() -> None:
    carrier = carrier_of(TRACEPARENT, "req-1")
    assert carrier["traceparent"] == TRACEPARENT
    headers = {TRACE_CONTEXTS_HEADER: {"event-1": carrier}}
    with continued(extract_context(trace_contexts(headers)["event-1"])):
        assert current_traceparent() == TRACEPARENT
        assert request_id() == "req-1"
        assert exemplar() == {"trace_id": TRACE_ID}
    assert request_id() is None
    assert exemplar() is None


def test_a_request_id_travels_without_a_trace() -> None:
    carrier = carrier_of(None, "req-2")
    assert "traceparent" not in carrier
    with continued(extract_context(carrier)):
        assert request_id() == "req-2"
        assert current_traceparent() is None


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging binds the captured stdout of this test; put the process's
    logging back afterwards so later tests never write to a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.unbind_contextvars("service")


@pytest.mark.usefixtures("restored_logging")
def test_log_lines_in_a_carried_context_name_trace_and_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test")
    with continued(context_of(TRACEPARENT, "req-3")):
        get_logger("t").warning("projected")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["request_id"] == "req-3"
    assert line["trace_id"] == TRACE_ID
