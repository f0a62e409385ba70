"""Verdicts and tables of the pipeline benchmark (bench/pipeline.py).

A case PASSes only with 0 errors, every expected delivery seen exactly once and
in order by every subscriber, no socket closed, p99 <= 50 ms and >= 95% of the
target rate achieved in 2xx answers. Every missed goal is written MISSED or FAIL.
"""

from __future__ import annotations

import array
from typing import Any

GOALS: dict[str, float] = {
    "p99_ms": 50.0,  # every ladder step
    "p50_ms_at_1000": 10.0,
    "highest_rate_held": 1000.0,
    "system_ms_per_event_at_500": 1.0,
    "fairness_ratio": 2.0,
    "achieved_fraction": 0.95,
}


def latency_summary(raws: list[bytes]) -> dict[str, Any]:
    """p50/p99/max (ms) over the deliveries in `raws` (array('d') bytes)."""
    values = array.array("d")
    for raw in raws:
        values.frombytes(raw)
    ordered = sorted(values)
    if not ordered:
        return {"deliveries": 0, "p50": None, "p99": None, "max": None}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {
        "deliveries": len(ordered),
        "p50": at(0.50),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
    }


def case_verdict(case: dict[str, Any]) -> tuple[str, list[str]]:
    """PASS or FAIL, and why."""
    reasons = []
    for group, stream in case["streams"].items():
        if stream["error_count"]:
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(stream["errors"].items()))
            reasons.append(f"{stream['error_count']} errors of {group} ({shown})")
        if stream["achieved_rate"] < GOALS["achieved_fraction"] * stream["rate"]:
            reasons.append(f"{group} achieved {stream['achieved_rate']}/s of {stream['rate']:g}/s")
    if case["missing"]:
        why = {
            "stalled": f"none arrived for {case.get('stall_s', 20):g} s",
            "deadline": f"drain cut at {case['drain_wait_s']:g} s while frames still arrived",
        }
        reasons.append(
            f"{case['missing']} deliveries missing ({why.get(case.get('drain_ended', ''), '')})"
        )
    for key in ("duplicates", "reorders", "closed"):
        if case[key]:
            reasons.append(f"{case[key]} {key if key != 'closed' else 'sockets closed'}")
    if case["subscriber_errors"]:
        reasons.append(f"subscriber errors {case['subscriber_errors']}")
    if case["services_exited"]:
        reasons.append(f"services exited {case['services_exited']}")
    p99 = case["latency_ms"]["all"]["p99"]
    if p99 is None or p99 > GOALS["p99_ms"]:
        reasons.append(f"p99 {p99} ms > {GOALS['p99_ms']:g} ms")
    return ("FAIL" if reasons else "PASS"), reasons


def highest_held(ladder: list[dict[str, Any]]) -> float:
    """The highest ladder rate that PASSed (0 if none)."""
    return max((s["rate"] for s in ladder if s.get("verdict") == "PASS"), default=0)


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(goal, measured, verdict, what) rows of one run: also the README's table."""
    rows = []
    held = highest_held(r["ladder"])
    goal = GOALS["highest_rate_held"]
    rows.append(
        (
            f"highest rate held (0 errors, all delivered once in order, p99 <= 50 ms) >= {goal:,.0f} ev/s",
            f"{held:,.0f} ev/s" if held else "none of the ladder",
            "MET" if held >= goal else "MISSED",
            "ladder",
        )
    )
    step = next((s for s in r["ladder"] if s.get("rate") == 1000 and "latency_ms" in s), None)
    if step is not None:
        lat = step["latency_ms"]["all"]
        ok = (
            step["verdict"] == "PASS"
            and lat["p50"] is not None
            and lat["p50"] <= GOALS["p50_ms_at_1000"]
        )
        rows.append(
            (
                "1,000 ev/s: p50 <= 10 ms, p99 <= 50 ms, 0 errors, all delivered",
                f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, {_errors(step)} errors, {step['missing']} missing",
                "MET" if ok else "MISSED",
                "ladder-1000",
            )
        )
    cpu = r.get("cpu_at_rate")
    if cpu:
        goal_cpu = GOALS["system_ms_per_event_at_500"]
        system = cpu["system_ms_per_event"]
        rows.append(
            (
                f"system CPU per event at {cpu['rate']} ev/s <= {goal_cpu} ms",
                f"{system} ms (load generator {cpu['ms_per_event'].get('load_generator')} ms)",
                "MET" if system is not None and system <= goal_cpu else "MISSED",
                cpu["case"],
            )
        )
    fair = r.get("fairness")
    if fair:
        rows.append(
            (
                f"fairness: B's p99 with A at {r['config']['fairness']['a_rate']} ev/s <= 2x alone, 0 errors",
                f"{fair['b_p99_with_a_ms']} ms vs {fair['b_p99_alone_ms']} ms alone ({fair['ratio']}x)",
                "MET" if fair["verdict"] == "PASS" else "MISSED",
                "fairness",
            )
        )
    burst = r.get("burst")
    if burst:
        lat = burst["latency_ms"]["all"]
        rows.append(
            (
                f"{burst['rate']:,} ev/s for {burst['seconds']:g} s (reported)",
                f"{burst['streams']['a']['achieved_rate']} ev/s 2xx, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
                f"{_errors(burst)} errors, {burst['missing']} missing",
                burst["verdict"],
                burst["case"],
            )
        )
    return rows


def _errors(case: dict[str, Any]) -> int:
    return sum(s["error_count"] for s in case["streams"].values())


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_run(r: dict[str, Any]) -> str:
    cfg = r["config"]
    setup = r.get("setup", {})
    lines = [
        f"## {r['mode']} mode, {r['projectors']} projector(s), {r['gateways']} gateway(s) — {r['at']}",
        "",
        f"{setup.get('runs_a')} runs, {setup.get('subscribers_open')}/{setup.get('subscribers')} subscribers "
        f"({cfg['subs_per_run']} per run topic, `khala.v1+proto`, {cfg['receivers']} receiver process(es)), "
        f"open-loop single-event appends, {cfg['seconds']:g} s per rate. Latency: frame arrival minus the time "
        f"taken just before the append was sent, every delivery. Machine: {r['machine']['cpus']} cores, "
        f"{r['machine']['note']} (load average at start {', '.join(f'{x:.1f}' for x in r['machine']['load_avg_at_start'])}; "
        f"`load 1m` below is the 1-minute load average at each case's end: above 2, processes waited for a core). "
        f"Services ran from {r.get('code', 'unknown')}.",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
    ]
    lines += [
        f"| {goal} | {measured} | **{verdict}** |"
        for goal, measured, verdict, _what in summary_rows(r)
    ]
    lines += [
        "",
        "### Rate ladder",
        "",
        "| rate ev/s | 2xx/s | errors | deliveries | missing | dup | reorder | p50 ms | p99 ms | max ms "
        "| gen lag p99 ms | max in flight | system ms/ev | load 1m | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["ladder"] + ([r["burst"]] if r.get("burst") else []):
        label = (
            f"{s['rate']} (burst, {s['seconds']:g} s)"
            if s["case"].startswith("burst")
            else s["rate"]
        )
        if "latency_ms" not in s:
            lines.append(
                f"| {label} | | | | | | | | | | | | | | {s['verdict']} ({'; '.join(s['fail_reasons'])}) |"
            )
            continue
        a, lat = s["streams"]["a"], s["latency_ms"]["all"]
        verdict = s["verdict"] + (f" ({'; '.join(s['fail_reasons'])})" if s["fail_reasons"] else "")
        lines.append(
            f"| {label} | {a['achieved_rate']} | {a['error_count']} | {s['deliveries']} | {s['missing']} "
            f"| {s['duplicates']} | {s['reorders']} | {_cell(lat['p50'])} | {_cell(lat['p99'])} | {_cell(lat['max'])} "
            f"| {_cell(a['schedule_lag_p99_ms'])} | {_cell(a.get('max_in_flight'))} "
            f"| {_cell(s['cpu']['system_ms_per_event'])} | {_cell(s.get('load_avg_1m_at_end'))} | {verdict} |"
        )
    fair = r.get("fairness")
    if fair:
        lines += [
            "",
            "### Fairness",
            "",
            "| case | A 2xx/s | A errors | B 2xx/s | B errors | B p50 ms | B p99 ms | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, c in (("B alone", fair["b_alone"]), ("A and B", fair["a_and_b"])):
            a = c["streams"].get("a", {})
            b = c["streams"]["b"]
            lat = c["latency_ms"].get("b", {})
            lines.append(
                f"| {label} | {_cell(a.get('achieved_rate'))} | {_cell(a.get('error_count'))} "
                f"| {b['achieved_rate']} | {b['error_count']} | {_cell(lat.get('p50'))} "
                f"| {_cell(lat.get('p99'))} | {c['verdict']} |"
            )
        lines.append(
            f"\nB's p99 with A / alone: {fair['ratio']}x (goal <= {GOALS['fairness_ratio']:g}x): "
            f"**{fair['verdict']}**"
            + (f" ({'; '.join(fair['fail_reasons'])})" if fair["fail_reasons"] else "")
        )
    cpu = r.get("cpu_at_rate")
    if cpu:
        lines += [
            "",
            f"### CPU per event at {cpu['rate']} ev/s ({cpu['case']}: send window + drain)",
            "",
            "| process | CPU s | ms per event |",
            "|---|---|---|",
        ]
        for role in (
            "runtime",
            "projector",
            "gateway",
            "postgres",
            "rabbitmq",
            "control",
            "load_generator",
        ):
            if role in cpu["cpu_seconds"]:
                lines.append(
                    f"| {role} | {cpu['cpu_seconds'][role]} | {cpu['ms_per_event'][role]} |"
                )
        goal = GOALS["system_ms_per_event_at_500"]
        system = cpu["system_ms_per_event"]
        verdict = "MET" if system is not None and system <= goal else "MISSED"
        lines.append(
            f"| **system** (runtime+projector+gateway+Postgres+RabbitMQ) | {cpu['system_cpu_seconds']} "
            f"| **{system}** (goal <= {goal}: **{verdict}**) |"
        )
        lines.append(
            "\nPostgres and RabbitMQ are the machine's shared servers: their CPU is sampled over "
            "this case's window only and includes anything else they served meanwhile."
        )
    return "\n".join(lines) + "\n"


def render_markdown(runs: list[dict[str, Any]]) -> str:
    """bench/results/pipeline.md: one section per mode/variant, from its latest run."""
    head = (
        "# Pipeline benchmark (`bench/pipeline.py`)\n\n"
        "Generated from `bench/results/pipeline_*.json`; see docs/benchmarks.md for the method.\n\n"
    )
    return head + "\n".join(render_run(r) for r in runs)
