"""Rewrite README.md's performance table from bench/results/*.json (no hand-typed figures).

    uv run --no-sync python bench/readme_table.py --mode quick   # after `make bench`
    uv run --no-sync python bench/readme_table.py --mode full    # after `make bench-full`

The table goes between `<!-- perf-table:begin -->` and `<!-- perf-table:end -->`.
Rows: the pipeline benchmark of `--mode` (pipeline_<mode>.json, and its
2-projector/2-gateway variant when present) and bench/run.py's run of the same
mode (bench_<mode>.json), which `make bench` / `make bench-full` produce
together; plus the latest standalone runtime-append and control-mint results.
Every row shows goal, measured and a verdict; a missed goal reads MISSED.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pipeline_report import highest_held, summary_rows  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"


def _latest(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data.get("latest", data)  # type: ignore[no-any-return]


def _verdict(ok: bool | None) -> str:
    return "reported" if ok is None else "MET" if ok else "MISSED"


def pipeline_rows(mode: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    result = _latest(f"pipeline_{mode}")
    if result is None:
        return [
            (
                "pipeline (`bench/pipeline.py`)",
                f"no pipeline_{mode}.json yet: run `make bench`",
                "",
                "MISSED",
                "",
            )
        ]
    link = "[pipeline.md](bench/results/pipeline.md)"
    for goal, measured, verdict, _what in summary_rows(result):
        rows.append((f"pipeline, {mode} ({result['at']})", measured, goal, verdict, link))
    variant = _latest(f"pipeline_{mode}_2p2g")
    if variant is not None:
        held = highest_held(variant["ladder"])
        rows.append(
            (
                f"pipeline, 2 projectors + 2 gateways, {mode} ({variant['at']})",
                f"{held:,.0f} ev/s held" if held else "no ladder rate held",
                "highest rate held >= 1,000 ev/s",
                "MET" if held >= 1000 else "MISSED",
                link,
            )
        )
    return rows


def delivery_rows(mode: str) -> list[tuple[str, str, str, str, str]]:
    result = _latest(f"bench_{mode}")
    if result is None:
        return []
    link = "[summary.md](bench/results/summary.md)"
    at = f"{mode} ({result['at']})"
    rows = []
    fan = result.get("fanout_many", {})
    if all(k in fan for k in ("khala", "nats", "socketio")):
        k, n, s = (fan[x]["server_cpu_us_per_frame"] for x in ("khala", "nats", "socketio"))
        rows.append(
            (
                f"fanout CPU per delivered frame, {fan['khala']['subscribers']:,} subscribers, {at}",
                f"Khala {k} µs, NATS {n} µs, Socket.IO {s} µs",
                "<= NATS's and >= 4x below Socket.IO's",
                _verdict(k <= n and k * 4 <= s),
                link,
            )
        )
    replay = result.get("replay", {}).get("khala", {}).get("runs", [])
    if replay:
        rates = [r["frames_per_s"] for r in replay]
        rows.append(
            (
                f"replay, {at}",
                f"{min(rates):,}-{max(rates):,} frames/s",
                ">= 200,000 frames/s",
                _verdict(min(rates) >= 200_000),
                link,
            )
        )
    storm = result.get("storm", {}).get("khala", {})
    if "seconds" in storm:
        full_size = storm["clients"] >= 10_000
        rows.append(
            (
                f"reconnect storm {storm['clients']:,} x {storm['missed_per_client']}, {at}",
                f"{storm['seconds']} s, {storm['clients_behind']} behind",
                "10k x 100 caught up <= 5 s",
                _verdict(storm["seconds"] <= 5 if full_size else None),
                link,
            )
        )
    idle = result.get("idle", {}).get("khala", {})
    if "rss_per_socket_kb" in idle:
        rows.append(
            (
                f"idle sockets ({idle['sockets']:,}), {at}",
                f"{idle['rss_per_socket_kb']} KB each",
                "50k at <= 15 KB each",
                _verdict(idle["rss_per_socket_kb"] <= 15),
                link,
            )
        )
    return rows


def standalone_rows() -> list[tuple[str, str, str, str, str]]:
    rows = []
    append = _latest("runtime_append")
    if append is not None:
        rows.append(
            (
                f"runtime durable appends ({append['at']})",
                f"{append['service']['events_per_s']:,} events/s, {append['ratio']}x raw insert",
                ">= 20k/s and >= 0.5x raw",
                _verdict(bool(append.get("goal_met"))),
                "[runtime_append.md](bench/results/runtime_append.md)",
            )
        )
    mint = _latest("control_mint")
    if mint is not None:
        rows.append(
            (
                f"control sync-token mints ({mint['at']})",
                f"{mint['inproc']['mints_per_s']:,}/s in process, {mint['http']['mints_per_s']:,}/s over HTTP",
                f">= {mint['goal_mints_per_s']:,}/s",
                _verdict(bool(mint.get("goal_met"))),
                "[control_mint.md](bench/results/control_mint.md)",
            )
        )
    return rows


def table(mode: str) -> str:
    rows = pipeline_rows(mode) + delivery_rows(mode) + standalone_rows()
    lines = ["| benchmark | measured | goal | verdict | details |", "|---|---|---|---|---|"]
    lines += [
        f"| {what} | {measured} | {goal} | **{verdict}** | {link} |"
        for what, measured, goal, verdict, link in rows
    ]
    return "\n".join(lines)


def rewrite(readme: Path, mode: str) -> None:
    """Replace the text between the markers with the generated table."""
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} section")
    generated = f"{BEGIN}\n<!-- generated by bench/readme_table.py --mode {mode}; do not edit -->\n{table(mode)}\n{END}"
    readme.write_text(pattern.sub(lambda _m: generated, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    rewrite(args.readme, args.mode)
    print(table(args.mode))


if __name__ == "__main__":
    main()
