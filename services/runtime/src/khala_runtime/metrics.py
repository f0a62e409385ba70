"""Prometheus metrics of the runtime service (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPENDS = Counter(
    "khala_runtime_appends_total",
    "Append requests by outcome (appended, replayed, or the error code).",
    ["outcome"],
)
EVENTS_APPENDED = Counter(
    "khala_runtime_events_appended_total", "Events committed to the log (run.created included)."
)
RUNS_CREATED = Counter("khala_runtime_runs_created_total", "Runs created.")
OUTBOX_BACKLOG = Gauge(
    "khala_runtime_outbox_backlog", "Outbox rows not yet confirmed by the broker."
)
OUTBOX_PUBLISHED = Counter(
    "khala_runtime_outbox_published_total", "Outbox rows published and confirmed."
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "khala_runtime_outbox_publish_failures_total", "Outbox batches that failed to publish."
)
OUTBOX_LEADER = Gauge(
    "khala_runtime_outbox_leader", "1 while this process holds the outbox relay lock."
)
PUBLISH_LATENCY = Histogram(
    "khala_runtime_outbox_publish_latency_seconds",
    "Time from an event's commit to the broker's confirm.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WORKERS_REGISTERED = Counter("khala_runtime_workers_registered_total", "Workers registered.")
PROJECTOR_STATUS_FAILURES = Counter(
    "khala_runtime_projector_status_failures_total",
    "GetProjectionStatus calls that failed or timed out (projection read as unknown).",
)
KEY_RACE_RETRIES = Counter(
    "khala_runtime_key_race_retries_total",
    "Appends retried because a concurrent append recorded the same idempotency key first.",
)
GROUP_COMMIT_SIZE = Histogram(
    "khala_runtime_group_commit_appends",
    "Appends committed together in one group transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
