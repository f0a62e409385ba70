-- Codex workers (DESIGN §6). Their events live in `events` under stream
-- 'worker:<worker_id>', with idempotency keys and outbox rows like runs.

-- One row per worker: its current head. Appends lock this row.
CREATE TABLE workers (
    worker_id             text   PRIMARY KEY,
    org_id                text   NOT NULL,
    status                text   NOT NULL CHECK (status IN
                              ('registered', 'running', 'stopped', 'error')),
    last_seq              bigint NOT NULL CHECK (last_seq >= 0),
    chain_hash            text   NOT NULL,   -- chain hash of the event at last_seq
    last_heartbeat_at_ms  bigint,            -- occurred_at_ms of the latest heartbeat; NULL: none yet
    created_at_ms         bigint NOT NULL,
    updated_at_ms         bigint NOT NULL    -- occurred_at_ms of the latest event
);
CREATE INDEX workers_by_org ON workers (org_id, created_at_ms DESC, worker_id DESC);
