"""OpenTelemetry setup and context propagation across HTTP, gRPC and AMQP headers.

Exporters (`KHALA_TRACE_EXPORTER`): `none` (the default) installs no SDK
provider, so spans are non-recording and cost almost nothing while the W3C
context still propagates (an incoming `traceparent` is carried on, and logs
name its trace id); `console` prints spans; `otlp` sends them over OTLP/HTTP
to `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
read by the exporter itself.

The request id of an HTTP request travels with its trace as the W3C baggage
entry `khala.request_id` (set by the HTTP edge, khala_common/http.py): every
log line written in the trace names it (khala_common/logs.py), in whichever
service.

A broker message that carries several events of different traces (a
RuntimeEventBatch) names each event's context in the `x-khala-trace-contexts`
header: a table event id -> W3C carrier ({traceparent, baggage}).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

EXPORTERS = ("none", "console", "otlp")
TRACE_CONTEXTS_HEADER = "x-khala-trace-contexts"
"""AMQP header of a batch message: {event id: W3C carrier} of its events."""
REQUEST_ID_KEY = "khala.request_id"
"""The baggage entry carrying the request id along a trace."""

_TRACEPARENT = "traceparent"


def configure_tracing(service: str, exporter: str | None = None) -> None:
    """Install a tracer provider for `service`. `exporter` (default: the
    `KHALA_TRACE_EXPORTER` environment variable, else `none`) is one of EXPORTERS."""
    chosen = exporter if exporter not in (None, "none") else None
    chosen = chosen or os.environ.get("KHALA_TRACE_EXPORTER", "none").strip().lower()
    if chosen not in EXPORTERS:
        raise ValueError(f"KHALA_TRACE_EXPORTER must be one of {EXPORTERS}, not {chosen!r}")
    if chosen == "none":
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if chosen == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=200)
        )
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    """Flush and stop the installed SDK provider, if any (on service stop)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def inject_headers(carrier: MutableMapping[str, Any] | None = None) -> MutableMapping[str, Any]:
    """Write the current trace context (W3C traceparent) into `carrier`."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, Any] | None) -> context.Context:
    """Read a trace context from message headers or gRPC metadata."""
    clean = {str(k): _text(v) for k, v in (carrier or {}).items() if isinstance(v, str | bytes)}
    return propagate.extract(clean)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None outside any trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(_TRACEPARENT)


def context_of(traceparent: str | None, request_id: str | None = None) -> context.Context | None:
    """The context a stored traceparent names, with the request id as baggage
    (None without a traceparent)."""
    if not traceparent:
        return None
    found = propagate.extract({_TRACEPARENT: traceparent})
    return baggage.set_baggage(REQUEST_ID_KEY, request_id, found) if request_id else found


def with_request_id(request_id: str) -> context.Context:
    """The current context with `request_id` as the trace's request id (baggage)."""
    return baggage.set_baggage(REQUEST_ID_KEY, request_id)


def request_id() -> str | None:
    """The request id the current trace carries (baggage), if any."""
    value = baggage.get_baggage(REQUEST_ID_KEY)
    return str(value) if value else None


def carrier_of(traceparent: str | None, request_id: str | None) -> dict[str, str]:
    """A W3C carrier (traceparent and/or baggage) for one event of a batch message."""
    found = context_of(traceparent) or context.Context()
    if request_id:
        found = baggage.set_baggage(REQUEST_ID_KEY, request_id, found)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=found)
    return carrier


@contextlib.contextmanager
def continued(parent: context.Context | None) -> Iterator[None]:
    """Make `parent` (an extracted trace and its baggage) current for the block, so
    spans started in it are its children and log lines name its request id."""
    if parent is None:
        yield
        return
    token = context.attach(parent)
    try:
        yield
    finally:
        context.detach(token)


def trace_contexts(headers: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The per-event W3C carriers of a batch message (TRACE_CONTEXTS_HEADER)."""
    table = (headers or {}).get(TRACE_CONTEXTS_HEADER)
    if not isinstance(table, Mapping):
        return {}
    return {str(k): v for k, v in table.items() if isinstance(v, Mapping)}


def links_of(traceparents: Iterable[str]) -> list[trace.Link]:
    """Span links to the given traceparents (the other traces a batch carries)."""
    links = []
    for traceparent in traceparents:
        span_context = trace.get_current_span(context_of(traceparent)).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    return links


def trace_id_hex() -> str | None:
    """The current trace id as 32 hex digits (an exemplar label), or None."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def exemplar() -> dict[str, str] | None:
    """The exemplar labels of an observation made now: the current trace id."""
    trace_id = trace_id_hex()
    return {"trace_id": trace_id} if trace_id else None


def tracer(name: str) -> trace.Tracer:
    """A tracer for one module."""
    return trace.get_tracer(name)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
