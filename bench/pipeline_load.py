"""The open-loop load of the pipeline benchmark: single-event appends at a fixed rate.

Append i is due at `start + i / rate` whatever earlier appends returned (open
loop: a slow pipeline does not slow the load down). Runs are taken round-robin.
Each request carries one `run.output` event whose payload holds the send time
(`time.monotonic_ns()`, system-wide on Linux, so receiver processes can subtract
it), taken just before the request is handed to the HTTP client. Only a 2xx
answer counts as achieved; every other outcome is counted by HTTP status and
error code, or by exception name. The seq in each 2xx receipt is what every
subscriber of that run must then see.
"""

from __future__ import annotations

import array
import asyncio
import collections
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

BODY = (
    '{"events":[{"type":"run.output","idempotency_key":"%s",'
    '"payload":{"khala_bench_sent_ns":"%020d","text":"' + "x" * 64 + '"}}]}'
)


@dataclass
class LoadResult:
    """What one open-loop stream of appends achieved."""

    rate: float
    scheduled: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    seqs: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    lag_ms: array.array[float] = field(default_factory=lambda: array.array("d"))
    send_seconds: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0

    def summary(self) -> dict[str, Any]:
        lags = sorted(self.lag_ms)
        return {
            "rate": self.rate,
            "scheduled": self.scheduled,
            "ok_2xx": self.ok,
            "achieved_rate": round(self.ok / self.send_seconds, 1) if self.send_seconds else 0.0,
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "send_seconds": round(self.send_seconds, 3),
            # How late the generator itself started appends (a saturated client shows here).
            "schedule_lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))], 2) if lags else None,
            "schedule_lag_max_ms": round(lags[-1], 2) if lags else None,
            # Open loop: requests awaiting an answer pile up when the system falls behind.
            "max_in_flight": self.max_in_flight,
        }


class Appender:
    """Sends single-event appends to runtime with one keep-alive HTTP session."""

    def __init__(self, http: aiohttp.ClientSession, runtime_url: str, access_token: str) -> None:
        self.http = http
        self.runtime_url = runtime_url.rstrip("/")
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
        }
        self.timeout = aiohttp.ClientTimeout(total=60)

    def set_token(self, access_token: str) -> None:
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
        }

    async def append(self, result: LoadResult, run_id: str, key: str, due: float) -> None:
        url = f"{self.runtime_url}/api/v1/runs/{run_id}/events"
        sent_ns = time.monotonic_ns()
        result.lag_ms.append(max(0.0, (time.perf_counter() - due) * 1000))
        result.in_flight += 1
        result.max_in_flight = max(result.max_in_flight, result.in_flight)
        try:
            async with self.http.post(
                url, data=BODY % (key, sent_ns), headers=self.headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
                if 200 <= response.status < 300:
                    result.ok += 1
                    result.seqs[run_id].append(int(json.loads(raw)["first_seq"]))
                else:
                    result.errors[f"http {response.status} {_code(raw)}".strip()] += 1
        except Exception as exc:
            result.errors[type(exc).__name__] += 1
        finally:
            result.in_flight -= 1

    async def open_loop(self, runs: list[str], rate: float, seconds: float, tag: str) -> LoadResult:
        """Appends at `rate`/s for `seconds`, round-robin over `runs`; waits for every answer."""
        result = LoadResult(rate=rate)
        count = int(rate * seconds)
        result.scheduled = count
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.01
        i = 0
        while i < count:
            now = time.perf_counter()
            while i < count and start + i / rate <= now:
                due = start + i / rate
                tasks.append(
                    asyncio.create_task(self.append(result, runs[i % len(runs)], f"{tag}-{i}", due))
                )
                i += 1
            if i < count:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        result.send_seconds = max(time.perf_counter() - start, count / rate)
        await asyncio.gather(*tasks)
        return result


def _code(raw: bytes) -> str:
    """The `error.code` of an error body, if it has one."""
    try:
        return str(json.loads(raw)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
