"""HTTP edge helpers without a server: error headers and the client address."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from khala_control.domain.errors import ControlError
from khala_control.handlers.client import client_ip
from khala_control.handlers.errors import error_headers, to_response
from khala_control.handlers.state import proxy_hops_key


def test_401_carries_a_bearer_challenge() -> None:
    refused = ControlError("token_expired", 'token has "expired"')
    assert error_headers(refused, credentials_sent=False) == {
        "WWW-Authenticate": 'Bearer realm="khala-control"'
    }
    assert error_headers(refused, credentials_sent=True) == {
        "WWW-Authenticate": 'Bearer realm="khala-control", error="invalid_token", '
        "error_description=\"token has 'expired'\""
    }


def test_429_carries_retry_after() -> None:
    response = to_response(
        ControlError("rate_limited", "slow down", retry_after_s=7), credentials_sent=True
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert response.text is not None and '"retry_after_s": 7' in response.text


def test_other_refusals_carry_no_extra_header() -> None:
    response = to_response(ControlError("forbidden_topic", "no", topic="t"), credentials_sent=True)
    assert response.status == 403
    assert "Retry-After" not in response.headers and "WWW-Authenticate" not in response.headers
    assert to_response(ControlError("no_such_code", "bug"), credentials_sent=False).status == 500


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "9.9.9.9", "127.0.0.1"),  # no trusted proxy: the header is ignored
        (1, "9.9.9.9", "9.9.9.9"),
        (1, "6.6.6.6, 9.9.9.9", "9.9.9.9"),  # the left entry was written by the client
        (2, "6.6.6.6, 9.9.9.9, 10.0.0.2", "9.9.9.9"),
        (2, "9.9.9.9", "127.0.0.1"),  # fewer entries than proxies: fall back to the peer
        (1, None, "127.0.0.1"),
    ],
)
def test_client_ip(hops: int, forwarded: str | None, expected: str) -> None:
    app = web.Application()
    app[proxy_hops_key] = hops
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    request = make_mocked_request("GET", "/", headers=headers, app=app)
    request._transport_peername = ("127.0.0.1", 5555)  # type: ignore[attr-defined]
    assert client_ip(request) == expected
