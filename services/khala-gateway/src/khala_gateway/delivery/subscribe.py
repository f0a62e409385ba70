"""Starting a subscription: validate the cursor, bind the topic, read its head, plan.

Order matters for the delivery guarantee: the subscription is registered for
live frames and its topic bound to the fanout queue *before* the head is read,
so a frame committed after the read always reaches it (live, or by gap fill
and head poll), and a frame committed before is covered by the replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from khala_common.logs import get_logger
from khala_common.topics import parse_topic
from khala_gateway.delivery.subscription import State, Subscription, stale_error
from khala_gateway.domain import codes
from khala_gateway.domain.cursor import Cursor, Stale, StartPlan, plan_start
from khala_gateway.domain.outbox import Lane
from khala_gateway.domain.wire import error_message
from openagents.sync.v1 import ws_pb2

if TYPE_CHECKING:
    from khala_gateway.delivery.connection import Connection

log = get_logger("khala_gateway.subscribe")

INTERNAL_RETRY_MS = 1_000
INVALID_TOPIC_MESSAGE = "not a Khala topic: org.<org>.runs|workers or org.<org>.run|worker.<id>"


async def start_subscription(
    conn: Connection, request_id: str, cursor: ws_pb2.TopicCursor, snapshot_if_stale: bool
) -> None:
    """Validate one cursor, bind its topic, read the head and start delivery (or refuse)."""
    topic = cursor.topic
    parsed = parse_topic(topic)
    principal = conn.principal
    assert principal is not None
    refusal: tuple[str, str] | None = None
    if parsed is None:
        refusal = (codes.INVALID_TOPIC, INVALID_TOPIC_MESSAGE)
    elif not principal.may_read(topic):
        refusal = (codes.FORBIDDEN_TOPIC, "topic not in token scope")
    elif topic in conn.subs:
        refusal = (codes.BAD_REQUEST, "topic is already subscribed; unsubscribe it first")
    elif len(conn.subs) >= conn.limits.max_subscriptions:
        refusal = (
            codes.TOO_MANY_SUBSCRIPTIONS,
            f"at most {conn.limits.max_subscriptions} subscriptions per connection",
        )
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

def _refuse_internal(conn: Connection, topic: str, request_id: str) -> None:
    conn.push_control(
        error_message(
            codes.INTERNAL,
            "could not start the subscription; retry",
            topic=topic,
            request_id=request_id,
            retry_after_ms=INTERNAL_RETRY_MS,
        )
    )
