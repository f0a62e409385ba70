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
from dataclasses import dataclass

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
    Update,
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
        raise UsageError(
            f"not a topic: {text!r} (org.<org>.runs|workers, org.<org>.run|worker.<id>, or a shorthand)"
        )
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
        source = ApiTokenSource(
            api, topics, surface=config.surface, client_version=config.client_version
        )
        await source()  # a refused topic fails here, with control's clear error
        async with aiohttp.ClientSession() as http:
            client = KhalaClient(
                config.gateway_url,
                source,
                topics=topics,
                store=store,
                http=http,
                protocol=JSON if args.protocol == "json" else PROTO,
                client_name="khala-cli",
                client_version=config.client_version,
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
    progress = _Progress(args.count, args.exit_when_live, set(topics))
    async for update in client.updates():
        if isinstance(update, FrameApplied):
            print(frame_json(update) if args.json else frame_line(update), flush=True)
            if progress.printed_one():
                return
        elif isinstance(update, Live):
            if update.live and progress.live(update.topic):
                return
        elif isinstance(update, TopicFailed):
            _note(args, f"{update.topic}: {update.code}: {update.message}")
            progress.failed(update.topic)
            if not client.topics:
                raise UsageError(f"no topic left to follow ({update.code})")
        else:
            note = _describe(update)
            if note is not None:
                _note(args, note)


@dataclass
class _Progress:
    """When a tail is done: `count` frames printed (if set), or every topic live
    (with --exit-when-live; a failed topic is no longer waited for)."""

    count: int
    exit_when_live: bool
    waiting_live: set[str]
    printed: int = 0

    def printed_one(self) -> bool:
        """Count a printed frame; True once `count` frames are printed."""
        self.printed += 1
        return bool(self.count) and self.printed >= self.count

    def live(self, topic: str) -> bool:
        """`topic` went live; True once every topic is (and --exit-when-live)."""
        self.waiting_live.discard(topic)
        return self.exit_when_live and not self.waiting_live

    def failed(self, topic: str) -> None:
        """`topic` failed: stop waiting for it to go live."""
        self.waiting_live.discard(topic)


def _describe(update: Update) -> str | None:
    """The stderr note for a connection or topic event (None: nothing to say)."""
    if isinstance(update, Connected):
        return f"connected {update.connection_id}"
    if isinstance(update, Disconnected):
        return f"disconnected ({update.reason}); reconnecting in {update.retry_in_s:.1f}s"
    if isinstance(update, TopicReset):
        return f"{update.topic}: local cursor dropped ({update.reason}); starting over"
    if isinstance(update, Notice):
        return f"{update.topic + ': ' if update.topic else ''}{update.message}"
    return None
