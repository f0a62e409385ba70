-- Who did what (issue 19): every event records its actor, a JSON object
-- {kind: user|service, id, session_id, device_id, surface}. Events written
-- before this migration read as an unknown actor ('{}'); new rows always name
-- one (the write path sets it in the same multi-row insert as the event).
ALTER TABLE events ADD COLUMN actor jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The org audit (GET /api/v1/audit): an org's events in (occurred_at_ms,
-- stream_id, stream_seq) order, keyset-paged.
CREATE INDEX events_audit ON events (org_id, occurred_at_ms, stream_id, stream_seq);
