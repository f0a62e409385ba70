"""Admin edges: `GET /internal/v1/khala/fanout/metrics` (bearer admin token) and
gRPC `GatewayAdmin.GetFanoutMetrics` (service credential). Both report the same
per-topic counters of this instance; the HTTP answer also names the instance and
its fanout queue."""

from __future__ import annotations

import hmac

from aiohttp import web
from grpc import aio

from khala_common.http import ApiError
from khala_gateway.usecases.hub import Hub
from openagents.sync.v1 import gateway_admin_pb2, gateway_admin_pb2_grpc

DEFAULT_TOPIC_LIMIT = 20
MAX_TOPIC_LIMIT = 1_000


def fanout_metrics_response(
    hub: Hub, topic_limit: int, *, instance: str = "", fanout_queue: str = ""
) -> gateway_admin_pb2.GetFanoutMetricsResponse:
    """The metrics message both edges serve."""
    connections, topics = hub.fanout_metrics(topic_limit)
    return gateway_admin_pb2.GetFanoutMetricsResponse(
        connections=connections,
        instance=instance,
        fanout_queue=fanout_queue,
        topics=[
            gateway_admin_pb2.TopicMetrics(
                topic=t.topic,
                subscribers=t.subscribers,
                frames_sent=t.frames_sent,
                drops=t.drops,
                slow_consumer_evictions=t.slow_consumer_evictions,
                replays=t.replays,
                replay_seconds_total=t.replay_seconds_total,
                frames_per_second=t.frames_per_second,
                fanout_lag_ms=t.fanout_lag_ms,
            )
            for t in topics
        ],
    )


class AdminHttp:
    """The HTTP admin endpoint."""

    def __init__(self, hub: Hub, admin_token: str, *, instance: str, fanout_queue: str) -> None:
        self._hub = hub
        self._expected = f"Bearer {admin_token}".encode()
        self._instance = instance
        self._fanout_queue = fanout_queue

    async def fanout_metrics(self, request: web.Request) -> web.Response:
        """Per-topic subscribers, frames, drops, evictions and replays (401/403 on bad auth)."""
        presented = request.headers.get("Authorization", "")
        if not presented:
            raise ApiError(401, "unauthorized", "missing Authorization: Bearer <admin token>")
        if not hmac.compare_digest(presented.encode(), self._expected):
            raise ApiError(403, "forbidden", "invalid admin token")
        raw = request.query.get("topic_limit", str(DEFAULT_TOPIC_LIMIT))
        try:
            limit = int(raw)
        except ValueError:
            raise ApiError(400, "bad_request", "topic_limit must be an integer") from None
        if not 1 <= limit <= MAX_TOPIC_LIMIT:
            raise ApiError(400, "bad_request", f"topic_limit must be in 1..{MAX_TOPIC_LIMIT}")
        connections, topics = self._hub.fanout_metrics(limit)
        return web.json_response(
            {
                "instance": self._instance,
                "fanout_queue": self._fanout_queue,
                "connections": connections,
                "topics": [
                    {
                        "topic": t.topic,
                        "subscribers": t.subscribers,
                        "frames_sent": t.frames_sent,
                        "frames_per_second": round(t.frames_per_second, 3),
                        "drops": t.drops,
                        "slow_consumer_evictions": t.slow_consumer_evictions,
                        "replays": t.replays,
                        "replay_seconds_total": round(t.replay_seconds_total, 6),
                        "fanout_lag_ms": round(t.fanout_lag_ms, 3),
                    }
                    for t in topics
                ],
            }
        )


class GatewayAdminServicer(gateway_admin_pb2_grpc.GatewayAdminServicer):
    """gRPC GatewayAdmin."""

    def __init__(self, hub: Hub, *, instance: str = "", fanout_queue: str = "") -> None:
        self._hub = hub
        self._instance = instance
        self._fanout_queue = fanout_queue

    async def GetFanoutMetrics(
        self, request: gateway_admin_pb2.GetFanoutMetricsRequest, context: aio.ServicerContext
    ) -> gateway_admin_pb2.GetFanoutMetricsResponse:
        """Per-topic fanout counters of this instance (topic_limit 0 = 20)."""
        limit = request.topic_limit or DEFAULT_TOPIC_LIMIT
        return fanout_metrics_response(
            self._hub,
            min(limit, MAX_TOPIC_LIMIT),
            instance=self._instance,
            fanout_queue=self._fanout_queue,
        )
