-- Invitations (issue 19 "Orgs"): adding a member creates a pending invitation
-- for a user id or an email address; only the invitee's accept creates the
-- membership. Invitations expire; accepted, declined and expired ones are kept
-- as history (the audit log records who invited, accepted and declined).
CREATE TABLE invitations (
    invitation_id  text PRIMARY KEY,
    org_id         text NOT NULL REFERENCES orgs (org_id) ON DELETE CASCADE,
    role           text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    user_id        text,                 -- the invitee by id, or
    email          text,                 -- by email address (lower case)
    invited_by     text NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'accepted', 'declined')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    decided_at     timestamptz,
    CHECK ((user_id IS NULL) <> (email IS NULL))
);
CREATE INDEX invitations_pending_by_user ON invitations (user_id) WHERE status = 'pending';
CREATE INDEX invitations_pending_by_email ON invitations (email) WHERE status = 'pending';
CREATE INDEX invitations_by_org ON invitations (org_id, created_at DESC);
