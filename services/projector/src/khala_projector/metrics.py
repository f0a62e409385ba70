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
PROJECTION_LAG_EVENTS = Gauge(
    "khala_projector_projection_lag_events",
    "Runtime events waiting in khala.projector (ready messages; sampled).",
)
WRITE_FAILURES = Counter(
    "khala_projector_write_failures_total",
    "Projection transactions that failed; reason is checkpoint_moved (another writer "
    "moved the checkpoint, retried at once) or error (requeued with back-off).",
    ["reason"],
)
REPLAY_SECONDS = Histogram(
    "khala_projector_replay_seconds",
    "Duration of one ReadStream replay from runtime; purpose is gap, drift or rebuild.",
    ["purpose"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REBUILD_ACTIVE = Gauge(
    "khala_projector_rebuild_active",
    "1 while a rebuild of the projection is unfinished (staging or switched; sampled).",
    ["projection"],
)
REBUILD_PROGRESS = Gauge(
    "khala_projector_rebuild_progress_ratio",
    "Share of an unfinished rebuild's streams staged up to their checkpoint (sampled).",
    ["projection"],
)
REBUILD_SECONDS = Gauge(
    "khala_projector_rebuild_duration_seconds",
    "Running time of the projection's latest finished rebuild (sampled from Postgres).",
    ["projection"],
)
DRIFT_CHECKS = Counter(
    "khala_projector_drift_checks_total",
    "Documents re-derived from runtime's log and compared by hash.",
    ["projection"],
)
DRIFT_INCIDENTS = Counter(
    "khala_projector_drift_incidents_total",
    "Documents whose stored hash differed from the one re-derived from runtime's log.",
    ["projection"],
)
DRIFT_REPAIRS = Counter(
    "khala_projector_drift_repairs_total",
    "Drifted documents rewritten from runtime's log (targeted rebuild).",
    ["projection"],
)
DRIFT_ERRORS = Counter(
    "khala_projector_drift_errors_total",
    "Drift checks that could not complete (runtime unreachable, log shorter than checkpoint).",
)
DLQ_DEPTH = Gauge("khala_projector_dlq_depth", "Messages waiting in khala.projector.dlq (sampled).")
FRAMES_COMPACTED = Counter(
    "khala_projector_frames_compacted_total",
    "Frames deleted by retention; topic_class is event, doc or old_epoch.",
    ["topic_class"],
)
RETENTION_SECONDS = Histogram(
    "khala_projector_retention_pass_seconds", "Duration of one retention and compaction pass."
)
PARTITIONS_OWNED = Gauge(
    "khala_projector_partitions_owned",
    "Partition queues this replica consumes now (docs/pipeline.md).",
)
