-- InvitationService tables: the `invitation` schema on Postgres, the service's own file on SQLite. Ids
-- are UUID text; times are microseconds since the Unix epoch (BIGINT), so one set of migrations and
-- one set of queries serve both backends.

CREATE TABLE invitations (
    id                        TEXT PRIMARY KEY,
    org_id                    TEXT NOT NULL,
    email                     TEXT NOT NULL,
    roles                     TEXT NOT NULL,
    status                    TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'revoked', 'expired')),
    -- SHA-256 (hex) of the raw token; the raw token is never stored.
    token_hash                TEXT NOT NULL UNIQUE,
    reservation_id            TEXT NOT NULL,
    inviter                   TEXT NOT NULL,
    inviter_display_name      TEXT NOT NULL,
    org_slug                  TEXT NOT NULL,
    org_display_name          TEXT NOT NULL,
    created_at                BIGINT NOT NULL,
    expires_at                BIGINT NOT NULL,
    accepted_at               BIGINT,
    accepted_user_id          TEXT,
    revoked_at                BIGINT,
    email_delivery            TEXT NOT NULL,
    email_error               TEXT,
    updated_at                BIGINT NOT NULL
);
-- At most one pending invitation per (organization, email): the duplicate check under concurrency.
CREATE UNIQUE INDEX invitations_one_pending ON invitations (org_id, email) WHERE status = 'pending';
CREATE INDEX invitations_by_org ON invitations (org_id, id);
CREATE INDEX invitations_by_expiry ON invitations (status, expires_at);

-- Hashes of tokens replaced by ResendInvitation, so an old link is refused with its own reason.
CREATE TABLE superseded_tokens (
    token_hash    TEXT PRIMARY KEY,
    invitation_id TEXT NOT NULL,
    superseded_at BIGINT NOT NULL
);

-- The transactional outbox: written in the same transaction as the invitation.
CREATE TABLE email_outbox (
    id              TEXT PRIMARY KEY,
    invitation_id   TEXT NOT NULL,
    org_id          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    -- The rendered message (it holds the link), sealed with the key-encryption key; cleared once
    -- the message is sent, failed or cancelled.
    sealed_message  TEXT,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX email_outbox_due ON email_outbox (status, next_attempt_at);
CREATE INDEX email_outbox_by_invitation ON email_outbox (invitation_id);

-- Append-only audit log of invitation state changes.
CREATE TABLE invitation_events (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL,
    invitation_id TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL
);
CREATE INDEX invitation_events_by_org ON invitation_events (org_id, id);

CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    request_id TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);
