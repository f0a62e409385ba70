"""Prometheus metrics of the gateway process (served at /metrics) and per-topic
counters of one gateway instance (served by the admin endpoints)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from khala_gateway.domain.wire import WIRE_STATS

CONNECTIONS = Gauge("khala_gateway_connections", "Open WebSocket connections")
CONNECTIONS_OPENED = Counter(
    "khala_gateway_connections_opened_total", "Accepted WebSocket upgrades"
)
SUBSCRIPTIONS = Gauge("khala_gateway_subscriptions", "Active topic subscriptions")
BOUND_TOPICS = Gauge("khala_gateway_bound_topics", "Topics bound to this instance's fanout queue")


class HotCounters(Collector):
    """Per-frame counters kept as plain integers (no lock per increment on the hot
    path) and exported as Prometheus counters at scrape time."""

    HELP = {
        "frames_sent": "Frames written to sockets",
        "messages_sent": "WebSocket messages written",
        "bytes_sent": "WebSocket payload bytes written",
        "duplicate_drops": "Frames dropped because the socket already had them",
        "fanout_messages": "khala.fanout messages consumed",
    }

    def __init__(self) -> None:
        self.frames_sent = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.duplicate_drops = 0
        self.fanout_messages = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Prometheus scrape."""
        for name, help_text in self.HELP.items():
            yield CounterMetricFamily(f"khala_gateway_{name}", help_text, value=getattr(self, name))
        yield CounterMetricFamily(
            "khala_gateway_frame_parses",
            "KhalaFrame parses (one per fanout message, plus rows read for JSON sockets)",
            value=WIRE_STATS.parses,
        )
        yield CounterMetricFamily(
            "khala_gateway_frame_json_encodes",
            "Frames converted to canonical JSON (once per frame, shared by every JSON socket)",
            value=WIRE_STATS.json_encodes,
        )


HOT = HotCounters()
REGISTRY.register(HOT)
GAP_FILLS = Counter("khala_gateway_gap_fills_total", "Gaps filled from Postgres on live sockets")
GAP_FILL_FRAMES = Counter("khala_gateway_gap_fill_frames_total", "Frames read to fill gaps")
REPLAYS = Counter("khala_gateway_replays_total", "Subscriptions that started with a replay")
REPLAY_FRAMES = Counter(
    "khala_gateway_replay_frames_total", "Frames read from Postgres for replays and snapshots"
)
REPLAY_SECONDS = Histogram(
    "khala_gateway_replay_seconds",
    "Time from Subscribed to the live Watermark",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FANOUT_LAG = Histogram(
    "khala_gateway_fanout_lag_seconds",
    "Receipt time of a khala.fanout message minus the frame's published_at_ms",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HEAD_POLL_CATCHES = Counter(
    "khala_gateway_head_poll_catches_total",
    "Subscriptions the head poll found behind the topic head (lost broker messages)",
)
FANOUT_UNDECODABLE = Counter(
    "khala_gateway_fanout_undecodable_total", "khala.fanout messages that were not a KhalaFrame"
)
SLOW_CONSUMER_EVICTIONS = Counter(
    "khala_gateway_slow_consumer_evictions_total", "Sockets closed with 4008"
)
REVOCATIONS = Counter("khala_gateway_revocations_total", "khala.control messages consumed")
CLOSES = Counter("khala_gateway_closes_total", "Server-initiated closes by code", ["code"])
ERRORS_SENT = Counter("khala_gateway_errors_sent_total", "Error messages sent by code", ["code"])


@dataclass
class TopicStats:
    """Counters of one topic on this instance, kept while it has local subscribers."""

    topic: str
    subscribers: int = 0
    frames_sent: int = 0
    drops: int = 0
    slow_consumer_evictions: int = 0
    replays: int = 0
    replay_seconds_total: float = 0.0
    fanout_lag_ms: float = 0.0  # of the last fanout message of the topic
    frames_per_second: float = 0.0  # frames sent to sockets over the last sample window
    _sampled_frames: int = 0
    _sampled_at: float | None = None

    def sample(self, now: float) -> None:
        """Update `frames_per_second` from the frames sent since the previous sample."""
        if self._sampled_at is not None and now > self._sampled_at:
            self.frames_per_second = (self.frames_sent - self._sampled_frames) / (
                now - self._sampled_at
            )
        self._sampled_frames = self.frames_sent
        self._sampled_at = now
