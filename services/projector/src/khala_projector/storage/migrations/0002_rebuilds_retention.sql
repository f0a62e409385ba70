-- Rebuilds with topic epochs, and the time of each checkpoint's last event.
-- `topics` and `frames` keep their meaning (the gateway reads them): a rebuild
-- stages frames of a new epoch in `frames` (invisible to readers, who always
-- filter by the topic's current epoch) and switches `topics.epoch` in one
-- transaction per org.

-- occurred_at_ms of the last event folded into the checkpoint (0: unknown).
ALTER TABLE checkpoints ADD COLUMN last_event_at_ms bigint NOT NULL DEFAULT 0;

-- One row per `khala-projector rebuild`; its epoch is str(rebuild_id + 1), so
-- it is never "1" (the initial epoch) and never reused.
CREATE TABLE rebuilds (
    rebuild_id   bigserial PRIMARY KEY,
    projection   text NOT NULL,                  -- 'runs' | 'workers'
    org_id       text NOT NULL DEFAULT '',       -- '' = every org
    epoch        text NOT NULL UNIQUE,
    status       text NOT NULL DEFAULT 'staging',  -- staging | switched | done | abandoned
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    -- Seconds spent running (summed over resumed invocations).
    active_s     double precision NOT NULL DEFAULT 0
);

-- Per stream of a rebuild: what has been staged into the new epoch so far
-- (committed together with the staged frames, so a rebuild resumes here).
CREATE TABLE rebuild_streams (
    rebuild_id        bigint NOT NULL REFERENCES rebuilds ON DELETE CASCADE,
    stream_id         text   NOT NULL,
    org_id            text   NOT NULL,
    staged_seq        bigint NOT NULL DEFAULT 0,
    doc               bytea,
    doc_hash          text   NOT NULL DEFAULT '',
    last_event_at_ms  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (rebuild_id, stream_id)
);
CREATE INDEX rebuild_streams_by_org ON rebuild_streams (rebuild_id, org_id);

-- Per topic of a rebuild: the new epoch's head while staging; at the switch the
-- epoch it replaced; once that epoch's frames are deleted, cleaned_at.
CREATE TABLE rebuild_topics (
    rebuild_id   bigint NOT NULL REFERENCES rebuilds ON DELETE CASCADE,
    topic        text   NOT NULL,
    org_id       text   NOT NULL,
    head_seq     bigint NOT NULL DEFAULT 0,
    old_epoch    text,
    switched_at  timestamptz,
    cleaned_at   timestamptz,
    PRIMARY KEY (rebuild_id, topic)
);
CREATE INDEX rebuild_topics_by_org ON rebuild_topics (rebuild_id, org_id);
CREATE INDEX rebuild_topics_to_clean ON rebuild_topics (rebuild_id)
    WHERE switched_at IS NOT NULL AND cleaned_at IS NULL;

CREATE INDEX checkpoints_by_org ON checkpoints (org_id, stream_id);
