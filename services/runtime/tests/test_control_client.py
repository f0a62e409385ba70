"""Integration: IntrospectSession client against a real gRPC ControlService double."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from khala_runtime.adapters.control_client import ControlClient, ControlUnavailable

pytestmark = pytest.mark.integration


async def test_introspection_is_cached_for_its_ttl(control: Any, unique: str) -> None:
    double, identity, _, target = control
    identity.login({f"org{unique}": "member"})
    session_id = next(reversed(double.sessions))
    now = [100.0]
    client = ControlClient(target, "runtime-test-service-token", clock=lambda: now[0])
    try:
        before = double.calls
        first = await client.introspect(session_id)
        assert first.active and first.memberships[0].org_id == f"org{unique}"
        now[0] += 0.45
        await client.introspect(session_id)
        assert double.calls == before + 1
        now[0] += 0.1
        await client.introspect(session_id)
        assert double.calls == before + 2
    finally:
        await client.close()


async def test_a_revoked_session_is_seen_within_half_a_second(control: Any, unique: str) -> None:
    double, identity, _, target = control
    identity.login({f"org{unique}": "member"})
    session_id = next(reversed(double.sessions))
    now = [100.0]
    client = ControlClient(target, "runtime-test-service-token", clock=lambda: now[0])
    try:
        assert (await client.introspect(session_id)).active
        double.sessions[session_id].active = False  # control revoked it
        now[0] += 0.5
        assert not (await client.introspect(session_id)).active
    finally:
        await client.close()


async def test_concurrent_misses_share_one_call(control: Any, unique: str) -> None:
    import asyncio

    double, identity, _, target = control
    identity.login({f"org{unique}": "member"})
    session_id = next(reversed(double.sessions))
    client = ControlClient(target, "runtime-test-service-token")
    try:
        before = double.calls
        answers = await asyncio.gather(*(client.introspect(session_id) for _ in range(20)))
        assert all(answer.active for answer in answers)
        assert double.calls == before + 1
    finally:
        await client.close()


async def test_wrong_service_credential_is_refused(control: Any) -> None:
    _, _, _, target = control
    client = ControlClient(target, "not-the-token")
    try:
        with pytest.raises(ControlUnavailable, match="UNAUTHENTICATED"):
            await client.introspect("any")
    finally:
        await client.close()


async def test_unreachable_control_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ControlClient(f"127.0.0.1:{port}", "t")
    try:
        with pytest.raises(ControlUnavailable):
            await client.introspect("any")
    finally:
        await client.close()
