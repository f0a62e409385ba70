"""py-spy profiles of every service process under the pipeline benchmark's load.

    uv run --no-sync --with py-spy python bench/pipeline.py --profile baseline [--profile-seconds 20]

The same deployment, runs and 1,000 binary subscribers as `--quick`; one case at
500 appends/s while py-spy samples (100 Hz, GIL holders only, i.e. CPU) runtime,
each projector and each gateway. Writes, per process,
bench/results/profiles/pipeline_<name>_<process>.txt (functions by own samples,
then khala frames by inclusive samples) and .svg (a flame graph of the same
samples), and pipeline_<name>.json with the case's figures.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from pipeline import Bench
from pipeline_stack import LOGS, BenchDeployment
from profile_pipeline import top_functions, top_inclusive

PROFILES = Path(__file__).resolve().parent / "results" / "profiles"
RATE = 500


def flamegraph_svg(raw: Path, title: str, width: int = 1200, row: int = 16) -> str:
    """A static flame graph (SVG) of a py-spy `--format raw` (collapsed stacks) file."""
    root: dict[str, Any] = {"n": 0, "c": {}}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        node = root
        node["n"] += n
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += n
    total = max(1, root["n"])
    rects: list[str] = []
    depth_max = 0

    def walk(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal depth_max
        for name, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if w >= 0.5:
                depth_max = max(depth_max, depth)
                hue = int(hashlib.md5(name.split(" (")[0].encode()).hexdigest()[:2], 16) % 60
                label = html.escape(name)
                text = html.escape(name[: int(w / 7)]) if w > 35 else ""
                rects.append(
                    f"<g><title>{label} ({child['n']} samples, {100 * child['n'] / total:.1f}%)</title>"
                    f'<rect x="{x:.1f}" y="{{y{depth}}}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" y="{{t{depth}}}">{text}</text></g>'
                )
                walk(child, x, depth + 1)
            x += w

    walk(root, 0.0, 0)
    height = (depth_max + 3) * row
    body = "\n".join(rects)
    for depth in range(depth_max + 1):  # icicle rows from the bottom up: roots at the bottom
        y = height - (depth + 2) * row
        body = body.replace(f"{{y{depth}}}", str(y)).replace(f"{{t{depth}}}", str(y + row - 4))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">\n<text x="4" y="14">{html.escape(title)}</text>\n'
        f"{body}\n</svg>\n"
    )


async def profile(name: str, seconds: float, projectors: int, gateways: int) -> dict[str, Any]:
    """Run the profiled case and write the profiles."""
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        raise SystemExit("py-spy not found: run with `uv run --no-sync --with py-spy ...`")
    PROFILES.mkdir(parents=True, exist_ok=True)
    deployment = BenchDeployment(projectors=projectors, gateways=gateways)
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    out: dict[str, Any] = {
        "name": name,
        "rate": RATE,
        "seconds": seconds,
        "projectors": projectors,
        "gateways": gateways,
    }
    try:
        await deployment.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            bench = Bench("quick", deployment, http)
            try:
                out["setup"] = await bench.setup()
                for process, pid in deployment.service_pids().items():
                    if process == "control":
                        continue
                    raw = LOGS / f"pipeline_{name}_{process}.raw"
                    spy = subprocess.Popen(  # noqa: ASYNC220 - samples alongside the load
                        [
                            pyspy,
                            "record",
                            "-p",
                            str(pid),
                            "-d",
                            str(int(seconds)),
                            "-r",
                            "100",
                            "--gil",
                            "--format",
                            "raw",
                            "-o",
                            str(raw),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    spies.append((process, spy, raw))
                out["case"] = await bench.case(
                    f"profile-{RATE}", [("a", bench.runs_a, RATE)], seconds
                )
            finally:
                await bench.close()
    finally:
        for process, spy, raw in spies:
            await asyncio.to_thread(spy.wait, seconds + 60)
            if raw.exists():
                write_profile(name, process, raw, out)
        await deployment.stop()
    (PROFILES / f"pipeline_{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out.get("top", {}), indent=1))
    return out


def write_profile(name: str, process: str, raw: Path, out: dict[str, Any]) -> None:
    """<process>.txt (own and inclusive samples) and <process>.svg from one raw py-spy file."""
    service = process.split("-")[0]
    package = "khala_gateway" if service == "gateway" else f"khala_{service}"
    own = top_functions(raw)
    samples = sum(
        int(line.rpartition(" ")[2]) for line in raw.read_text().splitlines() if " " in line
    )
    head = f"py-spy --gil, {process}, {RATE} appends/s to 1,000 subscribers: {samples} samples"
    (PROFILES / f"pipeline_{name}_{process}.txt").write_text(
        f"{head}\n\nfunctions by own samples\n"
        + "\n".join(own)
        + f"\n\n{package} frames by inclusive samples\n"
        + "\n".join(top_inclusive(raw, package))
        + "\n"
    )
    (PROFILES / f"pipeline_{name}_{process}.svg").write_text(flamegraph_svg(raw, head))
    out.setdefault("top", collections.OrderedDict())[process] = own[:10]
