"""The HTTP append route of every kind of stream (`POST .../{id}/events` and the
worker commands): authenticate, decode, append with write access, encode the
receipt (201, or 200 for an idempotent replay)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from aiohttp import web

from khala_runtime.domain.access import Action, require_surface, subject_guard
from khala_runtime.domain.actor import Actor, user_actor
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.rate_limit import OrgRateLimiter
from khala_runtime.handlers.context import (
    append_limit_key,
    path_id,
    principal,
    receipt_response,
)
from khala_runtime.handlers.encoding import receipt_json
from khala_runtime.usecases.write_path import Authorize
from openagents.runtime.v1.events_pb2 import EventInput, Receipt

Handler = Callable[[web.Request], Awaitable[web.Response]]
ReadBody = Callable[[web.Request], Awaitable[dict[str, Any]]]
ParseBody = Callable[[Mapping[str, object]], tuple[list[EventInput], int | None]]


class Appender(Protocol):
    """A service that appends to one kind of stream (RunService, WorkerService)."""

    async def append(
        self,
        subject_id: str,
        inputs: Sequence[EventInput],
        /,
        *,
        expected_seq: int | None,
        authorize: Authorize = ...,
        actor: Actor = ...,
    ) -> tuple[Receipt, bool]: ...


A = TypeVar("A", bound=Appender)


def _limited(authorize: Authorize, limiter: OrgRateLimiter, events: int) -> Authorize:
    """`authorize`, then the org's append rate limit (inside the append's transaction,
    so a refused append writes nothing)."""

    def check(org_id: str) -> None:
        authorize(org_id)
        limiter.take(org_id, events, time.monotonic())

    return check


def append_route(
    service: web.AppKey[A],
    id_name: str,
    read: ReadBody,
    parse: ParseBody,
    *,
    unknown: Callable[[str], DomainError],
    action: Action = Action.WRITE,
) -> Handler:
    """A handler that appends the events `parse` makes of the body (read by `read`) to
    the stream whose subject id is the path segment `id_name`; `unknown(id)` is the
    answer for an id that does not exist, and for one in an org the caller is not in."""

    async def handle(request: web.Request) -> web.Response:
        caller = await principal(request)
        require_surface(caller, action)
        subject_id = path_id(request, id_name)
        inputs, expected_seq = parse(await read(request))
        receipt, replayed = await request.app[service].append(
            subject_id,
            inputs,
            expected_seq=expected_seq,
            authorize=_limited(
                subject_guard(caller, action, lambda: unknown(subject_id)),
                request.app[append_limit_key],
                len(inputs),
            ),
            actor=user_actor(caller),
        )
        return receipt_response(receipt_json(receipt), replayed)

    return handle
