"""Projector configuration, parsed once from the environment in `__main__`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from khala_common.settings import CommonSettings, Env, SettingsError

SCHEMA = "khala"


def _period(env: Env, name: str, default: float) -> float:
    """A period in seconds: 0 (off) or at least 0.05."""
    value = env.number(name, default, minimum=0)
    if 0 < value < 0.05:
        raise SettingsError(name, f"must be 0 (off) or >= 0.05, got {value}")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings(CommonSettings):
    """Every field maps to one environment variable (named in its comment).

    The common fields (CommonSettings): the projector owns and writes schema `khala`,
    and the service token is required on ProjectorAdmin calls and presented to
    runtime's RuntimeService.
    """

    # KHALA_LOG_LEVEL: debug | info | warning | error.
    log_level: str = "info"
    # KHALA_PROJECTOR_HTTP_PORT: /healthz, /readyz, /metrics (0 = ephemeral).
    http_port: int = 8083
    # KHALA_PROJECTOR_GRPC_PORT: gRPC ProjectorAdmin + health + reflection (0 = ephemeral).
    grpc_port: int = 9083
    # KHALA_RUNTIME_GRPC_TARGET: runtime's gRPC address, used to fill gaps (ReadStream).
    runtime_grpc_target: str = "127.0.0.1:9082"
    # KHALA_RUNTIME_GRPC_TIMEOUT_S: deadline of one ReadStream call.
    runtime_grpc_timeout_s: float = 10.0
    # KHALA_PROJECTOR_PREFETCH: unacknowledged messages the broker may push (>= 1).
    prefetch: int = 100
    # KHALA_PROJECTOR_BATCH_MAX: most buffered messages handled per round; consecutive
    # events of one stream in a round share one transaction.
    batch_max: int = 100
    # KHALA_PROJECTOR_DELIVERY_LIMIT: x-delivery-limit of khala.projector; a message
    # rejected more often than this is dead-lettered to khala.projector.dlq.
    delivery_limit: int = 5
    # KHALA_PROJECTOR_RETRY_DELAY_MS: base back-off before requeueing a message whose
    # processing failed (doubles per delivery, capped at 5 s), so a short Postgres or
    # runtime outage does not burn through the delivery limit.
    retry_delay_ms: int = 200
    # KHALA_PROJECTOR_REPUBLISH_INTERVAL_S: how often a failed fanout publish is retried
    # from the publish cursor.
    republish_interval_s: float = 2.0
    # KHALA_PROJECTOR_METRICS_INTERVAL_S: how often queue depths (projection lag in
    # events, DLQ depth) and rebuild progress are sampled into /metrics.
    metrics_interval_s: float = 15.0
    # KHALA_PROJECTOR_RETENTION_INTERVAL_S: period of the retention and compaction
    # pass (0 = never: topic logs grow without bound).
    retention_interval_s: float = 60.0
    # KHALA_PROJECTOR_EVENT_RETAIN_FRAMES: event topics keep at most their last N
    # frames (0 = no count limit).
    event_retain_frames: int = 10_000
    # KHALA_PROJECTOR_EVENT_RETAIN_AGE_S: event topics drop frames committed more than
    # T seconds ago (0 = no age limit). The head frame of a topic is always kept.
    event_retain_age_s: float = 7 * 24 * 3600.0
    # KHALA_PROJECTOR_DOC_TAIL_FRAMES: doc topics keep the latest frame of every key
    # plus their last N frames; older superseded frames are compacted away.
    doc_tail_frames: int = 1_000
    # KHALA_PROJECTOR_DRIFT_INTERVAL_S: period of the drift detector (0 = off).
    drift_interval_s: float = 300.0
    # KHALA_PROJECTOR_DRIFT_SAMPLE: documents re-derived from runtime's log per period
    # (streams are visited in a rotating window, so every stream is checked in turn).
    drift_sample: int = 20
    # KHALA_PROJECTOR_DRIFT_REPAIR: rewrite a drifted document from runtime's log
    # (otherwise drift is only counted and logged).
    drift_repair: bool = False
    # KHALA_PROJECTOR_REBUILD_CHUNK: events read from runtime and staged per
    # transaction by `khala-projector rebuild`.
    rebuild_chunk: int = 500
    # KHALA_PROJECTOR_REBALANCE_INTERVAL_S: how often a replica counts the replicas
    # and takes or hands over partitions (usecases/partitions.py).
    rebalance_interval_s: float = 1.0
    # KHALA_PROJECTOR_TEST_CRASH_AFTER_COMMIT: FAULT INJECTION FOR TESTS ONLY.
    # n > 0 makes `serve` SIGKILL itself right after its nth projection commit,
    # before publishing it. 0 (default) = off. Never set it in a deployment.
    test_crash_after_commit: int = 0
    # KHALA_PROJECTOR_TEST_CRASH_IN_COMMIT: FAULT INJECTION FOR TESTS ONLY.
    # n > 0 makes `serve` SIGKILL itself inside its nth projection transaction,
    # after every write and before COMMIT. 0 (default) = off. Never set it in a deployment.
    test_crash_in_commit: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every variable; raises SettingsError naming a bad one."""
        env = Env(environ)
        common = CommonSettings.read(environ, "projector")
        return cls(
            **common.common_fields(),
            log_level=env.log_level(),
            http_port=env.port("KHALA_PROJECTOR_HTTP_PORT", 8083),
            grpc_port=env.port("KHALA_PROJECTOR_GRPC_PORT", 9083),
            runtime_grpc_target=env.string("KHALA_RUNTIME_GRPC_TARGET", "127.0.0.1:9082"),
            runtime_grpc_timeout_s=env.number("KHALA_RUNTIME_GRPC_TIMEOUT_S", 10.0, minimum=0.1),
            prefetch=env.integer("KHALA_PROJECTOR_PREFETCH", 100, minimum=1),
            batch_max=env.integer("KHALA_PROJECTOR_BATCH_MAX", 100, minimum=1),
            delivery_limit=env.integer("KHALA_PROJECTOR_DELIVERY_LIMIT", 5, minimum=1),
            retry_delay_ms=env.integer("KHALA_PROJECTOR_RETRY_DELAY_MS", 200, minimum=0),
            republish_interval_s=env.number(
                "KHALA_PROJECTOR_REPUBLISH_INTERVAL_S", 2.0, minimum=0.05
            ),
            metrics_interval_s=env.number("KHALA_PROJECTOR_METRICS_INTERVAL_S", 15.0, minimum=0.1),
            retention_interval_s=_period(env, "KHALA_PROJECTOR_RETENTION_INTERVAL_S", 60.0),
            event_retain_frames=env.integer(
                "KHALA_PROJECTOR_EVENT_RETAIN_FRAMES", 10_000, minimum=0
            ),
            event_retain_age_s=env.number(
                "KHALA_PROJECTOR_EVENT_RETAIN_AGE_S", 7 * 24 * 3600.0, minimum=0
            ),
            doc_tail_frames=env.integer("KHALA_PROJECTOR_DOC_TAIL_FRAMES", 1_000, minimum=0),
            drift_interval_s=_period(env, "KHALA_PROJECTOR_DRIFT_INTERVAL_S", 300.0),
            drift_sample=env.integer("KHALA_PROJECTOR_DRIFT_SAMPLE", 20, minimum=1),
            drift_repair=env.boolean("KHALA_PROJECTOR_DRIFT_REPAIR", False),
            rebuild_chunk=env.integer("KHALA_PROJECTOR_REBUILD_CHUNK", 500, minimum=1),
            rebalance_interval_s=env.number(
                "KHALA_PROJECTOR_REBALANCE_INTERVAL_S", 1.0, minimum=0.05
            ),
            test_crash_after_commit=env.integer(
                "KHALA_PROJECTOR_TEST_CRASH_AFTER_COMMIT", 0, minimum=0
            ),
            test_crash_in_commit=env.integer("KHALA_PROJECTOR_TEST_CRASH_IN_COMMIT", 0, minimum=0),
        )
