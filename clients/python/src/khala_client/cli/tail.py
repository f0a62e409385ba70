"""`khala tail`: follow topics live, one line per frame, resumable.

Cursors go to a persistent store (default `<config dir>/cursors.sqlite`) after
each line is printed, so a tail that is stopped and started again prints every
frame exactly once across the two runs (a frame printed just before a crash may
print again; none is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import aiohttp

from khala_client.cli.commands import UsageError, open_api, org_of
from khala_client.cli.config import Config
from khala_client.cli.render import frame_json, frame_line
from khala_client.client import KhalaClient
from khala_client.cursors import CursorStore, MemoryCursorStore, open_store
from khala_client.tokens import ApiTokenSource
from khala_client.updates import (
    Connected,
    Disconnected,
    FrameApplied,
    Live,
    Notice,
    TopicFailed,
    TopicReset,
)
from khala_client.ws import JSON, PROTO


def expand_topic(text: str, args: argparse.Namespace, config: Config) -> str:
    """`runs`, `workers`, `run:<id>`, `worker:<id>` for the default org; full topics as given."""
    if text in ("runs", "workers"):
        return f"org.{org_of(args, config)}.{text}"
    kind, sep, ident = text.partition(":")
    if sep and kind in ("run", "worker") and ident:
        return f"org.{org_of(args, config)}.{kind}.{ident}"
    if not text.startswith("org.") or len(text.split(".")) not in (3, 4):
        raise UsageError(f"not a topic: {text!r} (org.<org>.runs|workers, org.<org>.run|worker.<id>, or a shorthand)")
    return text


def _store(args: argparse.Namespace, config: Config, topics: list[str]) -> CursorStore:
    if args.no_resume:
        return MemoryCursorStore()
    store = open_store(args.cursors or str(config.path.parent / "cursors.sqlite"))
    if args.from_start:
        for topic in topics:
            store.delete(topic)
    return store


def _note(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"# {text}", file=sys.stderr, flush=True)


async def tail(args: argparse.Namespace, config: Config) -> int:
    """Print frames of the topics until interrupted (or --count / --exit-when-live / --timeout)."""
    topics = [expand_topic(t, args, config) for t in args.topics]
    store = _store(args, config, topics)
    async with open_api(config) as api:
        source = ApiTokenSource(api, topics, surface=config.surface, client_version=config.client_version)
        await source()  # a refused topic fails here, with control's clear error
        async with aiohttp.ClientSession() as http:
            client = KhalaClient(
                config.gateway_url, source, topics=topics, store=store, http=http,
                protocol=JSON if args.protocol == "json" else PROTO,
                client_name="khala-cli", client_version=config.client_version,
            )
            run = _follow(client, args, topics)
            try:
                if args.timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(run, args.timeout)
                else:
                    await run
            finally:
                await client.close()
    return 0


async def _follow(client: KhalaClient, args: argparse.Namespace, topics: list[str]) -> None:
    printed = 0
    waiting_live = set(topics)
    async for update in client.updates():
        if isinstance(update, FrameApplied):
            print(frame_json(update) if args.json else frame_line(update), flush=True)
            printed += 1
            if args.count and printed >= args.count:
                return
        elif isinstance(update, Live):
            if update.live:
                waiting_live.discard(update.topic)
                if args.exit_when_live and not waiting_live:
                    return
        elif isinstance(update, Connected):
            _note(args, f"connected {update.connection_id}")
        elif isinstance(update, Disconnected):
            _note(args, f"disconnected ({update.reason}); reconnecting in {update.retry_in_s:.1f}s")
        elif isinstance(update, TopicReset):
            _note(args, f"{update.topic}: local cursor dropped ({update.reason}); starting over")
        elif isinstance(update, TopicFailed):
            _note(args, f"{update.topic}: {update.code}: {update.message}")
            waiting_live.discard(update.topic)
            if not client.topics:
                raise UsageError(f"no topic left to follow ({update.code})")
        elif isinstance(update, Notice):
            _note(args, f"{update.topic + ': ' if update.topic else ''}{update.message}")
