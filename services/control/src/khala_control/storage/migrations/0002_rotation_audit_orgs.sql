-- Two-phase key rotation and the per-org audit index.

-- A rotation first stages the new key as 'next': published in the JWKS but not
-- signing yet, so every verifier can learn it before the first token it signs.
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_status_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_status_check
    CHECK (status IN ('next', 'active', 'previous', 'retired'));
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (purpose) WHERE status = 'next';
ALTER TABLE signing_keys ADD COLUMN activated_at timestamptz;
UPDATE signing_keys SET activated_at = created_at WHERE status <> 'next';

-- Where an audited action came from (the client address, for unauthenticated calls).
ALTER TABLE audit_log ADD COLUMN client_ip text;

-- Which orgs an audit entry concerns (a mint can cover several orgs): the
-- index behind GET /api/orgs/{org}/audit, newest first, paginated by audit_id.
CREATE TABLE audit_log_orgs (
    org_id    text NOT NULL,
    audit_id  bigint NOT NULL REFERENCES audit_log (audit_id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, audit_id)
);
INSERT INTO audit_log_orgs (org_id, audit_id)
    SELECT org_id, audit_id FROM audit_log WHERE org_id IS NOT NULL;
