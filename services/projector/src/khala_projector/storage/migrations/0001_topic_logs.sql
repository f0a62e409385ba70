-- Khala projection schema (owned and written only by the projector; the
-- gateway reads it through a read-only connection).

-- One row per topic: its current epoch and the seq range retained.
CREATE TABLE topics (
    topic       text PRIMARY KEY,
    epoch       text   NOT NULL,
    head_seq    bigint NOT NULL DEFAULT 0,   -- highest seq in the current epoch (0: none)
    oldest_seq  bigint NOT NULL DEFAULT 0,   -- oldest retained seq (0: none)
    is_doc      boolean NOT NULL
);

-- Topic logs. frame_bytes is the serialized openagents.sync.v1.KhalaFrame,
-- stored once and sent as is (fanout body and WebSocket payload).
CREATE TABLE frames (
    frame_id        bigserial UNIQUE,        -- commit order across topics (publish cursor)
    topic           text     NOT NULL,
    epoch           text     NOT NULL,
    seq             bigint   NOT NULL,
    kind            smallint NOT NULL,       -- openagents.sync.v1.FrameKind
    key             text     NOT NULL,
    frame_bytes     bytea    NOT NULL,
    published_at_ms bigint   NOT NULL,
    PRIMARY KEY (topic, epoch, seq)
);
CREATE INDEX frames_by_key ON frames (topic, epoch, key, seq DESC);

-- Projection documents (RunSummary, CodexWorkerSummary) by key.
CREATE TABLE documents (
    projection  text   NOT NULL,             -- 'runs' | 'workers'
    key         text   NOT NULL,             -- run_id | worker_id
    org_id      text   NOT NULL,
    doc         bytea  NOT NULL,             -- deterministic proto serialization
    doc_hash    text   NOT NULL,             -- sha256 hex of doc
    last_seq    bigint NOT NULL,
    PRIMARY KEY (projection, key)
);

-- Per source stream: what has been folded in.
CREATE TABLE checkpoints (
    stream_id           text PRIMARY KEY,    -- 'run:<id>' | 'worker:<id>'
    org_id              text   NOT NULL,
    last_seq            bigint NOT NULL,
    doc_hash            text   NOT NULL,
    projection_version  integer NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Highest frame_id confirmed published to khala.fanout; frames above it are
-- republished on start (at-least-once; gateways dedupe by seq).
CREATE TABLE publish_cursor (
    id              smallint PRIMARY KEY CHECK (id = 1),
    last_frame_id   bigint NOT NULL
);
INSERT INTO publish_cursor (id, last_frame_id) VALUES (1, 0);
