"""Integration: `khala-runtime verify` recomputes chains from the log and
reports the first broken link."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from khala_runtime.__main__ import main

pytestmark = pytest.mark.integration


async def seed(api: Any, identity: Any, unique: str) -> tuple[str, str]:
    org, run_id, wid = f"org{unique}", f"run{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    await api.call("POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id})
    await api.call(
        "POST",
        f"/api/v1/runs/{run_id}/events",
        token,
        {
            "events": [{"type": "run.started"}]
            + [{"type": "run.output", "payload": {"text": str(i)}} for i in range(8)]
        },
    )
    await api.call("POST", "/api/v1/workers", token, {"org_id": org, "worker_id": wid})
    await api.call("POST", f"/api/v1/workers/{wid}/heartbeat", token)
    return f"run:{run_id}", f"worker:{wid}"


async def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    *args: str,
) -> tuple[int, list[dict[str, Any]], str]:
    monkeypatch.setenv("KHALA_DATABASE_URL", database_url)
    monkeypatch.setenv("KHALA_LOG_LEVEL", "error")
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["verify", *args, "--json"])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines() if line], out.err


async def test_intact_streams_verify(
    api: Any,
    identity: Any,
    unique: str,
    migrated: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_stream, worker_stream = await seed(api, identity, unique)
    for stream, seq in ((run_stream, 10), (worker_stream, 2)):
        code, (report,), _ = await cli(monkeypatch, capsys, migrated, "--stream", stream)
        assert code == 0
        assert (
            report["stream_id"],
            report["ok"],
            report["head_seq"],
            report["events_checked"],
        ) == (stream, True, seq, seq)
    code, _, err = await cli(monkeypatch, capsys, migrated, "--stream", "run:ghost")
    assert code == 3 and "does not exist" in err
    code, _, err = await cli(monkeypatch, capsys, migrated, "--stream", "nonsense")
    assert code == 3 and "malformed" in err


async def test_tampering_is_reported_at_the_first_broken_link(
    api: Any,
    identity: Any,
    unique: str,
    migrated: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_stream, worker_stream = await seed(api, identity, unique)
    conn = await asyncpg.connect(migrated)
    try:
        await conn.execute(
            'UPDATE runtime.events SET payload_json = \'{"text":"forged"}\'::bytea '
            "WHERE stream_id = $1 AND stream_seq = 5",
            run_stream,
        )
        await conn.execute(
            "DELETE FROM runtime.events WHERE stream_id = $1 AND stream_seq = 2", worker_stream
        )
    finally:
        await conn.close()
    code, (report,), _ = await cli(monkeypatch, capsys, migrated, "--stream", run_stream)
    assert code == 1 and not report["ok"]
    assert (report["broken_seq"], report["reason"]) == (5, "chain_mismatch")
    code, (report,), _ = await cli(monkeypatch, capsys, migrated, "--stream", worker_stream)
    assert code == 1 and (report["broken_seq"], report["reason"]) == (2, "seq_gap")

    code, reports, _ = await cli(monkeypatch, capsys, migrated, "--all")
    assert code == 1
    by_stream = {r["stream_id"]: r for r in reports}
    assert not by_stream[run_stream]["ok"] and not by_stream[worker_stream]["ok"]
    assert [r["stream_id"] for r in reports] == sorted(by_stream)
    intact = [r for r in reports if unique not in r["stream_id"]]
    assert intact and all(r["ok"] for r in intact)
