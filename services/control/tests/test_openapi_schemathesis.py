"""Contract: the live control answers every operation of its OpenAPI document
as the document says (schemathesis): never a 5xx, only documented statuses
(and, through the schemas, only the documented error codes per status), the
documented content types and headers, and bodies matching the schemas.

Control (real Postgres and RabbitMQ, dev IdP on) runs in its own thread and
event loop, because schemathesis calls it synchronously. Every case runs with
a fresh session of the same user, so a case that signs out (logout,
revoke-all, a device sign-out) cannot starve the next. Generated ids and
tokens would almost never name something that exists, so part of the cases
are steered (deterministically) to the caller's org, a fresh org of theirs
(for membership changes), another user's org, existing users and sessions,
a valid ID token and refresh token, and readable or forbidden topics:
successes, 403s, 404s, 409s and 426s are exercised, not only 400s and 401s.
How many cases ran, per operation and status, is written to the terminal;
an operation that ran and never succeeded fails the module.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from khala_control.app import ControlApp
from khala_control.handlers.openapi import SPEC
from khala_control.settings import Settings

pytestmark = pytest.mark.integration

load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())
MEMBER_CHANGES = "/api/orgs/{org_id}/members/{user_id}"

CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            # A schema-valid request may still be refused by what no schema can state:
            # who the caller is and what they may do (401 for a forged or spent token,
            # 403, 404 for ids that name nothing, steered on purpose), state (409: a
            # taken org id, the last owner), a client older than its surface's minimum
            # (426) and the rate limits (429). Acceptance is anything but a refusal of
            # the request's shape (400).
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "426", "429"],
            },
        }
    }
)

schema = schemathesis.openapi.from_dict(SPEC, config=CONFIG)


@dataclass
class LiveControl:
    """A control serving from a thread, with two orgs and three users in it."""

    base_url: str
    http: requests.Session = field(default_factory=requests.Session)
    email: str = ""
    id_token: str = ""
    """A dev-IdP ID token of the caller (valid 10 minutes; reusable)."""
    own_org: str = ""
    """An org the caller owns, with `member_id` as member."""
    foreign_org: str = ""
    """An org of `outsider_id` only."""
    owner_id: str = ""
    member_id: str = ""
    member_token: str = ""
    outsider_id: str = ""
    outsider_session: str = ""
    seen: Counter[tuple[str, int]] = field(default_factory=Counter)
    steered: Counter[str] = field(default_factory=Counter)

    def post(self, path: str, body: Any, token: str = "") -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(self.base_url + path, json=body, headers=headers, timeout=30)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    def sign_in(self, email: str = "", device_id: str = "") -> dict[str, Any]:
        """A new session (the caller's unless `email` is given)."""
        id_token = self.id_token
        if email:
            id_token = self.post("/api/dev/id-token", {"email": email})["id_token"]
        return self.post(  # type: ignore[no-any-return]
            "/api/auth/session",
            {
                "id_token": id_token,
                "device_id": device_id or f"dev-{uuid.uuid4().hex[:8]}",
                "surface": "desktop",
                "client_version": "1.0.0",
            },
        )

    def new_org(self, token: str) -> str:
        """A fresh org owned by the caller, with `member_id` as member."""
        org_id = f"org{uuid.uuid4().hex[:12]}"
        self.post("/api/orgs", {"org_id": org_id, "name": "Fresh"}, token)
        invitation = self.post(
            f"/api/orgs/{org_id}/invitations", {"user_id": self.member_id, "role": "member"}, token
        )
        self.post(f"/api/invitations/{invitation['invitation_id']}/accept", {}, self.member_token)
        return org_id

    def invitation_for_caller(self) -> str:
        """A pending invitation of the caller (to a fresh org of `member_id`'s)."""
        org_id = f"org{uuid.uuid4().hex[:12]}"
        self.post("/api/orgs", {"org_id": org_id, "name": "Inviting"}, self.member_token)
        invitation = self.post(
            f"/api/orgs/{org_id}/invitations",
            {"user_id": self.owner_id, "role": "viewer"},
            self.member_token,
        )
        return str(invitation["invitation_id"])


def _populate(live: LiveControl) -> None:
    suffix = uuid.uuid4().hex[:8]
    live.email = f"caller-{suffix}@example.com"
    live.id_token = live.post("/api/dev/id-token", {"email": live.email})["id_token"]
    caller = live.sign_in()
    live.owner_id = caller["user_id"]
    member = live.sign_in(f"member-{suffix}@example.com")
    live.member_id, live.member_token = member["user_id"], member["access_token"]
    outsider = live.sign_in(f"outsider-{suffix}@example.com")
    live.outsider_id, live.outsider_session = outsider["user_id"], outsider["session_id"]
    live.own_org = live.new_org(caller["access_token"])
    live.foreign_org = f"foreign{suffix}"
    live.post("/api/orgs", {"org_id": live.foreign_org, "name": "F"}, outsider["access_token"])


@pytest.fixture(scope="module")
def threaded_control(
    control_settings: Settings, request: pytest.FixtureRequest
) -> Iterator[LiveControl]:
    """A ControlApp serving from its own thread and event loop, for synchronous
    clients (schemathesis) that would block the tests' event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="threaded-control", daemon=True)
    thread.start()
    app = ControlApp(control_settings)
    asyncio.run_coroutine_threadsafe(app.start(), loop).result(60)
    live = LiveControl(app.base_url)
    try:
        _populate(live)
        yield live
    finally:
        live.http.close()
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    _report(live, request)


def _report(live: LiveControl, request: pytest.FixtureRequest) -> None:
    operations = sorted({operation for operation, _ in live.seen})
    lines = [
        f"control OpenAPI contract: {sum(live.seen.values())} cases over "
        f"{len(operations)} operations"
    ]
    for operation in operations:
        statuses = sorted((s, n) for (op, s), n in live.seen.items() if op == operation)
        lines.append(f"  {operation}: " + ", ".join(f"{s}: {n}" for s, n in statuses))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + "\n".join(lines))
    never_succeeded = [
        op for op in operations if not any(o == op and s < 300 for o, s in live.seen)
    ]
    assert not never_succeeded, f"operations never answered 2xx: {never_succeeded}"


def steer(case: Any, live: LiveControl, session: dict[str, Any]) -> None:
    """Point two thirds of the cases at existing things (0: the caller's, 1:
    another user's, or a refusal); the last third keeps its generated values.
    Choices cycle with the operation's case number, so every mix is reached
    and the run stays deterministic (hypothesis is derandomized)."""
    number = live.steered[case.operation.label]
    live.steered[case.operation.label] += 1
    pick, user, surface = number % 3, number // 3 % 3, number // 9 % 2
    if pick == 2 or case.meta.generation.mode.is_negative:
        # A negative case's one invalid part may be the very value steering would
        # overwrite with a valid one (negative_data_rejection would then fail).
        return
    own = pick == 0
    params = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    if "org_id" in params:
        if case.operation.path == MEMBER_CHANGES and own:
            params["org_id"] = live.new_org(session["access_token"])
        else:
            params["org_id"] = live.own_org if own else live.foreign_org
    if "user_id" in params:
        params["user_id"] = (live.member_id, live.owner_id, live.outsider_id)[user]
    if "session_id" in params:
        params["session_id"] = session["session_id"] if own else live.outsider_session
    if "invitation_id" in params:
        params["invitation_id"] = live.invitation_for_caller() if own else "inv_unknown"
    if isinstance(case.body, dict):
        # ios requires client 2.0.0 (control_settings): 426 for the 1.0.0 sent here.
        _steer_body(case.body, live, own, "ios" if surface else "desktop")


def _steer_body(body: dict[str, Any], live: LiveControl, own: bool, surface: str) -> None:
    org = live.own_org if own else live.foreign_org
    values: dict[str, Any] = {
        "id_token": live.id_token,
        "refresh_token": None,  # a fresh one is made below, only when asked for
        "email": live.email,
        "surface": surface,
        "client_version": "1.0.0",
        "topics": [f"org.{org}.runs", f"org.{org}.run.run-1"],
    }
    for name, value in values.items():
        if name in body:
            body[name] = live.sign_in()["refresh_token"] if name == "refresh_token" else value
    if "org_id" in body and not own:
        body["org_id"] = live.own_org  # taken: 409


def auth_headers(case: Any, token: str) -> dict[str, str]:
    """The caller's token, unless the case is a negative one whose invalid part is
    a header (its missing or mangled Authorization must reach the service)."""
    mutations = getattr(case.meta.phase.data, "mutations", None) or ()
    if any(m.parameter_location.value == "header" for m in mutations):
        return {}
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_control_conforms_to_its_openapi(case: Any, threaded_control: LiveControl) -> None:
    live = threaded_control
    session = live.sign_in()
    steer(case, live, session)
    response = case.call(
        base_url=live.base_url, headers=auth_headers(case, session["access_token"]), timeout=30
    )
    # Counted per documented operation, whatever method a negative case sent.
    live.seen[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, checks=ALL_CHECKS)
