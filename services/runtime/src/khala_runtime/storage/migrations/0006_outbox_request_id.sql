-- The request id of the append that wrote an outbox row travels with its
-- trace (issue 20): the relay carries it on as W3C baggage, so projector and
-- gateway log lines about the event name it. NULL for older rows.
ALTER TABLE outbox ADD COLUMN request_id text;
