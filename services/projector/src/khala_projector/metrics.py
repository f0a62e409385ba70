"""Prometheus metrics of the projector (process-wide, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PROJECTED = Counter(
    "khala_projector_events_projected_total",
    "Runtime events folded into a projection (including gap-filled ones).",
    ["projection"],
)
DUPLICATES_SKIPPED = Counter(
    "khala_projector_duplicates_skipped_total",
    "Delivered events at or below their stream's checkpoint, acked and skipped.",
)
GAPS_FILLED = Counter(
    "khala_projector_gaps_filled_total",
    "ReadStream reads that closed a gap (a long gap is read in several chunks).",
)
GAP_EVENTS_FETCHED = Counter(
    "khala_projector_gap_events_fetched_total",
    "Events read from runtime's ReadStream to close gaps.",
)
MESSAGES_REJECTED = Counter(
    "khala_projector_messages_rejected_total",
    "Deliveries rejected for requeue; reason is invalid (cannot parse/place) or processing.",
    ["reason"],
)
DEAD_LETTERED = Counter(
    "khala_projector_dead_lettered_total",
    "Messages rejected on their last allowed delivery, i.e. sent to khala.projector.dlq.",
    ["reason"],
)
FRAMES_COMMITTED = Counter(
    "khala_projector_frames_committed_total", "Frames appended to topic logs."
)
FRAMES_PUBLISHED = Counter(
    "khala_projector_frames_published_total",
    "Frames confirmed by the broker on khala.fanout (republishes included).",
)
PUBLISH_FAILURES = Counter(
    "khala_projector_publish_failures_total",
    "Fanout publish attempts that failed; the frames stay above the publish cursor.",
)
PUBLISH_BACKLOG = Gauge(
    "khala_projector_publish_backlog",
    "1 while committed frames are known to be unpublished (retried from the cursor).",
)
PROJECTION_LAG = Gauge(
    "khala_projector_projection_lag_seconds",
    "Commit time minus runtime's occurred_at of the last event projected.",
)
PROJECTION_LAG_HIST = Histogram(
    "khala_projector_projection_lag_seconds_hist",
    "Distribution of commit time minus runtime's occurred_at per projected batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BATCH_SECONDS = Histogram(
    "khala_projector_batch_seconds",
    "Duration of one projection transaction (plan, gap fill, commit, publish).",
)
