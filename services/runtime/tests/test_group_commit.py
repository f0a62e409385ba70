"""Group commit on real Postgres: concurrent appends to distinct streams share one
transaction, a refused member writes nothing and leaves the others committed,
and appends to one stream stay strictly one after another."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from khala_runtime.domain.chain import GENESIS, verify_chain
from khala_runtime.domain.errors import DomainError
from khala_runtime.domain.model import CreateRun
from khala_runtime.handlers.context import service_key
from khala_runtime.handlers.schemas import parse_append
from khala_runtime.storage.events import read_events
from khala_runtime.usecases.runs import RunService

pytestmark = pytest.mark.integration


def _events(*types: str, key: str = "") -> Any:
    return parse_append(
        {
            "events": [
                {"type": t, **({"idempotency_key": f"{key}{i}"} if key else {})}
                for i, t in enumerate(types)
            ]
        }
    )[0]


async def _xmins(service: Any, run_ids: list[str]) -> set[str]:
    rows = await service.pool.fetch(
        "SELECT DISTINCT xmin::text AS x FROM events WHERE stream_id = ANY($1::text[]) "
        "AND type = 'run.output'",
        [f"run:{r}" for r in run_ids],
    )
    return {row["x"] for row in rows}


async def test_concurrent_appends_to_distinct_runs_commit_together(
    runtime: Any, unique: str
) -> None:
    service = runtime.app[service_key]
    runs = [f"gc{i}-{unique}" for i in range(12)]
    for run_id in runs:
        await service.create_run(CreateRun(f"org{unique}", run_id, ""))
        await service.append(run_id, _events("run.started"), expected_seq=None)
    results = await asyncio.gather(
        *(service.append(r, _events("run.output"), expected_seq=2) for r in runs)
    )
    assert [receipt.first_seq for receipt, _ in results] == [3] * len(runs)
    # Fewer transactions than appends: groups formed while one was in flight.
    assert len(await _xmins(service, runs)) < len(runs)
    for run_id in runs:
        assert (await service.get_run(run_id)).last_seq == 3


async def test_a_refused_member_writes_nothing_and_the_others_commit(
    runtime: Any, unique: str
) -> None:
    service = runtime.app[service_key]
    ok_runs = [f"ok{i}-{unique}" for i in range(6)]
    for run_id in ok_runs:
        await service.create_run(CreateRun(f"org{unique}", run_id, ""))
        await service.append(run_id, _events("run.started"), expected_seq=None)
    bad = f"bad-{unique}"
    await service.create_run(CreateRun(f"org{unique}", bad, ""))

    async def refused(kind: str) -> Any:
        if kind == "conflict":  # expected_seq behind the head
            return await service.append(bad, _events("run.started"), expected_seq=7)
        if kind == "transition":  # created -> paused is illegal
            return await service.append(bad, _events("run.paused"), expected_seq=None)
        return await service.append(f"missing-{unique}", _events("run.output"), expected_seq=None)

    outcomes = await asyncio.gather(
        *(service.append(r, _events("run.output"), expected_seq=None) for r in ok_runs),
        refused("conflict"),
        refused("transition"),
        refused("missing"),
        return_exceptions=True,
    )
    assert all(not isinstance(o, BaseException) for o in outcomes[: len(ok_runs)]), outcomes
    codes = [o.code for o in outcomes[len(ok_runs) :] if isinstance(o, DomainError)]
    assert codes == ["seq_conflict", "invalid_transition", "run_not_found"]
    assert (await service.get_run(bad)).last_seq == 1
    for run_id in ok_runs:
        assert (await service.get_run(run_id)).last_seq == 3


async def test_appends_to_one_run_stay_gapless_and_chained(runtime: Any, unique: str) -> None:
    service = runtime.app[service_key]
    run_id = f"one-{unique}"
    await service.create_run(CreateRun(f"org{unique}", run_id, ""))
    await service.append(run_id, _events("run.started"), expected_seq=None)
    results = await asyncio.gather(
        *(
            service.append(
                run_id, _events("run.output", "run.output", key=f"k{i}-"), expected_seq=None
            )
            for i in range(20)
        )
    )
    spans = sorted((r.first_seq, r.last_seq) for r, _ in results)
    assert spans == [(3 + 2 * i, 4 + 2 * i) for i in range(20)]
    rows = await service.pool.fetch(
        "SELECT stream_seq FROM events WHERE stream_id = $1 ORDER BY stream_seq", f"run:{run_id}"
    )
    assert [row["stream_seq"] for row in rows] == list(range(1, 43))


async def test_two_writers_with_stale_remembered_heads_keep_the_log_gapless_and_chained(
    runtime: Any, unique: str
) -> None:
    """Two services on one database (as two runtime replicas): each one's remembered
    head goes stale whenever the other appends, so the optimistic write finds the
    head moved and the locked path decides; the log stays gapless and chained."""
    first = runtime.app[service_key]
    second = RunService(first.pool)
    run_id = f"two-{unique}"
    await first.create_run(CreateRun(f"org{unique}", run_id, ""))
    await first.append(run_id, _events("run.started"), expected_seq=None)
    for i in range(10):
        writer = first if i % 2 == 0 else second
        receipt, _ = await writer.append(run_id, _events("run.output"), expected_seq=None)
        assert receipt.first_seq == 3 + i
    # A plan refused on a stale head is decided on the committed one: expected_seq
    # matches the table, not the writer's memory.
    receipt, _ = await second.append(run_id, _events("run.output"), expected_seq=12)
    assert receipt.first_seq == 13
    with pytest.raises(DomainError) as refused:
        await first.append(run_id, _events("run.output"), expected_seq=12)
    assert refused.value.code == "seq_conflict"
    events = await read_events(first.pool, f"run:{run_id}", after_seq=0, up_to_seq=100, limit=100)
    assert [e.stream_seq for e in events] == list(range(1, 14))
    assert verify_chain(events, GENESIS)
