"""SQL over `events`, `idempotency_keys` and the outbox insert side.

The appends of a group (many streams, hundreds of events) are written by one
statement (`write_streams`): multi-row `INSERT ... SELECT FROM unnest(...)`
into each table, in CTEs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from khala_runtime.domain.actor import TRUSTED_SERVICE, Actor
from khala_runtime.domain.idempotency import KeyRecord
from openagents.runtime.v1.events_pb2 import Receipt, RuntimeEvent

OUTBOX_CHANNEL = "runtime_outbox"
_EVENT_COLUMNS = (
    "stream_id, stream_seq, event_id, org_id, stream_kind, subject_id, type, "
    "payload_json, idempotency_key, occurred_at_ms, chain_hash"
)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


# One statement writes the appends of a group (any number of streams): their
# events, their outbox rows (in input order, so each stream's outbox ids follow
# its seqs), the idempotency keys, optionally the heads' update, and the relay's
# doorbell (Postgres delivers NOTIFY at commit).
_INPUT = (
    "input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], "
    "$5::text[], $6::bytea[], $7::text[], $8::bigint[], $9::text[], $10::smallint[], "
    "$11::text[], $12::bigint[], $13::text[], $20::text[], $21::text[], $22::text[]) "
    "WITH ORDINALITY "
    "AS t(event_id, type, payload_json, idempotency_key, chain_hash, body, stream_id, "
    "stream_seq, org_id, stream_kind, subject_id, occurred_at_ms, routing_key, actor, "
    "traceparent, request_id, n))"
)


def _inserts(where: str) -> str:
    """The events, outbox and idempotency-key CTEs, each restricted by `where`."""
    return (
        f"e AS (INSERT INTO events ({_EVENT_COLUMNS}, actor) "
        "SELECT stream_id, stream_seq, event_id, org_id, stream_kind, subject_id, type, "
        "payload_json, idempotency_key, occurred_at_ms, chain_hash, actor::jsonb "
        f"FROM input{where}), "
        "o AS (INSERT INTO outbox "
        "(event_id, routing_key, body, created_at_ms, traceparent, request_id) "
        "SELECT event_id, routing_key, body, $14::bigint, traceparent, request_id "
        f"FROM input{where} ORDER BY n), "
        "k AS (INSERT INTO idempotency_keys "
        "(stream_id, key, request_hash, first_seq, last_seq, created_at_ms) "
        "SELECT stream_id, key, request_hash, first_seq, last_seq, $14::bigint "
        "FROM unnest($15::text[], $16::text[], $17::text[], $18::bigint[], $19::bigint[]) "
        f"AS k(stream_id, key, request_hash, first_seq, last_seq){where})"
    )


_WRITE = "WITH " + _INPUT + ", " + _inserts("")
_WRITE_TAIL = f" SELECT pg_notify('{OUTBOX_CHANNEL}', '')"
# The optimistic form: the heads' CTE comes first and moves only heads still as
# planned (RETURNING their stream ids); events, outbox rows and keys are written
# for those streams only, in the same statement (one implicit transaction).
_ONLY_MOVED = " WHERE stream_id IN (SELECT stream_id FROM h)"
_WRITE_IF = _INPUT + ", " + _inserts(_ONLY_MOVED)
_WRITE_IF_TAIL = f" SELECT stream_id, pg_notify('{OUTBOX_CHANNEL}', '') FROM h"
HEAD_ARGS_FROM = 23
"""Parameter number of the first argument of a heads-update CTE (`$23`)."""


@dataclass(frozen=True)
class HeadsWrite:
    """A CTE `h AS (UPDATE ...)` advancing locked streams' heads, and its arguments."""

    cte: str
    args: tuple[object, ...]


def heads_update(
    table: str,
    kind: str,
    ids: Sequence[str],
    columns: Sequence[tuple[str, str, Sequence[object]]],
    expected: Sequence[tuple[int, str]] | None = None,
) -> HeadsWrite:
    """The CTE `h` that sets `columns` (name, SQL type, one value per head) of the
    `table` rows `<kind>_id = ids[i]`. With `expected` ((last_seq, chain_hash) the
    appends were planned on), only rows still as expected move, and `h` returns
    their stream ids (`write_streams_if_heads`)."""
    id_column = f"{kind}_id"
    names = [id_column, *(name for name, _, _ in columns)]
    casts = ["text", *(cast for _, cast, _ in columns)]
    values: list[Sequence[object]] = [list(ids), *(vals for _, _, vals in columns)]
    condition = returning = ""
    if expected is not None:
        names += ["old_seq", "old_hash"]
        casts += ["bigint", "text"]
        values += [[seq for seq, _ in expected], [chain for _, chain in expected]]
        condition = " AND t.last_seq = u.old_seq AND t.chain_hash = u.old_hash"
        returning = f" RETURNING '{kind}:' || t.{id_column} AS stream_id"
    params = ", ".join(f"${HEAD_ARGS_FROM + i}::{cast}[]" for i, cast in enumerate(casts))
    assignments = ", ".join(f"{name} = u.{name}" for name, _, _ in columns)
    return HeadsWrite(
        f"h AS (UPDATE {table} AS t SET {assignments} "
        f"FROM unnest({params}) AS u({', '.join(names)}) "
        f"WHERE t.{id_column} = u.{id_column}{condition}{returning})",
        tuple(values),
    )


@dataclass(frozen=True)
class StreamWrite:
    """One append's events (one stream) with what the log records beside them:
    routing key, idempotency keys and request hash, who appended them, and the
    W3C traceparent and request id of the append (kept with the outbox rows for
    the relay)."""

    events: Sequence[RuntimeEvent]
    routing_key: str
    keys: Sequence[str] = ()
    request_hash: str = ""
    actor: Actor = TRUSTED_SERVICE
    traceparent: str | None = None
    request_id: str | None = None


_SQL_CACHE: dict[tuple[str, bool], str] = {}


def _write_sql(head_cte: str, conditional: bool = False) -> str:
    sql = _SQL_CACHE.get((head_cte, conditional))
    if sql is None:
        if conditional:
            sql = f"WITH {head_cte}, {_WRITE_IF}{_WRITE_IF_TAIL}"
        else:
            sql = _WRITE + (f", {head_cte}" if head_cte else "") + _WRITE_TAIL
        _SQL_CACHE[(head_cte, conditional)] = sql
    return sql


async def write_streams(
    conn: asyncpg.Connection,
    writes: Sequence[StreamWrite],
    *,
    now_ms: int,
    heads: HeadsWrite | None = None,
) -> None:
    """Write the events of several appends (distinct streams) with their outbox rows,
    idempotency keys and optionally the heads' update, in ONE statement."""
    await conn.execute(_write_sql(heads.cte if heads else ""), *_write_args(writes, now_ms, heads))


async def write_streams_if_heads(
    db: Executor, writes: Sequence[StreamWrite], *, now_ms: int, heads: HeadsWrite
) -> set[str]:
    """The optimistic append: in ONE statement, move each head only if it still is
    as planned (`heads` made with `expected`), and write the events, outbox rows
    and keys of exactly those streams; the stream ids that were written."""
    rows = await db.fetch(
        _write_sql(heads.cte, conditional=True), *_write_args(writes, now_ms, heads)
    )
    return {row["stream_id"] for row in rows}


def _write_args(
    writes: Sequence[StreamWrite], now_ms: int, heads: HeadsWrite | None
) -> tuple[object, ...]:
    events = [event for write in writes for event in write.events]
    keyed = [(w, key) for w in writes if w.keys for key in w.keys]
    return (
        [e.event_id for e in events],  # asyncpg encodes uuid from its text form
        [e.type for e in events],
        [e.payload_json for e in events],
        [e.idempotency_key or None for e in events],
        [e.chain_hash for e in events],
        [e.SerializeToString() for e in events],
        [e.stream_id for e in events],
        [e.stream_seq for e in events],
        [e.org_id for e in events],
        [int(e.stream_kind) for e in events],
        [e.subject_id for e in events],
        [e.occurred_at_ms for e in events],
        [w.routing_key for w in writes for _ in w.events],
        now_ms,
        [w.events[0].stream_id for w, _ in keyed],
        [key for _, key in keyed],
        [w.request_hash for w, _ in keyed],
        [w.events[0].stream_seq for w, _ in keyed],
        [w.events[-1].stream_seq for w, _ in keyed],
        [w.actor.json for w in writes for _ in w.events],
        [w.traceparent for w in writes for _ in w.events],
        [w.request_id for w in writes for _ in w.events],
        *(heads.args if heads else ()),
    )


def _event(row: Any) -> RuntimeEvent:
    return RuntimeEvent(
        event_id=str(row["event_id"]),
        stream_id=row["stream_id"],
        org_id=row["org_id"],
        stream_kind=row["stream_kind"],
        subject_id=row["subject_id"],
        stream_seq=row["stream_seq"],
        type=row["type"],
        payload_json=bytes(row["payload_json"]),
        idempotency_key=row["idempotency_key"] or "",
        occurred_at_ms=row["occurred_at_ms"],
        chain_hash=row["chain_hash"],
    )


async def read_events(
    db: Executor, stream_id: str, *, after_seq: int, up_to_seq: int, limit: int
) -> list[RuntimeEvent]:
    """Events with after_seq < stream_seq <= up_to_seq, in order, at most `limit`."""
    rows = await db.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events "
        "WHERE stream_id = $1 AND stream_seq > $2 AND stream_seq <= $3 "
        "ORDER BY stream_seq LIMIT $4",
        stream_id,
        after_seq,
        up_to_seq,
        limit,
    )
    return [_event(row) for row in rows]


def found_keys_sql(stream_id_sql: str, subject_sql: str) -> str:
    """A select-list item `found_keys` of a locked head row: the recorded
    idempotency keys of its stream among the requested (subject, key) pairs
    `$2`/`$3`, as records (key, request_hash, receipt, first_seq, last_seq)."""
    return (
        "ARRAY(SELECT ROW(i.key, i.request_hash, i.receipt, i.first_seq, i.last_seq) "
        "FROM unnest($2::text[], $3::text[]) AS q(subject, key) "
        "JOIN idempotency_keys AS i ON i.key = q.key "
        f"WHERE q.subject = {subject_sql} AND i.stream_id = {stream_id_sql}) AS found_keys"
    )


async def key_records(
    conn: asyncpg.Connection, stream_id: str, found: Sequence[Any]
) -> list[KeyRecord]:
    """KeyRecords of `found_keys` rows, with the receipt of the append that recorded
    each (rebuilt from the log for rows that store a seq range)."""
    rebuilt: dict[tuple[int, int], Receipt] = {}
    records = []
    for key, request_hash, stored, first_seq, last_seq in found:
        if stored is not None:
            receipt = Receipt.FromString(bytes(stored))
        else:
            span = (first_seq, last_seq)
            if span not in rebuilt:
                rebuilt[span] = await _receipt_from_log(conn, stream_id, *span)
            receipt = rebuilt[span]
        records.append(KeyRecord(key, request_hash, receipt))
    return records


async def _receipt_from_log(
    conn: asyncpg.Connection, stream_id: str, first_seq: int, last_seq: int
) -> Receipt:
    """The receipt of the append that wrote seqs first..last (the log is immutable)."""
    rows = await conn.fetch(
        "SELECT event_id, chain_hash FROM events WHERE stream_id = $1 "
        "AND stream_seq BETWEEN $2 AND $3 ORDER BY stream_seq",
        stream_id,
        first_seq,
        last_seq,
    )
    return Receipt(
        stream_id=stream_id,
        first_seq=first_seq,
        last_seq=last_seq,
        event_ids=[str(row["event_id"]) for row in rows],
        chain_hash=rows[-1]["chain_hash"],
    )
