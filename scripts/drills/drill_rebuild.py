"""Drill: `khala-projector rebuild --projection runs` under live traffic.

Runs of one org get events appended continuously while the rebuild runs. A
client follows the org's runs doc topic and every run's event topic; per the
gateway (docs/gateway.md), each topic either continues with no duplicate and no
gap, or ends with `stale_cursor(epoch_changed)` at the switch, after which the
client subscribes again from after_seq 0 with an empty epoch. At the end:

* the client's run topics (and those of a fresh client) hold exactly 1..head
  of the current epoch, head = runtime's last_seq;
* the runs documents (a fresh client's snapshot + live frames, and the
  re-subscribed client's) equal runtime's state of every run;
* the rebuild moved the topics to a new epoch.

Usage: `make drill-rebuild` (KHALA_DATABASE_URL / KHALA_AMQP_URL pick the servers).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Follower,
    drill_env,
    event,
    exact,
    log,
    run_log,
    run_summary_diff,
    signed_in,
    verdict,
)

RUNS = 4
WRITE_INTERVAL_S = 0.05


async def drill() -> int:
    async with drill_env("rebuild") as env, aiohttp.ClientSession() as http:
        stack = env.stack
        api, org = await signed_in(http, stack, env.tag)
        run_ids = []
        for i in range(RUNS):
            run = await api.create_run(org, f"run-{env.tag}-{i}", title=f"drill run {i}")
            run_ids.append(run["run_id"])
            await api.append_events(run["run_id"], [event("run.started", "start")])
        runs_topic = f"org.{org}.runs"
        run_topics = {rid: f"org.{org}.run.{rid}" for rid in run_ids}
        topics = [runs_topic, *run_topics.values()]

        follower = Follower("live", http, api, topics)
        follower.start(stack.ws_url)

        stop_writing = asyncio.Event()
        appended = {rid: 0 for rid in run_ids}

        async def write(rid: str) -> None:
            i = 0
            while not stop_writing.is_set():
                i += 1
                await api.append_events(rid, [event("run.output", f"o{i}", {"text": f"line {i}"})])
                appended[rid] += 1
                await asyncio.sleep(WRITE_INTERVAL_S)

        writers = [asyncio.create_task(write(rid)) for rid in run_ids]
        await asyncio.sleep(2.0)  # traffic is flowing, the client is live

        log("running `python -m khala_projector rebuild --projection runs` under live traffic")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "khala_projector",
            "rebuild",
            "--projection",
            "runs",
            env=stack.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        rebuild_s = time.monotonic() - started
        report = {}
        try:
            report = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
        log(f"rebuild exit {proc.returncode} in {rebuild_s:.1f}s: {out.decode().strip()[-400:]}")
        if proc.returncode != 0:
            log(f"rebuild stderr: {err.decode()[-800:]}")

        await asyncio.sleep(1.0)  # traffic after the switch
        stop_writing.set()
        await asyncio.gather(*writers)
        for rid in run_ids:
            await api.append_events(rid, [event("run.completed", "done")])

        # runtime's final state
        runs = {rid: await api.get_run(rid) for rid in run_ids}
        logs = {rid: await run_log(api, rid) for rid in run_ids}
        heads = {run_topics[rid]: runs[rid]["last_seq"] for rid in run_ids}

        # the projector catches up with runtime (topic heads in Postgres)
        conn = await asyncpg.connect(stack.database_url)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rows = await conn.fetch(
                    "SELECT topic, epoch, head_seq FROM khala.topics WHERE topic = ANY($1::text[])",
                    topics,
                )
                db = {r["topic"]: (r["epoch"], r["head_seq"]) for r in rows}
                if all(db.get(t, ("", 0))[1] >= h for t, h in heads.items()):
                    break
                await asyncio.sleep(0.2)
            doc_head = db.get(runs_topic, ("", 0))[1]
        finally:
            await conn.close()
        epochs = {t: e for t, (e, _) in db.items()}

        all_heads = {**heads, runs_topic: doc_head}
        live_caught_up = await follower.wait_for(all_heads, 30)
        fresh = Follower("fresh", http, api, topics)
        fresh.start(stack.ws_url)
        fresh_caught_up = await fresh.wait_for(all_heads, 30)
        await follower.stop()
        await fresh.stop()

        checks: list[tuple[str, bool, str]] = []
        checks.append(
            (
                "rebuild completed",
                proc.returncode == 0,
                f"exit {proc.returncode} in {rebuild_s:.1f}s, epoch {report.get('epoch')}, "
                f"streams {report.get('streams')}, events_staged {report.get('events_staged')}",
            )
        )
        moved = [t for t, e in epochs.items() if e == report.get("epoch")]
        checks.append(
            (
                "topics moved to the new epoch",
                len(moved) == len(topics),
                f"{len(moved)}/{len(topics)} topics, epochs {sorted(set(epochs.values()))}",
            )
        )
        total = sum(appended.values())
        checks.append(
            (
                "live appends during the drill",
                total > 0,
                f"{total} run.output events over {RUNS} runs while rebuilding",
            )
        )
        stale_reasons = sorted({r for _, r in follower.stale})
        checks.append(
            (
                "live client: stale_cursor only epoch_changed",
                all(r == "epoch_changed" for _, r in follower.stale),
                f"{len(follower.stale)} stale_cursor ({', '.join(stale_reasons) or 'none'}) on "
                f"{len({t for t, _ in follower.stale})}/{len(topics)} topics, "
                f"{len(topics) - len({t for t, _ in follower.stale})} continued in place",
            )
        )
        for f in (follower, fresh):
            checks.append(
                (
                    f"{f.name} client: no duplicate / gap / error",
                    not f.violations and not f.errors,
                    f"{f.frames} frames, {len(f.violations)} violations {f.violations[:3]}, errors {f.errors[:3]}",
                )
            )
            checks.append(
                (
                    f"{f.name} client caught up",
                    live_caught_up if f is follower else fresh_caught_up,
                    f"cursors {sorted((t.rsplit('.', 1)[-1], s.last) for t, s in f.state.items())}",
                )
            )
            bad = [
                rid
                for rid in run_ids
                if not exact(f.state[run_topics[rid]].seqs, 1, heads[run_topics[rid]])
            ]
            checks.append(
                (
                    f"{f.name} client: run topics exactly 1..head in the current epoch",
                    not bad,
                    f"{RUNS - len(bad)}/{RUNS} exact; heads {sorted(heads.values())}; bad {bad}",
                )
            )
            docs = f.summaries(runs_topic)
            diffs = {rid: run_summary_diff(docs.get(rid), runs[rid], logs[rid]) for rid in run_ids}
            wrong = {rid: d for rid, d in diffs.items() if d}
            checks.append(
                (
                    f"{f.name} client: RunSummary == runtime state for every run",
                    not wrong,
                    f"{RUNS - len(wrong)}/{RUNS} equal (status, last_seq, counts, last output, times); {wrong}",
                )
            )
        return verdict("drill-rebuild", checks)


def main() -> None:
    code = asyncio.run(asyncio.wait_for(drill(), 150))
    sys.exit(code)


if __name__ == "__main__":
    main()
