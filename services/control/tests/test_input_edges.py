"""Inputs that once made control answer 500 (found by the OpenAPI contract test
and its review): NUL characters, which Postgres text cannot hold, in fields,
path ids and audited values; non-ASCII digits in query integers; a trailing
newline in an org id. Each now gets its documented refusal, and nothing poisons
the buffered audit writer."""

from __future__ import annotations

import pytest

from khala_control.app import ControlApp

pytestmark = pytest.mark.integration


async def test_nul_in_sign_in_fields_is_a_bad_request(client, email) -> None:
    issued = await client.ok("POST", "/api/dev/id-token", {"email": email})
    for field, value in (("device_id", "lap\x00top"), ("client_version", "1.0\x00")):
        body = {
            "id_token": issued["id_token"],
            "device_id": "laptop",
            "surface": "desktop",
            "client_version": "1.0.0",
            field: value,
        }
        status, answer = await client.call("POST", "/api/auth/session", body)
        assert (status, answer["error"]["code"]) == (400, "bad_request"), field
        assert "NUL" in answer["error"]["message"]


async def test_control_characters_in_dev_idp_fields_are_bad_requests(client) -> None:
    for body in (
        {"email": "a\x00b@example.com"},
        {"email": "a\x01@example.com"},
        {"email": "ok@example.com", "name": "A\x00"},
    ):
        status, answer = await client.call("POST", "/api/dev/id-token", body)
        assert (status, answer["error"]["code"]) == (400, "bad_request"), body


async def test_nul_in_path_ids_names_nothing(client, email, unique) -> None:
    caller = await client.sign_in(email)
    token = caller["access_token"]
    org = f"edges-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "Edges"}, token=token)
    cases = [
        ("DELETE", "/api/auth/sessions/ses%00x", None, "session_not_found"),
        ("GET", "/api/orgs/a%00b/members", None, "org_not_found"),
        ("GET", "/api/orgs/a%00b/audit", None, "org_not_found"),
        ("PUT", "/api/orgs/a%00b/members/usr_x", {"role": "member"}, "org_not_found"),
        ("DELETE", "/api/orgs/a%00b/members/usr_x", None, "org_not_found"),
        ("PUT", f"/api/orgs/{org}/members/usr%00x", {"role": "member"}, "user_not_found"),
        ("DELETE", f"/api/orgs/{org}/members/usr%00x", None, "member_not_found"),
    ]
    for method, path, body, code in cases:
        status, answer = await client.call(method, path, body, token=token)
        assert (status, answer["error"]["code"]) == (404, code), path


async def test_query_integers_take_ascii_digits_only(client, email, unique) -> None:
    token = (await client.sign_in(email))["access_token"]
    org = f"digits-{unique}"
    await client.ok("POST", "/api/orgs", {"org_id": org, "name": "D"}, token=token)
    for query in ("limit=%C2%B2", "before=%C2%B2", "limit=%D9%A1", "limit=-1", "limit=1e2"):
        status, answer = await client.call("GET", f"/api/orgs/{org}/audit?{query}", token=token)
        assert (status, answer["error"]["code"]) == (400, "bad_request"), query
    status, _ = await client.call("GET", f"/api/orgs/{org}/audit?limit=2", token=token)
    assert status == 200


async def test_an_org_id_with_a_trailing_newline_is_refused(client, email, unique) -> None:
    token = (await client.sign_in(email))["access_token"]
    body = {"org_id": f"nl-{unique}\n", "name": "N"}
    status, answer = await client.call("POST", "/api/orgs", body, token=token)
    assert (status, answer["error"]["code"]) == (400, "bad_request")


async def test_audited_refusals_quoting_nul_are_still_written(
    client, control: ControlApp, email
) -> None:
    caller = await client.sign_in(email)
    token = caller["access_token"]
    for body, code in (
        ({"surface": "desk\x00top"}, "bad_request"),
        ({"topics": ["org.a\x00b.runs"]}, "invalid_topic"),
    ):
        status, answer = await client.call("POST", "/api/sync/token", body, token=token)
        assert (status, answer["error"]["code"]) == (400, code)
    assert control.audit is not None and control.pool is not None
    await control.audit.flush()  # raised (and stayed stuck) while NUL reached Postgres
    assert control.audit.pending == 0
    rows = await control.pool.fetch(
        "SELECT detail FROM audit_log WHERE action = 'sync_token.denied' AND session_id = $1",
        caller["session_id"],
    )
    details = "".join(row["detail"] for row in rows)
    assert len(rows) == 2
    assert '"surface": "desk\ufffdtop"' in details  # NUL written as U+FFFD
    assert '"topic": "org.a\ufffdb.runs"' in details


async def test_profile_claims_with_nul_from_an_oidc_issuer(
    oidc_control: ControlApp, oidc_issuer, http, make_client
) -> None:
    client = make_client(oidc_control.base_url, http)

    async def exchange(id_token: str) -> tuple[int, dict]:
        return await client.call(  # type: ignore[no-any-return]
            "POST",
            "/api/auth/session",
            {"id_token": id_token, "device_id": "d1", "surface": "desktop"},
        )

    status, body = await exchange(oidc_issuer.id_token("sub\x00x"))
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await exchange(oidc_issuer.id_token(email="n\x00@example.com", name="N\x00"))
    assert status == 200, body
    me = await client.ok("GET", "/api/me", token=body["access_token"])
    assert me["user"]["email"] == "n@example.com" and me["user"]["name"] == "N"
