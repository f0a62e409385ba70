"""The operational drills and the benchmark harnesses, run as a user runs them.

Each drill (`scripts/drills/drill_*.py`, the same programs `make drill-*` runs)
gets the test servers through KHALA_DATABASE_URL / KHALA_AMQP_URL, starts the
four services itself and prints a PASS/FAIL table; the test requires exit 0,
every line PASS, and the checks its runbook promises:

* rebuild under live traffic: clients stay consistent (every RunSummary equals
  runtime's state, no duplicate or gap across the epoch switch);
* backup/restore: a cursor beyond the restored head gets
  `stale_cursor(cursor_ahead)` on every topic, deterministically, and a rebuild
  after the restore mints an epoch never seen before (no epoch reuse).

The bench smoke runs the benchmark harnesses at tiny sizes (no timing asserted)
to prove they still work: each exits 0 and reports its numbers, and a harness
that hits an error must say so (exit non-zero).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.drills, pytest.mark.e2e, pytest.mark.timeout(600)]


def _run(args: list[str], pg_server_url: str, amqp_url: str, timeout_s: float = 400) -> str:
    env = dict(
        os.environ, KHALA_DATABASE_URL=pg_server_url, KHALA_AMQP_URL=amqp_url, PYTHONUNBUFFERED="1"
    )
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    out = done.stdout + done.stderr
    print(out[-4000:])
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{out[-3000:]}"
    return out


def _table(out: str, name: str) -> list[str]:
    lines = [
        line.strip() for line in out.splitlines() if line.strip().startswith(("[PASS]", "[FAIL]"))
    ]
    assert f"===== {name}: PASS =====" in out, out[-3000:]
    assert lines and all(line.startswith("[PASS]") for line in lines), lines
    return lines


def test_rebuild_under_live_traffic_keeps_clients_consistent(
    pg_server_url: str, amqp_url: str
) -> None:
    lines = _table(
        _run(["scripts/drills/drill_rebuild.py"], pg_server_url, amqp_url), "drill-rebuild"
    )
    assert any("RunSummary == runtime state" in line for line in lines), lines


def test_backup_restore_stale_cursor_reason_and_no_epoch_reuse(
    pg_server_url: str, amqp_url: str
) -> None:
    out = _run(["scripts/drills/drill_backup_restore.py"], pg_server_url, amqp_url)
    lines = _table(out, "drill-backup-restore")
    stale = [line for line in lines if "stale_cursor(cursor_ahead) on every topic" in line]
    assert len(stale) == 2 and all("reasons ['cursor_ahead']" in line for line in stale), stale
    assert any("no epoch reuse" in line for line in lines), lines
    assert any("identical answers" in line for line in lines), lines


def test_bench_harness_smoke(pg_server_url: str, amqp_url: str) -> None:
    """bench/run.py --smoke (Khala's fanout/latency/replay/storm/idle phases at tiny sizes)."""
    out = _run(
        ["bench/run.py", "--smoke", "--only", "fanout,latency,replay"], pg_server_url, amqp_url
    )
    assert "Traceback" not in out


def test_runtime_append_and_control_mint_benches_smoke(pg_server_url: str, amqp_url: str) -> None:
    _run(
        [
            "bench/runtime_append.py",
            "--seconds",
            "1",
            "--streams",
            "4",
            "--appenders",
            "2",
            "--batch",
            "10",
            "--no-write",
        ],
        pg_server_url,
        amqp_url,
        180,
    )
    _run(
        ["bench/control_mint.py", "--seconds", "1", "--concurrency", "2", "--no-write"],
        pg_server_url,
        amqp_url,
        180,
    )
