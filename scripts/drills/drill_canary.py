"""Drill: a gateway canary, two gateway versions side by side.

The local rehearsal of the canary procedure (deploy/k8s/README.md "Canary
release of the gateway"): the stack runs HEAD, and a second gateway runs the
previous version, checked out with `git worktree` (KHALA_CANARY_BASE, default:
the tree before the latest commit that changed services/khala-gateway) and
started from it on its own ports, against the same database and broker.

Under continuous appends to a few runs, four clients (proto and JSON) follow
the org's runs doc topic and every run topic, half of them starting on each
gateway:

1. every client moves to the other version (closes its socket and resumes from
   its cursors there), so each one is served by both versions in turn;
2. the canary is aborted: the clients on it are pointed at HEAD (the load
   balancer) and the canary gets SIGTERM (drain: Reconnect + close 1012); they
   resume on HEAD.

Then every run topic must hold exactly 1..head for each client (nothing lost,
nothing duplicated across versions), the runs documents must equal runtime's
state, and the canary must have run the previous version's code.

Usage: `make drill-canary` (KHALA_CANARY_BASE=<commit or tag> to choose the
previous release).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    JSON,
    PROTO,
    ROOT,
    Follower,
    Settled,
    Writers,
    drill_env,
    exact,
    log,
    run_summary_diff,
    settle,
    signed_in,
    verdict,
)
from stack import free_port

RUNS = 3


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def previous_version() -> str:
    """KHALA_CANARY_BASE, else the parent of the latest commit touching the gateway."""
    base = os.environ.get("KHALA_CANARY_BASE")
    if base:
        return git("rev-parse", "--verify", f"{base}^{{commit}}")
    latest = git("log", "-1", "--format=%H", "--", "services/khala-gateway")
    return git("rev-parse", f"{latest}~1")


class Canary:
    """A gateway process started from another checkout of the repository."""

    def __init__(self, tree: Path, env: dict[str, str], log_path: Path) -> None:
        self.tree = tree
        self.http_port, self.grpc_port = free_port(), free_port()
        paths = [
            tree / "services/khala-gateway/src",
            tree / "libs/khala-common/src",
            tree / "libs/khala-proto/src",
        ]
        self.env = dict(env)
        self.env.update(
            {
                "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
                "KHALA_GATEWAY_HTTP_PORT": str(self.http_port),
                "KHALA_GATEWAY_GRPC_PORT": str(self.grpc_port),
            }
        )
        self.env.pop("KHALA_GATEWAY_ADMIN_PORT", None)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/v1/ws"

    def module_file(self) -> str:
        """Where the canary's interpreter finds khala_gateway (must be the worktree)."""
        return subprocess.run(
            [sys.executable, "-c", "import khala_gateway; print(khala_gateway.__file__)"],
            env=self.env,
            cwd=self.tree,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def start(self) -> None:
        with open(self.log_path, "ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "khala_gateway", "serve"],
                env=self.env,
                cwd=self.tree,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        for _ in range(int(timeout_s * 10)):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"canary exited {self.proc.returncode}; see {self.log_path}")
            try:
                status = await asyncio.to_thread(
                    lambda: (
                        urllib.request.urlopen(
                            f"http://127.0.0.1:{self.http_port}/readyz", timeout=2
                        ).status
                    )
                )
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(f"canary not ready; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def move(follower: Follower, ws_url: str) -> None:
    """Point a client at another gateway and make it reconnect there now."""
    follower.ws_url = ws_url
    if follower.conn is not None and not follower.conn.closed:
        await follower.conn.close()


def client_checks(
    f: Follower, end: Settled, drained: bool, runs_topic: str, run_topics: dict[str, str]
) -> list[tuple[str, bool, str]]:
    """One client's verdicts: served by both versions (and drained off the canary if it
    ended there), exact run topics, no error, docs == runtime."""
    bad = [t for t in run_topics.values() if not exact(f.state[t].seqs, 1, end.heads[t])]
    docs = f.summaries(runs_topic)
    wrong = {
        rid: d
        for rid in run_topics
        if (d := run_summary_diff(docs.get(rid), end.runs[rid], end.logs[rid]))
    }
    return [
        (
            f"{f.name} client: served by both versions"
            + (", drained off the canary" if drained else ""),
            f.reconnects >= (2 if drained else 1)
            and (not drained or "drain" in f.reconnect_messages),
            f"{f.reconnects} reconnects, Reconnect reasons {f.reconnect_messages}",
        ),
        (
            f"{f.name} client: run topics exactly 1..head across versions",
            end.caught[f.name] and not bad and not f.violations,
            f"{RUNS - len(bad)}/{RUNS} exact, heads {sorted(end.heads.values())}, {f.frames} frames, "
            f"{len(f.violations)} dup/gap {f.violations[:3]}",
        ),
        (
            f"{f.name} client: no stale_cursor, no error",
            not f.stale and not f.errors,
            f"stale {f.stale[:3]}, errors {f.errors[:3]}",
        ),
        (
            f"{f.name} client: RunSummary == runtime state",
            not wrong,
            f"{RUNS - len(wrong)}/{RUNS} equal {wrong}",
        ),
    ]


async def switch_versions(
    followers: list[Follower], on_canary: set[str], canary: Canary, stable_ws_url: str
) -> set[str]:
    """Every client moves to the other version; the names now on the canary."""
    for f in followers:
        await move(f, stable_ws_url if f.name in on_canary else canary.ws_url)
    return {f.name for f in followers} - on_canary


async def abort(
    followers: list[Follower], on_canary: set[str], canary: Canary, stable_ws_url: str
) -> int | None:
    """The canary's clients go to HEAD and the canary is drained; its exit code."""
    for f in followers:
        if f.name in on_canary:
            f.ws_url = stable_ws_url
    return await asyncio.to_thread(canary.stop)


async def drill() -> int:
    base = previous_version()
    head = git("rev-parse", "HEAD")
    tree = Path(tempfile.mkdtemp(prefix="khala-canary-"))
    git("worktree", "add", "--detach", str(tree), base)
    log(f"previous version {base[:12]} checked out in {tree}; HEAD is {head[:12]}")
    canary: Canary | None = None
    try:
        async with drill_env("canary") as env, aiohttp.ClientSession() as http:
            stack = env.stack
            canary = Canary(tree, stack.env(), stack.log_dir / "gateway-canary.log")
            module = await asyncio.to_thread(canary.module_file)
            canary.start()
            await canary.wait_ready()
            log(
                f"canary gateway ({base[:12]}) ready on :{canary.http_port}; stable (HEAD) on :{stack.ports['gateway'][0]}"
            )

            api, org = await signed_in(http, stack, env.tag)
            run_ids = [
                (await api.create_run(org, f"run-{env.tag}-{i}", title=f"run {i}"))["run_id"]
                for i in range(RUNS)
            ]
            runs_topic = f"org.{org}.runs"
            run_topics = {rid: f"org.{org}.run.{rid}" for rid in run_ids}
            topics = [runs_topic, *run_topics.values()]
            followers = [
                Follower(f"{proto}-{i}", http, api, topics, protocol=p)
                for i, (proto, p) in enumerate(
                    [("proto", PROTO), ("json", JSON), ("proto", PROTO), ("json", JSON)]
                )
            ]
            on_canary = {f.name for f in followers[1::2]}
            for f in followers:
                f.start(canary.ws_url if f.name in on_canary else stack.ws_url)

            writers = Writers(api, run_ids)
            writers.start()
            await asyncio.sleep(2.0)
            log("every client moves to the other version")
            on_canary = await switch_versions(followers, on_canary, canary, stack.ws_url)
            await asyncio.sleep(2.5)
            log("abort: the canary's clients go to HEAD, the canary is drained (SIGTERM)")
            canary_rc = await abort(followers, on_canary, canary, stack.ws_url)
            await asyncio.sleep(2.0)
            await writers.stop()
            end = await settle(api, stack.database_url, run_topics, topics, followers)

            appended = sum(writers.appended.values())
            checks: list[tuple[str, bool, str]] = [
                (
                    "the canary ran the previous version's code",
                    module.startswith(str(tree)) and base != head,
                    f"khala_gateway from {module}; {base[:12]} vs HEAD {head[:12]}",
                ),
                (
                    "traffic during the drill",
                    appended > 0,
                    f"{appended} events over {RUNS} runs, {writers.retries} append retries",
                ),
                ("the canary drained and exited 0 on SIGTERM", canary_rc == 0, f"exit {canary_rc}"),
            ]
            for f in followers:
                checks += client_checks(f, end, f.name in on_canary, runs_topic, run_topics)
            return verdict("drill-canary", checks)
    finally:
        if canary is not None:
            canary.stop(signal.SIGKILL)
        git("worktree", "remove", "--force", str(tree))


def main() -> None:
    sys.exit(asyncio.run(asyncio.wait_for(drill(), 180)))


if __name__ == "__main__":
    main()
