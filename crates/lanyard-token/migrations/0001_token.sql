-- TokenService tables: in the `token` schema on Postgres, in the service's own file (token.db) on
-- SQLite. Ids are UUID text and times are microseconds since the Unix epoch (BIGINT), so the same
-- SQL and the same queries run on both backends.

-- Lanyard's own signing keys. The private key is sealed with the key-encryption key, bound to its kid.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    algorithm     TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA', 'RS256')),
    private_key   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retired_at    BIGINT,
    -- A retired key stays in the JWKS until every token it signed has expired.
    publish_until BIGINT
);

-- At most one key signs at a time.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    active_org_id   TEXT NOT NULL,
    -- The upstream identity that signed in, so a later sign-in without an organization finds its last one.
    issuer          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoke_reason   TEXT,
    last_refresh_at BIGINT,
    user_agent      TEXT,
    ip_address      TEXT
);

CREATE INDEX sessions_by_user ON sessions (user_id, id);
CREATE INDEX sessions_by_identity ON sessions (issuer, subject, created_at);

-- Refresh tokens: only the SHA-256 of the opaque token is kept. A session is one rotation family.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Append-only record of session and key changes (sign-in, refresh reuse, revocation, rotation).
CREATE TABLE token_events (
    id              TEXT PRIMARY KEY,
    organization_id TEXT,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    details         TEXT NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL
);

CREATE INDEX token_events_by_org ON token_events (organization_id, id);
