"""The `khala` CLI as a user runs it, against the four real services.

Every call is a separate process (`python -m khala_client.cli`) sharing one
config directory, so the session, default org and tail cursors persist the way
they do between a user's commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    def __init__(self, config_dir: Path) -> None:
        self.env = dict(os.environ, KHALA_CONFIG_DIR=str(config_dir))

    async def __call__(self, *args: str, limit_s: float = 30.0) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "khala_client.cli",
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"khala {' '.join(args)} did not finish in {limit_s}s") from None
        return Result(proc.returncode or 0, out.decode(), err.decode())

    async def ok(self, *args: str) -> str:
        result = await self(*args)
        assert result.code == 0, f"khala {' '.join(args)} -> {result.code}\n{result.err}"
        return result.out


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def cli(stack, tmp_path: Path, tag: str) -> Cli:
    cli = Cli(tmp_path / "khala")
    out = await cli.ok(
        "login",
        "--control",
        stack.url("control"),
        "--runtime",
        stack.url("runtime"),
        "--gateway",
        stack.ws_url,
        "--email",
        f"cli-{tag}@example.com",
        "--name",
        "Cli User",
    )
    assert out.startswith("signed in as usr_")
    config = json.loads((tmp_path / "khala" / "config.json").read_text())
    assert config["session"]["refresh_token"].startswith("rt_")
    assert (tmp_path / "khala" / "config.json").stat().st_mode & 0o777 == 0o600
    assert "created org" in await cli.ok("orgs", "create", f"org-{tag}", "--name", "CLI org")
    return cli


async def test_runs_and_tail_resume(cli: Cli, tag: str) -> None:
    run_id = f"run-{tag}"
    assert f"run {run_id} created" in await cli.ok(
        "runs", "create", "--run-id", run_id, "--title", "from the cli"
    )
    await cli.ok("runs", "start", run_id)
    assert "seq 3..3" in await cli.ok("runs", "append", run_id, "--text", "hello")
    listing = await cli.ok("runs", "list")
    assert run_id in listing and "running" in listing

    first = (await cli.ok("tail", f"run:{run_id}", "--exit-when-live", "--quiet")).splitlines()
    assert [line.split()[2] for line in first] == ["#1", "#2", "#3"]
    assert first[2].endswith("run.output hello")

    await cli.ok("runs", "append", run_id, "--text", "again", "--key", "k-again")
    await cli.ok(
        "runs", "append", run_id, "--text", "again", "--key", "k-again"
    )  # idempotent retry
    resumed = (await cli.ok("tail", f"run:{run_id}", "--exit-when-live", "--quiet")).splitlines()
    assert [line.split()[2] for line in resumed] == ["#4"], (
        "tail must resume after the last printed frame"
    )

    everything = await cli.ok(
        "--json", "tail", f"run:{run_id}", "--from-start", "--exit-when-live", "--quiet"
    )
    frames = [json.loads(line) for line in everything.splitlines()]
    assert [f["seq"] for f in frames] == [1, 2, 3, 4]
    assert frames[2]["payload"]["payload"] == {"text": "hello"}
    assert frames[2]["schema_version"] == "openagents.runtime.v1.RuntimeEvent@1"

    # Live: the tail waits for frames appended after it started.
    live = asyncio.create_task(
        cli("tail", "runs", f"run:{run_id}", "--count", "7", "--quiet", "--no-resume")
    )
    await asyncio.sleep(3)
    await cli.ok("runs", "append", run_id, "--text", "live line")
    result = await asyncio.wait_for(live, 40)
    assert result.code == 0, result.err
    # runs: a snapshot doc, then the run's update; the run topic: #1..#4 replayed, then #5 live.
    assert "live line" in result.out and "(snapshot)" in result.out
    run_seqs = [
        line.split()[2]
        for line in result.out.splitlines()
        if line.split()[1:2] and line.split()[1].endswith(f".run.{run_id}")
    ]
    assert run_seqs == ["#1", "#2", "#3", "#4", "#5"], result.out  # no gap, no duplicate

    assert "run.canceled" in await cli.ok("runs", "stop", run_id, "--reason", "done")
    refused = await cli("runs", "append", run_id, "--text", "too late")
    assert refused.code == 1 and "terminal_state (HTTP 409)" in refused.err


async def test_workers_lifecycle_and_errors(cli: Cli, tag: str) -> None:
    worker = f"w-{tag}"
    assert f"worker {worker} registered" in await cli.ok("workers", "create", worker)
    assert "heartbeat:" in await cli.ok("workers", "heartbeat", worker)
    await cli.ok("workers", "append", worker, "--type", "worker.started")
    listing = await cli.ok("workers", "list")
    row = next(line for line in listing.splitlines() if line.startswith(worker))
    assert "running" in row and "fresh" in row
    await cli.ok("workers", "stop", worker)
    stopped = await cli("workers", "heartbeat", worker)
    assert stopped.code == 1 and "worker_stopped (HTTP 409)" in stopped.err
    await cli.ok("workers", "resume", worker)
    snapshot = json.loads(await cli.ok("--json", "workers", "get", worker))
    assert snapshot["status"] == "running"

    bad = await cli("workers", "append", worker, "--payload", "[1]")
    assert bad.code == 2 and "JSON object" in bad.err
    unknown = await cli("workers", "append", worker, "--type", "worker.nonsense")
    assert unknown.code == 1 and "unknown_event_type" in unknown.err
    forbidden = await cli("tail", "org.somebody-else.runs", "--timeout", "5")
    assert forbidden.code == 1 and "forbidden_topic" in forbidden.err
    not_topic = await cli("tail", "nonsense")
    assert not_topic.code == 2 and "not a topic" in not_topic.err


async def test_tokens_and_sign_out(cli: Cli, tmp_path: Path) -> None:
    token = (await cli.ok("token")).strip()
    assert token.count(".") == 2
    minted = json.loads(await cli.ok("--json", "token"))
    assert any(pattern.endswith(".runs") for pattern in minted["scope"])
    assert (await cli.ok("token", "--access")).strip().count(".") == 2
    assert "orgs:" in await cli.ok("whoami")
    await cli.ok("logout")
    after = await cli("runs", "list")
    assert after.code == 2 and "not signed in" in after.err

    stranger = Cli(tmp_path / "nobody")
    unreachable = await stranger(
        "login", "--control", "http://127.0.0.1:9", "--email", "x@example.com"
    )
    assert unreachable.code == 1 and "cannot reach" in unreachable.err
