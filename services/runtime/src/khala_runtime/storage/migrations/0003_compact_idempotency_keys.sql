-- Idempotency keys record the seq range of their append instead of a copy of
-- its receipt: a receipt holds every event id of the batch, so copying it into
-- each key row of a keyed batch of n events wrote O(n^2) bytes. The receipt is
-- rebuilt from the (immutable) log on replay. Rows written before this
-- migration keep their stored receipt.
ALTER TABLE idempotency_keys
    ALTER COLUMN receipt DROP NOT NULL,
    ADD COLUMN first_seq bigint,
    ADD COLUMN last_seq  bigint,
    ADD CONSTRAINT idempotency_keys_receipt_or_range
        CHECK (receipt IS NOT NULL OR (first_seq IS NOT NULL AND last_seq >= first_seq));
