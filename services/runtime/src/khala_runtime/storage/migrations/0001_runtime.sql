-- Runtime's authority schema (DESIGN invariant 1: nothing else writes it).

-- One row per run: its current head. Appends lock this row (SELECT ... FOR
-- UPDATE), which serialises writers of one stream.
CREATE TABLE runs (
    run_id         text   PRIMARY KEY,
    org_id         text   NOT NULL,
    title          text   NOT NULL DEFAULT '',
    status         text   NOT NULL CHECK (status IN
                       ('created', 'running', 'paused', 'succeeded', 'failed', 'canceled')),
    last_seq       bigint NOT NULL CHECK (last_seq >= 0),
    chain_hash     text   NOT NULL,          -- chain hash of the event at last_seq
    created_at_ms  bigint NOT NULL,
    updated_at_ms  bigint NOT NULL           -- occurred_at_ms of the latest event
);
CREATE INDEX runs_by_org ON runs (org_id, created_at_ms DESC, run_id DESC);

-- The event log. Per stream, stream_seq starts at 1 and is gapless.
CREATE TABLE events (
    stream_id        text     NOT NULL,      -- 'run:<id>' | 'worker:<id>'
    stream_seq       bigint   NOT NULL CHECK (stream_seq >= 1),
    event_id         uuid     NOT NULL UNIQUE,
    org_id           text     NOT NULL,
    stream_kind      smallint NOT NULL,      -- openagents.runtime.v1.StreamKind
    subject_id       text     NOT NULL,      -- run_id | worker_id
    type             text     NOT NULL,
    payload_json     bytea    NOT NULL,      -- canonical JSON object
    idempotency_key  text,
    occurred_at_ms   bigint   NOT NULL,
    chain_hash       text     NOT NULL,
    PRIMARY KEY (stream_id, stream_seq)
);

-- Idempotency keys of accepted appends, with the request hash and the
-- serialized openagents.runtime.v1.Receipt returned for them.
CREATE TABLE idempotency_keys (
    stream_id      text   NOT NULL,
    key            text   NOT NULL,
    request_hash   text   NOT NULL,
    receipt        bytea  NOT NULL,
    created_at_ms  bigint NOT NULL,
    PRIMARY KEY (stream_id, key)
);

-- Transactional outbox: written in the append transaction, published by the
-- relay in id order, then marked. body is the serialized RuntimeEvent.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    event_id       uuid   NOT NULL,
    routing_key    text   NOT NULL,
    body           bytea  NOT NULL,
    created_at_ms  bigint NOT NULL,
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
