-- One trace end to end (issue 20): an outbox row keeps the W3C traceparent of
-- the append that wrote it, so the relay can carry it to the broker long after
-- the request ended. NULL for rows written before this migration or outside a
-- trace.
ALTER TABLE outbox ADD COLUMN traceparent text;
