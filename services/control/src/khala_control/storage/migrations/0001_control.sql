-- Control schema: identity, device sessions, orgs, signing keys, audit log and
-- the revocation outbox. Owned and written only by the control service.

-- A person, identified by the identity provider's (issuer, subject).
CREATE TABLE users (
    user_id     text PRIMARY KEY,
    issuer      text NOT NULL,
    subject     text NOT NULL,
    email       text NOT NULL DEFAULT '',
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (issuer, subject)
);

-- One signed-in device. Revoked sessions are kept (revoked_at set) as history.
CREATE TABLE device_sessions (
    session_id      text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (user_id),
    device_id       text NOT NULL,
    surface         text NOT NULL,
    client_version  text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoke_reason   text
);
CREATE INDEX device_sessions_by_user ON device_sessions (user_id, created_at);

-- Refresh tokens, stored as sha256 of the opaque token (never the token).
-- used_at is set when the token is rotated; presenting it again revokes the session.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  text NOT NULL REFERENCES device_sessions (session_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE orgs (
    org_id      text PRIMARY KEY CHECK (org_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name        text NOT NULL,
    created_by  text NOT NULL REFERENCES users (user_id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    org_id      text NOT NULL REFERENCES orgs (org_id),
    user_id     text NOT NULL REFERENCES users (user_id),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

-- ES256 signing keys. purpose 'control' signs access and sync tokens,
-- 'dev_idp' signs the dev identity provider's ID tokens. The private key is a
-- PKCS#8 PEM encrypted with Fernet (KHALA_CONTROL_KEY_ENCRYPTION_KEY). At most
-- one active and one previous key per purpose; both are published in the JWKS.
CREATE TABLE signing_keys (
    kid              text PRIMARY KEY,
    purpose          text NOT NULL CHECK (purpose IN ('control', 'dev_idp')),
    status           text NOT NULL CHECK (status IN ('active', 'previous', 'retired')),
    alg              text NOT NULL DEFAULT 'ES256',
    private_key_enc  bytea NOT NULL,
    public_jwk       jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    retired_at       timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose) WHERE status = 'active';
CREATE UNIQUE INDEX signing_keys_one_previous ON signing_keys (purpose) WHERE status = 'previous';

-- Security-relevant events: session creation, token mints and denials,
-- revocations, refresh token reuse, org and membership changes.
CREATE TABLE audit_log (
    audit_id    bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text NOT NULL,
    user_id     text,
    session_id  text,
    org_id      text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_by_user ON audit_log (user_id, at);
CREATE INDEX audit_log_by_session ON audit_log (session_id, at);

-- Revocations waiting to be published to `khala.control` (transactional outbox:
-- written in the transaction that revokes, published at least once).
CREATE TABLE revocation_outbox (
    outbox_id     bigserial PRIMARY KEY,
    message_id    text NOT NULL UNIQUE,
    routing_key   text NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX revocation_outbox_pending ON revocation_outbox (outbox_id) WHERE published_at IS NULL;
