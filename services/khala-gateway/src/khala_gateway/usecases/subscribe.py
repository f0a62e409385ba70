"""Subscription dispatch: Subscribe and Unsubscribe of one socket, and starting one
subscription: validate the cursor, bind the topic, read its head, plan.

Order matters for the delivery guarantee: the subscription is registered for
live frames and its topic bound to the fanout queue *before* the head is read,
so a frame committed after the read always reaches it (live, or by gap fill
and head poll), and a frame committed before is covered by the replay.
"""

from __future__ import annotations

from collections.abc import Sequence

from khala_common.logs import get_logger
from khala_common.telemetry import tracer
from khala_common.topics import Topic, parse_topic
from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Cursor, Stale, StartPlan, TopicHead, plan_start
from khala_gateway.domain.outbox import Lane
from khala_gateway.domain.wire import error_message
from khala_gateway.usecases.ports import Subscriber
from khala_gateway.usecases.subscription import State, Subscription, stale_error
from openagents.sync.v1 import ws_pb2

log = get_logger("khala_gateway.subscribe")
_tracer = tracer("khala_gateway.subscribe")

INTERNAL_RETRY_MS = 1_000
INVALID_TOPIC_MESSAGE = "not a Khala topic: org.<org>.runs|workers or org.<org>.run|worker.<id>"


async def subscribe(conn: Subscriber, request: ws_pb2.Subscribe) -> None:
    """Handle every cursor in order: Subscribed or an Error each."""
    with _tracer.start_as_current_span("khala.subscribe") as span:
        span.set_attribute("khala.connection_id", conn.connection_id)
        span.set_attribute("khala.cursors", len(request.cursors))
        for cursor in request.cursors:
            if conn.closing:
                return
            await start_subscription(conn, request.request_id, cursor, request.snapshot_if_stale)


async def unsubscribe(conn: Subscriber, topics: Sequence[str]) -> None:
    """End the named subscriptions; unknown topics are ignored."""
    for topic in topics:
        sub = conn.subs.get(topic)
        if sub is not None:
            await conn.drop(sub)


async def start_subscription(
    conn: Subscriber, request_id: str, cursor: ws_pb2.TopicCursor, snapshot_if_stale: bool
) -> None:
    """Validate one cursor, bind its topic, read the head and start delivery (or refuse)."""
    topic = cursor.topic
    parsed = parse_topic(topic)
    refusal = _refusal(conn, topic, parsed)
    if refusal is not None or parsed is None:
        code, message = refusal or (codes.INVALID_TOPIC, "not a Khala topic")
        conn.push_control(error_message(code, message, topic=topic, request_id=request_id))
        return
    sub = Subscription(
        conn,
        topic,
        Lane(topic),
        conn.hub.stats_for(topic),
        max_pending=conn.limits.max_pending,
        gate=conn.hub.replays,
    )
    conn.subs[topic] = sub
    conn.hub.attach(sub)
    try:
        await conn.hub.acquire_binding(topic)
        sub.holds_binding = True
    except Exception as exc:
        log.warning("binding failed", topic=topic, error=repr(exc))
        await conn.drop(sub)
        _refuse_internal(conn, topic, request_id)
        return
    wanted = Cursor(epoch=cursor.epoch, after_seq=cursor.after_seq)
    is_doc = parsed.topic_class.is_doc
    budget = conn.limits.replay_budget
    try:
        head, plan, seqs = await conn.hub.log.read_start(
            topic,
            lambda h: plan_start(
                wanted, h, is_doc=is_doc, snapshot_if_stale=snapshot_if_stale, replay_budget=budget
            ),
        )
    except Exception as exc:
        log.warning("reading topic head failed", topic=topic, error=repr(exc))
        await conn.drop(sub)
        _refuse_internal(conn, topic, request_id)
        return
    if sub.state is State.CLOSED:
        return
    await _begin(conn, sub, request_id, cursor, head, plan, seqs)


def _refusal(conn: Subscriber, topic: str, parsed: Topic | None) -> tuple[str, str] | None:
    """Why the cursor's topic cannot be subscribed on this socket, or None."""
    principal = conn.principal
    assert principal is not None
    if parsed is None:
        return (codes.INVALID_TOPIC, INVALID_TOPIC_MESSAGE)
    if not principal.may_read(topic):
        return (codes.FORBIDDEN_TOPIC, "topic not in token scope")
    if topic in conn.subs:
        return (codes.BAD_REQUEST, "topic is already subscribed; unsubscribe it first")
    if len(conn.subs) >= conn.limits.max_subscriptions:
        return (
            codes.TOO_MANY_SUBSCRIPTIONS,
            f"at most {conn.limits.max_subscriptions} subscriptions per connection",
        )
    return None


async def _begin(
    conn: Subscriber,
    sub: Subscription,
    request_id: str,
    cursor: ws_pb2.TopicCursor,
    head: TopicHead,
    plan: StartPlan | Stale,
    seqs: list[int],
) -> None:
    """Send Subscribed and start delivery, or refuse a stale cursor (or a full replay gate)."""
    topic = sub.topic
    retry_after_ms = 0
    if (
        isinstance(plan, StartPlan)
        and cursor.after_seq > 0  # a fresh subscription is never stale
        and (plan.snapshot or plan.after_seq < head.head_seq)
        and not conn.hub.replays.has_room()
    ):
        plan, retry_after_ms = Stale(codes.REPLAY_BUDGET), INTERNAL_RETRY_MS
    if isinstance(plan, Stale):
        await conn.drop(sub)
        error = stale_error(topic, plan.reason, plan.message, head)
        error.request_id = request_id
        error.retry_after_ms = retry_after_ms
        conn.push_control(ws_pb2.ServerMessage(error=error))
        return
    conn.push_control(
        ws_pb2.ServerMessage(
            subscribed=ws_pb2.Subscribed(
                request_id=request_id,
                topic=topic,
                epoch=head.epoch,
                head_seq=head.head_seq,
                oldest_seq=head.oldest_seq,
            )
        )
    )
    sub.begin(head, plan, seqs)


def _refuse_internal(conn: Subscriber, topic: str, request_id: str) -> None:
    conn.push_control(
        error_message(
            codes.INTERNAL,
            "could not start the subscription; retry",
            topic=topic,
            request_id=request_id,
            retry_after_ms=INTERNAL_RETRY_MS,
        )
    )
