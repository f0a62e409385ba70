"""Drill: pg_dump / pg_restore, then clients resume or get a deterministic stale_cursor.

1. Events are appended to a few runs; the projector catches up.
2. `pg_dump -Fc` of the whole database (schemas control, runtime, khala).
3. More events are appended; a client follows them, so its cursors end up
   beyond what the dump holds.
4. The stack stops, the dump is restored into a fresh database
   (`pg_restore --no-owner --exit-on-error`), and the stack starts on it
   (migrations run again first, as the runbook says).
5. Clients come back with stored cursors:
   * cursor below the restored head ("behind"): resumes with exactly
     cursor+1..head, then live frames of new appends, no duplicate, no gap;
   * cursor equal to the restored head ("at-head", run topics and the runs doc
     topic): resumes with no frame until new appends, then exactly head+1..;
   * cursor beyond the restored head ("ahead"): `stale_cursor(cursor_ahead)`
     with head_seq = the restored head, on every topic, on two separate
     connections (deterministic); re-subscribing from 0 then yields 1..head.
6. No epoch reuse: a rebuild (workers projection of the drill's org, which no
   client follows) runs after the dump and again after the restore; the
   restore rewound `rebuild_id`, yet the second epoch is new: it differs from
   every epoch the database held before the restore.

Usage: `make drill-backup-restore`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Follower,
    TopicState,
    create_database,
    drill_env,
    event,
    exact,
    log,
    signed_in,
    start_quietly,
    topic_heads,
    verdict,
    wait_heads,
)

from khala_client import KhalaApi

RUNS = 3
BEFORE_DUMP = 10  # run.output events per run before the dump
AFTER_DUMP = 10  # ... after the dump (lost by the restore)
AFTER_RESTORE = 3  # ... after the restore
BEHIND_AT = 5  # the "behind" client's cursor on run topics


async def append_outputs(api: KhalaApi, run_ids: list[str], count: int, phase: str) -> None:
    """`count` run.output events per run (concurrently across runs)."""

    async def one(rid: str) -> None:
        for i in range(count):
            await api.append_events(
                rid, [event("run.output", f"{phase}-{i}", {"text": f"{phase} {i}"})]
            )

    await asyncio.gather(*(one(rid) for rid in run_ids))


async def runtime_heads(
    api: KhalaApi, run_ids: list[str], run_topics: dict[str, str]
) -> dict[str, int]:
    """{run topic: runtime last_seq}."""
    return {run_topics[rid]: (await api.get_run(rid))["last_seq"] for rid in run_ids}


async def rebuild_epoch(stack: Any, org: str) -> tuple[str, int]:
    """(epoch, rebuild_id) of `khala_projector rebuild --projection workers --org <org>`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "khala_projector",
        "rebuild",
        "--projection",
        "workers",
        "--org",
        org,
        env=stack.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        log(f"rebuild failed: {err.decode()[-400:]}")
        return "", 0
    report = json.loads(out.decode().strip().splitlines()[-1])
    return str(report["epoch"]), int(report["rebuild_id"])


async def all_epochs(db_url: str) -> set[str]:
    """Every epoch the khala schema knows (topics, frames, rebuilds)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT epoch FROM khala.topics UNION SELECT epoch FROM khala.frames"
            " UNION SELECT epoch FROM khala.rebuilds"
        )
    finally:
        await conn.close()
    return {r["epoch"] for r in rows}


async def drill() -> int:
    async with drill_env("backup-restore") as env, aiohttp.ClientSession() as http:
        stack = env.stack
        api, org = await signed_in(http, stack, env.tag)
        run_ids = [
            (await api.create_run(org, f"run-{env.tag}-{i}", title=f"run {i}"))["run_id"]
            for i in range(RUNS)
        ]
        for rid in run_ids:
            await api.append_events(rid, [event("run.started", "start")])
        runs_topic = f"org.{org}.runs"
        run_topics = {rid: f"org.{org}.run.{rid}" for rid in run_ids}
        topics = [runs_topic, *run_topics.values()]
        await append_outputs(api, run_ids, BEFORE_DUMP, "before")
        heads = await runtime_heads(api, run_ids, run_topics)
        await wait_heads(stack.database_url, heads)
        dumped = await topic_heads(stack.database_url, topics)  # includes the doc topic
        log(
            f"heads at the dump: {sorted((t.rsplit('.', 1)[-1], h) for t, (_, h) in dumped.items())}"
        )

        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "khala.dump"
            started = time.monotonic()
            await asyncio.to_thread(
                subprocess.run, ["pg_dump", "-Fc", "-f", str(dump), stack.database_url], check=True
            )
            dump_s = time.monotonic() - started
            log(f"pg_dump -Fc: {dump.stat().st_size} bytes in {dump_s:.2f}s")

            # traffic after the backup point; a client follows it to the end
            follower = Follower("follower", http, api, topics)
            follower.start(stack.ws_url)
            await append_outputs(api, run_ids, AFTER_DUMP, "after")
            await wait_heads(stack.database_url, await runtime_heads(api, run_ids, run_topics))
            later = await topic_heads(stack.database_url, topics)
            await follower.wait_for({t: h for t, (_, h) in later.items()}, 30)
            await follower.stop()
            ahead = {t: (s.epoch, s.last) for t, s in follower.state.items()}
            # a rebuild after the backup point: its epoch and rebuild_id are lost by the restore
            lost_epoch, lost_rebuild_id = await rebuild_epoch(stack, org)
            seen_epochs = await all_epochs(stack.database_url) | {e for e, _ in ahead.values()}
            log(f"rebuild after the dump: rebuild_id {lost_rebuild_id}, epoch {lost_epoch}")
            log(
                f"cursors beyond the dump: {sorted((t.rsplit('.', 1)[-1], c[1]) for t, c in ahead.items())}"
            )

            # restore into a fresh database and restart the stack on it
            await asyncio.to_thread(env.stack.stop_all)
            restored_name = f"khala_drill_{env.tag}_restored"
            restored_url = await create_database(restored_name)
            env.databases.append(restored_name)
            started = time.monotonic()
            await asyncio.to_thread(
                subprocess.run,
                ["pg_restore", "--no-owner", "--exit-on-error", "-d", restored_url, str(dump)],
                check=True,
            )
            restore_s = time.monotonic() - started
            log(f"pg_restore into {restored_name} in {restore_s:.2f}s; restarting the stack on it")
        env.stack = stack = env.new_stack(restored_url)
        await start_quietly(stack)
        api = KhalaApi(stack.url("control"), stack.url("runtime"), http, session=api.session)
        restored = await topic_heads(stack.database_url, topics)

        def client(
            name: str, cursors: dict[str, tuple[str, int]], *, resubscribe: bool = True
        ) -> Follower:
            f = Follower(name, http, api, list(cursors))
            f.auto_resubscribe = resubscribe
            for t, (epoch, seq) in cursors.items():
                f.state[t] = TopicState(epoch=epoch, last=seq)
            f.start(stack.ws_url)
            return f

        # ahead: twice without re-subscribing (determinism), then once recovering
        probes = [client(f"ahead-{i}", ahead, resubscribe=False) for i in (1, 2)]
        for _ in range(150):  # up to 15 s
            if all(len(p.stale) >= len(topics) for p in probes):
                break
            await asyncio.sleep(0.1)
        for p in probes:
            await p.stop()
        recovering = client("ahead-recovering", ahead)
        behind = client("behind", {t: (restored[t][0], BEHIND_AT) for t in run_topics.values()})
        at_head = client("at-head", {t: restored[t] for t in topics})
        await asyncio.sleep(1.0)
        quiet_frames = at_head.frames

        await append_outputs(api, run_ids, AFTER_RESTORE, "restored")
        await wait_heads(stack.database_url, await runtime_heads(api, run_ids, run_topics))
        final = await topic_heads(stack.database_url, topics)
        final_heads = {t: h for t, (_, h) in final.items()}
        caught = {}
        for f in (recovering, behind, at_head):
            caught[f.name] = await f.wait_for({t: final_heads[t] for t in f.topics}, 30)
            await f.stop()

        new_epoch, new_rebuild_id = await rebuild_epoch(stack, org)
        log(f"rebuild after the restore: rebuild_id {new_rebuild_id}, epoch {new_epoch}")

        checks: list[tuple[str, bool, str]] = []
        checks.append(
            (
                "no epoch reuse: a rebuild after the restore mints an epoch never seen before",
                bool(lost_epoch) and bool(new_epoch) and new_epoch not in seen_epochs,
                f"rebuild_id {lost_rebuild_id} → {new_rebuild_id} after the restore "
                f"({'rewound' if new_rebuild_id <= lost_rebuild_id else 'not rewound'}), "
                f"epoch {lost_epoch} then {new_epoch}; {len(seen_epochs)} epochs known before",
            )
        )
        checks.append(
            (
                "restored heads == heads at the dump",
                restored == dumped,
                f"dump {sorted(h for _, h in dumped.values())}, restored {sorted(h for _, h in restored.values())}, "
                f"lost after the backup point: {AFTER_DUMP} events per run",
            )
        )
        ahead_ok = all(h[1] > restored[t][1] for t, h in ahead.items())
        checks.append(
            (
                "ahead cursors are beyond the restored heads",
                ahead_ok,
                f"{sorted(c[1] for c in ahead.values())} > {sorted(h for _, h in restored.values())}",
            )
        )
        for p in probes:
            got = sorted(p.stale)
            want = sorted((t, "cursor_ahead") for t in topics)
            heads_ok = all(p.stale_heads.get(t) == restored[t][1] for t in topics)
            checks.append(
                (
                    f"{p.name}: stale_cursor(cursor_ahead) on every topic, head_seq = restored head",
                    got == want and heads_ok and not p.violations and p.frames == 0,
                    f"{len(got)}/{len(topics)} topics, reasons {sorted({r for _, r in got})}, "
                    f"head_seq {sorted(p.stale_heads.values())}, frames {p.frames}",
                )
            )
        checks.append(
            (
                "the two ahead probes got identical answers",
                sorted(probes[0].stale) == sorted(probes[1].stale)
                and probes[0].stale_heads == probes[1].stale_heads,
                "deterministic"
                if probes[0].stale_heads == probes[1].stale_heads
                else f"{probes[0].stale_heads} vs {probes[1].stale_heads}",
            )
        )
        bad = [
            t for t in run_topics.values() if not exact(recovering.state[t].seqs, 1, final_heads[t])
        ]
        checks.append(
            (
                "ahead-recovering: re-subscribed from 0 → run topics exactly 1..head, no dup/gap",
                caught["ahead-recovering"]
                and not bad
                and not recovering.violations
                and not recovering.errors,
                f"{len(recovering.stale)} stale_cursor then {recovering.frames} frames, {len(recovering.violations)} violations",
            )
        )
        bad = [
            t
            for t in run_topics.values()
            if not exact(behind.state[t].seqs, BEHIND_AT + 1, final_heads[t])
        ]
        checks.append(
            (
                "behind (cursor 5 < restored head): exactly cursor+1..head, live after restore",
                caught["behind"]
                and not bad
                and not behind.violations
                and not behind.stale
                and not behind.errors,
                f"seqs {BEHIND_AT + 1}..{sorted(final_heads[t] for t in run_topics.values())}, {behind.frames} frames, "
                f"{len(behind.violations)} violations, {len(behind.stale)} stale",
            )
        )
        bad = [
            t
            for t in run_topics.values()
            if not exact(at_head.state[t].seqs, restored[t][1] + 1, final_heads[t])
        ]
        checks.append(
            (
                "at-head (cursor = restored head, incl. doc topic): resumes, only new frames",
                caught["at-head"]
                and not bad
                and quiet_frames == 0
                and not at_head.violations
                and not at_head.stale
                and not at_head.errors,
                f"{quiet_frames} frames before new appends, then {at_head.frames} "
                f"(doc topic {restored[runs_topic][1]}→{at_head.state[runs_topic].last}), {len(at_head.violations)} violations",
            )
        )
        checks.append(("timings", True, f"pg_dump {dump_s:.2f}s, pg_restore {restore_s:.2f}s"))
        return verdict("drill-backup-restore", checks)


def main() -> None:
    sys.exit(asyncio.run(asyncio.wait_for(drill(), 150)))


if __name__ == "__main__":
    main()
